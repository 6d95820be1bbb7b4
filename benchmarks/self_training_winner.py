"""Does self-training the search's own winner help at 100 labels? An exploration, kept runnable.

    python benchmarks/self_training_winner.py --datasets trec6 --seeds 0 --out FILE.json

The question behind it: `self_training` and `probe_self_training` are trials like any other,
and at 100 labels they rarely win (benchmarks/results/semisupervised_100*.md): the labelled
rows' winners (LP-FT, LLRD, IA3) already beat their teachers. Would the winner itself, as
the teacher, gain from its own confident pseudo-labels?

Per dataset of ../shared/data and seed: rows of train.csv only (never test.csv, so nothing
here can tune a default to a test set), drawn as benchmarks/self_training_probe.py draws
them: --labels rows per class in proportion (at least 2 each), --unlabeled other rows that
lose their labels, up to 1,000 of the rest to evaluate on. The labelled rows split 80/20
(stratified) into training and validation rows, fixed for teacher and student.

- teacher: `autotl search` on the labelled rows for --timeout seconds, the leave-one-dataset-out
  portfolio (so the dataset's own evidence cannot steer it), no knowledge, no refit;
- pseudo-labels: the teacher's class probabilities on the unlabeled rows; those above
  --threshold keep its label;
- student: the teacher's winning configuration, exactly (a one-entry portfolio file), trained
  on the training rows plus the pseudo-labelled rows, validated on the same validation rows;
- both scored on the evaluation rows. The table gives each one's validation and evaluation
  accuracy, so it shows whether validation would have told the student's gain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
LOO = HERE / "results" / "portfolio_loo"


def split_rows(frame, seed: int, n_labels: int, n_unlabeled: int, n_eval: int):
    """(labelled train, labelled val, unlabeled, evaluation) frames of `frame` for `seed`."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from self_training_probe import draw

    labels = frame["label"].astype(str).to_numpy()
    lab, unl, ev = draw(labels, seed, n_labels, n_unlabeled)
    rng = np.random.default_rng(seed + 1000)
    val = []
    for c in np.unique(labels[lab]):
        of_class = rng.permutation(lab[labels[lab] == c])
        val += list(of_class[:max(1, round(0.2 * len(of_class)))] if len(of_class) > 1 else [])
    train = np.setdiff1d(lab, val)
    return frame.iloc[train], frame.iloc[val], frame.iloc[unl][["text"]], frame.iloc[ev[:n_eval]]


def search(args: list[str], log: Path) -> float:
    start = time.monotonic()
    with open(log, "a") as out:
        code = subprocess.call([sys.executable, "-m", "autotl.cli", "search", *args, "--no-progress",
                                "--no-knowledge"], stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"autotl search failed ({code}); see {log}")
    return time.monotonic() - start


def evaluate(run: Path, frame) -> dict:
    from sklearn.metrics import f1_score

    import autotl

    predicted = autotl.predict(run, frame[["text"]], device="cpu")["prediction"].astype(str)
    truth = frame["label"].astype(str).to_numpy()
    return {"accuracy": float((predicted.to_numpy() == truth).mean()),
            "f1_macro": float(f1_score(truth, predicted, average="macro"))}


def one_cell(dataset: str, seed: int, args, work: Path) -> dict:
    import pandas as pd

    import autotl

    frame = pd.read_csv(DATA / dataset / "train.csv")
    train, val, unlabeled, evaluation = split_rows(frame, seed, args.labels, args.unlabeled, args.eval_rows)
    cell = work / f"{dataset}-{seed}"
    cell.mkdir(parents=True, exist_ok=True)
    log = cell / "log.txt"
    for name, part in (("train", train), ("val", val)):
        part.to_csv(cell / f"{name}.csv", index=False)
    teacher = cell / "teacher"
    teacher_s = search([str(cell / "train.csv"), "--val", str(cell / "val.csv"), "--timeout", str(args.timeout),
                        "--no-refit", "--seed", str(seed), "--out", str(teacher),
                        "--portfolio", str(LOO / f"{dataset}.json")], log)
    info = json.loads((teacher / "best" / "autotl.json").read_text())
    params = info["params"]
    probs = autotl.predict(teacher, unlabeled, device="cpu")
    prob_cols = [c for c in probs.columns if c.startswith("prob_")]
    sure = probs[probs[prob_cols].max(axis=1) > args.threshold]
    pseudo = pd.DataFrame({"text": sure["text"], "label": sure["prediction"]})
    pd.concat([train, pseudo]).to_csv(cell / "student_train.csv", index=False)
    portfolio = {"about": "one entry: the teacher's winner", "evaluated_strategies": [params["strategy"]],
                 "buckets": [{"max_rows": None, "order": [{"name": "winner", "params": params}]}]}
    (cell / "portfolio.json").write_text(json.dumps(portfolio))
    student = cell / "student"
    student_s = search([str(cell / "student_train.csv"), "--val", str(cell / "val.csv"), "--n-trials", "1",
                        "--strategies", params["strategy"], "--portfolio", str(cell / "portfolio.json"),
                        "--no-refit", "--no-soup", "--seed", str(seed), "--out", str(student),
                        "--timeout", str(args.student_timeout)], log)
    student_info = json.loads((student / "best" / "autotl.json").read_text())
    return {"dataset": dataset, "seed": seed, "labelled": len(train) + len(val), "val_rows": len(val),
            "unlabeled": len(unlabeled), "pseudo_rows": len(pseudo), "evaluation_rows": len(evaluation),
            "pseudo_correct": _pseudo_correct(frame, unlabeled.index[sure.index], pseudo),
            "winner": params, "teacher_seconds": round(teacher_s, 1), "student_seconds": round(student_s, 1),
            "teacher": {"val": info["scores"]["val"], **evaluate(teacher, evaluation)},
            "student": {"val": student_info["scores"]["val"], **evaluate(student, evaluation)}}


def _pseudo_correct(frame, rows, pseudo) -> float | None:
    """Share of pseudo-labels that are right (`rows`: their index in `frame`, whose hidden
    labels say; for the table only, never for a choice)."""
    if not len(pseudo):
        return None
    truth = frame.loc[rows, "label"].astype(str).to_numpy()
    return float((truth == pseudo["label"].astype(str).to_numpy()).mean())


def table(results: list[dict]) -> str:
    lines = ["# Self-training the search's winner (held-out train.csv rows, never test.csv)", "",
             "Generated by `benchmarks/self_training_winner.py`: the teacher is `autotl search` on the labelled rows "
             "(leave-one-dataset-out portfolio, no refit); the student is its winning configuration trained on "
             "the labelled training rows plus the unlabeled rows the teacher labels above the threshold; both "
             "validated on the same validation rows and scored on the evaluation rows.", "",
             "| dataset | seed | winner | pseudo rows (right) | teacher val | student val | teacher eval acc | "
             "student eval acc | Δ acc | Δ macro-F1 | student s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, s = r["teacher"], r["student"]
        right = f"{r['pseudo_correct']:.2f}" if r["pseudo_correct"] is not None else "-"
        lines.append(f"| {r['dataset']} | {r['seed']} | {r['winner']['strategy']}/{r['winner'].get('head.pooling', '-')} "
                     f"| {r['pseudo_rows']} ({right}) | {t['val']:.3f} | {s['val']:.3f} | {t['accuracy']:.3f} | "
                     f"{s['accuracy']:.3f} | {s['accuracy'] - t['accuracy']:+.3f} | "
                     f"{s['f1_macro'] - t['f1_macro']:+.3f} | {r['student_seconds']:.0f} |")
    if results:
        mean = sum(r["student"]["accuracy"] - r["teacher"]["accuracy"] for r in results) / len(results)
        agree = sum((r["student"]["val"] >= r["teacher"]["val"]) == (r["student"]["accuracy"] >= r["teacher"]["accuracy"])
                    for r in results)
        lines += ["", f"Mean Δ accuracy over {len(results)} cells: {mean:+.4f}; validation (student ≥ teacher) agreed "
                      f"with the evaluation rows in {agree} of {len(results)}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="trec6,sst2,ag_news")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--unlabeled", type=int, default=2000)
    p.add_argument("--eval-rows", type=int, default=1000)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--timeout", type=int, default=240, help="the teacher search's seconds")
    p.add_argument("--student-timeout", type=int, default=600)
    p.add_argument("--out", type=Path, default=HERE / "results" / "self_training_winner.json")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    p.add_argument("--merge", nargs="*", type=Path, default=(),
                   help="only merge these result files into --out and write its table")
    args = p.parse_args(argv)
    if args.merge:
        results = [r for f in args.merge for r in json.loads(f.read_text())["results"]]
        args.out.write_text(json.dumps({"results": results}, indent=1))
        args.out.with_suffix(".md").write_text(table(results))
        print(table(results))
        return 0
    results = json.loads(args.out.read_text())["results"] if args.out.exists() else []
    work = args.work or Path(tempfile.mkdtemp(prefix="autotl-stw-"))
    for dataset in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            if any(r["dataset"] == dataset and r["seed"] == seed for r in results):
                continue
            results.append(one_cell(dataset, seed, args, work))
            args.out.write_text(json.dumps({"results": results}, indent=1))
            print(f"{dataset} seed {seed}: teacher {results[-1]['teacher']['accuracy']:.3f}, "
                  f"student {results[-1]['student']['accuracy']:.3f}", flush=True)
    args.out.with_suffix(".md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
