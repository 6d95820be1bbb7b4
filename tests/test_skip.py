"""A trial that would not finish in what is left of the budget is skipped, not cut."""

from dataclasses import replace

import optuna
import pytest

from autotl.budget import Budget
from autotl.objective import RELATIVE_COST, SKIPPED, Objective, TrialSetup
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


def _finished(study, strategy, seconds, relative_cost, epochs=1):
    dist = {"strategy": optuna.distributions.CategoricalDistribution(["linear_probe", "full_finetune"])}
    study.add_trial(optuna.trial.create_trial(
        params={"strategy": strategy}, distributions=dist, value=0.5,
        intermediate_values={e: 0.5 for e in range(epochs)},
        user_attrs={"seconds": seconds, RELATIVE_COST: relative_cost}))


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
