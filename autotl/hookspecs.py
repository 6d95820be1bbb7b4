"""The plugin contract: every hook a plugin may implement. Docstrings are the plugin docs.

A plugin is a module or object with functions marked ``@autotl.hookimpl``, registered
through the ``autotl`` entry-point group (autotl's own strategies are registered the same
way). ``autotl.plugins`` is the only caller of these hooks.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("autotl")
hookimpl = pluggy.HookimplMarker("autotl")


@hookspec
def autotl_strategies() -> list:
    """Return the transfer strategies this plugin provides.

    Collected from all plugins. Each item follows :class:`autotl.Strategy`: a unique
    ``name``, a one-line ``description``, ``defaults`` (the literature recipe as namespaced
    params, enqueued as the first trial of the family), ``search_space(trial)`` and
    ``prepare(model, params) -> Plan``. Two plugins returning the same name is a startup
    error naming both. Keep module import light: import torch inside ``prepare``.
    Optional: ``unsupported(data) -> str | None`` (why the strategy cannot run on this data,
    e.g. it needs unlabeled rows; it is then not searched) and stages whose ``start`` reads
    the unlabeled rows or loads other weights (see :mod:`autotl.strategy`).
    """
