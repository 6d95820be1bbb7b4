"""A schedule the deadline would cut is fitted a tenth of the way into its first epoch, from
the time per padded token of the steps so far, not after the epoch ends (issue 9: the only
trial of a 1x budget ran its first epoch on the rates of six planned epochs)."""

from dataclasses import replace

import numpy as np
import pytest

from autotl import epoch_clock
from autotl.budget import Budget
from autotl.epoch_clock import EpochClock, padded_tokens
from autotl.strategy import ParamGroup, Plan, Stage
from autotl.testing import tiny_setup
from autotl.train import fit


def test_padded_tokens_are_rows_times_the_longest_row():
    lengths = np.array([3, 5, 2, 7])
    assert padded_tokens(lengths, [np.array([0, 1]), np.array([2, 3]), np.array([2])]).tolist() == [10.0, 14.0, 2.0]


def test_the_clock_predicts_the_epoch_once_from_the_steps_after_the_first():
    times = iter([5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])  # step 0 ends at 5 s (one-off costs), then 1 s a step
    estimates = []
    clock = EpochClock(np.array([50.0] + [10.0] * 20), val_tokens=30.0, on_estimate=estimates.append,
                       clock=lambda: next(times))
    for step in range(7):
        clock.after_step(step)
    # steps 1-3 took 3 s for 30 tokens (>= a tenth of 250): 0.1 s a token over 250 training
    # tokens and a third of the 30 validation tokens' worth
    assert estimates == [pytest.approx(0.1 * (250 + 30 * epoch_clock.VALIDATION_SHARE))]


def test_the_clock_waits_for_a_tenth_of_the_tokens_and_for_three_timed_steps():
    estimates = []
    ticks = iter(range(100))
    clock = EpochClock(np.array([1.0] * 5 + [100.0] * 5), 0.0, estimates.append, clock=lambda: float(next(ticks)))
    for step in range(5):  # 4 timed steps, 4 tokens: under a tenth of 505
        clock.after_step(step)
    assert estimates == []
    clock.after_step(5)
    assert len(estimates) == 1


class Ticking(EpochClock):
    """A clock that predicts every epoch at 6 s after its step 3."""

    def after_step(self, i):
        if i == 3:
            self.on_estimate(6.0)


class SecondsLeft(Budget):
    """A deadline `seconds` away at the start, `per_epoch` seconds nearer after each epoch,
    passed once `epochs` epochs have ended (the real epochs of the tiny model take no time)."""

    def __init__(self, seconds: float, per_epoch: float, epochs: int):
        super().__init__(1000.0)
        self.seconds, self.per_epoch, self.epochs, self.noted = seconds, per_epoch, epochs, 0

    def note_epoch(self, seconds):
        super().note_epoch(seconds)
        self.noted += 1

    def passed(self, within=0.0):
        return self.noted >= self.epochs

    def remaining(self):
        return self.seconds - self.per_epoch * self.noted


@pytest.fixture
def rates(monkeypatch):
    import autotl.train as train

    seen, step = [], train._Schedule.step

    def recording(self):
        seen.append(self.scheduler.optimizer.param_groups[0]["lr"])
        step(self)

    monkeypatch.setattr(train._Schedule, "step", recording)
    return seen


def test_the_first_epoch_runs_on_the_fitted_schedule_after_its_first_tenth(tiny_model, monkeypatch, rates):
    monkeypatch.setattr("autotl.train.EpochClock", Ticking)
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), 8),), batch_size=4, warmup_ratio=0.1)
    steps = -(-len(train) // 4)  # 6 steps; an epoch predicted at 6 s: 14 s left fit two
    result = fit(model, plan, train, val, replace(settings, deadline=SecondsLeft(14.0, 7.0, epochs=2)))
    assert result.horizon == (2,) and len(result.scores) == 2 and not result.truncated
    assert result.kept_at_schedule_end or result.best_epoch == 0
    assert len(rates) == 2 * steps
    planned_warmup, total, warmup = int(8 * steps * 0.1), 2 * steps, int(2 * steps * 0.1)
    # steps 0-3 ran on the planned line (warming up over 4 steps), step 4 on the fitted one
    assert rates[3] == pytest.approx(1e-2 * 4 / planned_warmup)
    assert rates[4] == pytest.approx(1e-2 * (total - 4) / (total - warmup))
    assert rates[-1] == pytest.approx(1e-2 * 1 / (total - warmup))  # decayed to one step above zero


def test_a_schedule_that_fits_is_not_touched_by_the_clock(tiny_model, monkeypatch, rates):
    monkeypatch.setattr("autotl.train.EpochClock", Ticking)
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), 3),), batch_size=4, warmup_ratio=0.1)
    result = fit(model, plan, train, val, replace(settings, deadline=SecondsLeft(100.0, 7.0, epochs=3)))
    assert result.horizon is None and len(result.scores) == 3
    assert rates[-1] == pytest.approx(1e-2 / (len(rates) - int(len(rates) * 0.1)))


def test_the_clock_never_cuts_the_epoch_it_times(tiny_model, monkeypatch):
    monkeypatch.setattr("autotl.train.EpochClock", Ticking)
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), 8),), batch_size=4, warmup_ratio=0.1)
    result = fit(model, plan, train, val, replace(settings, deadline=SecondsLeft(1.0, 7.0, epochs=1)))
    assert result.horizon == (1,) and len(result.scores) == 1 and result.kept_at_schedule_end



def test_epochs_fit_with_a_tenth_to_spare_but_the_next_one_always_counts():
    from autotl.train import epochs_that_fit

    assert epochs_that_fit(2.05 * 90, 90) == 1  # two would end 4.5 s before the deadline
    assert epochs_that_fit(2.3 * 90, 90) == 2
    assert epochs_that_fit(1.05 * 90, 90) == 1  # fits without the slack: run it, do not cut now
    assert epochs_that_fit(0.9 * 90, 90) == 0


class LeftAfterEpoch(Budget):
    """A deadline `factor` times the last epoch's time away after the first epoch (far
    before it), passed once `epochs` epochs have ended."""

    def __init__(self, factor: float, epochs: int):
        super().__init__(1000.0)
        self.factor, self.epochs, self.noted, self.last = factor, epochs, 0, None

    def note_epoch(self, seconds):
        super().note_epoch(seconds)
        self.noted, self.last = self.noted + 1, seconds

    def passed(self, within=0.0):
        return self.noted >= self.epochs

    def remaining(self):
        return 1000.0 if self.last is None else self.factor * self.last - (self.noted - 1) * self.last


@pytest.mark.parametrize("factor, span", [(2.05, 2), (2.3, 3), (1.05, 2)])
def test_after_an_epoch_the_schedule_keeps_a_tenth_of_an_epoch_to_spare(tiny_model, factor, span):
    """2.05 epochs left after the first: the schedule ends after the second (a slower epoch
    would cut a third mid-way); 1.05 left: the second still runs and ends the schedule."""
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), 8),), batch_size=4, warmup_ratio=0.1)
    result = fit(model, plan, train, val, replace(settings, deadline=LeftAfterEpoch(factor, epochs=span)))
    assert result.horizon == (span,) and len(result.scores) == span and not result.truncated
