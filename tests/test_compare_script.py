"""benchmarks/compare.py builds the command lines the matrix runs (no run here)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


def _load(name):
    """benchmarks/NAME.py as a module: registered in sys.modules while it runs (its
    dataclasses look their module up there) and able to import its sibling scripts."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


@pytest.fixture(scope="module")
def compare():
    module = _load("compare")
    yield module
    del sys.modules[module.__name__]


@pytest.mark.parametrize("flags, cold", [([], False), (["--no-knowledge"], True)])
def test_no_knowledge_reaches_autotls_command_line(compare, tmp_path, flags, cold):
    args = compare.parse_args([str(tmp_path), "--rows", "300", "--seeds", "0", *flags])
    cell = compare.Cell("data", 300, 0, tmp_path, 300, False)
    cmd, _ = compare.command("autotl", cell, 1.0, 60.0, tmp_path, args)
    assert ("--no-knowledge" in cmd) is cold and cmd[cmd.index("--timeout") + 1] == "60.0"


def test_compare_versions_pairs_seeds_scored_in_both_and_judges_the_1x_line():
    versions = _load("compare_versions")
    del sys.modules[versions.__name__]

    def row(contender, seed, score, commit, x=1.0, rows=300):
        return {"dataset": "d", "rows": rows, "seed": seed, "contender": contender, "score": score,
                "budget_x": None if contender == "seed" else x, "commit": commit}

    old = [row("autotl", 0, 0.80, "a" * 40), row("autotl", 1, 0.70, "a" * 40), row("autotl", 0, 0.5, "a" * 40, x=3.0)]
    new = [row("seed", 0, 0.85, "b" * 40), row("seed", 1, 0.75, "b" * 40), row("autotl", 0, 0.86, "b" * 40)]
    table = versions.render(old, new, "autotl", 1.0)
    # seed 1 has no new autotl run: only seed 0 is paired; the 3x row is not this budget's
    assert "| d | 300 | 0 | 0.850 ± - | 0.800 ± - | 0.860 ± - | +0.060 ± - | +0.010 ± - |" in table
    assert "aaaaaaa (old) against bbbbbbb (new)" in table and "**met** (worst cell +0.010)" in table
    new[-1]["score"] = 0.83
    assert "**missed** (worst cell -0.020)" in versions.render(old, new, "autotl", 1.0)


def test_merge_results_takes_each_contender_from_its_file_and_refuses_a_key_twice(tmp_path):
    merger = _load("merge_results")
    del sys.modules[merger.__name__]

    def row(contender, commit, x=None):
        return {"dataset": "d", "rows": 300, "seed": 0, "contender": contender, "budget_x": x, "commit": commit}

    old = tmp_path / "old.json"
    new = tmp_path / "new.json"
    old.write_text(json.dumps({"sessions": [], "results": [row("seed", "a"), row("autotl", "a", 1.0)]}))
    new.write_text(json.dumps({"sessions": [], "results": [row("seed", "b"), row("autotl", "b", 1.0)]}))
    merged = merger.merge([(old, {"seed"}), (new, {"autotl"})])
    assert [(r["contender"], r["commit"]) for r in merged["results"]] == [("seed", "a"), ("autotl", "b")]
    with pytest.raises(SystemExit, match="is in both"):
        merger.merge([(old, {"seed"}), (new, {"seed"})])


def test_an_autotl_row_says_why_its_export_is_not_a_refit(compare, tmp_path):
    (tmp_path / "best").mkdir()
    info = {"scores": {"test": {"metrics": {"accuracy": 0.86}}, "val": 0.9}, "trial": 2, "strategy": "baseline",
            "params": {"strategy": "baseline"}, "refit": None, "refit_skipped": "no time",
            "second_look": {"accepted": False}, "soup": None}
    (tmp_path / "best" / "autotl.json").write_text(json.dumps(info))
    (tmp_path / "leaderboard.csv").write_text("number,state\n0,complete\n1,pruned\n2,complete\n")
    row = compare.autotl_result(tmp_path)
    assert row["refit_skipped"] == "no time" and row["second_look"] == {"accepted": False}
    assert "soup" not in row and row["states"] == {"complete": 2, "pruned": 1} and row["accuracy"] == 0.86
