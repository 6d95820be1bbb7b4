"""The learned first-trial portfolio: the shipped file, buckets, the baseline, new plugins."""

import json

import pytest

from autotl import portfolio
from autotl.errors import UsageError
from autotl.plugins import Registry


def _entry(strategy, head="mean", **params):
    p = {"strategy": strategy, **({"head.pooling": head} if head else {}),
         **{f"{strategy}.{k}": v for k, v in params.items()}}
    return {"name": strategy, "params": p}


def _write(tmp_path, buckets, evaluated=("linear_probe", "full_finetune", "freeze", "baseline")):
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps({"evaluated_strategies": list(evaluated), "buckets": buckets}))
    return path


UNLABELED = ("tapt", "self_training", "probe_self_training")  # offered only with unlabeled rows


@pytest.fixture(scope="module")
def installed():
    return Registry().strategies()


def test_the_shipped_portfolio_is_valid_for_the_installed_strategies(installed):
    content = portfolio.load()
    assert content["buckets"], "the shipped portfolio has no bucket"
    for bucket in content["buckets"]:
        assert bucket["order"], bucket
        for entry in bucket["order"]:
            params = entry["params"]
            reg = installed[params["strategy"]]
            own = {k: v for k, v in params.items() if k.startswith(params["strategy"] + ".")}
            # every shipped configuration lies inside its strategy's own search space
            import optuna

            study = optuna.create_study()
            study.enqueue_trial(own)
            assert reg.strategy.search_space(study.ask()) == own, entry["name"]
    trials = portfolio.first_trials(installed, ("standard", "mean"), rows=1000)
    assert {"strategy": "baseline"} in trials[:portfolio.BASELINE_WITHIN]


def test_the_bucket_follows_the_number_of_labelled_rows(tmp_path, installed):
    path = _write(tmp_path, [
        {"max_rows": 500, "order": [_entry("linear_probe", lr=0.01, epochs=25, batch_size=32, weight_decay=0.0)]},
        {"max_rows": None, "order": [_entry("full_finetune", lr=5e-5, epochs=3, batch_size=32, weight_decay=0.01)]},
    ])
    small = portfolio.first_trials(installed, ("standard", "mean"), rows=300, path=path)
    large = portfolio.first_trials(installed, ("standard", "mean"), rows=5000, path=path)
    assert small[0]["strategy"] == "linear_probe" and large[0]["strategy"] == "full_finetune"


def test_baseline_is_among_the_first_trials_even_when_the_evidence_ranks_it_low(tmp_path, installed):
    order = [_entry("linear_probe"), _entry("full_finetune"), _entry("freeze"), _entry("lp_ft"),
             _entry("baseline", head=None)]
    path = _write(tmp_path, [{"max_rows": None, "order": order}])
    labelled = {k: v for k, v in installed.items() if k not in UNLABELED}  # what labelled-only data is offered
    trials = portfolio.first_trials(labelled, ("standard", "mean"), rows=100, path=path)
    assert [t["strategy"] for t in trials[:4]] == ["linear_probe", "full_finetune", "baseline", "freeze"]
    assert sum(t["strategy"] == "baseline" for t in trials) == 1


def test_standard_head_only_drops_mean_configurations_but_keeps_the_baseline(tmp_path, installed):
    path = _write(tmp_path, [{"max_rows": None, "order": [
        _entry("linear_probe"), _entry("full_finetune", head="standard"), _entry("baseline", head=None)]}])
    trials = portfolio.first_trials(installed, ("standard",), rows=100, path=path)
    assert [t["strategy"] for t in trials[:2]] == ["full_finetune", "baseline"]
    assert all(t.get("head.pooling", "standard") == "standard" for t in trials)


def test_a_strategy_without_evidence_gets_its_default_trial_after_the_learned_ones(tmp_path, installed):
    path = _write(tmp_path, [{"max_rows": None, "order": [_entry("linear_probe"), _entry("baseline", head=None)]}],
                  evaluated=("linear_probe", "baseline", "full_finetune"))
    picked = {n: installed[n] for n in ("linear_probe", "baseline", "full_finetune", "bitfit")}
    trials = portfolio.first_trials(picked, ("standard", "mean"), rows=100, path=path)
    # bitfit was never evaluated: its default runs; full_finetune was, and lost: the sampler may try it
    assert [t["strategy"] for t in trials] == ["linear_probe", "baseline", "bitfit"]
    assert trials[-1] == {"strategy": "bitfit", "head.pooling": "mean", **installed["bitfit"].strategy.defaults}
    named = portfolio.first_trials(picked, ("standard", "mean"), rows=100, path=path, each_strategy=True)
    assert [t["strategy"] for t in named] == ["linear_probe", "baseline", "full_finetune", "bitfit"]


def test_named_strategies_each_get_a_trial_before_any_gets_a_second(tmp_path, installed):
    # Learned order: two full fine-tunes before the probe; a user who names three strategies
    # and runs three trials compares all three.
    order = [_entry("full_finetune", lr=1e-4), _entry("full_finetune", lr=5e-5), _entry("linear_probe"),
             _entry("freeze")]
    path = _write(tmp_path, [{"max_rows": None, "order": order}])
    picked = {n: installed[n] for n in ("full_finetune", "linear_probe", "l2sp")}
    named = portfolio.first_trials(picked, ("mean",), rows=100, path=path, each_strategy=True)
    assert [t["strategy"] for t in named] == ["full_finetune", "linear_probe", "l2sp", "full_finetune"]
    assert named[0]["full_finetune.lr"] == 1e-4 and named[3]["full_finetune.lr"] == 5e-5
    learned = portfolio.first_trials(picked, ("mean",), rows=100, path=path)
    assert [t["strategy"] for t in learned[:2]] == ["full_finetune", "full_finetune"]


@pytest.mark.parametrize("content, fragment", [(None, "not found"), ("{not json", "not readable JSON"),
                                               ('{"buckets": []}', "no 'buckets' list")])
def test_a_bad_portfolio_file_is_one_clear_error(tmp_path, content, fragment):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=fragment):
        portfolio.load(path)


def _first(trials, name):
    return next(t for t in trials if t["strategy"] == name)


def test_tapt_and_self_training_fine_tune_as_the_buckets_first_full_fine_tune_with_their_head(tmp_path, installed):
    path = _write(tmp_path, [{"max_rows": None, "order": [
        _entry("linear_probe", lr=0.01, epochs=25, batch_size=32, weight_decay=0.0),
        _entry("full_finetune", head="standard", lr=1e-4, epochs=6, batch_size=16, weight_decay=0.02),
        _entry("full_finetune", lr=5e-5, epochs=10, batch_size=16, weight_decay=0.03),
        _entry("full_finetune", lr=1e-4, epochs=4, batch_size=32, weight_decay=0.0)]}])
    trials = portfolio.first_trials(installed, ("standard", "mean"), rows=100, path=path)
    for name, own in (("tapt", {"tapt.mlm_steps": 100}), ("self_training", {"self_training.threshold": 0.9})):
        trial = _first(trials, name)
        # the first learned mean-head full fine-tune's settings: the default trial's head stays mean
        assert {k: trial[k] for k in (f"{name}.lr", f"{name}.epochs", f"{name}.batch_size", f"{name}.weight_decay",
                                      "head.pooling")} == {f"{name}.lr": 5e-5, f"{name}.epochs": 10,
                                                           f"{name}.batch_size": 16, f"{name}.weight_decay": 0.03,
                                                           "head.pooling": "mean"}
        assert own.items() <= trial.items()  # its own parameters keep their defaults
    # a strategy that does not train like another keeps its literature defaults
    assert _first(trials, "bitfit") == {"strategy": "bitfit", "head.pooling": "mean",
                                        **installed["bitfit"].strategy.defaults}


def test_inherited_settings_stay_inside_the_strategys_space_and_the_allowed_heads(tmp_path, installed):
    import optuna

    path = _write(tmp_path, [{"max_rows": None, "order": [
        _entry("full_finetune", head="standard", lr=5e-4, epochs=12, batch_size=64, weight_decay=0.01)]}])
    trials = portfolio.first_trials(installed, ("mean",), rows=100, path=path)
    trial = _first(trials, "tapt")
    assert (trial["tapt.lr"], trial["tapt.epochs"], trial["tapt.batch_size"]) == (1.5e-4, 10, 32)
    assert trial["head.pooling"] == "mean"  # no mean-head entry: the first one's settings, the head its own
    study = optuna.create_study()
    own = {k: v for k, v in trial.items() if k.startswith("tapt.")}
    study.enqueue_trial(own)
    assert installed["tapt"].strategy.search_space(study.ask()) == own


def test_without_a_learned_full_fine_tune_tapt_keeps_its_defaults(tmp_path, installed):
    path = _write(tmp_path, [{"max_rows": None, "order": [_entry("linear_probe", lr=0.01, epochs=25, batch_size=32,
                                                                 weight_decay=0.0)]}])
    trial = _first(portfolio.first_trials(installed, ("standard", "mean"), rows=100, path=path), "tapt")
    assert trial == {"strategy": "tapt", "head.pooling": "mean", **installed["tapt"].strategy.defaults}

