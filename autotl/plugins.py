"""Plugin manager: loads the ``autotl`` entry points (built-ins included), checks them.

autotl's own strategy modules are declared as entry points of the autotl distribution,
exactly like a third party's, and go through the same import, registration and checks.
This is the only module that calls ``pm.hook``; the rest of autotl uses `Registry`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .errors import PluginError, one_of

GROUP = "autotl"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Registered:
    """A strategy and where it came from."""

    strategy: object  # follows autotl.Strategy
    plugin: str  # entry-point name (or the name given to `register`)
    distribution: str  # "autotl 0.1.0", "autotl-peft 0.1.0", or "" for direct registration


class Registry:
    """Every strategy the installed plugins provide, by name."""

    def __init__(self, disabled: tuple[str, ...] = (), *, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager("autotl")
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, str] = {}
        self._disabled = set(disabled)
        if load_entry_points:
            self._load_entry_points()
        self._strategies: dict[str, Registered] | None = None

    def _load_entry_points(self) -> None:
        seen = set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name in seen:
                continue  # the same dist can be visible twice (e.g. editable + site-packages)
            seen.add(ep.name)
            if ep.name in self._disabled:
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ""
            try:
                plugin = ep.load()
            except Exception as exc:  # any import failure is the plugin's, not ours
                raise PluginError(
                    f'error importing plugin "{ep.name}" ({dist or ep.value}): '
                    f"{type(exc).__name__}: {exc}; fix or uninstall it, or pass "
                    f"--disable-plugin {ep.name}"
                ) from exc
            self.register(plugin, ep.name, dist)
        unknown = self._disabled - seen
        if unknown:
            raise PluginError(one_of("plugin", sorted(unknown)[0], seen))

    def register(self, plugin, name: str, distribution: str = "") -> None:
        """Register a plugin object or module (what entry points do; tests use it too)."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f'plugin "{name}" breaks the autotl hook contract: {exc}') from exc
        self._dists[name] = distribution
        self._strategies = None

    def strategies(self) -> dict[str, Registered]:
        """Name -> registered strategy, validated; built on first use."""
        if self._strategies is None:
            found: dict[str, Registered] = {}
            for impl in self.pm.hook.autotl_strategies.get_hookimpls():
                plugin = impl.plugin_name
                try:
                    items = impl.function()
                except Exception as exc:
                    raise PluginError(f'plugin "{plugin}" failed in autotl_strategies: {exc}') from exc
                for strategy in items or ():
                    _check(strategy, plugin)
                    if strategy.name in found:
                        raise PluginError(
                            f"strategy name '{strategy.name}' is claimed by two plugins: "
                            f'"{found[strategy.name].plugin}" and "{plugin}"; uninstall one or '
                            "pass --disable-plugin NAME"
                        )
                    found[strategy.name] = Registered(strategy, plugin, self._dists.get(plugin, ""))
            self._strategies = dict(sorted(found.items()))
        return self._strategies

    def select(self, names: list[str] | None) -> dict[str, Registered]:
        """The strategies to search: all, or the named ones (unknown names are errors)."""
        available = self.strategies()
        if not available:
            raise PluginError("no strategies are installed; reinstall autotl (pip install -e .)")
        if names is None:
            return available
        if not names:
            raise PluginError("no strategy named; pass names such as --strategies full_finetune,linear_probe "
                              f"(installed: {', '.join(available)})")
        for name in names:
            if name not in available:
                raise PluginError(one_of("strategy", name, available))
        return {name: available[name] for name in dict.fromkeys(names)}


def _check(strategy, plugin: str) -> None:
    """Fail at startup, naming the plugin, when a strategy object breaks the contract."""
    name = getattr(strategy, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise PluginError(
            f'plugin "{plugin}" returned a strategy whose name is {name!r}; a strategy '
            "needs an identifier-like `name` string"
        )
    for attr in ("search_space", "prepare"):
        if not callable(getattr(strategy, attr, None)):
            raise PluginError(f'strategy "{name}" from plugin "{plugin}" has no {attr}() method')
    defaults = getattr(strategy, "defaults", None)
    if not isinstance(defaults, dict):
        raise PluginError(f'strategy "{name}" from plugin "{plugin}" needs a `defaults` dict')
    bad = [k for k in defaults if not (isinstance(k, str) and k.startswith(f"{name}."))]
    if bad:
        raise PluginError(
            f'strategy "{name}" from plugin "{plugin}": defaults key {bad[0]!r} must be '
            f"namespaced as '{name}.<param>'"
        )
