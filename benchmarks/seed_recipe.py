"""The seed recipe autotl must beat: Hugging Face `Trainer`, full fine-tune of the same
backbone, lr 5e-5, 3 epochs, batch 32, standard head, trained on the whole train.csv.

    python benchmarks/seed_recipe.py ../shared/data/sst2 [--max-length 128] [--json out.json]
    python benchmarks/seed_recipe.py ../shared/data/emobank_valence --rows 300 --subsample-seed 1 --seed 1

--rows N trains on a stratified subsample of train.csv (benchmarks/rows.py, seeded by
--subsample-seed); --seed is the training seed (head init, shuffling; default 0). Float
labels (e.g. emobank_valence) make it a regression: the same recipe with a one-output head
(problem_type="regression", MSE on the raw labels, the output bias started at the training
labels' mean as autotl starts its own: a recipe whose output starts near 0 for labels near 3
spends 300 rows learning the offset, r2 -27), scored by r2; classification is scored
by accuracy and macro F1. Prints a one-row table and writes JSON (default
benchmarks/results/seed_<dataset>.json, suffixed by the flags that change the run). Needs
`pip install accelerate` (Trainer's dependency; not autotl's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rows import UsageError, is_regression, subsample  # noqa: E402

BACKBONE = "all-MiniLM-L6-v2"
RECIPE = "HF Trainer full FT lr5e-5 3ep bs32"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder with train.csv and test.csv (text,label)")
    parser.add_argument("--rows", type=int, help="train on a stratified subsample of this many rows (default: all)")
    parser.add_argument("--subsample-seed", type=int, default=0, help="seed of the --rows subsample (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--json", type=Path, help="write results here (default benchmarks/results/seed_<dataset>.json)")
    return parser.parse_args(argv)


# -- shared with compare.py's hf_search --------------------------------------------------------

def head_config(labels: list[str], regression: bool) -> dict:
    """from_pretrained keyword arguments for the standard head."""
    if regression:
        return {"num_labels": 1, "problem_type": "regression"}
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)}}


def start_at_mean(model, values) -> None:
    """Regression: the output bias starts at the labels' mean (a stronger recipe than the
    plain one, whose output starts near 0; the comparison is the harder for autotl)."""
    import torch

    with torch.no_grad():
        model.classifier.bias.fill_(float(sum(values) / len(values)))


def primary_metric(regression: bool) -> str:
    return "r2" if regression else "accuracy"


def scores(truth, outputs, regression: bool) -> dict:
    """Test metrics of model outputs (logits, or one value per row for regression)."""
    import numpy as np

    from autotl.metrics import METRICS

    outputs = np.asarray(outputs)
    if regression:
        return {"r2": METRICS["r2"](np.asarray(truth, dtype=float), outputs.reshape(len(outputs), -1)[:, 0])}
    predicted = outputs.argmax(axis=1)
    return {name: METRICS[name](truth, predicted) for name in ("accuracy", "f1_macro")}


# -- the recipe --------------------------------------------------------------------------------

def load(args):
    """(train, test) frames; train subsampled when --rows is given."""
    import pandas as pd

    for name in ("train.csv", "test.csv"):
        if not (args.dataset / name).is_file():
            raise UsageError(f"{args.dataset / name} not found (a dataset folder holds train.csv and test.csv)")
    train = pd.read_csv(args.dataset / "train.csv").dropna()
    test = pd.read_csv(args.dataset / "test.csv").dropna()
    if not {"text", "label"} <= set(train.columns) & set(test.columns):
        raise UsageError(f"{args.dataset}: train.csv and test.csv need columns text,label")
    if args.rows is not None:
        if args.rows <= 0:
            raise UsageError("--rows must be positive")
        train = subsample(train, args.rows, seed=args.subsample_seed)
    return train, test


def run(args, train, test) -> dict:
    """Train the recipe on `train`, score it on `test`; the result row."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, set_seed)

    from autotl.backbone import resolve

    start = time.monotonic()
    regression = is_regression(train["label"])
    labels = [] if regression else sorted(train["label"].astype(str).unique())
    index = {name: i for i, name in enumerate(labels)}

    def targets(frame) -> list:
        return frame["label"].astype(float).tolist() if regression else [index[str(v)] for v in frame["label"]]

    path = resolve(BACKBONE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    set_seed(args.seed)  # the new head's init: Trainer seeds only after the model exists
    model = AutoModelForSequenceClassification.from_pretrained(path, **head_config(labels, regression))
    if regression:
        start_at_mean(model, targets(train))

    class Rows(torch.utils.data.Dataset):
        def __init__(self, frame):
            self.enc = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=args.max_length)
            self.labels = targets(frame)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "labels": self.labels[i]}

    targs = TrainingArguments(output_dir="/tmp/autotl-seed-recipe", learning_rate=5e-5,
                              num_train_epochs=args.epochs, per_device_train_batch_size=32,
                              per_device_eval_batch_size=64, save_strategy="no", report_to=[],
                              logging_strategy="no", seed=args.seed, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=Rows(train),
                      data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - t0
    outputs = trainer.predict(Rows(test)).predictions
    return {"dataset": args.dataset.name, "recipe": RECIPE, "task": "regression" if regression else "classification",
            **scores(targets(test), outputs, regression),
            "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.monotonic() - start, 1),
            "train_rows": len(train), "test_rows": len(test), "rows": args.rows,
            "subsample_seed": args.subsample_seed if args.rows is not None else None, "seed": args.seed,
            "torch_threads": torch.get_num_threads()}


def print_row(row: dict) -> None:
    metrics = [m for m in ("accuracy", "f1_macro", "r2") if m in row]
    print(f"| dataset | recipe | {' | '.join('test ' + m for m in metrics)} | train s | wall s |\n"
          f"|---|---|{'---|' * len(metrics)}---|---|\n"
          f"| {row['dataset']} | {row['recipe']} | {' | '.join(format(row[m], '.4f') for m in metrics)} | "
          f"{row['train_seconds']} | {row['wall_seconds']} |")


def default_json(args) -> Path:
    """results/seed_<dataset>.json, suffixed by --rows/--subsample-seed and a non-zero --seed."""
    suffix = f"_rows{args.rows}_sub{args.subsample_seed}" if args.rows is not None else ""
    suffix += f"_seed{args.seed}" if args.seed else ""
    return HERE / "results" / f"seed_{args.dataset.name}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train, test = load(args)
    except UsageError as e:
        print(f"seed_recipe.py: error: {e}", file=sys.stderr)
        return 2
    row = run(args, train, test)
    print_row(row)
    out = args.json or default_json(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
