"""Pruners: successive halving and median, each within a (strategy, head) family."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from autotl.errors import UsageError
from autotl.study import FamilyHalvingPruner, FamilyMedianPruner, make_pruner

DISTS = {"strategy": CategoricalDistribution(["full_finetune", "linear_probe"]),
         "head.pooling": CategoricalDistribution(["mean", "standard"])}


def _trial(strategy, curve, state=TrialState.COMPLETE, head="mean"):
    return create_trial(params={"strategy": strategy, "head.pooling": head}, distributions=DISTS,
                        intermediate_values=dict(enumerate(curve)), state=state,
                        value=curve[-1] if state is TrialState.COMPLETE else None)


def _study(*trials, direction="maximize"):
    study = optuna.create_study(direction=direction)
    for t in trials:
        study.add_trial(t)
    return study


def _judge(pruner, study, curve, strategy="full_finetune", head="mean"):
    study.add_trial(_trial(strategy, curve, state=TrialState.PRUNED, head=head))
    return pruner.prune(study, study.trials[-1])


def test_halving_keeps_only_the_top_third_of_the_family_at_epoch_two():
    pruner = FamilyHalvingPruner()
    peers = [_trial("full_finetune", [0.6, 0.9, 0.91]), _trial("full_finetune", [0.6, 0.8])]
    assert _judge(pruner, _study(*peers), [0.7, 0.85])  # 2nd of 3: pruned
    assert not _judge(pruner, _study(*peers), [0.5, 0.95])  # the best goes on, whatever epoch 1 said


def test_halving_prunes_only_at_rungs():
    pruner = FamilyHalvingPruner(min_epochs=2, reduction_factor=3)
    assert [e for e in range(1, 20) if pruner._is_rung(e)] == [2, 6, 18]
    peers = [_trial("full_finetune", [0.9, 0.9, 0.9, 0.9])]
    for curve in ([0.1], [0.1, 0.1, 0.1]):  # epochs 1 and 3: no rung, never pruned
        assert not _judge(pruner, _study(*peers), curve)


def test_halving_compares_a_trial_with_its_own_family_only():
    strong_probes = [_trial("linear_probe", [0.95, 0.95]) for _ in range(3)]
    other_head = [_trial("full_finetune", [0.95, 0.95], head="standard")]
    assert not _judge(FamilyHalvingPruner(), _study(*strong_probes, *other_head), [0.5, 0.6])


def test_halving_reads_running_trials_and_minimizing_metrics():
    running = _trial("full_finetune", [0.4, 0.2], state=TrialState.RUNNING)
    assert _judge(FamilyHalvingPruner(), _study(running, direction="minimize"), [0.4, 0.3])
    assert not _judge(FamilyHalvingPruner(), _study(running, direction="minimize"), [0.4, 0.1])


def test_median_prunes_below_the_family_median_after_the_warmup_epoch():
    peers = [_trial("full_finetune", [0.6, 0.8]), _trial("full_finetune", [0.6, 0.9])]
    assert _judge(FamilyMedianPruner(), _study(*peers), [0.7, 0.7])
    assert not _judge(FamilyMedianPruner(), _study(*peers), [0.1])  # epoch 1: warmup
    assert not _judge(FamilyMedianPruner(), _study(peers[0]), [0.7, 0.1])  # too few peers


def test_unknown_pruner_is_a_usage_error():
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(UsageError, match="unknown pruner 'fast'.*halving"):
        make_pruner("fast")
