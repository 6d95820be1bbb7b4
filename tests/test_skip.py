"""A trial that would not finish in what is left of the budget is skipped, not cut."""

from dataclasses import replace

import optuna
import pytest

from autotl.budget import Budget
from autotl.objective import PLANNED_EPOCHS, RELATIVE_COST, SKIPPED, Objective, TrialSetup
from autotl.plugins import Registry
from autotl.study import did_not_run, remaining_trials
from autotl.testing import LABELS, tiny_setup


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tiny_model_dir):
    train, val, settings = tiny_setup(tiny_model_dir)
    strategies = Registry().select(["linear_probe", "full_finetune"])
    return TrialSetup(backbone_path=tiny_model_dir, strategies=strategies, poolings=("mean",), train=train,
                      val=val, label_names=LABELS, num_outputs=2, fit=replace(settings, max_epochs=1))


def _finished(study, strategy, seconds, relative_cost, epochs=1, **attrs):
    dist = {"strategy": optuna.distributions.CategoricalDistribution(["linear_probe", "full_finetune", "freeze"])}
    study.add_trial(optuna.trial.create_trial(
        params={"strategy": strategy}, distributions=dist, value=0.5,
        intermediate_values={e: 0.5 for e in range(epochs)},
        user_attrs={"seconds": seconds, RELATIVE_COST: relative_cost, **attrs}))


def _run_one(setup, study, deadline):
    study.optimize(Objective(replace(setup, fit=replace(setup.fit, deadline=deadline))), n_trials=1)
    return study.trials[-1]


def test_a_portfolio_trial_estimated_from_relative_costs_is_skipped_when_it_cannot_finish(setup):
    clock = Clock()
    study = optuna.create_study(direction="maximize")
    _finished(study, "linear_probe", seconds=10.0, relative_cost=0.1)  # one cost unit = 100 s
    study.enqueue_trial({"strategy": "full_finetune", "head.pooling": "mean",
                         **setup.strategies["full_finetune"].strategy.defaults}, user_attrs={RELATIVE_COST: 2.0})
    trial = _run_one(setup, study, Budget(150.0, clock=clock))  # about 200 s needed
    assert trial.state.name == "PRUNED" and "needs about 200 s" in trial.user_attrs[SKIPPED]
    assert did_not_run(trial) and remaining_trials(study, 2) == 1  # it does not count


@pytest.mark.parametrize("seconds", [1000.0, 300.0])  # 300 s: the trial fits, its refit would not
def test_the_same_trial_runs_when_it_fits(setup, seconds):
    study = optuna.create_study(direction="maximize")
    _finished(study, "linear_probe", seconds=10.0, relative_cost=0.1)
    study.enqueue_trial({"strategy": "full_finetune", "head.pooling": "mean",
                         **setup.strategies["full_finetune"].strategy.defaults}, user_attrs={RELATIVE_COST: 2.0})
    trial = _run_one(setup, study, Budget(seconds, clock=Clock()))  # about 200 s needed
    assert trial.state.name == "COMPLETE" and SKIPPED not in trial.user_attrs


def test_a_strategys_own_history_estimates_its_next_trial(setup):
    study = optuna.create_study(direction="maximize")
    _finished(study, "full_finetune", seconds=90.0, relative_cost=None, epochs=3)  # 30 s per epoch
    params = {"strategy": "full_finetune", "head.pooling": "mean",
              **{**setup.strategies["full_finetune"].strategy.defaults, "full_finetune.epochs": 10}}
    study.enqueue_trial(params)
    trial = _run_one(setup, study, Budget(250.0, clock=Clock()))  # 300 s needed
    assert "needs about 300 s" in trial.user_attrs[SKIPPED]


def test_a_cost_unit_read_from_a_trial_the_timeout_cut_counts_its_planned_epochs(setup):
    """10 s for 1 of its 4 planned epochs at relative cost 0.1: one unit is 400 s, not 100 s,
    so a configuration of cost 2 needs about 800 s and is skipped with 500 s left (it ran,
    and was cut in turn, when the unit came from the cut trial's own seconds)."""
    study = optuna.create_study(direction="maximize")
    _finished(study, "linear_probe", seconds=10.0, relative_cost=0.1, epochs=1, **{PLANNED_EPOCHS: 4})
    study.enqueue_trial({"strategy": "full_finetune", "head.pooling": "mean",
                         **setup.strategies["full_finetune"].strategy.defaults}, user_attrs={RELATIVE_COST: 2.0})
    trial = _run_one(setup, study, Budget(500.0, clock=Clock()))
    assert trial.state.name == "PRUNED" and "needs about 800 s" in trial.user_attrs[SKIPPED]


def test_a_trial_cut_by_the_timeout_records_the_epochs_it_planned(setup):
    from autotl.objective import HORIZON

    class OneEpoch(Budget):  # room for one epoch: passed once one ended, none left after it
        def __init__(self):
            super().__init__(1000.0)
            self.noted = 0

        def note_epoch(self, seconds):
            super().note_epoch(seconds)
            self.noted += 1

        def passed(self, within=0.0):
            return self.noted >= 1

        def remaining(self):
            return 1000.0 if self.noted == 0 else -1.0

    study = optuna.create_study(direction="maximize")
    params = {"strategy": "linear_probe", "head.pooling": "mean",
              **{**setup.strategies["linear_probe"].strategy.defaults, "linear_probe.epochs": 10}}
    study.enqueue_trial(params)
    cut = _run_one(replace(setup, fit=replace(setup.fit, max_epochs=None)), study, OneEpoch())
    assert cut.state.name == "COMPLETE" and cut.user_attrs[PLANNED_EPOCHS] == 10 and HORIZON in cut.user_attrs
    study.enqueue_trial({**params, "linear_probe.epochs": 11})
    whole = _run_one(setup, study, None)  # max_epochs=1: it ran all it planned
    assert PLANNED_EPOCHS not in whole.user_attrs


def test_the_baseline_recipe_is_the_unit_of_every_relative_cost():
    """Its trial is estimated like any portfolio trial: skipped when it cannot finish."""
    from autotl.portfolio import cost_key, relative_costs

    for rows in (300, 1000, 50_000):
        costs = relative_costs(rows)
        assert costs[cost_key({"strategy": "baseline"})] == 1.0
    assert cost_key({"strategy": "baseline", "backbone": "b"}) == cost_key({"strategy": "baseline"})


def test_a_strategy_never_seen_is_estimated_from_the_costliest_epoch_so_far(setup):
    """No finished trial of its own and no relative cost (a sampled configuration): before,
    it had no estimate and started with 100 s left (measured: the refit's reserve eaten);
    now it needs about 3 x 40 s, the costliest epoch seen (the full fine-tune's, not the
    probe's 1 s), and is skipped."""
    setup = replace(setup, strategies=Registry().select(["linear_probe", "full_finetune", "freeze"]))
    study = optuna.create_study(direction="maximize")
    _finished(study, "linear_probe", seconds=25.0, relative_cost=None, epochs=25)  # 1 s per epoch
    _finished(study, "full_finetune", seconds=80.0, relative_cost=None, epochs=2)  # 40 s per epoch
    params = {"strategy": "freeze", "head.pooling": "mean",
              **{**setup.strategies["freeze"].strategy.defaults, "freeze.epochs": 3}}
    study.enqueue_trial(params)
    trial = _run_one(setup, study, Budget(100.0, clock=Clock()))
    assert trial.state.name == "PRUNED" and "needs about 120 s" in trial.user_attrs[SKIPPED]


def test_the_first_trial_of_a_study_has_no_estimate_and_runs(setup):
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"strategy": "linear_probe", "head.pooling": "mean",
                         **setup.strategies["linear_probe"].strategy.defaults})
    trial = _run_one(setup, study, Budget(1.0, clock=Clock()))
    assert trial.state.name == "COMPLETE" and SKIPPED not in trial.user_attrs


def test_a_backbone_nothing_finished_on_is_estimated_from_another_scaled_by_their_forward_passes():
    """A several-backbone search: the first trial on the large backbone had no estimate, so it
    started and was cut to the epochs left, where the small backbone's trials would have fitted."""
    from types import SimpleNamespace

    from autotl.objective import BACKBONE, _estimated_seconds
    from autotl.study import TRANSFERABILITY

    study = optuna.create_study(direction="maximize")
    dist = {BACKBONE: optuna.distributions.CategoricalDistribution(["small", "large"]),
            "strategy": optuna.distributions.CategoricalDistribution(["linear_probe", "full_finetune"])}
    study.add_trial(optuna.trial.create_trial(
        params={BACKBONE: "small", "strategy": "full_finetune"}, distributions=dist, value=0.5,
        intermediate_values={e: 0.5 for e in range(4)}, user_attrs={"seconds": 40.0}))  # 10 s per epoch
    params = {BACKBONE: "large", "strategy": "full_finetune", "full_finetune.epochs": 3}
    trial = SimpleNamespace(study=study, user_attrs={})
    assert _estimated_seconds(trial, "full_finetune", params) is None  # no forward-pass times: no scale
    study.set_user_attr(TRANSFERABILITY, [{"backbone": "large", "seconds": 14.0},
                                          {"backbone": "small", "seconds": 2.0}])
    assert _estimated_seconds(trial, "full_finetune", params) == pytest.approx(3 * 10.0 * 7.0)
    # the small backbone's own estimate is unchanged: its own trials
    assert _estimated_seconds(trial, "full_finetune", {**params, BACKBONE: "small"}) == pytest.approx(30.0)
