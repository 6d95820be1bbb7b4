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
from autotl.study import open_storage
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
