"""Does self-training a linear probe help at 100 labels? The exploration behind
`probe_self_training`, kept runnable.

    python benchmarks/self_training_probe.py [--datasets trec6,sst2,ag_news] [--seeds 0,1,2]

For each dataset of ../shared/data: the first 3,200 rows of train.csv (shuffled, seed 123)
are embedded once with all-MiniLM-L6-v2 (mean pooling, the search's default head input).
Per seed, --labels rows are drawn per class in proportion (at least 2 each), --unlabeled
other rows lose their labels, and every remaining row is the evaluation set: rows of
train.csv, never test.csv, so nothing here can tune a default to a test set. A
logistic-regression probe (the teacher) fits the labelled rows; for each threshold,
selection and weight, the unlabeled rows it labels with a probability above the threshold
(all of them, or balanced: each class capped at its share of the labelled rows, the most
confident first) join the labelled ones at that weight and a new probe (the student) fits
them all. The tables show the teacher's accuracy and macro-F1 and each student's difference
from it, with the pseudo-labelled row count; the JSON
(benchmarks/results/self_training_probe.json) keeps every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
THRESHOLDS = (0.5, 0.7, 0.9)
WEIGHTS = (0.5, 1.0)
SELECTIONS = ("plain", "balanced")  # balanced: each class's pseudo-labels capped at its labelled share


def embed(texts: list[str], max_length: int = 128):
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from autotl.bundled import model_dir

    path = model_dir("all-MiniLM-L6-v2")
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            batch = tokenizer(texts[i:i + 64], truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt")
            hidden, mask = encoder(**batch).last_hidden_state, batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def draw(labels, seed: int, n_labels: int, n_unlabeled: int):
    """(labelled, unlabeled, evaluation) row indices for one seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    labelled = []
    for c in np.unique(labels):
        of_class = order[labels[order] == c]
        labelled += list(of_class[:max(2, round(n_labels * len(of_class) / len(labels)))])
    labelled = np.array(labelled)
    rest = rng.permutation(np.setdiff1d(order, labelled))
    return labelled, rest[:n_unlabeled], rest[n_unlabeled:]


def balanced(keep, confidence, guessed, labelled_y):
    """`keep` with each class's pseudo-labels capped at its share of the labelled rows times
    the number kept, the most confident first."""
    import numpy as np

    out = np.zeros_like(keep)
    classes, counts = np.unique(labelled_y, return_counts=True)
    for c, share in zip(classes, counts / counts.sum()):
        rows = np.flatnonzero(keep & (guessed == c))
        cap = int(round(share * keep.sum()))
        out[rows[np.argsort(-confidence[rows])][:cap]] = True
    return out


def scores(model, X, y) -> dict:
    from sklearn.metrics import f1_score

    predicted = model.predict(X)
    return {"accuracy": float((predicted == y).mean()), "f1_macro": float(f1_score(y, predicted, average="macro"))}


def one_seed(X, y, seed: int, n_labels: int, n_unlabeled: int) -> dict:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    lab, unl, ev = draw(y, seed, n_labels, n_unlabeled)
    teacher = LogisticRegression(C=10, max_iter=2000).fit(X[lab], y[lab])
    proba = teacher.predict_proba(X[unl])
    confidence, guessed = proba.max(1), teacher.classes_[proba.argmax(1)]
    students = []
    for threshold in THRESHOLDS:
        for selection in SELECTIONS:
            keep = confidence > threshold
            if selection == "balanced":
                keep = balanced(keep, confidence, guessed, y[lab])
            for weight in WEIGHTS:
                Xs, ys = np.concatenate([X[lab], X[unl][keep]]), np.concatenate([y[lab], guessed[keep]])
                w = np.concatenate([np.ones(len(lab)), np.full(int(keep.sum()), weight)])
                student = LogisticRegression(C=10, max_iter=2000).fit(Xs, ys, sample_weight=w)
                students.append({"threshold": threshold, "selection": selection, "weight": weight,
                                 "pseudo_rows": int(keep.sum()), **scores(student, X[ev], y[ev])})
    return {"seed": seed, "labelled": len(lab), "unlabeled": len(unl), "evaluation_rows": len(ev),
            "teacher": scores(teacher, X[ev], y[ev]), "students": students}


def table(results: list[dict]) -> str:
    lines = ["# Self-training a linear probe (held-out train.csv rows, never test.csv)", "",
             "Generated by `benchmarks/self_training_probe.py`: the teacher's score on the evaluation rows, then each "
             "student's difference from it (pseudo-labelled rows); threshold t, pseudo-label weight w, selection "
             "plain (every row above t) or balanced (each class capped at its labelled share)."]
    for metric in ("accuracy", "f1_macro"):
        heads = [(s["threshold"], s["selection"], s["weight"]) for s in results[0]["students"]]
        names = [f"t>{t:g} {sel[:3]} w{w:g}" for t, sel, w in heads]
        lines += ["", f"## {metric}", "", "| dataset | seed | teacher | " + " | ".join(names) + " |",
                  "|---" * (3 + len(names)) + "|"]
        means = [[] for _ in heads]
        for r in results:
            cells = []
            for i, s in enumerate(r["students"]):
                d = s[metric] - r["teacher"][metric]
                means[i].append(d)
                cells.append(f"{d:+.3f} ({s['pseudo_rows']})")
            lines.append(f"| {r['dataset']} | {r['seed']} | {r['teacher'][metric]:.3f} | " + " | ".join(cells) + " |")
        lines.append("| **mean** | | | " + " | ".join(f"{sum(v) / len(v):+.3f}" for v in means) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="trec6,sst2,ag_news")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--unlabeled", type=int, default=2000)
    p.add_argument("--rows", type=int, default=3200, help="rows of train.csv used (embedded once)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "self_training_probe.json")
    args = p.parse_args(argv)
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        file = args.data / name / "train.csv"
        if not file.is_file():
            print(f"error: {file} not found; pass --data DIR", file=sys.stderr)
            return 2
        frame = pd.read_csv(file).sample(frac=1, random_state=123).reset_index(drop=True).iloc[:args.rows]
        if args.labels + args.unlabeled >= len(frame):
            print(f"error: {name}: {len(frame)} rows leave none to evaluate on; lower --labels/--unlabeled",
                  file=sys.stderr)
            return 2
        X, y = embed(frame.text.astype(str).tolist()), frame.label.astype(str).to_numpy()
        for seed in [int(s) for s in args.seeds.split(",")]:
            results.append({"dataset": name, **one_seed(X, y, seed, args.labels, args.unlabeled)})
            print(f"{name} seed {seed}: teacher {results[-1]['teacher']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results}, indent=2) + "\n")
    text = table(results)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
