"""The first trials carry their rank in the prior (study.PRIOR_RANK) to the choice."""

import optuna

from autotl.study import PRIOR_RANK, REQUEUED_FROM, create_or_resume, prior_ranks, recover_dead_trials


def test_first_trials_rank_in_their_order_with_the_baseline_recipe_last():
    portfolio = [{"strategy": "llrd"}, {"strategy": "baseline"}, {"strategy": "lp_ft"}, {"strategy": "bss"}]
    assert prior_ranks(portfolio) == [0, 3, 1, 2]
    assert prior_ranks([]) == []


def test_enqueued_first_trials_carry_their_rank():
    portfolio = [{"strategy": "linear_probe", "head.pooling": "mean"}, {"strategy": "baseline"},
                 {"strategy": "full_finetune", "head.pooling": "mean"}]
    study = create_or_resume(storage=optuna.storages.InMemoryStorage(), study_name="s", identity={"data": "x"},
                             maximize=True, seed=0, portfolio=portfolio)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"]["strategy"], t.user_attrs[PRIOR_RANK]) for t in waiting] == [
        ("linear_probe", 0), ("baseline", 2), ("full_finetune", 1)]


def test_a_requeued_trial_keeps_its_rank():
    from autotl import heartbeat

    study = optuna.create_study()
    study.enqueue_trial({"strategy": "linear_probe"}, user_attrs={PRIOR_RANK: 4})
    trial = study.ask({"strategy": optuna.distributions.CategoricalDistribution(["linear_probe"])})
    trial.set_user_attr("worker", "elsewhere:1:abcd")
    trial.set_user_attr("heartbeat", 0.0)  # silent far longer than the grace
    assert heartbeat.silent_for(study.trials[trial.number]) > heartbeat.GRACE
    assert recover_dead_trials(study) == 1
    requeued = [t for t in study.trials if t.state.name == "WAITING"]
    assert [(t.user_attrs[REQUEUED_FROM], t.user_attrs[PRIOR_RANK]) for t in requeued] == [(trial.number, 4)]


def test_a_resumed_study_s_sampler_waits_out_the_same_first_trials():
    storage = optuna.storages.InMemoryStorage()
    portfolio = [{"strategy": f"s{i}"} for i in range(8)]
    kw = dict(storage=storage, study_name="s", identity={"data": "x"}, maximize=True, seed=0)
    new = create_or_resume(**kw, portfolio=portfolio)
    resumed = create_or_resume(**kw, portfolio=lambda: [])  # resuming computes no portfolio
    assert new.sampler._n_startup_trials == resumed.sampler._n_startup_trials == 8
    assert resumed.sampler._multivariate and resumed.sampler._group
