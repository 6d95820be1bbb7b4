"""benchmarks/semisupervised.py's table: the cells' differences with their SE and the issue's
two target lines (no search is run here)."""

import math

import pytest

from test_compare_script import _load


@pytest.fixture(scope="module")
def semi():
    import sys

    module = _load("semisupervised")
    yield module
    del sys.modules[module.__name__]


def _row(dataset, labels, contender, accuracy, rows=400):
    return {"dataset": dataset, "labels": labels, "seed": 0, "contender": contender, "timeout": 60.0,
            "unlabeled_rows": 50 if contender == "with_unlabeled" else 0, "wall_seconds": 60.0,
            "test": {"accuracy": accuracy, "f1_macro": accuracy}, "test_rows": rows, "val": 0.5,
            "chosen": "tapt/mean", "trials": 3, "semisupervised_trials": 1, "best_semisupervised_val": 0.5}


def test_the_difference_has_the_two_binomials_standard_error(semi, tmp_path):
    d, se = semi.difference(_row("a", 100, "labelled_only", 0.6), _row("a", 100, "with_unlabeled", 0.7),
                            tmp_path / "unused.csv")
    assert d == pytest.approx(0.1) and se == pytest.approx(math.sqrt((0.6 * 0.4 + 0.7 * 0.3) / 400))


def test_a_cell_saved_without_its_test_rows_counts_them_in_the_test_csv(semi, tmp_path):
    (tmp_path / "test.csv").write_text('text,label\n"one,\nline",a\ntwo,b\nthree,a\nfour,b\n')
    alone, given = _row("a", 100, "labelled_only", 0.5), _row("a", 100, "with_unlabeled", 0.75)
    del alone["test_rows"], given["test_rows"]
    _, se = semi.difference(alone, given, tmp_path / "test.csv")
    assert se == pytest.approx(math.sqrt((0.25 + 0.1875) / 4))


def test_the_table_judges_the_mean_gain_at_100_labels_and_counts_cells_below_one_se(semi, tmp_path):
    rows = [_row("a", 100, "labelled_only", 0.60), _row("a", 100, "with_unlabeled", 0.66),
            _row("b", 100, "labelled_only", 0.80), _row("b", 100, "with_unlabeled", 0.81),
            _row("a", 300, "labelled_only", 0.80), _row("a", 300, "with_unlabeled", 0.70)]
    text = semi.table(rows, tmp_path)
    assert "100 labels, 2 cells: mean Δ accuracy **+0.0350** (target at 100 labels: +0.03, met)" in text
    assert "more than one SE: 0." in text.split("- 100 labels")[1].splitlines()[0]
    line_300 = text.split("- 300 labels")[1].splitlines()[0]
    assert "**-0.1000**" in line_300 and "target" not in line_300 and "one SE: 1 (-0.1000 ± " in line_300


def test_recount_reads_the_kept_leaderboards_and_counts_every_unlabeled_rows_strategy(semi, tmp_path):
    import json

    board = [{"state": "complete", "strategy": "probe_self_training", "score": 0.7},
             {"state": "complete", "strategy": "self_training", "score": 0.5},
             {"state": "pruned", "strategy": "tapt", "score": 0.9},
             {"state": "complete", "strategy": "linear_probe", "score": 0.6}]
    run = tmp_path / "work" / "a-100-0" / "with_unlabeled"
    run.mkdir(parents=True)
    (run / "leaderboard.json").write_text(json.dumps(board))
    saved = [_row("a", 100, "with_unlabeled", 0.7), _row("a", 100, "labelled_only", 0.6)]
    recounted = semi.recount(saved, [tmp_path / "elsewhere", tmp_path / "work"])
    assert {k: recounted[0][k] for k in ("trials", "semisupervised_trials", "best_semisupervised_val")} == {
        "trials": 3, "semisupervised_trials": 2, "best_semisupervised_val": 0.7}
    assert recounted[1] == saved[1]  # no kept leaderboard: the row as saved
