"""The search's wall-clock budget, shared by the study loop and the training loop.

Trials stop starting (and running trials stop starting epochs) early enough to leave
time for the final refit of the winner on all labelled rows. After each epoch a trial's
learning-rate schedule is shrunk to the epochs that still fit (`train.fitted_span`), so a
trial the deadline would cut decays its rates to zero first. An epoch is not started when
the last one's duration says it would end past the deadline, and no trial starts when not
even the cheapest epoch seen fits, so `--timeout` bounds the whole search, refit included:
it ends before the timeout, or past it by less than one epoch (a trial's first epoch always
runs, a refit is started when it would end within one of its epochs past the timeout, and
the refit's estimate can be off).
"""

from __future__ import annotations

import time


class Budget:
    """Deadline = start + timeout - reserve; the reserve is the refit's estimated time."""

    def __init__(self, timeout: float | None, clock=time.monotonic):
        self.clock = clock
        self.timeout = timeout
        self.start = clock()
        self.end = None if timeout is None else self.start + timeout
        self.reserve = 0.0  # seconds kept back for the refit of the current best trial
        self.shortest_epoch = 0.0  # the cheapest epoch any trial ran (0 until one ran)

    def passed(self, within: float = 0.0) -> bool:
        """Whether the deadline has passed, or will within `within` seconds."""
        return self.end is not None and self.clock() + within >= self.end - self.reserve

    def note_epoch(self, seconds: float) -> None:
        """Record an epoch's wall time (training and validation)."""
        if self.shortest_epoch == 0.0 or seconds < self.shortest_epoch:
            self.shortest_epoch = seconds

    def fits(self, seconds: float) -> bool:
        """Whether `seconds` of work started now would end before the timeout (reserve ignored)."""
        return self.end is None or self.clock() + seconds <= self.end

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return self.clock() - self.start

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed); None without a timeout."""
        return None if self.end is None else self.end - self.reserve - self.clock()
