"""The baseline recipe is a trial like any other, with exactly the hand recipe's settings."""

import optuna

from autotl.objective import POOLING, STRATEGY, Objective, head_of
from autotl.plugins import Registry


def test_baseline_plan_is_the_trainer_recipe(tiny_model):
    baseline = Registry().strategies()["baseline"].strategy
    assert baseline.head == "standard" and baseline.defaults == {}
    assert baseline.search_space(optuna.trial.FixedTrial({})) == {}
    model = tiny_model("standard")
    plan = baseline.prepare(model, {})
    (stage,) = plan.stages
    (group,) = stage.groups
    # Hugging Face Trainer defaults with the recipe's lr, epochs and batch size
    assert (group.lr, stage.epochs, plan.batch_size, plan.warmup_ratio, group.weight_decay) == (5e-5, 3, 32, 0.0, 0.0)
    assert stage.penalty is None and plan.finalize is None
    assert {id(p) for p in group.params} == {id(p) for p in model.parameters()}  # every weight trains


def test_the_baseline_head_is_fixed_not_searched(tiny_model_dir):
    from dataclasses import replace

    from autotl.objective import TrialSetup
    from autotl.testing import LABELS, tiny_setup

    strategies = Registry().select(["baseline", "linear_probe"])
    baseline = strategies["baseline"].strategy
    assert head_of({STRATEGY: "baseline", POOLING: "mean"}, baseline) == "standard"
    train, val, settings = tiny_setup(tiny_model_dir)
    setup = TrialSetup(backbone_path=tiny_model_dir, strategies=strategies, poolings=("standard", "mean"),
                       train=train, val=val, label_names=LABELS, num_outputs=2, fit=replace(settings, max_epochs=1))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({STRATEGY: "baseline"})
    study.optimize(Objective(setup), n_trials=1)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE"
    assert trial.params == {STRATEGY: "baseline"}  # no head parameter to search
    assert trial.user_attrs["head"] == "standard" and trial.user_attrs["trainable_params"] > 0
    assert len(trial.user_attrs["val_predictions"]) == len(val)
