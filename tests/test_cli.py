"""Tests for the `autotl` command line: exit codes, one-line errors, `strategies`, and a tiny
end-to-end `search` + `predict` on the tiny BERT (no downloads, a few seconds on a CPU)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from autotl.cli import duration, main
from autotl.plugins import Registry
from autotl.testing import sentiment_rows

from conftest import BUILTINS, fails  # noqa: E402  (strategy -> the entry point that provides it)
INSTALLED = sorted(Registry().strategies())  # built-ins plus installed plugins (autotl-peft)
SEARCHED = ["freeze", "full_finetune", "l2sp", "linear_probe"]  # the CLI end-to-end search's four
LEADERBOARD_COLUMNS = ["trial", "state", "backbone", "strategy", "head", "score", "se", "best_epoch", "epochs", "seconds",
                       "trainable_params", "summary", "params", "error"]


def write_rows(path, rows, header=("text", "label")) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def read_csv_rows(path_or_text, *, text=False) -> tuple[list[str], list[dict]]:
    handle = io.StringIO(path_or_text) if text else open(path_or_text, newline="", encoding="utf-8")
    with handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# -- bad input: exit 2, one "error:" line, no traceback, nothing trained ------------------------

def _bad_csvs(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"text,label\nfine film,pos\n" + b"caf\xe9 awful,neg\n" + b"ok,pos\nbad,neg\n" * 3)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    return {
        "missing": tmp_path / "nope.csv",
        "directory": tmp_path,
        "empty": empty,
        "latin1": latin1,
        "one_class": write_rows(tmp_path / "one.csv", [(f"text number {i}", "pos") for i in range(8)]),
        "small_class": write_rows(tmp_path / "small.csv",
                                  sentiment_rows(10) + [("a lonely row", "rare")]),
    }


# (case, extra argv after `search DATA`, DATA key or None for the tiny CSV, expected words)
SEARCH_ERRORS = [
    ("missing file", [], "missing", ["nope.csv not found"]),
    ("directory", [], "directory", ["is a directory", "CSV file inside"]),
    ("empty file", [], "empty", ["empty.csv is empty", "header"]),
    ("not utf-8", [], "latin1", ["latin1.csv is not UTF-8", "0xe9", "line 3", "--encoding"]),
    ("unknown text column", ["--text-col", "txet"], None,
     ["column 'txet' not found", "(did you mean 'text'?)", "columns: text, label"]),
    ("single class", [], "one_class", ["only one class ('pos')", "at least 2 classes"]),
    ("class too small", [], "small_class", ["class 'rare' has only 1 row", "--val"]),
    ("unknown strategy", ["--strategies", "full_finetun"], None,
     ["unknown strategy 'full_finetun'", "(did you mean 'full_finetune'?)",
      "choose from: " + ", ".join(INSTALLED)]),
    ("unknown strategy in a list", ["--strategies", "linear_probe, l2sp,frezee"], None,
     ["unknown strategy 'frezee'", "(did you mean 'freeze'?)"]),
    ("unknown metric", ["--metric", "acuracy"], None,
     ["unknown metric 'acuracy'", "(did you mean 'accuracy'?)", "f1_macro"]),
    ("regression metric", ["--metric", "r2"], None,
     ["metric 'r2' is for regression but this data is classification",
      "choose from: accuracy, f1_macro, f1_weighted"]),
    ("zero trials", ["--n-trials", "0"], None, ["n_trials must be >= 1, got 0"]),
    ("bad max length", ["--max-length", "4"], None, ["max_length must satisfy", "got 4"]),
    ("missing model dir", ["--model", "/nonexistent/dir"], None,
     ["model directory /nonexistent/dir does not exist"]),
    ("model dir without config", ["--model", "<EMPTY_DIR>"], None, ["has no config.json"]),
    ("unknown plugin", ["--disable-plugin", "nosuch"], None,
     ["unknown plugin 'nosuch'", "autotl.finetune", "autotl.probe", "autotl.regularize"]),
    ("unknown encoding", ["--encoding", "utf-9"], None, ["unknown encoding 'utf-9'"]),
    ("unknown pruner", ["--pruner", "hyperband"], None, ["unknown pruner 'hyperband'", "halving, median, none"]),
]


@pytest.mark.parametrize("extra, data_key, words", [c[1:] for c in SEARCH_ERRORS],
                         ids=[c[0] for c in SEARCH_ERRORS])
def test_search_bad_input_is_one_error_line(capsys, no_training, tmp_path, tiny_csv, tiny_model_dir,
                                            extra, data_key, words):
    data = tiny_csv if data_key is None else _bad_csvs(tmp_path)[data_key]
    empty_dir = tmp_path / "not-a-model"
    empty_dir.mkdir()
    extra = [str(empty_dir) if a == "<EMPTY_DIR>" else a for a in extra]
    global_opts = extra if extra[:1] == ["--disable-plugin"] else []  # a top-level option
    sub_opts = [] if global_opts else extra
    model = [] if "--model" in sub_opts else ["--model", tiny_model_dir]
    line = fails(capsys, [*global_opts, "search", data, *model, "--out", tmp_path / "run",
                          "--no-progress", *sub_opts])
    for word in words:
        assert word in line, line
    assert not (tmp_path / "run" / "best").exists()


def test_predict_on_a_directory_without_a_run(capsys, tmp_path, tiny_test_csv):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    line = fails(capsys, ["predict", empty, tiny_test_csv])
    assert f"{empty} holds no autotl model" in line and "--out directory" in line
    line = fails(capsys, ["predict", tmp_path / "never-ran", tiny_test_csv])
    assert f"{tmp_path / 'never-ran'} does not exist" in line


@pytest.mark.parametrize("argv, words", [
    (["--timeout", "soon"], ["argument --timeout", "invalid duration 'soon'"]),
    (["--timeout", "0"], ["argument --timeout", "invalid duration '0'"]),
    (["--timeout", "-5m"], ["argument --timeout"]),
    (["--n-trials", "two"], ["argument --n-trials", "invalid int value: 'two'"]),
    (["--val-frac", "0.2", "--val", "v.csv"], ["not allowed with argument"]),
], ids=["timeout-word", "timeout-zero", "timeout-negative", "n-trials-word", "val-and-val-frac"])
def test_bad_option_values_are_usage_errors(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(["search", "data.csv", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: autotl search")
    for word in words:
        assert word in err, err
    assert "Traceback" not in err


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [
    ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1.5h", 5400.0), ("2d", 172800.0), (" 10M ", 600.0),
])
def test_duration_parses_units(text, seconds):
    assert duration(text) == seconds


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == "autotl 0.1.0"


# -- `autotl strategies` and `--help`: complete, and light (no torch, no transformers) --------------

def check_strategies_listing(out: str) -> None:
    for name, plugin in BUILTINS.items():
        assert re.search(rf"^{name}  \[plugin {re.escape(plugin)} \(autotl 0\.1\.0\)\]$", out, re.M), out
    # params with their ranges (and defaults)
    assert re.search(r"^    full_finetune\.lr +float \[1e-05, 0\.00015\] log   default 5e-05$", out, re.M), out
    assert re.search(r"^    freeze\.frozen_frac +float \[0\.15, 0\.9\]   default 0\.67$", out, re.M), out
    assert re.search(r"^    linear_probe\.epochs +int \[10, 40\]   default 25$", out, re.M), out
    assert re.search(r"^    linear_probe\.batch_size +one of 32, 64   default 32$", out, re.M), out
    assert re.search(r"^    l2sp\.alpha +float \[0\.0001, 1\] log   default 0\.01$", out, re.M), out
    assert "encoder frozen, only the head trains" in out


def test_strategies_lists_builtins_in_process(capsys):
    assert main(["strategies"]) == 0
    out, err = capsys.readouterr()
    check_strategies_listing(out)
    headers = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert headers == INSTALLED and set(BUILTINS) <= set(INSTALLED)
    assert "error" not in err
    block = out.split("probe_self_training  [plugin")[1].split("\n")  # an opt-in strategy says so
    assert block[2].startswith("    searched only when named with --strategies: on 100-label benchmarks")


def run_python(args, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)


def test_strategies_subprocess(tmp_path):
    proc = run_python(["-m", "autotl.cli", "strategies"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    check_strategies_listing(proc.stdout)
    assert "Traceback" not in proc.stderr


LIGHT = """
import sys
from autotl.cli import main
{body}
heavy = sorted(m for m in ("torch", "transformers", "optuna", "pandas") if m in sys.modules)
assert not heavy, heavy
print("LIGHT OK")
"""


@pytest.mark.parametrize("body", [
    'assert main(["strategies"]) == 0',
    'try:\n    main(["--help"])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n'
    'try:\n    main(["search", "--help"])\nexcept SystemExit as e:\n    assert e.code == 0, e.code',
    'try:\n    main(["predict", "--help"])\nexcept SystemExit as e:\n    assert e.code == 0, e.code',
], ids=["strategies", "help", "predict-help"])
def test_strategies_and_help_import_neither_torch_nor_transformers(tmp_path, body):
    proc = run_python(["-c", LIGHT.format(body=body)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("LIGHT OK")
    if "help" in body:
        assert "usage: autotl" in proc.stdout


# -- end to end: one tiny search, then predict --------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model_dir):
    """One real CLI search on the tiny BERT: (exit code, stdout, stderr, run dir, test csv)."""
    root = tmp_path_factory.mktemp("cli-search")
    data = write_rows(root / "data.csv", sentiment_rows(60))
    test = write_rows(root / "test.csv", sentiment_rows(20, seed=1))
    run = root / "run"
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["search", data, "--model", tiny_model_dir, "--n-trials", "4", "--out", str(run),
                     "--test", test, "--no-progress", "--strategies", ",".join(SEARCHED)])
    return code, out.getvalue(), err.getvalue(), run, test


def test_search_exit_code_and_printout(searched):
    code, out, err, run, _ = searched
    assert code == 0, out + err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert any(re.match(r"^\s+#\s+state\s+strategy\s+head\s+accuracy\s+± se\s+epoch\s+sec\s+trainable\s+notes$", line)
               for line in lines), out
    best = [line for line in lines if line.startswith("best: ")]
    assert len(best) == 1, out
    assert sum(line.startswith("chosen: ") for line in lines) == 1, out
    assert re.match(rf"^best: trial \d \w+/\w+ accuracy=\d\.\d{{4}} -> {re.escape(str(run / 'best'))}$",
                    best[0]), best[0]
    test_line = [line for line in lines if line.startswith("test: ")]
    assert len(test_line) == 1 and re.match(r"^test: accuracy=\d\.\d{4}, f1_macro=\d\.\d{4}, "
                                            r"f1_weighted=\d\.\d{4}$", test_line[0]), out


def test_search_writes_run_directory(searched):
    code, out, _, run, _ = searched
    assert code == 0
    for name in ("leaderboard.csv", "leaderboard.json", "report.md", "best/autotl.json", "best/config.json"):
        assert (run / name).is_file(), name
    columns, rows = read_csv_rows(run / "leaderboard.csv")
    assert columns == LEADERBOARD_COLUMNS
    assert len(rows) == 4
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3]
    assert {r["state"] for r in rows} <= {"complete", "pruned", "fail"}
    assert rows[0]["state"] == "complete"
    # the four strategies named are compared first: one trial each
    assert sorted(r["strategy"] for r in rows) == SEARCHED
    for r in rows:
        assert all(k.startswith(f"{r['strategy']}.") for k in json.loads(r["params"])), r
    board = json.loads((run / "leaderboard.json").read_text())
    assert [b["trial"] for b in board] == [int(r["trial"]) for r in rows]
    info = json.loads((run / "best" / "autotl.json").read_text())
    assert info["trial"] == int(rows[0]["trial"]) and info["strategy"] == rows[0]["strategy"]
    assert info["data"]["label_names"] == ["negative", "positive"]
    assert info["scores"]["test"]["rows"] == 20
    assert f"best: trial {info['trial']} {info['strategy']}/" in out
    report = (run / "report.md").read_text()
    assert report.startswith("# autotl report")
    assert f"**Winner:** trial {info['trial']}, `{info['strategy']}`" in report
    assert "**Test set** (20 rows" in report


def check_predictions(columns, rows, test_csv):
    assert columns == ["text", "prediction", "prob_negative", "prob_positive"]
    _, inputs = read_csv_rows(test_csv)
    assert [r["text"] for r in rows] == [r["text"] for r in inputs]  # one row per input, in order
    for r in rows:
        neg, pos = float(r["prob_negative"]), float(r["prob_positive"])
        assert 0.0 <= neg <= 1.0 and 0.0 <= pos <= 1.0
        assert neg + pos == pytest.approx(1.0, abs=1e-5)
        assert r["prediction"] == ("positive" if pos > neg else "negative")


def test_predict_to_file(searched, capsys, tmp_path):
    code, _, _, run, test = searched
    assert code == 0
    preds = tmp_path / "p.csv"
    assert main(["predict", str(run), test, "-o", str(preds)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"wrote 20 predictions to {preds}" in err
    check_predictions(*read_csv_rows(preds), test)


def test_predict_to_stdout_and_from_best_dir(searched, capsys):
    code, _, _, run, test = searched
    assert code == 0
    assert main(["predict", str(run), test]) == 0
    out, _ = capsys.readouterr()
    columns, rows = read_csv_rows(out, text=True)
    check_predictions(columns, rows, test)
    assert main(["predict", str(run / "best"), test]) == 0  # RUN_DIR/best works too
    again, _ = capsys.readouterr()
    assert again == out


def test_predictions_depend_on_the_text(searched, capsys):
    code, _, _, run, test = searched
    assert code == 0
    assert main(["predict", str(run), test]) == 0
    _, rows = read_csv_rows(capsys.readouterr().out, text=True)
    assert len({r["prob_positive"] for r in rows}) > 1, "every row got the same probabilities"


def test_predict_new_file_with_other_header(searched, capsys, tmp_path):
    code, _, _, run, _ = searched
    assert code == 0
    new = write_rows(tmp_path / "new.csv", [("the film was great",), ("the plot was awful",)],
                     header=("review",))
    # Never a silent guess at another column: the error names the column the model expects.
    line = fails(capsys, ["predict", run, new])
    assert "column 'text' not found" in line and "--text-col" in line and "columns: review" in line
    assert main(["predict", str(run), new, "--text-col", "review"]) == 0
    columns, rows = read_csv_rows(capsys.readouterr().out, text=True)
    assert columns == ["review", "prediction", "prob_negative", "prob_positive"]
    assert [r["review"] for r in rows] == ["the film was great", "the plot was awful"]
    line = fails(capsys, ["predict", run, new, "--text-col", "reviw"])
    assert "column 'reviw' not found" in line and "(did you mean 'review'?)" in line


def test_the_best_line_of_a_soup_shows_the_soups_own_validation_score():
    # Before: it showed the first ingredient's score (the SST-2 run printed 0.8625 for a
    # soup validating 0.870).
    from types import SimpleNamespace

    from autotl.cli import _summary

    result = SimpleNamespace(
        leaderboard=[{"trial": 0, "strategy": "full_finetune", "head": "mean"}], chosen=0, best_score=0.8625,
        metric="accuracy", best_model="run/best", decision=None, test_scores=None, unlabeled=None,
        final={"soup": {"members": [0, 1], "val": 0.87, "base_val": 0.8625}})
    assert _summary(result).strip() == ("best: a soup of trials 0, 1 from trial 0 full_finetune/mean "
                                        "accuracy=0.8700 (trial 0 alone: 0.8625) -> run/best")
