"""What the issue-11 benchmarks (sources.py, knowledge.py) share: the recipe's time from the
matrix's results, one `autotl search` run as a subprocess, comma-separated integer flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def recipe_seconds(dataset: str, rows: int, seed: int) -> float | None:
    """The recipe's wall seconds on this cell in the matrix's results (compare_matrix*.json)."""
    for path in sorted(RESULTS.glob("compare_matrix*.json")):
        try:
            results = json.loads(path.read_text())["results"]
        except (OSError, ValueError, KeyError):
            continue
        found = next((r["wall_seconds"] for r in results if (r["dataset"], r["rows"], r["seed"], r["contender"])
                      == (dataset, rows, seed, "seed") and "error" not in r), None)
        if found is not None:
            return found
    return None


def autotl_search(train: Path, test: Path, seconds: float, seed: int, run_dir: Path, extra: list[str],
                  portfolio: Path | None = None, env: dict | None = None) -> dict:
    """`autotl search TRAIN --test TEST --timeout SECONDS` in a subprocess: {"wall_seconds",
    "info" (best/autotl.json), "board" (leaderboard.json)}, or {"wall_seconds", "error" (the
    last line it wrote)} when it failed."""
    cmd = [sys.executable, "-m", "autotl.cli", "search", str(train), "--test", str(test), "--timeout",
           f"{seconds:.0f}s", "--seed", str(seed), "--out", str(run_dir), "--no-progress", *extra,
           *(["--portfolio", str(portfolio)] if portfolio else [])]
    started = time.monotonic()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    wall = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "wall_seconds": wall}
    return {"wall_seconds": wall, "info": json.loads((run_dir / "best" / "autotl.json").read_text()),
            "board": json.loads((run_dir / "leaderboard.json").read_text())}
