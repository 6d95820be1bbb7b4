"""`python -m autotl`, `autotl predict` from JSON lines and standard input, the search's own progress bar."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from autotl.cli import main
from autotl.progress import SearchProgress
from autotl.testing import sentiment_rows

from conftest import write_csv  # noqa: E402


def test_python_dash_m_autotl_is_the_autotl_command():
    from autotl import __version__

    done = subprocess.run([sys.executable, "-m", "autotl", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"autotl {__version__}", done.stderr
    bad = subprocess.run([sys.executable, "-m", "autotl", "predict", "/nonexistent-run", "x.csv"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("inputs")
    data = write_csv(root / "data.csv", sentiment_rows(60))
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["search", data, "--model", tiny_model_dir, "--n-trials", "1", "--out", str(root / "run"),
                     "--no-progress", "--strategies", "linear_probe", "--no-knowledge"]) == 0
    return root / "run"


ROWS = [("a great and lovely film", "positive"), ("an awful, dull plot", "negative"), ("", "negative"),
        ('quotes "inside", and a comma', "positive")]


def _predict(argv, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["predict", *argv])
    return code, out.getvalue(), err.getvalue()


def test_json_lines_and_standard_input_predict_what_the_csv_predicts(run, tmp_path, monkeypatch):
    csv_path = write_csv(tmp_path / "new.csv", ROWS)
    code, expected, err = _predict([str(run), csv_path])
    assert code == 0, err
    assert len(expected.splitlines()) == 1 + len(ROWS)
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, (t, _) in enumerate(ROWS)) + "\n")
    array = tmp_path / "new.json"
    array.write_text(json.dumps([{"text": t} for t, _ in ROWS]))
    assert _predict([str(run), str(jsonl)])[1] == expected
    assert _predict([str(run), str(array)])[1] == expected
    assert _predict([str(run), "-"], jsonl.read_bytes(), monkeypatch)[1] == expected
    assert _predict([str(run), "-"], open(csv_path, "rb").read(), monkeypatch)[1] == expected


@pytest.mark.parametrize("content, words", [
    (b'{"text": "fine"}\n{"text": "bad"\n', ["line 2 is not JSON", "one object per line"]),
    (b'{"text": "fine"}\n["a list"]\n', ["line 2 is a JSON list, not an object"]),
    (b'{"body": "fine"}\n', ["column 'text' not found in ", "new.jsonl", "--text-col"]),
    (b"", ["holds no JSON objects"]),
])
def test_bad_json_lines_are_one_error_line(run, tmp_path, content, words):
    path = tmp_path / "new.jsonl"
    path.write_bytes(content)
    code, out, err = _predict([str(run), str(path)])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


def test_empty_standard_input_is_one_error_line(run, monkeypatch):
    code, _, err = _predict([str(run), "-"], b"  \n", monkeypatch)
    assert code == 2 and err.strip() == "error: standard input is empty; pipe CSV (with a header) or JSON lines into it"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_search_bar_counts_the_budget_and_shows_the_best_score():
    screen, now = Terminal(), [0.0]
    bar = SearchProgress(timeout=600, n_trials=None, elapsed=lambda: now[0], enabled=True, file=screen)
    now[0] = 150.0
    bar.trial_done(3, 0.9125, "accuracy")
    bar.close()
    shown = screen.getvalue()
    assert "search" in shown and "150/600 s" in shown and "3 trials, best accuracy 0.9125" in shown


def test_a_trial_count_bar_without_a_timeout():
    screen = Terminal()
    bar = SearchProgress(timeout=None, n_trials=8, elapsed=lambda: 0.0, enabled=True, file=screen)
    bar.trial_done(2, None, "accuracy")
    bar.close()
    assert "2/8" in screen.getvalue() and "2 trials" in screen.getvalue()


@pytest.mark.parametrize("screen, enabled", [(io.StringIO(), True), (Terminal(), False)],
                         ids=["not a terminal", "--no-progress"])
def test_no_bar_off_a_terminal_or_when_turned_off(screen, enabled):
    bar = SearchProgress(timeout=60, n_trials=None, elapsed=lambda: 30.0, enabled=enabled, file=screen)
    bar.trial_done(1, 0.5, "accuracy")
    bar.close()
    assert screen.getvalue() == ""


def test_log_lines_print_above_the_bar(monkeypatch):
    screen = Terminal()
    handler = logging.StreamHandler(screen)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    bar = SearchProgress(timeout=None, n_trials=4, elapsed=lambda: 0.0, enabled=True, file=screen)
    with bar.logging_through():
        logging.getLogger("autotl").warning("trial 0 linear_probe/mean: accuracy 0.9000")
    bar.close()
    assert "trial 0 linear_probe/mean: accuracy 0.9000" in screen.getvalue()
    assert root.handlers == [handler]  # given back when the bar goes


def test_optunas_records_survive_a_closed_stderr_of_the_moment_optuna_was_imported(tmp_path):
    """Optuna's default handler kept the stream of its first import (pytest's capture, closed
    later): a search's "A new study created" then printed a logging traceback."""
    script = tmp_path / "first_import_under_capture.py"
    script.write_text(
        "import io\nfrom contextlib import redirect_stderr\n"
        "captured = io.StringIO()\n"
        "with redirect_stderr(captured):\n"
        "    import optuna\n    optuna.logging.get_logger('optuna')\n"
        "captured.close()\n"
        "import autotl.study\n"
        "optuna.create_study(study_name='x')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Logging error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
