"""A learning-rate schedule the --timeout would cut is shrunk to the epochs that fit, so the
rates still decay to zero; the refit replays the shrunk schedule (issue 9: AG News at 1x)."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from autotl import final
from autotl.budget import Budget
from autotl.objective import HORIZON
from autotl.strategy import ParamGroup, Plan, Stage
from autotl.testing import tiny_setup
from autotl.train import fit, fitted_span


class EpochsLeft(Budget):
    """A deadline that always has room for exactly `fits - epochs noted` more epochs."""

    def __init__(self, fits: int):
        super().__init__(1000.0)
        self.fits, self.noted, self.last = fits, 0, None

    def note_epoch(self, seconds):
        super().note_epoch(seconds)
        self.noted, self.last = self.noted + 1, seconds

    def passed(self, within=0.0):
        return self.noted >= self.fits

    def remaining(self):
        return 1000.0 if self.last is None else (self.fits - self.noted + 0.5) * self.last


@pytest.fixture
def rates(monkeypatch):
    """The learning rate of every optimizer step, in order."""
    import autotl.train as train

    seen, step = [], train._Schedule.step

    def recording(self):
        seen.append(self.scheduler.optimizer.param_groups[0]["lr"])
        step(self)

    monkeypatch.setattr(train._Schedule, "step", recording)
    return seen


def _plan(model, *epochs):
    head = tuple(model.head_parameters())
    return Plan(tuple(Stage((ParamGroup(head, 1e-2),), e) for e in epochs), batch_size=8, warmup_ratio=0.1)


def test_fitted_span_cuts_the_planned_epochs_in_proportion_and_never_grows():
    assert fitted_span([8], 0, 1, 2) == 3  # one run, two fit: the schedule spans three
    assert fitted_span([8], 0, 1, 20) == 8  # all fit: unchanged
    assert fitted_span([4, 4], 0, 2, 3) == 2 + 3 * 2 // 6  # this stage keeps its share: 2 + 1
    assert fitted_span([8], 0, 3, 0) == 3  # nothing fits: the stage ends here
    assert fitted_span([8], 0, 3, -4) == 3


def test_a_schedule_the_deadline_would_cut_decays_to_zero_in_the_epochs_that_fit(tiny_model, rates):
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    steps = -(-len(train) // 8)
    result = fit(model, _plan(model, 8), train, val, replace(settings, deadline=EpochsLeft(3)))
    assert len(result.scores) == 3 and result.horizon == (3,) and not result.truncated
    assert len(rates) == 3 * steps
    # epochs 2 and 3 decay on the three-epoch line: the last step's rate is one step above zero
    total, warmup = 3 * steps, int(3 * steps * 0.1)
    assert rates[-1] == pytest.approx(1e-2 * 1 / (total - warmup))
    assert rates[steps] == pytest.approx(1e-2 * (total - steps) / (total - warmup))


def test_without_a_deadline_the_plan_is_untouched(tiny_model, rates):
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    result = fit(model, _plan(model, 4), train, val, settings)
    assert len(result.scores) == 4 and result.horizon is None
    assert rates[-1] == pytest.approx(1e-2 / (len(rates) - int(len(rates) * 0.1)))


def test_a_later_stage_is_fitted_when_it_runs(tiny_model):
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    result = fit(model, _plan(model, 2, 6), train, val, replace(settings, deadline=EpochsLeft(4)))
    # after epoch 1, three of the seven planned epochs fit: stage 1 keeps 1 + 3 * 1 // 7 = 1;
    # stage 2 then fits its two remaining epochs into its first epoch's schedule
    assert result.horizon == (1, 3) and len(result.scores) == 4 and not result.truncated


def test_a_refit_follows_the_trials_shrunk_schedule(tiny_model, rates):
    """The refit's rates are those of a plan of the fitted length (the trial's own first epoch
    ran on the longer line before it was fitted; a refit has other steps per epoch anyway)."""
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    trial = fit(model, _plan(model, 8), train, val, replace(settings, deadline=EpochsLeft(3)))
    runs = {}
    for name, plan_epochs, horizon in (("refit", 8, trial.horizon), ("three", 3, None), ("eight", 8, None)):
        rates.clear()
        model = tiny_model("mean")
        fit(model, _plan(model, plan_epochs), train, None, replace(settings, max_epochs=2, horizon=horizon))
        runs[name] = list(rates)
    assert trial.horizon == (3,)
    assert runs["refit"] == runs["three"] and runs["refit"] != runs["eight"]


def test_the_refit_is_given_its_trials_horizon(monkeypatch):
    seen = []
    monkeypatch.setattr(final, "run_params", lambda setup, params, desc="": seen.append(setup.fit.horizon))
    monkeypatch.setattr(final, "concat", lambda a, b: a)
    setup = SimpleNamespace(train=[], val=[], fit=tiny_setup()[2])
    setup.for_params = lambda params: setup
    monkeypatch.setattr(final, "replace", lambda obj, **kw: (SimpleNamespace(**{**vars(obj), **kw})
                                                            if isinstance(obj, SimpleNamespace) else replace(obj, **kw)))
    for attrs in ({"best_epoch": 1, HORIZON: [3]}, {"best_epoch": 1}):
        final._refit(SimpleNamespace(number=0, params={}, user_attrs=attrs), setup)
    assert seen == [(3,), None]


def test_the_objective_records_the_horizon_and_says_so_in_the_summary(tiny_model_dir, monkeypatch):
    import optuna

    from autotl.objective import Objective, TrialSetup
    from autotl.plugins import Registry
    from autotl.testing import LABELS

    train, val, settings = tiny_setup(tiny_model_dir)
    strategies = Registry().select(["linear_probe"])
    setup = TrialSetup(backbone_path=tiny_model_dir, strategies=strategies, poolings=("mean",), train=train,
                       val=val, label_names=LABELS, num_outputs=2, fit=replace(settings, deadline=EpochsLeft(2)))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"strategy": "linear_probe", "head.pooling": "mean",
                         **{**strategies["linear_probe"].strategy.defaults, "linear_probe.epochs": 10}})
    study.optimize(Objective(setup), n_trials=1)
    trial = study.trials[0]
    assert trial.user_attrs[HORIZON] == [2] and len(trial.user_attrs["epoch_scores"]) == 2
    assert "schedule fitted to the --timeout: 2 epoch(s)" in trial.user_attrs["summary"]
