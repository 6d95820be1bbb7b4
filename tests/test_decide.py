"""The end-of-search decision on a real Optuna study: finalists, re-scoring folds, the choice.

Training is replaced by canned predictions (what each configuration would predict on each
fold), so the test is about the decision alone.
"""

import types

import numpy as np
import optuna
import pytest

from autotl import decide
from autotl.batching import Encoded
from autotl.metrics import METRICS
from autotl.objective import VAL_PREDICTIONS, TrialSetup, compact
from autotl.study import PRIOR_RANK
from autotl.train import FitSettings


def _encoded(targets, key):
    return Encoded(tuple((1, 2, 3) for _ in targets), np.asarray(targets), key)


def _setup(n_train=400, n_val=100):
    train = _encoded(np.array([0, 1] * (n_train // 2)), "train")
    val = _encoded(np.array([0, 1] * (n_val // 2)), "val")
    fit = FitSettings(metric=METRICS["accuracy"], regression=False, pad_id=0)
    return TrialSetup(backbone_path="", strategies={}, poolings=("mean",), train=train, val=val,
                      label_names=("0", "1"), num_outputs=2, fit=fit)


def _flip(targets, share, offset=0):
    out = np.array(targets).copy()
    n = int(round(share * len(out)))
    idx = (np.arange(n) + offset) % len(out)
    out[idx] = 1 - out[idx]
    return out


def _study(setup, configs, ranks=None):
    """A study with one COMPLETE trial per config: name -> (cost, error share on validation);
    a config's trainable weights are its cost x 1000 (the cheap one is also the simpler);
    `ranks` (name -> prior rank) marks first trials, the others are the sampler's."""
    study = optuna.create_study(direction="maximize")
    for i, (name, (cost, share)) in enumerate(configs.items()):
        predicted = _flip(setup.val.targets, share, offset=i)
        ranked = {PRIOR_RANK: ranks[name]} if ranks and name in ranks else {}
        trial = optuna.trial.create_trial(
            params={"strategy": name}, distributions={"strategy": optuna.distributions.CategoricalDistribution(
                list(configs))}, value=float(np.mean(predicted == setup.val.targets)),
            user_attrs={VAL_PREDICTIONS: compact(predicted), "seconds": cost, "trainable_params": int(cost * 1000),
                        **ranked})
        study.add_trial(trial)
    return study


@pytest.fixture
def fake_training(monkeypatch):
    """Replace training with canned fold predictions: share of wrong rows per strategy."""
    shares, calls = {}, []

    def run_params(setup, params, desc=""):
        calls.append((params["strategy"], desc))
        predicted = _flip(setup.val.targets, shares[params["strategy"]], offset=len(calls))
        return types.SimpleNamespace(result=types.SimpleNamespace(val_predictions=predicted))

    monkeypatch.setattr(decide, "run_params", run_params)
    return shares, calls


def test_rescoring_and_the_tie_rule_pick_the_simpler_cheaper_of_two_tied_configurations(fake_training):
    shares, calls = fake_training
    setup = _setup()
    # On 100 validation rows the costly one leads by a point; on the folds they are equal.
    study = _study(setup, {"costly": (100.0, 0.10), "cheap": (5.0, 0.11), "bad": (1.0, 0.45)})
    shares.update(costly=0.10, cheap=0.10, bad=0.45)
    decision = decide.decide(study, setup, max_rounds=2)
    chosen = study.trials[decision.chosen].params["strategy"]
    assert chosen == "cheap"
    assert decision.rounds == 2
    # only the two finalists were re-scored, each once per fold
    assert sorted(c[0] for c in calls) == ["cheap", "cheap", "costly", "costly"]
    record = study.user_attrs[decide.CHOICE]
    assert record["chosen"] == decision.chosen and record["rounds"] == 2
    assert {f["label"].split()[2].split("/")[0] for f in record["finalists"]} == {"costly", "cheap"}
    assert all(f["rows"] == 100 + 2 * 100 for f in record["finalists"])  # validation + two folds of 100


def test_after_rescoring_a_tie_goes_to_the_first_trial_the_prior_ranks_higher(fake_training):
    shares, calls = fake_training
    setup = _setup()
    # As above, but both are first trials and the costly one came first: the prior decides.
    study = _study(setup, {"costly": (100.0, 0.10), "cheap": (5.0, 0.11), "bad": (1.0, 0.45)},
                   ranks={"costly": 0, "cheap": 1, "bad": 2})
    shares.update(costly=0.10, cheap=0.10, bad=0.45)
    decision = decide.decide(study, setup, max_rounds=2)
    assert study.trials[decision.chosen].params["strategy"] == "costly"
    record = study.user_attrs[decide.CHOICE]
    assert {f["label"].split()[2].split("/")[0]: f["prior"] for f in record["finalists"]} == {"costly": 0, "cheap": 1}
    assert "by the evidence the first trials came from" in record["reason"]


def test_rescoring_keeps_the_better_configuration_when_folds_separate_them(fake_training):
    shares, calls = fake_training
    setup = _setup()
    study = _study(setup, {"costly": (100.0, 0.10), "cheap": (5.0, 0.11)})
    shares.update(costly=0.05, cheap=0.20)  # on more rows the costly one is clearly better
    decision = decide.decide(study, setup, max_rounds=2)
    assert study.trials[decision.chosen].params["strategy"] == "costly"


def test_no_rescoring_when_validation_already_decides(fake_training):
    shares, calls = fake_training
    setup = _setup()
    study = _study(setup, {"good": (100.0, 0.05), "bad": (5.0, 0.40)})
    decision = decide.decide(study, setup, max_rounds=2)
    assert calls == [] and decision.rounds == 0
    assert study.trials[decision.chosen].params["strategy"] == "good"


def test_rescoring_stops_when_the_budget_cannot_hold_a_round(fake_training):
    shares, calls = fake_training
    setup = _setup()
    study = _study(setup, {"costly": (100.0, 0.10), "cheap": (5.0, 0.11)})
    shares.update(costly=0.10, cheap=0.10)
    budget = types.SimpleNamespace(fits=lambda seconds: seconds < 50)
    decision = decide.decide(study, setup, budget=budget, max_rounds=2)
    assert calls == [] and decision.rounds == 0


def test_fold_predictions_are_kept_so_a_resumed_search_does_not_redo_them(fake_training):
    shares, calls = fake_training
    setup = _setup()
    study = _study(setup, {"costly": (100.0, 0.10), "cheap": (5.0, 0.11)})
    shares.update(costly=0.10, cheap=0.10)
    decide.decide(study, setup, max_rounds=1)
    assert len(calls) == 2
    decide.decide(study, setup, max_rounds=1)
    assert len(calls) == 2


def test_folds_are_disjoint_stratified_and_never_include_the_validation_rows():
    setup = _setup(n_train=400, n_val=100)
    seen = []
    for fold in range(1, decide.FOLDS):
        train, val = decide.fold_rows(setup.train, setup.val, fold, seed=0, regression=False)
        assert len(train) + len(val) == 500 and len(val) == 100
        assert abs(int(val.targets.sum()) - 50) <= 1  # stratified
        assert train.key.endswith("val")  # the search's validation rows train here
        seen.append(val.key)
    assert len(set(seen)) == decide.FOLDS - 1


def test_multitask_folds_are_stratified_by_the_first_classification_task():
    """A multi-task search's targets are rows x tasks (class ids beside a regression task's
    values): its folds follow the classification task's classes, as its validation split
    does, not the multi-label strata (which read ids and values as label counts: measured, a
    class of 8 rows landed 1, 0, 4 and 3 times in the four folds)."""
    from autotl.multitask import TaskSpec

    rng = np.random.default_rng(0)
    classes = np.random.default_rng(10).permutation([0] * 292 + [1] * 100 + [2] * 8)
    targets = np.stack([classes, rng.normal(50.0, 10.0, 400)], axis=1)
    train, val = _encoded(targets, "train"), _encoded(targets[:100], "val")
    tasks = (TaskSpec("topic", "classification", ("a", "b", "c")), TaskSpec("score", "regression", ()))
    for fold in range(1, decide.FOLDS):
        _, held = decide.fold_rows(train, val, fold, seed=0, regression=False, tasks=tasks)
        assert [int((held.targets[:, 0] == c).sum()) for c in (0, 1, 2)] == [73, 25, 2], fold
    # every task a regression: no strata, and no crash
    values = _encoded(targets[:, 1:], "train")
    _, held = decide.fold_rows(values, values, 1, seed=0, regression=False, tasks=(tasks[1],))
    assert len(held) == 100
