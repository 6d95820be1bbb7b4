"""The seed recipe autotl must beat: Hugging Face `Trainer`, full fine-tune of the same
backbone, lr 5e-5, 3 epochs, batch 32, standard head, trained on the whole train.csv.

    python benchmarks/seed_recipe.py ../shared/data/sst2 [--max-length 128] [--json out.json]

Prints a one-row table (test accuracy, macro F1, train seconds, wall seconds) and writes
JSON beside it. Needs `pip install accelerate` (Trainer's dependency; not autotl's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder with train.csv and test.csv (text,label)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--json", type=Path, help="write results here (default benchmarks/results/seed_<dataset>.json)")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, set_seed)

    from autotl.backbone import resolve
    from autotl.metrics import METRICS

    start = time.monotonic()
    train = pd.read_csv(args.dataset / "train.csv").dropna()
    test = pd.read_csv(args.dataset / "test.csv").dropna()
    labels = sorted(train["label"].astype(str).unique())
    index = {name: i for i, name in enumerate(labels)}
    path = resolve("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    set_seed(0)  # the new head's init: Trainer seeds only after the model exists
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, frame):
            self.enc = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=args.max_length)
            self.labels = [index[str(v)] for v in frame["label"]]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "labels": self.labels[i]}

    targs = TrainingArguments(output_dir="/tmp/autotl-seed-recipe", learning_rate=5e-5,
                              num_train_epochs=args.epochs, per_device_train_batch_size=32,
                              per_device_eval_batch_size=64, save_strategy="no", report_to=[],
                              logging_strategy="no", seed=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=Rows(train),
                      data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - t0
    logits = trainer.predict(Rows(test)).predictions
    predicted = np.asarray(logits).argmax(axis=1)
    truth = np.array([index[str(v)] for v in test["label"]])
    row = {"dataset": args.dataset.name, "recipe": "HF Trainer full FT lr5e-5 3ep bs32",
           "accuracy": METRICS["accuracy"](truth, predicted), "f1_macro": METRICS["f1_macro"](truth, predicted),
           "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.monotonic() - start, 1),
           "train_rows": len(train), "test_rows": len(test), "torch_threads": torch.get_num_threads()}
    print(f"| dataset | recipe | test accuracy | test f1_macro | train s | wall s |\n|---|---|---|---|---|---|\n"
          f"| {row['dataset']} | {row['recipe']} | {row['accuracy']:.4f} | {row['f1_macro']:.4f} | "
          f"{row['train_seconds']} | {row['wall_seconds']} |")
    out = args.json or Path(__file__).parent / "results" / f"seed_{args.dataset.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
