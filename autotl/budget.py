"""The search's wall-clock budget, shared by the study loop and the training loop.

Trials stop starting (and running trials stop starting epochs) early enough to leave
time for the final refit of the winner on all labelled rows, so `--timeout` bounds the
whole search, refit included, to within about one epoch.
"""

from __future__ import annotations

import time


class Budget:
    """Deadline = start + timeout - reserve; the reserve is the refit's estimated time."""

    def __init__(self, timeout: float | None, clock=time.monotonic):
        self.clock = clock
        self.end = None if timeout is None else clock() + timeout
        self.reserve = 0.0  # seconds kept back for the refit of the current best trial

    def passed(self) -> bool:
        return self.end is not None and self.clock() >= self.end - self.reserve
