"""Training throughput: autotl's loop against Hugging Face `Trainer`, and each strategy's cost.

    python benchmarks/throughput.py ../shared/data/sst2 [--rows 1000] [--strategies a,b]

All in one process, one after another, on the same rows (a stratified sample of train.csv,
seed 0; 20% held out as validation for the per-strategy trials), so the ratios are measured
side by side:

1. Full fine-tune, 1 epoch, batch 32, lr 5e-5, standard head, no validation: HF `Trainer`
   (per-batch padding, as its default collator does; and again with its
   `group_by_length` sampler),
   then autotl's `fit` (per-batch padding + length bucketing). Samples per second and the
   ratio autotl / Trainer.
2. The activation cache: a freeze-4-of-6 epoch with and without it (the first cached epoch
   pays for computing the states, so both the first and a later epoch are shown), and a
   linear-probe trial on a warm cache against one full fine-tune epoch.
3. Every installed strategy's default trial (as the search enqueues it), limited to 1 epoch:
   seconds for the trial (cold caches cleared first) and samples per second.

Prints markdown tables and writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path


def sample_rows(folder: Path, rows: int | None):
    import pandas as pd

    full = pd.read_csv(folder / "train.csv")
    if rows is None or rows >= len(full):
        return full
    return pd.concat([g.sample(max(2, round(len(g) * rows / len(full))), random_state=0)
                      for _, g in full.groupby("label")]).sample(frac=1, random_state=0).reset_index(drop=True)


def hf_trainer_epoch(path: str, texts, labels, *, num_labels: int, group_by_length: bool,
                     max_length: int) -> float:
    """Samples per second of one HF Trainer epoch (full fine-tune, batch 32, lr 5e-5)."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    rows = [{"input_ids": i, "attention_mask": m, "labels": int(y)}
            for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels)]
    args = TrainingArguments(output_dir="/tmp/autotl-throughput-hf", learning_rate=5e-5, num_train_epochs=1,
                             per_device_train_batch_size=32, save_strategy="no", report_to=[],
                             logging_strategy="no", seed=0, disable_tqdm=True,
                             train_sampling_strategy="group_by_length" if group_by_length else "random")
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
    start = time.monotonic()
    trainer.train()
    return len(rows) / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder with train.csv")
    parser.add_argument("--rows", type=int, default=1000, help="stratified sample of train.csv (default 1000)")
    parser.add_argument("--strategies", help="comma-separated subset for table 3 (default: all installed)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "throughput.json")
    args = parser.parse_args()
    if not (args.dataset / "train.csv").is_file():
        raise SystemExit(f"error: {args.dataset / 'train.csv'} not found; pass a folder with train.csv")

    import torch

    from autotl.activations import ACTIVATIONS
    from autotl.objective import trial_setup
    from autotl.backbone import load_backbone, load_tokenizer
    from autotl.data import load_data
    from autotl.features import CACHE as FEATURES
    from autotl.metrics import get_metric
    from autotl.model import build_model
    from autotl.objective import run_params
    from autotl.plugins import Registry
    from autotl.strategy import ParamGroup, Plan, Stage
    from autotl.portfolio import default_trials
    from autotl.train import fit

    frame = sample_rows(args.dataset, args.rows)
    backbone = load_backbone("all-MiniLM-L6-v2")
    tokenizer = load_tokenizer(backbone.path)
    registry = Registry()
    selected = registry.select(args.strategies.split(",") if args.strategies else None)
    target = load_data(frame, seed=0)
    setup = trial_setup(target, backbone, tokenizer, selected, ("standard", "mean"),
                        get_metric("accuracy", "classification"), max_length=args.max_length)
    from autotl.batching import concat

    everything = concat(setup.train, setup.val)  # table 1 trains on all sampled rows, like the Trainer
    names = target.label_names
    results = {"dataset": args.dataset.name, "rows": len(frame), "torch_threads": torch.get_num_threads(),
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
               "torch": torch.__version__}

    # 1. Full fine-tune step throughput.
    texts = list(target.train.texts) + list(target.val.texts)
    labels = list(target.train.targets) + list(target.val.targets)
    hf = hf_trainer_epoch(backbone.path, texts, labels, num_labels=len(names), group_by_length=False,
                          max_length=args.max_length)
    hf_grouped = hf_trainer_epoch(backbone.path, texts, labels, num_labels=len(names), group_by_length=True,
                                  max_length=args.max_length)

    def full_model():
        torch.manual_seed(0)
        return build_model(backbone.path, "standard", num_outputs=len(names), label_names=names, regression=False)

    model = full_model()
    plan = Plan((Stage((ParamGroup(tuple(model.parameters()), 5e-5),), 1),), batch_size=32)
    start = time.monotonic()
    fit(model, plan, everything, None, setup.fit)
    ours = len(everything) / (time.monotonic() - start)
    full_epoch_seconds = len(everything) / ours
    results["full_finetune"] = {"hf_trainer": hf, "hf_trainer_group_by_length": hf_grouped, "autotl": ours,
                                "ratio": ours / hf, "ratio_vs_grouped": ours / hf_grouped}
    print(f"\n| full fine-tune, 1 epoch, {len(everything)} rows | samples/s | autotl ratio |\n|---|---|---|")
    print(f"| HF Trainer | {hf:.1f} | {ours / hf:.2f} |")
    print(f"| HF Trainer, group_by_length | {hf_grouped:.1f} | {ours / hf_grouped:.2f} |")
    print(f"| autotl fit (bucketed) | {ours:.1f} | 1.00 |", flush=True)
    del model

    # 2. The activation cache.
    def freeze_epochs(use_cache: bool, epochs: int = 2) -> list[float]:
        model = full_model()
        top = [p for layer in model.layers[4:] for p in layer.parameters()] + model.head_parameters()
        top += list(model.encoder.pooler.parameters())
        plan = Plan((Stage((ParamGroup(tuple(top), 1e-4),), 1),) * epochs, batch_size=32)
        times, last = [], [time.monotonic()]

        def lap(epoch, score, epochs_left):
            now = time.monotonic()
            times.append(now - last[0])
            last[0] = now

        fit(model, plan, setup.train, setup.val, replace(setup.fit, use_cache=use_cache), on_epoch=lap)
        return times

    ACTIVATIONS.clear()
    cached = freeze_epochs(True)
    plain = freeze_epochs(False)
    def probe_trial() -> None:
        model = build_model(backbone.path, "mean", num_outputs=len(names), label_names=names, regression=False)
        plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), 1),), batch_size=32)
        fit(model, plan, setup.train, setup.val, setup.fit)

    probe_trial()  # warms the feature cache, as the search's first probe trial does
    start = time.monotonic()
    probe_trial()
    probe_seconds = time.monotonic() - start
    results["cache"] = {"freeze4_cached_epochs": cached, "freeze4_uncached_epochs": plain,
                        "speedup_first_epoch": plain[0] / cached[0], "speedup_later_epoch": plain[1] / cached[1],
                        "probe_trial_warm_seconds": probe_seconds, "full_epoch_seconds": full_epoch_seconds,
                        "probe_share_of_full_epoch": probe_seconds / full_epoch_seconds}
    print(f"\n| activation cache ({len(setup.train)} train rows) | seconds | uncached / cached |\n|---|---|---|")
    print(f"| freeze 4/6, epoch 1 (computes the states) | {cached[0]:.1f} vs {plain[0]:.1f} | {plain[0] / cached[0]:.2f} |")
    print(f"| freeze 4/6, epoch 2 | {cached[1]:.1f} vs {plain[1]:.1f} | {plain[1] / cached[1]:.2f} |")
    print(f"| linear probe trial, warm cache (1 epoch) | {probe_seconds:.2f} | "
          f"{100 * probe_seconds / full_epoch_seconds:.1f}% of a full fine-tune epoch |", flush=True)

    # 3. Per strategy: the default trial, 1 epoch, cold caches.
    rows = []
    one_epoch = replace(setup, fit=replace(setup.fit, max_epochs=1))
    for params in default_trials(selected, ("standard", "mean")):
        ACTIVATIONS.clear()
        FEATURES.clear()
        start = time.monotonic()
        outcome = run_params(one_epoch, params)
        seconds = time.monotonic() - start
        rows.append({"strategy": params["strategy"], "seconds": seconds, "samples_per_s": len(setup.train) / seconds,
                     "trainable_params": outcome.result.trainable_params, "val_accuracy": outcome.result.best_score})
        print(f"  {params['strategy']:<17} {seconds:6.1f}s", flush=True)
    results["strategies"] = rows
    print(f"\n| strategy (default, 1 epoch, {len(setup.train)} rows, cold cache) | trial s | samples/s | "
          f"vs full fine-tune |\n|---|---|---|---|")
    full = next((r["seconds"] for r in rows if r["strategy"] == "full_finetune"), None)
    for r in sorted(rows, key=lambda r: r["seconds"]):
        rel = f"{r['seconds'] / full:.2f}x" if full else "-"
        print(f"| {r['strategy']} | {r['seconds']:.1f} | {r['samples_per_s']:.0f} | {rel} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
