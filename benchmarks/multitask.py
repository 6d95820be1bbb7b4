"""Multi-task evidence: one search over two label columns against two single-task searches.

The data is TweetEval emotion (../shared/data/tweeteval_emotion) with a second label derived
from the first: polarity, joy/optimism -> positive, anger/sadness -> negative. The two
contenders get the same total `--timeout`, on the same rows, scored once on the same test
rows by the searches themselves (best/autotl.json's test scores):

- multitask: `autotl search --label-col emotion,polarity`, the whole budget;
- separate: `autotl search --label-col emotion` and `--label-col polarity`, half each.

    python benchmarks/multitask.py [--train-rows 400] [--test-rows 500] [--seconds 240] [--seed 0]

Prints a table and writes benchmarks/results/multitask.json and .md. No search reads or
writes the knowledge base (--no-knowledge): each starts cold.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import tempfile
from pathlib import Path

from searches import RESULTS, autotl_search

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tweeteval_emotion"
POLARITY = {"joy": "positive", "optimism": "positive", "anger": "negative", "sadness": "negative"}
TASKS = ("emotion", "polarity")


def build(out: Path, train_rows: int, test_rows: int, seed: int) -> dict:
    """train.csv and test.csv with text, emotion and polarity: seeded samples of the source splits."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", train_rows), ("test", test_rows)):
        with open(DATA / f"{split}.csv", newline="") as f:
            rows = [(r["text"], r["label"], POLARITY[r["label"]]) for r in csv.DictReader(f)]
        rows = random.Random(seed).sample(rows, min(n, len(rows)))
        paths[split] = out / f"{split}.csv"
        with open(paths[split], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("text", *TASKS))
            writer.writerows(rows)
    return paths


def run(train_rows: int, test_rows: int, seconds: float, seed: int, work: Path) -> dict:
    paths = build(work / "data", train_rows, test_rows, seed)
    flags = ["--no-knowledge"]
    found = autotl_search(paths["train"], paths["test"], seconds, seed, work / "multitask",
                          [*flags, "--label-col", ",".join(TASKS)])
    multitask = {"contender": "multitask", "wall_seconds": found["wall_seconds"]}
    if "error" in found:
        multitask["error"] = found["error"]
    else:
        metrics = found["info"]["scores"]["test"]["metrics"]
        multitask["test_accuracy"] = {t: metrics[f"{t}:accuracy"] for t in TASKS}
        multitask["chosen"] = found["info"]["strategy"]
        multitask["weighting"] = found["info"]["params"].get("tasks.weighting")
    separate = {"contender": "separate", "wall_seconds": 0.0, "test_accuracy": {}, "chosen": {}}
    for task in TASKS:
        one = autotl_search(paths["train"], paths["test"], seconds / len(TASKS), seed, work / task,
                            [*flags, "--label-col", task])
        separate["wall_seconds"] = round(separate["wall_seconds"] + one["wall_seconds"], 1)
        if "error" in one:
            separate.setdefault("error", f"{task}: {one['error']}")
            continue
        separate["test_accuracy"][task] = one["info"]["scores"]["test"]["metrics"]["accuracy"]
        separate["chosen"][task] = one["info"]["strategy"]
    results = [multitask, separate]
    for row in results:
        print(_line(row), flush=True)
    return {"dataset": "TweetEval emotion + derived polarity", "tasks": list(TASKS), "train_rows": train_rows,
            "test_rows": test_rows, "seconds": seconds, "seed": seed, "results": results}


def _line(row: dict) -> str:
    scores = "  ".join(f"{t} {row.get('test_accuracy', {}).get(t, float('nan')):.3f}" for t in TASKS)
    error = f"  error: {row['error']}" if "error" in row else ""
    return f"{row['contender']:<10} {scores}  {row['wall_seconds']:.0f} s{error}"


def markdown(report: dict) -> str:
    lines = [f"# Multi-task vs separate searches: {report['dataset']}", "",
             f"{report['train_rows']} training rows, {report['test_rows']} test rows, {report['seconds']:.0f} s in "
             f"all per contender (separate: half each), seed {report['seed']}. Test accuracy per task.", "",
             f"| contender | {' | '.join(TASKS)} | wall seconds |", f"|---|{'---|' * len(TASKS)}---|"]
    for row in report["results"]:
        acc = row.get("test_accuracy", {})
        cells = " | ".join(f"{acc[t]:.3f}" if t in acc else "failed" for t in TASKS)
        lines.append(f"| {row['contender']} | {cells} | {row['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="multitask", help="results file stem (a tiny slice: another name)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autotl-multitask-"))
    try:
        report = run(args.train_rows, args.test_rows, args.seconds, args.seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    print(f"wrote {RESULTS / args.name}.json and .md")


if __name__ == "__main__":
    main()
