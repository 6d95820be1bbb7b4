"""Multi-label evidence: `autotl search` against the hand recipe alone on Banking77 topics.

The data is `multilabel_data.py`'s: Banking77 intents mapped to 1-3 overlapping topics,
a few hundred training rows, label sets joined by "|" (inferred). Both contenders run
`autotl search` with the same `--timeout` on the same rows and are scored once on the same
test rows by the search itself (best/autotl.json's test scores, at the decision threshold
tuned on validation):

- autotl: every installed strategy, the learned portfolio first;
- recipe: the `baseline` strategy alone (HF Trainer defaults: full fine-tune, lr 5e-5,
  3 epochs, batch 32, the standard head), one trial.

    python benchmarks/multilabel.py [--train-rows 400] [--test-rows 500] [--seconds 240] [--seed 0]

Prints a table and writes benchmarks/results/multilabel.json and .md. Neither search
reads or writes the knowledge base (--no-knowledge): each starts cold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from multilabel_data import TOPICS, build
from searches import RESULTS, autotl_search

CONTENDERS = {
    "autotl": [],
    "recipe": ["--strategies", "baseline", "--n-trials", "1"],
}
METRICS = ("f1_micro", "f1_macro", "subset_accuracy")


def run(train_rows: int, test_rows: int, seconds: float, seed: int, work: Path) -> dict:
    paths = build(work / "data", train_rows, test_rows, seed)
    results = []
    for name, extra in CONTENDERS.items():
        run_dir = work / name
        shutil.rmtree(run_dir, ignore_errors=True)
        found = autotl_search(paths["train"], paths["test"], seconds, seed, run_dir, ["--no-knowledge", *extra])
        row = {"contender": name, "wall_seconds": found["wall_seconds"]}
        if "error" in found:
            row["error"] = found["error"]
        else:
            info, board = found["info"], found["board"]
            row.update({"test": {m: info["scores"]["test"]["metrics"][m] for m in METRICS},
                        "test_rows": info["scores"]["test"]["rows"], "val_f1_micro": info["scores"]["val"],
                        "threshold": info.get("threshold"), "chosen": f"{info['strategy']}/{info['head']['pooling']}",
                        "trials": sum(r["state"] == "complete" for r in board)})
        results.append(row)
        print(_line(row), flush=True)
    return {"dataset": "Banking77 topics", "labels": len(TOPICS),
            "train_rows": train_rows, "test_rows": test_rows, "seconds": seconds, "seed": seed, "results": results}


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['contender']:<7} failed after {row['wall_seconds']:.0f} s: {row['error']}"
    t = row["test"]
    return (f"{row['contender']:<7} test f1_micro {t['f1_micro']:.4f}  f1_macro {t['f1_macro']:.4f}  subset_accuracy "
            f"{t['subset_accuracy']:.4f}  ({row['chosen']}, threshold {row['threshold']}, {row['trials']} trials, "
            f"{row['wall_seconds']:.0f} s)")


def markdown(report: dict) -> str:
    lines = [f"# Multi-label: autotl against the recipe alone, {report['dataset']}", "",
             f"Banking77's intents mapped to {report['labels']} overlapping topics (benchmarks/multilabel_data.py); "
             f"{report['train_rows']} training rows (20% of them validation), {report['test_rows']} test rows, "
             f"`--timeout {report['seconds']:.0f}s` each, seed {report['seed']}, one CPU core. autotl: every "
             "installed strategy; recipe: the `baseline` strategy alone (HF Trainer defaults: full fine-tune, "
             "lr 5e-5, 3 epochs, batch 32, the standard head), one trial. Test scores at each model's decision "
             "threshold, tuned on validation. Regenerate: `python benchmarks/multilabel.py`.", "",
             "| contender | test micro-F1 | test macro-F1 | test subset accuracy | chosen | threshold | trials | "
             "wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['contender']} | failed: {r['error']} | | | | | | {r['wall_seconds']:.0f} |")
            continue
        t = r["test"]
        lines.append(f"| {r['contender']} | {t['f1_micro']:.4f} | {t['f1_macro']:.4f} | {t['subset_accuracy']:.4f} | "
                     f"{r['chosen']} | {r['threshold']} | {r['trials']} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=240.0, help="--timeout of each search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="where the data and run directories go (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="autotl-multilabel-"))
    report = run(args.train_rows, args.test_rows, args.seconds, args.seed, work)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "multilabel.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "multilabel.md").write_text(markdown(report))
    print(f"wrote {RESULTS / 'multilabel.json'} and {RESULTS / 'multilabel.md'}")


if __name__ == "__main__":
    main()
