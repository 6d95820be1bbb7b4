"""How long an epoch will take, known a tenth of the way into it.

`train.fit` shrinks a learning-rate schedule the deadline would cut to the epochs that fit
(`train.fitted_span`). Fitted only after an epoch had ended, the first epoch of a trial ran
on the planned schedule's rates — 6 epochs at a one-trial budget where 2 fit, so it ended
near the peak rate, the fit was then a guess from one epoch, and the epoch kept could sit
mid-schedule with no time left for a second look (measured: AG News, 1,000 rows, 1x the
recipe's time, the a7bd1f9 matrix: epoch 1 of 2 kept mid-schedule, test 0.859 against the
recipe's 0.880). An `EpochClock` times the first steps of a stage's first epoch instead and
predicts the epoch from the padded tokens its batches hold, so the schedule is fitted while
the epoch is still young and every epoch that runs follows the fitted rates.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

LOOK = 0.1  # share of the epoch's padded tokens timed before predicting it
MIN_STEPS = 3  # steps timed at least (the first step is not timed: it pays one-off costs)
# Validation is a forward pass over the validation rows: about a third of a training step's
# time per token (backward costs about twice the forward).
VALIDATION_SHARE = 1 / 3


def padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> np.ndarray:
    """Each batch's padded size (rows x its longest row): what a step's time follows."""
    return np.array([len(b) * int(lengths[b].max()) for b in batches], dtype=float)


class EpochClock:
    """Call `after_step(i)` after step i of the epoch; once the steps after the first have
    covered LOOK of the epoch's padded tokens (and MIN_STEPS steps), `on_estimate(seconds)`
    is called once with the predicted seconds of the whole epoch, validation included."""

    def __init__(self, batch_tokens: np.ndarray, val_tokens: float, on_estimate: Callable[[float], None],
                 clock=time.monotonic):
        self.cumulative = np.cumsum(batch_tokens)
        self.total = float(self.cumulative[-1]) if len(self.cumulative) else 0.0
        self.val_tokens, self.on_estimate, self.clock = float(val_tokens), on_estimate, clock
        self.start: tuple[float, float] | None = None  # (time, tokens done) when step 0 ended
        self.done = False

    def after_step(self, i: int) -> None:
        if self.done or self.total <= 0:
            return
        now = self.clock()
        if self.start is None:
            self.start = (now, float(self.cumulative[i]))
            return
        timed = float(self.cumulative[i]) - self.start[1]
        if i < MIN_STEPS or timed < LOOK * self.total or timed <= 0:
            return
        self.done = True
        per_token = (now - self.start[0]) / timed
        self.on_estimate(per_token * (self.total + VALIDATION_SHARE * self.val_tokens))
