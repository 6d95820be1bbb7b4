"""End to end on the tiny BERT: the search, its outputs, resume, kill, pipeline, predict."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import torch

import autotl
import autotl.plugins  # noqa: F401  (the tests read autotl.plugins.Registry; alone, nothing else imports it)
from autotl.errors import UsageError
from autotl.export import load_model, save_best
from autotl.storage import open_storage
from autotl.testing import sentiment_rows

def probe_variant(name: str, prepare_body: str) -> str:
    """Source of a plugin module: a linear probe named `name` with another prepare()."""
    return f'''
import time
from dataclasses import dataclass, field
import autotl
from autotl.strategies.probe import LinearProbe

@dataclass
class Variant(LinearProbe):
    name: str = "{name}"
    description: str = "a linear probe that behaves differently in prepare()"
    defaults: dict = field(default_factory=lambda: {{
        f"{name}.{{k.split('.', 1)[1]}}": v for k, v in LinearProbe().defaults.items()}})

    def prepare(self, model, params):
        {prepare_body}

@autotl.hookimpl
def autotl_strategies():
    return [Variant()]
'''


BROKEN = probe_variant("broken", 'raise RuntimeError("boom: this strategy cannot prepare")')
# The slow prepare() marks that it started: every parameter of its trial is drawn by then
# (a kill while they were still being drawn left a partial configuration that the resumed
# search completes differently, and the test saw no rerun of "the same" configuration).
SLOW = ("marker = __import__('os').environ.get('AUTOTL_TEST_MARKER'); "
        "marker and __import__('pathlib').Path(marker).touch(); "
        "time.sleep(30); return super().prepare(model, params)")
FAST = "return super().prepare(model, params)"


def _search(csv, model, out, **kw):
    kw.setdefault("progress", False)
    return autotl.search(csv, model=model, out=out, **kw)


def test_search_writes_leaderboard_report_and_best_model(tiny_csv, tiny_test_csv, tiny_model_dir, tmp_path):
    registry = autotl.plugins.Registry().strategies()
    learned = [{"name": n, "params": {"strategy": n, "head.pooling": "mean", **registry[n].strategy.defaults}}
               for n in ("linear_probe", "full_finetune", "freeze")]
    portfolio = tmp_path / "portfolio.json"
    portfolio.write_text(json.dumps({"evaluated_strategies": ["linear_probe", "full_finetune", "freeze", "baseline"],
                                     "buckets": [{"max_rows": None, "order": learned}]}))
    result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", n_trials=6, test=tiny_test_csv,
                     strategies=["freeze", "full_finetune", "l2sp", "linear_probe", "baseline"], portfolio=portfolio)
    rows = result.leaderboard
    assert len(rows) == 6
    # the learned portfolio runs first, the baseline recipe among its first three, then a
    # strategy the user named that the portfolio does not hold (l2sp) with its defaults
    first = sorted((r for r in rows if r["trial"] < 5), key=lambda r: r["trial"])
    assert [r["strategy"] for r in first] == ["linear_probe", "full_finetune", "baseline", "freeze", "l2sp"]
    for r in first:
        assert r["params"] == registry[r["strategy"]].strategy.defaults
    baseline = next(r for r in rows if r["strategy"] == "baseline")
    assert baseline["head"] == "standard" and baseline["summary"].startswith("the hand recipe")
    complete = [r for r in rows if r["state"] == "complete"]
    assert result.best_score in {r["score"] for r in complete}
    info = json.loads((result.best_model / "autotl.json").read_text())
    assert info["params"] == result.best_params and info["scores"]["val"] == result.best_score
    assert info["trial"] in {r["trial"] for r in complete}
    assert info["data"]["label_names"] == ["negative", "positive"]
    assert set(info["versions"]) >= {"autotl", "torch", "transformers", "optuna"}
    assert set(info["scores"]["test"]["metrics"]) == {"accuracy", "f1_macro", "f1_weighted"}
    assert info["scores"]["test"]["rows"] == 20
    config = json.loads((result.best_model / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    table = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert list(table.columns) == ["trial", "state", "backbone", "strategy", "head", "score", "se", "best_epoch", "epochs",
                                   "seconds", "trainable_params", "summary", "params", "error"]
    assert all(r["epochs"] >= 1 for r in rows if r["state"] in ("complete", "pruned"))
    assert len(json.loads((tmp_path / "run" / "leaderboard.json").read_text())) == 6
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"trial {info['trial']}" in report and "Test set" in report
    assert "How the winner was chosen" in report and "Margin over the baseline recipe" in report
    # accuracy against cost, per strategy: seconds spent and per epoch from the leaderboard
    assert "Score against cost" in report
    probe = [r for r in rows if r["strategy"] == "linear_probe"]
    spent = sum(r["seconds"] for r in probe)
    line = next(line for line in report.splitlines() if line.startswith("| linear_probe |"))
    assert line.split("|")[5].strip() == f"{spent:.0f}"


def test_a_small_budget_runs_the_first_of_the_portfolio_and_lists_only_what_ran(tiny_csv, tiny_model_dir,
                                                                               tmp_path):
    result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", n_trials=2)  # every installed strategy
    from autotl.portfolio import first_trials

    expected = first_trials(autotl.plugins.Registry().strategies(), ("standard", "mean"), rows=60)
    assert [r["strategy"] for r in sorted(result.leaderboard, key=lambda r: r["trial"])] == \
        [t["strategy"] for t in expected[:2]]


def test_rerunning_the_same_command_resumes_the_study(tiny_csv, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    _search(tiny_csv, tiny_model_dir, out, n_trials=2, strategies=["linear_probe"])
    again = _search(tiny_csv, tiny_model_dir, out, n_trials=4, strategies=["linear_probe"])
    assert sorted(r["trial"] for r in again.leaderboard) == [0, 1, 2, 3]
    same = _search(tiny_csv, tiny_model_dir, out, n_trials=4, strategies=["linear_probe"])
    assert len(same.leaderboard) == 4  # budget already spent: nothing new runs
    with pytest.raises(UsageError, match="metric"):
        _search(tiny_csv, tiny_model_dir, out, n_trials=5, strategies=["linear_probe"], metric="f1_macro")


def test_dataframe_input(tiny_model_dir, tmp_path):
    frame = pd.DataFrame(sentiment_rows(40), columns=["review", "sentiment"])
    result = _search(frame, tiny_model_dir, tmp_path / "run", n_trials=1, strategies=["linear_probe"])
    assert result.best_model.is_dir()
    assert autotl.predict(tmp_path / "run", frame)["prediction"].isin(["negative", "positive"]).all()


def test_a_failing_strategy_fails_its_trial_and_the_search_goes_on(tiny_csv, tiny_model_dir, tmp_path, fake_plugin):
    fake_plugin("autotl_broken", BROKEN)
    result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", n_trials=3,
                     strategies=["broken", "linear_probe"])
    failed = [r for r in result.leaderboard if r["state"] == "fail"]
    assert failed and all(r["strategy"] == "broken" for r in failed)
    assert "boom: this strategy cannot prepare" in failed[0]["error"]
    assert result.best_params["strategy"] == "linear_probe"


def test_every_trial_failing_is_a_clear_error(tiny_csv, tiny_model_dir, tmp_path, fake_plugin):
    fake_plugin("autotl_broken2", BROKEN)
    with pytest.raises(autotl.AutotlError, match="no trial finished.*boom"):
        _search(tiny_csv, tiny_model_dir, tmp_path / "run", n_trials=2, strategies=["broken"])


def test_standard_head_winner_loads_in_transformers_pipeline_and_agrees(tiny_csv, tiny_test_csv,
                                                                          tiny_model_dir, tmp_path):
    from transformers import pipeline

    result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", n_trials=3, standard_head=True,
                     strategies=["full_finetune", "linear_probe"])
    assert all(r["head"] == "standard" for r in result.leaderboard)
    info = json.loads((result.best_model / "autotl.json").read_text())
    assert info["head"]["pipeline_compatible"] is True
    ours = autotl.predict(tmp_path / "run", tiny_test_csv)
    texts = ours["text"].tolist()
    theirs = pipeline("text-classification", model=str(result.best_model), device="cpu")(texts)
    assert [t["label"] for t in theirs] == ours["prediction"].tolist()
    probs = ours[["prob_negative", "prob_positive"]].max(axis=1).tolist()
    assert [t["score"] for t in theirs] == pytest.approx(probs, abs=1e-5)
    assert "pipeline" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_exported_model_round_trips_exactly(tiny_model, tiny_model_dir, tmp_path, pooling):
    from autotl.backbone import load_tokenizer

    model = tiny_model(pooling)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # "trained": differs from any fresh init
    model.eval()
    ids = torch.tensor([[2, 5, 6, 17, 3], [2, 9, 3, 0, 0]])
    mask = (ids != 0).long()
    expected = model(ids, mask)
    save_best(model, load_tokenizer(tiny_model_dir), tmp_path, {"data": {}, "trial": 0}, max_length=32)
    loaded, _, info = load_model(tmp_path)
    assert info["head"]["pooling"] == pooling
    assert torch.equal(loaded(ids, mask), expected)


def test_a_killed_search_loses_no_finished_trial_and_resumes(tiny_csv, tiny_model_dir, tmp_path, fake_plugin):
    site = fake_plugin("autotl_sleepy", probe_variant("sleepy", SLOW))
    out = tmp_path / "run"
    # trial 0 (linear_probe) finishes and becomes best/; trial 1 (sleepy) sleeps in prepare()
    proc, cmd, env = _search_until_sleeping(tiny_csv, tiny_model_dir, out, site, "sleepy")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    study = optuna.load_study(study_name="autotl", storage=open_storage(None, out))
    states = {t.number: t.state.name for t in study.trials}
    assert states[0] == "COMPLETE" and "RUNNING" in states.values()
    model, _, info = load_model(out)  # the best model so far is intact
    assert info["trial"] == 0

    # Resume without the slow plugin's sleep: the interrupted trial is failed and re-queued.
    (tmp_path / "site" / "autotl_sleepy.py").write_text(probe_variant("sleepy", FAST))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="autotl", storage=open_storage(None, out))
    trials = study.trials
    killed = [t for t in trials if t.state.name == "FAIL"]
    assert len(killed) == 1 and "died" in killed[0].user_attrs["error"]
    rerun = [t for t in trials if t.params == killed[0].params and t.state.name == "COMPLETE"]
    assert rerun, "the killed trial's configuration was not run again"
    assert trials[0].state.name == "COMPLETE" and trials[0].value == info["scores"]["val"]
    assert len(trials) == 4  # 3 finished + the killed one re-queued once; nothing duplicated


def _search_until_sleeping(csv, model, out, site, sleeper):
    """Start a CLI search of linear_probe then `sleeper` in a subprocess; return it (and its
    command and environment) once trial 0 is best/ and the sleeper's trial is running."""
    cmd = [sys.executable, "-m", "autotl.cli", "search", csv, "--model", model,
           "--strategies", f"linear_probe,{sleeper}", "--n-trials", "3", "--out", str(out), "--no-progress"]
    marker = out.parent / f"{sleeper}.sleeping"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, os.environ.get("PYTHONPATH", "")]),
           # a killed search's trial is taken for dead after 2 s of silence (its heartbeat)
           "AUTOTL_HEARTBEAT_SECONDS": "1", "AUTOTL_HEARTBEAT_GRACE": "2", "AUTOTL_TEST_MARKER": str(marker)}
    # A shell that runs this suite in the background (as CI may) ignores SIGINT, and the
    # child would inherit that; give it the default disposition, as a terminal would.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "best" / "autotl.json").exists() or sleeper not in _running(out) or not marker.exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, f"the search never reached the {sleeper} trial"
        time.sleep(0.2)
    return proc, cmd, env


def _running(out) -> str:
    import optuna

    path = out / "study.journal"
    if not path.exists():
        return ""
    try:
        study = optuna.load_study(study_name="autotl", storage=open_storage(None, out))
    except Exception:
        return ""
    return " ".join(str(t.params.get("strategy")) for t in study.trials if t.state.name == "RUNNING")


def test_ctrl_c_keeps_finished_work_and_requeues_the_cut_trial(tiny_csv, tiny_model_dir, tmp_path, fake_plugin):
    site = fake_plugin("autotl_sleepy_int", probe_variant("sleepint", SLOW))
    out = tmp_path / "run"
    proc, cmd, env = _search_until_sleeping(tiny_csv, tiny_model_dir, out, site, "sleepint")
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    rows = json.loads((out / "leaderboard.json").read_text())
    assert [r["state"] for r in sorted(rows, key=lambda r: r["trial"])][:2] == ["complete", "fail"]
    assert "Ctrl-C" in rows[-1]["error"] or any("Ctrl-C" in r["error"] for r in rows)
    assert load_model(out)[2]["trial"] == 0

    (tmp_path / "site" / "autotl_sleepy_int.py").write_text(probe_variant("sleepint", FAST))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="autotl", storage=open_storage(None, out))
    cut = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(cut) == 1 and cut[0].user_attrs["interrupted"] is True
    # (cut while its params were drawn, it holds only those drawn so far)
    assert any(cut[0].params.items() <= t.params.items() and t.state.name == "COMPLETE" for t in study.trials)
    assert len(study.trials) == 4


def test_refit_retrains_the_winner_on_all_labelled_rows(tiny_csv, tiny_model_dir, tmp_path, monkeypatch):
    # every epoch ties the best: the last is kept, at its schedule's end, so the winner is refit
    # (one kept mid-schedule is not: test_schedule.py)
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: float("inf"))
    result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", n_trials=2, strategies=["linear_probe"])
    info = json.loads((result.best_model / "autotl.json").read_text())
    best = next(r for r in result.leaderboard if r["trial"] == info["trial"])
    assert info["refit"]["rows"] == 60  # 48 train + 12 validation rows
    assert info["refit"]["epochs"] == best["best_epoch"] + 1
    assert "retrained on all 60 labelled rows" in (tmp_path / "run" / "report.md").read_text()
    kept = _search(tiny_csv, tiny_model_dir, tmp_path / "kept", n_trials=2, strategies=["linear_probe"],
                   refit=False)
    assert json.loads((kept.best_model / "autotl.json").read_text())["refit"] is None
    # same trials, same winner; only the final training data differ
    assert kept.best_params == result.best_params
    refit_model, _, _ = load_model(tmp_path / "run")
    kept_model, _, _ = load_model(tmp_path / "kept")
    assert not all(torch.equal(a, b) for a, b in zip(refit_model.head_parameters(), kept_model.head_parameters()))


def test_budget_reserves_time_for_the_refit():
    from autotl.budget import Budget

    clock = iter([100.0, 150.0, 150.0])
    budget = Budget(timeout=60, clock=lambda: next(clock))  # ends at 160
    assert not budget.passed()  # at 150
    budget.reserve = 20  # the refit needs 20 s: trials must stop at 140
    assert budget.passed()
    assert Budget(None).passed() is False


def test_budget_predicts_whether_work_fits():
    from autotl.budget import Budget

    now = [100.0]
    budget = Budget(timeout=60, clock=lambda: now[0])  # ends at 160
    assert budget.fits(60) and not budget.fits(61)
    assert not budget.passed(within=59) and budget.passed(within=60)
    budget.note_epoch(12.0)
    budget.note_epoch(30.0)
    budget.note_epoch(8.0)
    assert budget.shortest_epoch == 8.0
    now[0] = 155.0
    assert budget.remaining() == 5.0 and budget.passed(within=budget.shortest_epoch)


def test_an_epoch_that_would_end_past_the_deadline_is_not_started(tiny_model):
    from dataclasses import replace

    from autotl.budget import Budget
    from autotl.strategy import ParamGroup, Plan, Stage
    from autotl.testing import tiny_setup
    from autotl.train import fit

    class Asked(Budget):
        """A deadline 1000 s away that records the look-ahead each epoch asks for."""

        def __init__(self):
            super().__init__(1000.0)
            self.within = []

        def passed(self, within=0.0):
            self.within.append(within)
            return within > 0  # any epoch predicted to take time would overrun

    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), 4),), batch_size=8)
    deadline = Asked()
    result = fit(model, plan, train, val, replace(settings, deadline=deadline))
    assert len(result.scores) == 1 and result.truncated  # the first epoch always runs
    assert deadline.within and deadline.within[0] > 0  # asked with the last epoch's duration
    assert deadline.shortest_epoch == pytest.approx(deadline.within[0])


def test_a_refit_that_cannot_fit_the_timeout_is_skipped(tiny_csv, tiny_model_dir, tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.setattr("autotl.final.refit_seconds", lambda trial, setup: 1e9)
    # the last epoch kept (at its schedule's end): only the timeout stands in the refit's way
    monkeypatch.setattr("autotl.train.epoch_tie_margin", lambda metric, targets, first, top: float("inf"))
    with caplog.at_level(logging.INFO, logger="autotl"):
        result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", n_trials=2, timeout=3600,
                         strategies=["linear_probe"])
    info = json.loads((result.best_model / "autotl.json").read_text())
    assert info["refit"] is None and info["trial"] == result.leaderboard[0]["trial"]
    assert "no time left for the refit" in caplog.text and "no time left" in info["refit_skipped"]
    assert len(result.leaderboard) == 2  # the budget was not held back for a refit that cannot run


def test_regression_end_to_end(tiny_model_dir, tmp_path):
    import random

    from autotl.model import build_model

    rng = random.Random(0)
    rows = [(text, f"{(3.5 if label == 'positive' else 2.5) + rng.uniform(-0.2, 0.2):.2f}")
            for text, label in sentiment_rows(60)]
    frame = pd.DataFrame(rows, columns=["text", "valence"])
    result = _search(frame, tiny_model_dir, tmp_path / "run", n_trials=2, strategies=["linear_probe", "full_finetune"])
    assert result.metric == "r2"
    info = json.loads((result.best_model / "autotl.json").read_text())
    assert info["data"]["task"] == "regression" and info["data"]["label_names"] == []
    predicted = autotl.predict(tmp_path / "run", frame)
    assert list(predicted.columns) == ["text", "prediction"]
    assert predicted["prediction"].between(1.5, 4.5).all()  # on the targets' scale, not near 0
    mean = float(pd.to_numeric(frame["valence"]).mean())
    model = build_model(tiny_model_dir, "mean", num_outputs=1, label_names=(), regression=True, target_mean=mean)
    assert model.output_layer().bias.item() == pytest.approx(mean)  # starts at the mean
