"""Faults a review found: each test failed on the main before the fix (issue 10).

One run configuration for the search and its workers, workers that cannot join, lost
work, leaked secrets, hostile files.
"""

import json
import os
import stat

import optuna
import pytest
from conftest import write_csv

import autotl
from autotl.cli import main
from autotl.errors import UsageError
from autotl.storage import open_storage
from autotl.testing import sentiment_rows

STRATEGIES = "linear_probe,freeze"


def _study(run):
    return optuna.load_study(study_name="autotl", storage=open_storage(None, run))


def test_a_search_with_a_test_set_really_runs_its_workers(tiny_csv, tiny_test_csv, tiny_model_dir, tmp_path, capsys):
    # Before: the data hash covered the --test rows, which workers never read, so every
    # worker was refused and the search silently ran in one process.
    run = tmp_path / "run"
    code = main(["search", tiny_csv, "--model", tiny_model_dir, "--test", tiny_test_csv, "--devices", "cpu",
                 "--trials-per-device", "2", "--n-trials", "4", "--strategies", STRATEGIES, "--out", str(run),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    trials = _study(run).trials
    workers = {t.user_attrs["worker"] for t in trials if t.state.name == "COMPLETE"}
    # two worker processes ran them, not this one
    assert len(workers) == 2 and not any(f":{os.getpid()}" in w for w in workers), workers
    recorded = _study(run).user_attrs["autotl_run"]
    assert "test" not in recorded and "storage" not in recorded  # workers never see the test rows
    info = json.loads((run / "best" / "autotl.json").read_text())
    assert info["scores"]["test"]["rows"] == 20  # scored once, by the search process
    assert sum(line.startswith("test: ") for line in out.splitlines()) == 1


def test_a_worker_that_cannot_join_fails_the_search_loudly(tiny_csv, tiny_model_dir, tmp_path, fake_plugin,
                                                          capsys):
    # The plugin is importable here but not in the worker processes: they refuse the study.
    # Before: a warning, and the search carried on in one process.
    from test_search import FAST, probe_variant

    fake_plugin("autotl_only_here", probe_variant("only_here", FAST))
    code = main(["search", tiny_csv, "--model", tiny_model_dir, "--devices", "cpu", "--trials-per-device", "2",
                 "--n-trials", "2", "--strategies", "only_here", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors[-1].startswith("error: a worker on cpu could not join study 'autotl': ")
    assert "only_here" in errors[-1]
    assert not [t for t in _study(tmp_path / "run").trials if t.state.name == "COMPLETE"]


def test_the_run_directory_is_private(tiny_csv, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    autotl.search(tiny_csv, model=tiny_model_dir, out=run, n_trials=1, strategies=["linear_probe"], progress=False)
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o700


def test_dataframes_for_validation_and_test_are_accepted(tiny_model_dir, tmp_path):
    import pandas as pd

    frame = lambda n, seed: pd.DataFrame(sentiment_rows(n, seed), columns=["text", "label"])  # noqa: E731
    result = autotl.search(frame(40, 0), val=frame(12, 1), test=frame(10, 2), model=tiny_model_dir,
                           out=tmp_path / "run", n_trials=1, strategies=["linear_probe"], progress=False)
    assert result.test_scores["rows"] == 10
    assert (tmp_path / "run" / "val.csv").is_file()  # saved where workers can read it


@pytest.mark.parametrize("settings, words", [
    ({"seed": -1}, "seed must satisfy 0 <= seed"),
    ({"n_trial": 3}, "unknown setting 'n_trial'"),
    ({"val": 3}, "val must be a CSV path or a pandas DataFrame, got int"),
])
def test_bad_settings_are_one_usage_error(tiny_csv, tmp_path, settings, words):
    with pytest.raises(UsageError, match=words):
        autotl.search(tiny_csv, out=tmp_path / "run", **settings)


def test_seed_minus_one_on_the_cli_is_exit_2(tiny_csv, tmp_path, capsys):
    assert main(["search", tiny_csv, "--seed", "-1", "--out", str(tmp_path / "run")]) == 2
    assert "seed must satisfy" in capsys.readouterr().err


def test_storage_reaches_workers_through_the_environment_not_the_command_line():
    from autotl.devices import Slot
    from autotl.workers import STORAGE_ENV, worker_command, worker_env

    slot = Slot("cpu", None, 1)
    url = "postgresql://me:s3cret@db/autotl"
    assert not any("s3cret" in part for part in worker_command(slot, study_name="s"))
    assert worker_env(slot, url)[STORAGE_ENV] == url
    assert "-P" in worker_command(slot, study_name="s")  # ./autotl cannot shadow the package


def test_a_worker_reads_its_storage_from_the_environment(tiny_csv, tiny_model_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    autotl.search(tiny_csv, model=tiny_model_dir, out=run, n_trials=1, strategies=["linear_probe"], progress=False)
    monkeypatch.setenv("AUTOTL_STORAGE", str(run / "study.journal"))
    assert main(["worker", "--device", "cpu"]) == 0


# -- dead workers: heartbeats, not process ids -------------------------------------------------

def _running_trial(study, worker: str, beat_age: float | None):
    import time

    trial = study.ask({"strategy": optuna.distributions.CategoricalDistribution(["linear_probe"])})
    trial.set_user_attr("worker", worker)
    if beat_age is not None:
        trial.set_user_attr("heartbeat", time.time() - beat_age)
    return trial


def test_a_live_worker_sharing_our_host_name_and_a_pid_number_is_not_taken_for_dead():
    # Containers share host names and pid numbers: "pid 999999 is not running here" or "that
    # pid is ours" said nothing about a worker elsewhere, yet its live trial was failed.
    import socket

    from autotl.study import recover_dead_trials

    study = optuna.create_study()
    host = socket.gethostname()
    # ids as "host:pid" alone were recorded (what an older worker records, too)
    elsewhere = _running_trial(study, f"{host}:999999", beat_age=1.0)
    same_pid = _running_trial(study, f"{host}:{os.getpid()}", beat_age=1.0)
    assert recover_dead_trials(study) == 0
    states = {t.number: t.state.name for t in study.trials}
    assert states[elsewhere.number] == states[same_pid.number] == "RUNNING"


def test_a_heartbeat_outage_shorter_than_the_grace_is_survived_and_a_longer_one_is_not():
    from autotl import heartbeat
    from autotl.study import REQUEUED_FROM, recover_dead_trials

    study = optuna.create_study()
    paused = _running_trial(study, "elsewhere:1:cccc", beat_age=heartbeat.GRACE / 2)
    gone = _running_trial(study, "elsewhere:1:dddd", beat_age=heartbeat.GRACE + 5)
    assert recover_dead_trials(study) == 1
    states = {t.number: t.state.name for t in study.trials}
    assert states[paused.number] == "RUNNING" and states[gone.number] == "FAIL"
    assert "no heartbeat" in study.trials[gone.number].user_attrs["error"]
    assert [t.user_attrs.get(REQUEUED_FROM) for t in study.trials if t.state.name == "WAITING"] == [gone.number]


def test_a_trial_of_a_local_worker_that_exited_is_requeued_without_waiting_for_the_grace():
    # Before: the search waited out the heartbeat grace only if some trial still ended after
    # it; when its workers had all exited within the grace, a killed worker's trial was
    # re-queued too late to run (seen on CI: the PostgreSQL kill test found no rerun).
    from autotl.study import REQUEUED_FROM, recover_dead_trials

    study = optuna.create_study()
    ours = _running_trial(study, "here:41:aaaa", beat_age=1.0)
    other = _running_trial(study, "elsewhere:41:bbbb", beat_age=1.0)
    assert recover_dead_trials(study) == 0  # within the grace: alive as far as anyone knows
    assert recover_dead_trials(study, {"here:41:aaaa"}) == 1
    states = {t.number: t.state.name for t in study.trials}
    assert states[ours.number] == "FAIL" and states[other.number] == "RUNNING"
    assert [t.user_attrs.get(REQUEUED_FROM) for t in study.trials if t.state.name == "WAITING"] == [ours.number]


def test_local_workers_are_told_the_random_part_of_their_id(monkeypatch):
    import subprocess
    import sys

    from autotl.workers import TOKEN_ENV

    code = "from autotl.objective import WORKER_ID; print(WORKER_ID)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, TOKEN_ENV: "feedbeef"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.endswith(":feedbeef") and out.split(":")[1].isdigit()


def test_a_heartbeat_beats_until_its_trial_ends_and_survives_a_storage_error(monkeypatch):
    import time

    from autotl.heartbeat import Heartbeat

    study = optuna.create_study()
    trial = study.ask()
    calls = {"n": 0}
    real = study._storage.set_trial_user_attr

    def flaky(trial_id, key, value):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("database restarting")
        return real(trial_id, key, value)

    monkeypatch.setattr(study._storage, "set_trial_user_attr", flaky)
    with Heartbeat(study, trial._trial_id, interval=0.05):
        time.sleep(0.5)
    assert calls["n"] >= 4  # the error at beat 2 did not stop the thread
    first = study.trials[0].user_attrs["heartbeat"]
    assert time.time() - first < 1.0


def test_a_worker_whose_trial_is_failed_under_it_goes_on(tiny_csv, tiny_model_dir, tmp_path, monkeypatch, caplog):
    # Before: UpdateFinishedTrialError ("Cannot tell a FAIL trial") escaped study.optimize and
    # the whole search died with a traceback, leaving no leaderboard, report or final model.
    import logging

    import autotl.objective as objective_module
    from optuna.trial import TrialState

    real = objective_module.run_params
    failed = []

    def taken_for_dead(setup, params, on_epoch=None, desc=""):
        outcome = real(setup, params, on_epoch=on_epoch, desc=desc)
        study = optuna.load_study(study_name="autotl", storage=open_storage(None, tmp_path / "run"))
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and running[0].number == 1 and not failed:  # another worker fails trial 1 as it runs
            study._storage.set_trial_state_values(running[0]._trial_id, TrialState.FAIL)
            failed.append(1)
        return outcome

    monkeypatch.setattr(objective_module, "run_params", taken_for_dead)
    with caplog.at_level(logging.WARNING, logger="autotl"):
        result = autotl.search(tiny_csv, model=tiny_model_dir, out=tmp_path / "run", n_trials=3,
                               strategies=["linear_probe"], progress=False, rescore=0,
                               pruner="none")
    assert "was failed under this worker" in caplog.text
    assert result.best_model is not None and (tmp_path / "run" / "report.md").is_file()
    states = [t.state.name for t in _study(tmp_path / "run").trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]  # it went on to trial 2


# -- nothing overwritten, nothing lost ---------------------------------------------------------

def test_reusing_a_run_directory_for_another_study_or_data_is_refused(tiny_csv, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    autotl.search(tiny_csv, model=tiny_model_dir, out=run, n_trials=1, strategies=["linear_probe"], progress=False)
    before = (run / "best" / "autotl.json").read_text(), (run / "report.md").read_text()
    with pytest.raises(UsageError, match="holds the results of study 'autotl'"):
        autotl.search(tiny_csv, model=tiny_model_dir, out=run, n_trials=1, strategies=["linear_probe"],
                      study_name="other", progress=False)
    other = write_csv(tmp_path / "other.csv", sentiment_rows(60, seed=5))
    with pytest.raises(UsageError, match="on other data"):
        autotl.search(other, model=tiny_model_dir, out=run, n_trials=1, strategies=["linear_probe"],
                      progress=False)
    assert ((run / "best" / "autotl.json").read_text(), (run / "report.md").read_text()) == before


def test_a_failed_upload_is_recorded_on_the_trial_and_the_search_goes_on(tiny_csv, tiny_model_dir, tmp_path,
                                                                        monkeypatch, caplog, capsys):
    import logging

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("autotl.artifacts.upload_model", full_disk)
    with caplog.at_level(logging.WARNING, logger="autotl"):
        result = autotl.search(tiny_csv, model=tiny_model_dir, out=tmp_path / "run", n_trials=2,
                               strategies=["linear_probe"], progress=False)
    trials = _study(tmp_path / "run").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"] or trials[0].state.name == "COMPLETE"
    assert "No space left on device" in trials[0].user_attrs["upload_error"]
    assert "could not be uploaded" in caplog.text
    assert result.best_model is not None and (result.best_model / "autotl.json").is_file()
    rows = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert any("model not uploaded: OSError" in r["summary"] for r in rows)
    code = main(["export", "--storage", str(tmp_path / "run" / "study.journal"), "--out", str(tmp_path / "x")])
    assert code == 2 and "its upload failed (OSError: [Errno 28] No space left on device)" in capsys.readouterr().err


def test_a_full_disk_while_best_is_swapped_is_one_warning_and_the_search_goes_on(tiny_csv, tiny_model_dir,
                                                                                tmp_path, monkeypatch, caplog):
    # Before: the OSError escaped the trial callback and ended the search with a traceback.
    import logging

    from autotl import runner

    calls = []

    def full_disk(*args, **kwargs):
        calls.append(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "save_best", full_disk)  # the swaps during the search, not the final one
    with caplog.at_level(logging.WARNING, logger="autotl"):
        result = autotl.search(tiny_csv, model=tiny_model_dir, out=tmp_path / "run", n_trials=3,
                               strategies=["linear_probe"], progress=False, refit=False, rescore=0)
    assert calls and "best/ could not take trial 0's model" in caplog.text
    assert len([t for t in _study(tmp_path / "run").trials if t.state.name != "FAIL"]) == 3
    assert result.best_model is not None and (result.best_model / "autotl.json").is_file()


def test_workers_stop_swapping_best_once_the_search_has_chosen(tiny_csv, tiny_model_dir, tmp_path):
    from autotl.runner import FINALIZING

    run = tmp_path / "run"
    autotl.search(tiny_csv, model=tiny_model_dir, out=run, n_trials=2, strategies=["linear_probe"], progress=False)
    study = _study(run)
    assert study.user_attrs[FINALIZING] is True  # what a late worker's still_best() reads
    chosen = json.loads((run / "best" / "autotl.json").read_text())["trial"]
    assert chosen == study.user_attrs["choice"]["chosen"]


def test_workers_die_with_a_killed_search(tiny_csv, tiny_model_dir, tmp_path, fake_plugin):
    # Before: a SIGKILLed search left its worker processes running (orphans).
    import signal
    import subprocess
    import sys
    import time

    from test_search import SLOW, probe_variant

    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signals are Linux's")
    site = fake_plugin("autotl_sleepy_w", probe_variant("sleepyw", SLOW))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "autotl.cli", "search", tiny_csv, "--model", tiny_model_dir, "--strategies",
           "sleepyw", "--n-trials", "2", "--devices", "cpu", "--trials-per-device", "2", "--out",
           str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers = []
    while len(workers) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the workers never started"
        time.sleep(0.5)
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
        workers = [int(pid) for pid in out.split()]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their search"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited; only its reaping is left
    except FileNotFoundError:
        return False


def test_a_trial_cut_by_ctrl_c_before_its_params_were_drawn_is_still_requeued(tiny_model_dir):
    # Before: the Ctrl-C handler re-queued `params`, still None while the strategy's search
    # space was being drawn, so the trial said "re-queued" and never ran again (seen on CI).
    from dataclasses import replace

    from autotl.objective import Objective, TrialSetup
    from autotl.plugins import Registry
    from autotl.testing import LABELS, tiny_setup

    train, val, settings = tiny_setup(tiny_model_dir)
    strategies = Registry().select(["linear_probe"])
    setup = TrialSetup(backbone_path=tiny_model_dir, strategies=strategies, poolings=("mean",), train=train,
                       val=val, label_names=LABELS, num_outputs=2, fit=replace(settings, max_epochs=1))
    strategy = strategies["linear_probe"].strategy
    given = {"strategy": "linear_probe", "head.pooling": "mean", **strategy.defaults}

    def cut(trial):
        raise KeyboardInterrupt

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(given)
    objective = Objective(setup)
    original = type(strategy).search_space
    type(strategy).search_space = lambda self, trial: cut(trial)
    try:
        with pytest.raises(KeyboardInterrupt):
            study.optimize(objective, n_trials=1)
    finally:
        type(strategy).search_space = original
    assert objective.interrupted == given


def test_a_password_in_a_trial_error_never_reaches_the_leaderboard_report_or_log(tiny_csv, tiny_model_dir,
                                                                               tmp_path, monkeypatch, caplog):
    import logging

    from autotl import objective

    real, calls = objective.run_params, []

    def unreachable_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("cannot reach postgresql://bob:hunter2@db.example/autotl")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "run_params", unreachable_once)
    run = tmp_path / "run"
    with caplog.at_level(logging.DEBUG, logger="autotl"):
        autotl.search(tiny_csv, model=tiny_model_dir, out=run, n_trials=2, strategies=["linear_probe"],
                      progress=False, rescore=0)
    board = (run / "leaderboard.json").read_text()
    assert "postgresql://bob:***@db.example/autotl" in board  # the error is kept, masked
    for text in (board, (run / "leaderboard.csv").read_text(), (run / "report.md").read_text(),
                 (run / "best" / "autotl.json").read_text(), caplog.text):
        assert "hunter2" not in text


def test_search_and_export_take_the_storage_from_the_environment_and_export_is_private(
        tiny_csv, tiny_model_dir, tmp_path, monkeypatch, capsys):
    # Before: only `autotl worker` read AUTOTL_STORAGE; `search` and `export` needed the URL
    # (and its password) on their command line, where `ps` shows it; export --out was 0755.
    journal = tmp_path / "shared.journal"
    monkeypatch.setenv("AUTOTL_STORAGE", str(journal))
    run = tmp_path / "run"
    assert main(["search", tiny_csv, "--model", tiny_model_dir, "--n-trials", "1", "--strategies", "linear_probe",
                 "--out", str(run), "--no-progress"]) == 0
    assert journal.is_file() and not (run / "study.journal").exists()
    out = tmp_path / "exported"
    assert main(["export", "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "best" / "autotl.json").is_file()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
