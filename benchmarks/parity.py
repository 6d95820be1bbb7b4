"""Does autotl's training loop match the hand recipe it replaces, on the same rows?

The recipe: Hugging Face `Trainer`, the backbone's own classification head, lr 5e-5, 3
epochs, batch 32 (Trainer defaults otherwise: no warmup, no weight decay, random batches).
autotl's `baseline` strategy is meant to be that recipe in autotl's loop. Both train on the
same N rows (a stratified sample of train.csv, subsample seed 0) for 3 epochs, keep the
last epoch, and are scored on *dev* rows: up to 1,000 other rows of train.csv. test.csv is
never read, so nothing here can tune a default to the test sets.

    python benchmarks/parity.py ../shared/data/sst2 ../shared/data/trec6 --rows 1000 --seeds 0,1,2

Contenders (--only): `trainer` (the recipe), `baseline` (autotl's loop, length-bucketed
batches, as searches run it), `baseline_shuffled` (autotl's loop with plainly shuffled
batches, as Trainer draws them), `full_finetune` (autotl's own full fine-tune default:
mean-pooled head, 10% warmup, weight decay 0.01). Each (dataset, seed, contender) result is
appended to --out as soon as it exists and skipped when rerun (resumable); the markdown
table (mean ± standard error over seeds, and each contender's paired difference to the
recipe) is regenerated from the JSON at the end, or alone with --table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rows import dev_rows, subsample  # noqa: E402  (benchmarks/rows.py)

CONTENDERS = ("trainer", "baseline", "baseline_shuffled", "full_finetune")
BACKBONE = "all-MiniLM-L6-v2"


def train_trainer(train, seed: int, max_length: int):
    """The recipe with HF Trainer; returns (predict(texts) -> class ids, train seconds)."""
    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, set_seed)

    from autotl.backbone import resolve

    labels = sorted(train["label"].astype(str).unique())
    index = {name: i for i, name in enumerate(labels)}
    path = resolve(BACKBONE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    set_seed(seed)  # the head's init: Trainer seeds only after the model exists
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, texts, targets):
            self.enc = tokenizer(list(texts), truncation=True, max_length=max_length)
            self.targets = targets

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "labels": self.targets[i]}

    targs = TrainingArguments(output_dir="/tmp/autotl-parity", learning_rate=5e-5, num_train_epochs=3,
                              per_device_train_batch_size=32, per_device_eval_batch_size=64,
                              save_strategy="no", report_to=[], logging_strategy="no", seed=seed,
                              disable_tqdm=True)
    trainer = Trainer(model=model, args=targs,
                      train_dataset=Rows(train["text"].astype(str), [index[str(v)] for v in train["label"]]),
                      data_collator=DataCollatorWithPadding(tokenizer))
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start

    def predict(texts):
        logits = trainer.predict(Rows(texts, [0] * len(texts))).predictions
        return np.asarray(logits).argmax(axis=1)

    return labels, predict, seconds


def train_autotl(train, seed: int, max_length: int, contender: str):
    """The same rows through autotl's loop; returns (labels, predict, train seconds)."""
    import numpy as np

    from autotl import batching
    from autotl.backbone import load_backbone, load_tokenizer
    from autotl.metrics import get_metric
    from autotl.objective import POOLING, STRATEGY, TrialSetup, run_params
    from autotl.plugins import Registry
    from autotl.train import FitSettings, infer, predictions

    labels = tuple(sorted(train["label"].astype(str).unique()))
    index = {name: i for i, name in enumerate(labels)}
    backbone = load_backbone(BACKBONE)
    tokenizer = load_tokenizer(backbone.path)
    targets = np.array([index[str(v)] for v in train["label"]])
    rows = batching.encode(tokenizer, train["text"].astype(str).tolist(), targets, max_length, key=f"parity:{seed}")
    strategy = "full_finetune" if contender == "full_finetune" else "baseline"
    registry = Registry().select([strategy])
    settings = FitSettings(metric=get_metric("accuracy", "classification"), regression=False,
                           pad_id=tokenizer.pad_token_id or 0, seed=seed,
                           batch_order="shuffled" if contender == "baseline_shuffled" else "bucketed")
    setup = TrialSetup(backbone_path=backbone.path, strategies=registry, poolings=("standard", "mean"),
                       train=rows, val=None, label_names=labels, num_outputs=len(labels), fit=settings)
    params = {STRATEGY: strategy, POOLING: "mean", **registry[strategy].strategy.defaults}
    start = time.monotonic()
    model = run_params(setup, params).model
    seconds = time.monotonic() - start

    def predict(texts):
        enc = batching.encode(tokenizer, list(texts), np.zeros(len(texts)), max_length, key="parity-dev")
        return predictions(infer(model, enc, pad_id=tokenizer.pad_token_id or 0, device="cpu"), False)

    return labels, predict, seconds


def run_one(folder: Path, rows: int, seed: int, contender: str, max_length: int) -> dict:
    import numpy as np
    import pandas as pd

    from autotl.metrics import METRICS

    full = pd.read_csv(folder / "train.csv")[["text", "label"]].dropna()
    train = subsample(full, rows, seed=0)
    dev = dev_rows(full, train.index, 1000)
    if contender == "trainer":
        labels, predict, seconds = train_trainer(train, seed, max_length)
    else:
        labels, predict, seconds = train_autotl(train, seed, max_length, contender)
    index = {name: i for i, name in enumerate(labels)}
    keep = dev["label"].astype(str).isin(index)
    truth = np.array([index[str(v)] for v in dev["label"][keep]])
    predicted = predict(dev["text"][keep].astype(str).tolist())
    return {"dataset": folder.name, "rows": len(train), "dev_rows": int(keep.sum()), "seed": seed,
            "contender": contender, "dev_accuracy": METRICS["accuracy"](truth, predicted),
            "dev_f1_macro": METRICS["f1_macro"](truth, predicted), "train_seconds": round(seconds, 1),
            "correct": (truth == predicted).astype(int).tolist()}


def table(results: list[dict]) -> str:
    """Mean ± standard error over seeds, and the paired difference to the recipe per seed."""
    import numpy as np

    out = ["| dataset | rows | contender | seeds | dev accuracy (mean ± se) | minus recipe (mean ± se) | train s |",
           "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], r["rows"]) for r in results})
    for dataset, rows in keys:
        mine = [r for r in results if r["dataset"] == dataset and r["rows"] == rows]
        recipe = {r["seed"]: r for r in mine if r["contender"] == "trainer"}
        for contender in CONTENDERS:
            runs = sorted((r for r in mine if r["contender"] == contender), key=lambda r: r["seed"])
            if not runs:
                continue
            acc = np.array([r["dev_accuracy"] for r in runs])
            diffs = np.array([r["dev_accuracy"] - recipe[r["seed"]]["dev_accuracy"] for r in runs
                              if r["seed"] in recipe])
            diff = f"{diffs.mean():+.4f} ± {_fmt_se(diffs)}" if contender != "trainer" and len(diffs) else "-"
            secs = np.mean([r["train_seconds"] for r in runs])
            out.append(f"| {dataset} | {rows} | {contender} | {len(runs)} | {acc.mean():.4f} ± {_fmt_se(acc)} | "
                       f"{diff} | {secs:.0f} |")
    return "\n".join(out)


def _fmt_se(values) -> str:
    """The standard error to 4 places; '-' for one seed (no spread to measure)."""
    return f"{_se(values):.4f}" if len(values) > 1 else "-"


def _se(values) -> float:
    import numpy as np

    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", type=Path)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "parity.json")
    parser.add_argument("--table", action="store_true", help="only regenerate the table from --out")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = json.loads(args.out.read_text())["results"] if args.out.is_file() else []
    if not args.table:
        import transformers

        transformers.logging.set_verbosity_error()
        for folder in args.datasets:
            for seed in [int(s) for s in args.seeds.split(",")]:
                for contender in args.only.split(","):
                    done = {(r["dataset"], r["rows"], r["seed"], r["contender"]) for r in results}
                    if (folder.name, args.rows, seed, contender) in done:
                        continue
                    result = run_one(folder, args.rows, seed, contender, args.max_length)
                    results.append(result)
                    print(f"{folder.name} seed {seed} {contender}: dev accuracy {result['dev_accuracy']:.4f} "
                          f"in {result['train_seconds']} s", flush=True)
                    _save(args.out, results)
    text = table(results)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


def _save(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
