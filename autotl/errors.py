"""One exception tree: every error autotl raises on purpose is an AutotlError.

The CLI prints ``error: <message>`` and exits 2 for these; any other exception is a bug
and keeps its traceback. Messages say what was wrong, what was found and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AutotlError(Exception):
    """Base class of autotl's own errors (bad input, bad plugin, bad settings)."""


class UsageError(AutotlError):
    """A command-line option or API argument is invalid."""


class DataError(AutotlError):
    """The dataset cannot be used as given (file, format, columns, labels)."""


class ModelError(AutotlError):
    """The backbone or a saved run cannot be loaded."""


class PluginError(AutotlError):
    """A plugin failed to import or broke the strategy contract."""


class StrategyError(AutotlError):
    """A strategy could not prepare or train; fails its own trial, not the search."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (a driver's or the hub's can run long),
    else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest choice, or `""` when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(kind: str, name: str, choices: Iterable[str]) -> str:
    """Message for an unknown name: names it, suggests the closest, lists the valid ones."""
    choices = sorted(str(c) for c in choices)
    return f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose from: {', '.join(choices)}"
