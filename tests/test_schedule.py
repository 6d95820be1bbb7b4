"""A learning-rate schedule the --timeout would cut is shrunk to the epochs that fit, so the
rates still decay to zero; the refit replays the shrunk schedule; the epoch kept is the last
one within one standard error of the best, and the schedule's last epoch unless an earlier
one beats it significantly (issue 9: AG News at 1x)."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

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
    assert fitted_span([8], 0, 8, -1) == 8  # the last epoch ended past the deadline: nothing left to cut
    assert fitted_span([3, 1], 1, 1, -2) == 1


class Overrun(Budget):
    """A deadline that lets every epoch start and is past once `after` epochs have ended."""

    def __init__(self, after: int):
        super().__init__(1000.0)
        self.noted, self.after = 0, after

    def note_epoch(self, seconds):
        super().note_epoch(seconds)
        self.noted += 1

    def passed(self, within=0.0):
        return False

    def remaining(self):
        return -5.0 if self.noted >= self.after else 1000.0


class Cut(Overrun):
    """A deadline past once `after` epochs have ended, no new epoch starting then, and nothing
    fitted before: the trial stops with its schedule unfinished."""

    def passed(self, within=0.0):
        return self.noted >= self.after

    def remaining(self):
        return 1000.0


@pytest.mark.parametrize("epochs", [(1,), (2, 1)])
def test_a_last_epoch_that_ends_past_the_deadline_keeps_the_trial(tiny_model, epochs):
    """Self-training's student epoch (labelled + pseudo-labelled rows) can take many times the
    teacher's, so it ends past the deadline its start was judged by: the trial is kept (it
    failed with a ZeroDivisionError, losing the teacher's epochs)."""
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    result = fit(model, _plan(model, *epochs), train, val, replace(settings, deadline=Overrun(sum(epochs))))
    assert len(result.scores) == sum(epochs) and result.best_epoch is not None


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


# -- which epoch is kept -----------------------------------------------------------------------

def test_the_epoch_tie_margin_is_the_paired_standard_error():
    import numpy as np

    from autotl.metrics import get_metric
    from autotl.select import epoch_tie_margin

    targets = np.array([0, 1] * 50)
    first, second = targets.copy(), targets.copy()
    first[:4] = 1 - first[:4]  # 4 rows wrong only in the first, 2 only in the second
    second[10:12] = 1 - second[10:12]
    per_row = (first == targets).astype(float) - (second == targets)
    expected = np.std(per_row, ddof=1) / np.sqrt(100)
    accuracy = get_metric("accuracy", "classification")
    assert epoch_tie_margin(accuracy, targets, first, second) == pytest.approx(expected)
    assert epoch_tie_margin(accuracy, targets, targets, targets) == 0.0  # same predictions: no noise
    values = np.linspace(-1, 1, 50)
    close, off = values + 0.1, values + np.where(np.arange(50) % 2, 0.3, -0.3)
    errors = (close - values) ** 2 - (off - values) ** 2
    assert epoch_tie_margin(get_metric("r2", "regression"), values, close, off) == pytest.approx(
        np.std(errors, ddof=1) / np.sqrt(50) / np.var(values))


def _keeps(scores, margin):
    """Which epoch a fit keeps when its epochs score `scores` and every tie margin is `margin`."""
    import numpy as np

    from autotl.train import Scored, _Best

    param = torch.zeros(1)
    best = _Best([param], maximize=True, margin=lambda first, top: margin)
    for epoch, score in enumerate(scores):
        param.fill_(epoch)
        best.offer(epoch, Scored(score, np.zeros(3)))
    param.fill_(-1)
    best.restore()
    assert param.item() == best.epoch  # the kept epoch's weights come back
    return best.epoch, best.score


def test_a_later_epoch_within_one_standard_error_of_the_best_is_kept():
    assert _keeps([0.895, 0.88, 0.87, 0.885], margin=0.02) == (3, 0.885)  # the last within 0.02 of 0.895
    assert _keeps([0.895, 0.88, 0.87, 0.86], margin=0.02) == (1, 0.88)
    assert _keeps([0.895, 0.88, 0.87, 0.885], margin=0.0) == (0, 0.895)  # no noise: the best alone
    assert _keeps([0.7, 0.9, 0.85], margin=0.1) == (2, 0.85)
    assert _keeps([0.7, 0.9, 0.95, 0.5], margin=0.1) == (2, 0.95)  # a new best resets the bar


def test_fit_keeps_the_last_epoch_tied_with_the_best_on_the_validation_rows(tiny_model, monkeypatch):
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    scores = iter([0.9, 0.85, 0.88])
    settings = replace(settings, metric=replace(settings.metric, fn=lambda targets, predicted: next(scores)))
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: 0.05)
    result = fit(model, _plan(model, 3), train, val, settings)
    assert (result.best_epoch, result.best_score) == (2, 0.88) and result.scores == (0.9, 0.85, 0.88)
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: 0.009)
    scores = iter([0.9, 0.85, 0.88])
    model = tiny_model("mean")
    assert fit(model, _plan(model, 3), train, val, settings).best_epoch == 0  # 0.02 is over 1.96 SE of 0.009


def _fit_scoring(tiny_model, scores, margin, monkeypatch, plan_epochs=(4,), deadline=None):
    """(FitResult, the model's head weights after fit, the head weights after each epoch)."""
    train, val, settings = tiny_setup()
    values = iter(scores)
    settings = replace(settings, deadline=deadline,
                       metric=replace(settings.metric, fn=lambda targets, predicted: next(values)))
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: margin)
    model = tiny_model("mean")
    epochs = []

    def head():
        return [p.detach().clone() for p in model.head_parameters()]

    result = fit(model, _plan(model, *plan_epochs), train, val, settings,
                 on_epoch=lambda epoch, score, left: epochs.append(head()))
    return result, head(), epochs


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_schedules_last_epoch_is_kept_unless_an_earlier_one_beats_it_significantly(
        tiny_model, monkeypatch):
    """AG News, 1,000 rows: epoch 1 of 6 validated 0.895, the last 0.860, more than one paired SE
    apart; on 1,000 other rows of train.csv epoch 1 scored 0.862 and the last 0.873 (two seeds
    alike): an early peak on 200 validation rows is noise more often than not."""
    from autotl.train import schedule_end_margin

    assert schedule_end_margin(4) == pytest.approx(2.128, abs=1e-3)  # one-sided 5% / 3 earlier epochs
    assert schedule_end_margin(6) == pytest.approx(2.326, abs=1e-3) and schedule_end_margin(1) > 1.6
    result, kept, epochs = _fit_scoring(tiny_model, [0.895, 0.865, 0.865, 0.855], 0.02, monkeypatch)
    assert (result.best_epoch, result.best_score, result.kept_at_schedule_end) == (3, 0.855, True)
    assert _same(kept, epochs[3]) and not _same(kept, epochs[0])  # the model holds the last epoch's weights
    result, kept, epochs = _fit_scoring(tiny_model, [0.895, 0.865, 0.865, 0.85], 0.02, monkeypatch)
    assert (result.best_epoch, result.kept_at_schedule_end) == (0, False)  # 0.045 apart: over 2.13 SE
    assert _same(kept, epochs[0])


def test_a_schedule_the_deadline_fitted_ends_at_its_fitted_last_epoch(tiny_model, monkeypatch):
    result, _, _ = _fit_scoring(tiny_model, [0.9, 0.87, 0.87], 0.02, monkeypatch, plan_epochs=(8,),
                                deadline=EpochsLeft(3))
    assert result.horizon == (3,) and (result.best_epoch, result.kept_at_schedule_end) == (2, True)


def test_a_trial_the_deadline_cut_mid_schedule_keeps_its_best_epoch(tiny_model, monkeypatch):
    """Its last epoch ran at a high rate, not at the schedule's end: no preference for it."""
    result, _, _ = _fit_scoring(tiny_model, [0.9, 0.87], 0.02, monkeypatch, plan_epochs=(4,), deadline=Cut(2))
    assert result.truncated and len(result.scores) == 2 and result.best_epoch == 0


# -- a model kept mid-schedule is not refit ------------------------------------------------------

def test_fit_says_whether_the_kept_epoch_ended_its_schedule(tiny_model, monkeypatch):
    train, val, settings = tiny_setup()
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: 0.0)
    for scores, plan_epochs, kept, at_end in (([0.9, 0.8, 0.7], (3,), 0, False),
                                              ([0.7, 0.8, 0.9], (3,), 2, True),
                                              ([0.7, 0.9, 0.8], (2, 1), 1, True)):  # stage 1's last epoch
        values = iter(scores)
        fitted = replace(settings, metric=replace(settings.metric, fn=lambda targets, predicted: next(values)))
        model = tiny_model("mean")
        result = fit(model, _plan(model, *plan_epochs), train, val, fitted)
        assert (result.best_epoch, result.kept_at_schedule_end) == (kept, at_end)


def test_the_last_epoch_of_a_fitted_schedule_ends_it(tiny_model, monkeypatch):
    """8 epochs planned, 3 fit: the third ends the fitted schedule, the first does not."""
    train, val, settings = tiny_setup()
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: 0.0)
    for scores, kept, at_end in (([0.5, 0.6, 0.9], 2, True), ([0.9, 0.5, 0.5], 0, False)):
        values = iter(scores)
        fitted = replace(settings, deadline=EpochsLeft(3),
                         metric=replace(settings.metric, fn=lambda targets, predicted: next(values)))
        model = tiny_model("mean")
        result = fit(model, _plan(model, 8), train, val, fitted)
        assert result.horizon == (3,) and (result.best_epoch, result.kept_at_schedule_end) == (kept, at_end)


def _final_model_with(monkeypatch, tmp_path, attrs, *, refit=True):
    """final_model for one trial with `attrs`; returns (refit calls, what best/ was saved with)."""
    refits, saved = [], {}
    trial = SimpleNamespace(number=3, params={"strategy": "full_finetune"}, value=0.9,
                            user_attrs={"best_epoch": 0, "epoch_scores": [0.9, 0.8, 0.8], "seconds": 3.0, **attrs})
    monkeypatch.setattr(final, "_refit", lambda t, setup, horizon=None: refits.append(t.number) or SimpleNamespace(
        model="refit model", summary="s", result=SimpleNamespace(seconds=1.0)))
    monkeypatch.setattr(final, "_trained_model", lambda t, setup, run_dir: "trial model")
    monkeypatch.setattr(final, "save_best", lambda model, tokenizer, run_dir, info, max_length: saved.update(
        model=model, **info))
    monkeypatch.setattr(final, "read_info", lambda run_dir: None)
    setup = SimpleNamespace(train=[0] * 8, val=[0] * 2)
    setup.for_params = lambda params: setup
    final.final_model(trial, setup, None, tmp_path, max_length=16, info_base={"study": "s"}, refit=refit)
    return refits, saved


def test_a_trial_kept_mid_schedule_exports_its_own_model_and_says_why(monkeypatch, tmp_path):
    """Without its spans (a study written before they were recorded) no second look is possible."""
    from autotl.objective import MID_SCHEDULE

    refits, saved = _final_model_with(monkeypatch, tmp_path, {MID_SCHEDULE: True})
    assert refits == [] and saved["model"] == "trial model" and saved["refit"] is None
    assert "epoch 1 of 3 run" in saved["refit_skipped"] and "mid-schedule" in saved["refit_skipped"]
    refits, saved = _final_model_with(monkeypatch, tmp_path, {})  # kept at its schedule's end: refit
    assert refits == [3] and saved["model"] == "refit model" and saved["refit_skipped"] is None


def test_the_objective_marks_a_trial_kept_mid_schedule(tiny_model_dir, monkeypatch):
    import optuna

    from autotl.objective import MID_SCHEDULE, Objective, TrialSetup
    from autotl.plugins import Registry
    from autotl.testing import LABELS

    train, val, settings = tiny_setup(tiny_model_dir)
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: 0.0)
    strategies = Registry().select(["linear_probe"])
    study = optuna.create_study(direction="maximize")
    marked = []
    for scores in ([0.9, 0.5, 0.5], [0.5, 0.6, 0.9]):
        values = iter(scores)
        fitted = replace(settings, metric=replace(settings.metric, fn=lambda targets, predicted: next(values)))
        setup = TrialSetup(backbone_path=tiny_model_dir, strategies=strategies, poolings=("mean",), train=train,
                           val=val, label_names=LABELS, num_outputs=2, fit=fitted)
        study.enqueue_trial({"strategy": "linear_probe", "head.pooling": "mean",
                             **{**strategies["linear_probe"].strategy.defaults, "linear_probe.epochs": 3}})
        study.optimize(Objective(setup), n_trials=1)
        marked.append(study.trials[-1].user_attrs.get(MID_SCHEDULE))
    assert marked == [True, None]


def test_time_is_kept_back_for_the_second_look_and_the_refit():
    from autotl import runner
    from autotl.objective import MID_SCHEDULE

    budget = Budget(timeout=600)
    setup = SimpleNamespace(train=[0] * 8, val=[0] * 2)
    ran = {"seconds": 24.0, "epoch_scores": [0.9], "best_epoch": 0}  # its refit: 24 s x 10 / 8 rows = 30 s
    at_end = SimpleNamespace(user_attrs=ran)
    mid = SimpleNamespace(user_attrs={**ran, MID_SCHEDULE: True})
    assert runner._reserve(None, at_end, setup, budget, refit=True, rescore=0) == 30.0
    # the second look: the kept epochs on the 8 training rows of the 10 (30 s / 1.25), then the refit
    assert runner._reserve(None, mid, setup, budget, refit=True, rescore=0) == pytest.approx(24.0 + 30.0)
    assert runner._reserve(None, at_end, setup, budget, refit=False, rescore=0) == 0.0


# -- the second look at a model kept mid-schedule -------------------------------------------------

def test_the_schedule_to_the_kept_epoch_keeps_earlier_stages_whole():
    from autotl.objective import SPANS

    def trial(best, spans):
        return SimpleNamespace(user_attrs={"best_epoch": best, SPANS: spans})

    assert final.schedule_to_kept_epoch(trial(0, [6])) == (1,)
    assert final.schedule_to_kept_epoch(trial(3, [6])) == (4,)
    assert final.schedule_to_kept_epoch(trial(10, [10, 4])) == (10, 1)  # epoch 1 of the fine-tune stage
    assert final.schedule_to_kept_epoch(trial(2, [2, 4])) == (2, 1)
    assert final.schedule_to_kept_epoch(SimpleNamespace(user_attrs={"best_epoch": 0})) is None


def test_a_second_look_trains_a_schedule_ending_at_the_kept_epoch_and_validates_it(tiny_model_dir, monkeypatch):
    """A trial kept at epoch 1 of 3: the look trains one epoch whose rates decay to zero in it,
    and is accepted or not by its validation score against the trial's."""
    import optuna

    from autotl.objective import MID_SCHEDULE, SPANS, Objective, TrialSetup
    from autotl.plugins import Registry
    from autotl.testing import LABELS

    train, val, settings = tiny_setup(tiny_model_dir)
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: 0.0)
    monkeypatch.setattr("autotl.select.epoch_tie_margin", lambda metric, targets, first, top: 0.0)
    strategies = Registry().select(["linear_probe"])
    values = iter([0.9, 0.5, 0.5])
    fitted = replace(settings, metric=replace(settings.metric, fn=lambda targets, predicted: next(values)))
    setup = TrialSetup(backbone_path=tiny_model_dir, strategies=strategies, poolings=("mean",), train=train,
                       val=val, label_names=LABELS, num_outputs=2, fit=fitted)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"strategy": "linear_probe", "head.pooling": "mean",
                         **{**strategies["linear_probe"].strategy.defaults, "linear_probe.epochs": 3}})
    study.optimize(Objective(setup), n_trials=1)
    trial = study.trials[0]
    assert trial.user_attrs[MID_SCHEDULE] and trial.user_attrs[SPANS] == [3] and trial.value == 0.9
    for score, accepted in ((0.9, True), (0.89, False)):
        look_setup = replace(setup, fit=replace(settings, metric=replace(settings.metric,
                                                                          fn=lambda targets, predicted: score)))
        look = final.second_look(trial, look_setup)
        assert look.horizon == (1,) and len(look.outcome.result.scores) == 1
        assert (look.score, look.accepted) == (score, accepted)


def _final_with_look(monkeypatch, tmp_path, accepted, *, refit_fits=True):
    """final_model for a trial kept mid-schedule whose second look is `accepted` or not."""
    from autotl.objective import MID_SCHEDULE, SPANS

    calls, saved = [], {}
    trial = SimpleNamespace(number=3, params={"strategy": "full_finetune"}, value=0.9,
                            user_attrs={"best_epoch": 0, "epoch_scores": [0.9, 0.8, 0.8], "seconds": 3.0,
                                        MID_SCHEDULE: True, SPANS: [3]})
    look = final.SecondLook(SimpleNamespace(model="look model", summary="s"), (1,), 0.9 if accepted else 0.8,
                            0.01, accepted)
    monkeypatch.setattr(final, "second_look", lambda t, setup: calls.append("look") or look)
    monkeypatch.setattr(final, "_refit", lambda t, setup, horizon=None: calls.append(("refit", horizon)) or
                        SimpleNamespace(model="refit model", summary="s", result=SimpleNamespace(seconds=1.0)))
    monkeypatch.setattr(final, "refit_fits", lambda budget, trials, setup: refit_fits)
    monkeypatch.setattr(final, "_trained_model", lambda t, setup, run_dir: "trial model")
    monkeypatch.setattr(final, "save_best", lambda model, tokenizer, run_dir, info, max_length: saved.update(
        model=model, **info))
    monkeypatch.setattr(final, "read_info", lambda run_dir: None)
    setup = SimpleNamespace(train=[0] * 8, val=[0] * 2, fit=SimpleNamespace(metric=SimpleNamespace(name="acc")))
    setup.for_params = lambda params: setup
    final.final_model(trial, setup, None, tmp_path, max_length=16, info_base={"study": "s"}, refit=True,
                      budget=Budget(timeout=600))
    return calls, saved


def test_an_accepted_second_look_is_refit_on_its_schedule(monkeypatch, tmp_path):
    calls, saved = _final_with_look(monkeypatch, tmp_path, accepted=True)
    assert calls == ["look", ("refit", (1,))] and saved["model"] == "refit model"
    assert saved["second_look"]["refit"] and saved["second_look"]["val"] == 0.9 and saved["refit_skipped"] is None


def test_an_accepted_second_look_without_time_to_refit_exports_the_looks_model(monkeypatch, tmp_path):
    calls, saved = _final_with_look(monkeypatch, tmp_path, accepted=True, refit_fits=False)
    assert calls == ["look"] and saved["model"] == "look model" and saved["refit"] is None
    assert saved["second_look"]["refit"] is False and "second look's model" in saved["refit_skipped"]


def test_a_rejected_second_look_keeps_the_trials_own_model_and_says_why(monkeypatch, tmp_path):
    calls, saved = _final_with_look(monkeypatch, tmp_path, accepted=False)
    assert calls == ["look"] and saved["model"] == "trial model" and saved["refit"] is None
    assert "validated acc 0.8000 against the trial's 0.9000" in saved["refit_skipped"]
    assert "second_look" not in saved


class Recording(Budget):
    """A deadline never passed that records each epoch's time and each predicted next epoch."""

    def __init__(self):
        super().__init__(1000.0)
        self.noted, self.predicted = [], []

    def note_epoch(self, seconds):
        super().note_epoch(seconds)
        self.noted.append(seconds)

    def passed(self, within=0.0):
        self.predicted.append(within)
        return False


def test_a_stage_on_more_rows_is_predicted_to_take_longer_per_its_steps(tiny_model):
    """Whether the next epoch fits before the deadline is judged by the last epoch's time per
    step times this stage's steps: self-training's student epoch (labelled + pseudo-labelled
    rows) is not judged by the teacher's shorter epoch."""
    import math

    from autotl.batching import concat
    from autotl.strategy import StageRows

    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    head = tuple(model.head_parameters())
    tripled = lambda model, context: StageRows(concat(concat(context.train, context.train), context.train))  # noqa: E731
    plan = Plan((Stage((ParamGroup(head, 1e-2),), 1), Stage((ParamGroup(head, 1e-2),), 1, start=tripled)),
                batch_size=8)
    deadline = Recording()
    fit(model, plan, train, val, replace(settings, deadline=deadline))
    steps, student_steps = math.ceil(len(train) / 8), math.ceil(3 * len(train) / 8)
    assert deadline.predicted[0] == pytest.approx(deadline.noted[0] * student_steps / steps)
