"""Read a strategy's search space without a study: record its suggest_* calls."""

from __future__ import annotations


class SpaceRecorder:
    """A stand-in trial: records each suggestion's range and answers with a default.

    The answer is the strategy's own default where it has one, else the low end / first
    choice, so a conditional space is described along its default branch.
    """

    def __init__(self, defaults: dict | None = None):
        self.defaults = defaults or {}
        self.space: dict[str, str] = {}

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.space[name] = f"float [{low:g}, {high:g}]" + (" log" if log else "") + (f" step {step:g}" if step else "")
        return self.defaults.get(name, low)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        self.space[name] = f"int [{low}, {high}]" + (" log" if log else "") + (f" step {step}" if step != 1 else "")
        return self.defaults.get(name, low)

    def suggest_categorical(self, name, choices):
        self.space[name] = "one of " + ", ".join(map(str, choices))
        return self.defaults.get(name, choices[0])


def describe_space(strategy) -> dict[str, str]:
    """param -> human-readable distribution."""
    recorder = SpaceRecorder(dict(getattr(strategy, "defaults", {})))
    strategy.search_space(recorder)
    return recorder.space
