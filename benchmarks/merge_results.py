"""One compare.py results file from the rows of several, chosen by contender.

    python benchmarks/merge_results.py OUT.json FILE:contender[,contender...] [FILE:contender...]

Used when only autotl's code changed: the recipe ("seed") and hf_search rows of an earlier
matrix (their code, benchmarks/seed_recipe.py and compare.py's Trainer worker, unchanged) beside
autotl's rows from a new run, so that `compare.py --table --out OUT.json` judges the new autotl
against the same peers and budgets. A (dataset, rows, seed, contender, budget) key given by two
files is an error; every row keeps its own commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def merge(sources: list[tuple[Path, set[str]]]) -> dict:
    sessions, rows, seen = [], [], {}
    for path, contenders in sources:
        content = json.loads(Path(path).read_text())
        sessions += content.get("sessions", [])
        for row in content["results"]:
            if row["contender"] not in contenders:
                continue
            key = (row["dataset"], row["rows"], row["seed"], row["contender"], row.get("budget_x"))
            if key in seen:
                raise SystemExit(f"merge_results.py: {key} is in both {seen[key]} and {path}")
            seen[key] = path
            rows.append(row)
    return {"sessions": sessions, "results": rows}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any(":" not in a for a in argv[1:]):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    sources = [(Path(a.rsplit(":", 1)[0]), set(a.rsplit(":", 1)[1].split(","))) for a in argv[1:]]
    out = Path(argv[0])
    out.write_text(json.dumps(merge(sources), indent=1) + "\n")
    print(f"{out}: {len(json.loads(out.read_text())['results'])} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
