"""Each strategy's default configuration (as the search enqueues it: literature defaults,
mean-pooled head) trained on N rows of a dataset, scored on its test.csv.

    python benchmarks/zoo_defaults.py ../shared/data/sst2 ../shared/data/trec6 [--rows 1000]

Rows: a stratified sample of train.csv (seed 0), 20% of it held out for picking the best
epoch; the trial's own model (no refit) is scored on the whole test.csv. Prints a markdown
table (test accuracy, macro F1, train seconds, trainable parameters) and writes JSON to
benchmarks/results/zoo_defaults.json. Installed plugins (e.g. autotl-peft) are included.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="folders with train.csv and test.csv")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--strategies", help="comma-separated subset (default: all installed)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "zoo_defaults.json")
    args = parser.parse_args()


    import pandas as pd
    import torch

    from autotl.objective import trial_setup
    from autotl.backbone import load_backbone, load_tokenizer
    from autotl.batching import encode
    from autotl.data import load_data
    from autotl.metrics import METRICS, get_metric
    from autotl.objective import run_params
    from autotl.plugins import Registry
    from autotl.portfolio import default_trials
    from autotl.train import infer, predictions

    registry = Registry()
    selected = registry.select(args.strategies.split(",") if args.strategies else None)
    backbone = load_backbone("all-MiniLM-L6-v2")
    tokenizer = load_tokenizer(backbone.path)
    results = []
    for folder in args.datasets:
        full = pd.read_csv(folder / "train.csv")
        sample = pd.concat([g.sample(max(2, round(len(g) * args.rows / len(full))), random_state=0)
                            for _, g in full.groupby("label")])
        target = load_data(sample.reset_index(drop=True), test=folder / "test.csv", seed=0)
        setup = trial_setup(target, backbone, tokenizer, selected, ("standard", "mean"),
                            get_metric("accuracy", "classification"))
        test = encode(tokenizer, target.test.texts, target.test.targets, 128, key=f"{target.fingerprint}:test")
        for params in default_trials(selected, ("standard", "mean")):
            start = time.monotonic()
            outcome = run_params(setup, params)
            seconds = time.monotonic() - start
            predicted = predictions(infer(outcome.model, test, pad_id=tokenizer.pad_token_id, device="cpu"), False)
            row = {"dataset": folder.name, "strategy": params["strategy"], "head": params["head.pooling"],
                   "accuracy": METRICS["accuracy"](target.test.targets, predicted),
                   "f1_macro": METRICS["f1_macro"](target.test.targets, predicted),
                   "val_accuracy": outcome.result.best_score, "best_epoch": outcome.result.best_epoch + 1,
                   "seconds": round(seconds, 1), "trainable_params": outcome.result.trainable_params,
                   "train_rows": len(setup.train), "summary": outcome.summary}
            results.append(row)
            print(f"{row['dataset']:<8} {row['strategy']:<17} acc {row['accuracy']:.4f}  {row['seconds']:>6}s",
                  flush=True)
            del outcome
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": args.rows, "torch_threads": torch.get_num_threads(),
                                     "results": results}, indent=2) + "\n")
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    print("\n| strategy | " + " | ".join(f"{d} acc | {d} s" for d in datasets) + " | trainable params |")
    print("|---|" + "---|---|" * len(datasets) + "---|")
    for name in dict.fromkeys(r["strategy"] for r in results):
        cells = []
        for d in datasets:
            r = next((r for r in results if r["strategy"] == name and r["dataset"] == d), None)
            cells += [f"{r['accuracy']:.3f}", f"{r['seconds']:.0f}"] if r else ["-", "-"]
        params = next(r["trainable_params"] for r in results if r["strategy"] == name)
        print(f"| {name} | " + " | ".join(cells) + f" | {params:,} |")



if __name__ == "__main__":
    main()
