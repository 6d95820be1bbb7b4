"""autotl against the seed recipe and Hugging Face's own search, at equal wall-clock budgets.

For each dataset folder (train.csv and test.csv, columns text,label) it runs, one after
the other and each in its own subprocess (so peak RSS is that contender's alone):

  seed       benchmarks/seed_recipe.py: Trainer full fine-tune, lr 5e-5, 3 epochs, batch 32.
             Its wall seconds set the budget of the other two: --budget-x times it.
  hf_search  Trainer.hyperparameter_search(backend="optuna") with model_init and the default
             hp space, full fine-tune only, on autotl's own 80/20 stratified split (seed 0).
             Every epoch is scored on validation and test; the reported test accuracy is that
             of the trial with the best validation accuracy (its last evaluated epoch).
             Optuna's timeout stops new trials at the budget; a callback stops the running
             one, its deadline moved back by the seconds spent scoring test (this script's
             bookkeeping, not the contender's work).
  autotl     `autotl search TRAIN --test TEST --timeout BUDGET` (refit included in the budget).

All train on the same rows (--rows N: a stratified subsample, seed 0); test.csv is used
whole. Wall seconds and peak RSS are measured by this script around each subprocess.
Reproduce with, from the repository root:

    python benchmarks/compare.py ../shared/data/sst2 ../shared/data/trec6 --rows 1000 --budget-x 1,3

Prints a markdown table row by row and rewrites --out (JSON) after every contender.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

STARTED = time.monotonic()  # this process's start, give or take the stdlib imports
HERE = Path(__file__).resolve().parent
CONTENDERS = ("seed", "hf_search", "autotl")
BACKBONE = "all-MiniLM-L6-v2"
WORKER_FLAG = "--hf-search-worker"  # argv[1] of the subprocess that runs hf_search
HEADER = ("| dataset | rows | budget | contender | test accuracy | test macro-F1 | wall s | trials "
          "| peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|")


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


# -- command line ------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", type=Path, help="folders with train.csv and test.csv")
    p.add_argument("--rows", type=int, help="stratified subsample of train.csv (default: all rows)")
    p.add_argument("--budget-x", action="append", help="budget as multiples of the seed's wall "
                   "seconds; repeat or comma-separate (default 3)")
    p.add_argument("--budget", type=float, help="budget in seconds (overrides --budget-x)")
    p.add_argument("--seed-seconds", help="known seed wall seconds (one, or one per dataset, "
                   "comma-separated): the seed is not re-run unless --only names it")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", type=Path, default=HERE / "results" / "compare.json")
    p.add_argument("--keep", action="store_true", help="keep the working folder (logs, run dirs)")
    args = p.parse_args(argv)
    try:
        args.budget_x = floats(",".join(args.budget_x or ["3"]))
        seeds = floats(args.seed_seconds) if args.seed_seconds else []
    except ValueError as e:
        raise UsageError(f"not a number: {e}") from None
    if seeds and len(seeds) not in (1, len(args.datasets)):
        raise UsageError("--seed-seconds takes one value or one per dataset")
    args.seed_seconds = seeds * len(args.datasets) if len(seeds) == 1 else seeds
    default = CONTENDERS if not seeds else ("hf_search", "autotl")
    args.only = [c.strip() for c in args.only.split(",")] if args.only else list(default)
    if unknown := set(args.only) - set(CONTENDERS):
        raise UsageError(f"unknown contender {min(unknown)}; choose from {', '.join(CONTENDERS)}")
    if "seed" not in args.only and not seeds and args.budget is None:
        raise UsageError("without the seed in --only, pass --budget or --seed-seconds")
    if any(v <= 0 for v in args.budget_x + seeds + [args.budget or 1, args.rows or 1]):
        raise UsageError("--rows, --budget, --budget-x and --seed-seconds must be positive")
    return args


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


# -- data --------------------------------------------------------------------------------------

def check(folder: Path) -> None:
    """A dataset folder: train.csv and test.csv with columns text,label."""
    import pandas as pd

    if not folder.is_dir():
        raise UsageError(f"{folder}: no such dataset folder")
    for name in ("train.csv", "test.csv"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name} not found (a dataset folder holds train.csv and test.csv)")
        if not {"text", "label"} <= set(pd.read_csv(folder / name, nrows=0).columns):
            raise UsageError(f"{folder / name} needs columns text,label")


def prepare(folder: Path, rows: int | None, work: Path) -> tuple[Path, Path, int]:
    """(train CSV, test CSV, train rows): the (subsampled) train rows written once, so every
    contender trains on exactly the same rows; laid out as a dataset folder for seed_recipe."""
    import pandas as pd

    train = pd.read_csv(folder / "train.csv")[["text", "label"]].dropna()
    if rows is not None and rows < len(train):
        train = subsample(train, rows)
    out = work / folder.name
    out.mkdir(parents=True)
    train.to_csv(out / "train.csv", index=False)
    (out / "test.csv").symlink_to((folder / "test.csv").resolve())
    return out / "train.csv", out / "test.csv", len(train)


def subsample(frame, rows: int, seed: int = 0):
    """`rows` rows, each class in proportion (largest remainder) and at least 2 rows, so a
    stratified validation split keeps every class on both sides."""
    import numpy as np

    groups = frame.groupby("label").indices
    if rows < 2 * len(groups):
        raise UsageError(f"--rows {rows} is too few for {len(groups)} classes (2 per class at least)")
    sizes = np.array([len(g) for g in groups.values()])
    share = rows * sizes / sizes.sum()
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share)[: rows - quota.sum()]] += 1
    quota = np.minimum(np.maximum(quota, 2), sizes)
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.permutation(g)[:q] for g, q in zip(groups.values(), quota)])
    return frame.iloc[np.sort(picked)]


# -- contenders (parent side) ------------------------------------------------------------------

def run_child(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """(exit status, wall seconds, peak RSS MiB) of `cmd`, output to `log`. os.wait4 returns
    the child's own rusage (ru_maxrss in KiB on Linux, max over its reaped descendants too)."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: take the child down with us
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen won't wait on a reaped pid
    return proc.returncode, time.monotonic() - start, usage.ru_maxrss / 1024


def command(contender: str, train: Path, test: Path, budget: float | None, work: Path,
            max_length: int) -> tuple[list[str], object]:
    """(command line, reader of its scores once it exits) for one contender."""
    py, length = sys.executable, ["--max-length", str(max_length)]
    if contender == "seed":  # train.parent is a dataset folder: train.csv + test.csv
        out = work / "seed.json"
        return ([py, str(HERE / "seed_recipe.py"), str(train.parent), "--json", str(out), *length],
                lambda: {k: json.loads(out.read_text())[k] for k in ("accuracy", "f1_macro", "train_seconds")}
                | {"trials": 1})
    if contender == "hf_search":
        out = work / "hf_search.json"
        return ([py, __file__, WORKER_FLAG, str(train), str(test), str(budget), str(max_length), str(out)],
                lambda: json.loads(out.read_text()))
    run_dir = work / "autotl-run"
    return ([py, "-m", "autotl.cli", "search", str(train), "--test", str(test), "--timeout", f"{budget:.1f}",
             "--out", str(run_dir), "--no-progress", *length], lambda: autotl_result(run_dir))


def autotl_result(run_dir: Path) -> dict:
    info = json.loads((run_dir / "best" / "autotl.json").read_text())
    with open(run_dir / "leaderboard.csv", newline="") as f:
        states = Counter(row["state"] for row in csv.DictReader(f))
    test = info["scores"]["test"]["metrics"]
    return {"accuracy": test["accuracy"], "f1_macro": test.get("f1_macro"), "trials": sum(states.values()),
            "states": dict(states), "best_trial": info.get("trial"), "strategy": info.get("strategy"),
            "val_accuracy": info["scores"].get("val"), "params": info.get("params")}


def run(contender: str, train: Path, test: Path, budget: float | None, work: Path, max_length: int) -> dict:
    """Run a contender; its scores, or the error and the tail of its log."""
    cmd, read = command(contender, train, test, budget, work, max_length)
    log = work / f"{contender}.log"
    rc, wall, rss = run_child(cmd, log)
    row = {"wall_seconds": round(wall, 1), "peak_rss_mib": round(rss), "returncode": rc}
    try:
        return {**read(), **row} if rc == 0 else {**row, "error": log.read_text()[-2000:]}
    except (OSError, KeyError, ValueError) as e:
        return {**row, "error": f"{type(e).__name__}: {e}\n{log.read_text()[-2000:]}"}


# -- hf_search (runs in its own subprocess) ----------------------------------------------------

def hf_search_worker(train_csv: str, test_csv: str, budget: str, max_length: str, out: str) -> None:
    import optuna
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)

    from autotl.backbone import resolve
    from autotl.data import load_data

    # autotl's own loader and split (val_frac 0.2, stratified, seed 0): the very same rows.
    data = load_data(train_csv, val_frac=0.2, test=test_csv, seed=0)
    path, labels = resolve(BACKBONE), list(data.label_names)
    tokenizer = AutoTokenizer.from_pretrained(path)
    clock = budget_callback(float(budget))  # starts where autotl's does: data and tokenizer loaded
    trials: list = []  # optuna trials in start order; model_init(trial) sees each one
    records: dict[int, dict] = {}  # trial number -> its last evaluated epoch

    def model_init(trial=None):
        if trial is not None:
            trials.append(trial)
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)})

    def compute_objective(metrics: dict) -> float:
        # Called after every epoch's evaluation: keep test beside val, optimise val only.
        # Scoring test each epoch is this benchmark's cost, not the contender's: refund it.
        clock.refund(metrics.get("eval_test_runtime", 0.0))
        records[trials[-1].number] = {
            "trial": trials[-1].number, "epoch": metrics.get("epoch"), "val_accuracy": metrics["eval_val_accuracy"],
            "accuracy": metrics["eval_test_accuracy"], "f1_macro": metrics["eval_test_f1_macro"]}
        return metrics["eval_val_accuracy"]

    targs = TrainingArguments(output_dir=str(Path(out).parent / "trainer"), eval_strategy="epoch",
                              save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
                              per_device_eval_batch_size=64, seed=0)
    train, val, test = (encoded(tokenizer, split, int(max_length)) for split in (data.train, data.val, data.test))
    trainer = Trainer(model_init=model_init, args=targs, train_dataset=train, eval_dataset={"val": val, "test": test},
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy_f1,
                      callbacks=[clock])
    try:
        trainer.hyperparameter_search(backend="optuna", direction="maximize", n_trials=100,
                                      timeout=max(1.0, clock.deadline - time.monotonic()),
                                      compute_objective=compute_objective,
                                      sampler=optuna.samplers.TPESampler(seed=0))
    except ValueError as e:  # HF reads study.best_trial, which raises when no trial completed
        if "No trials are completed" not in str(e):  # (all pruned, or cut by the budget)
            raise
    study = trials[0].study
    summary = {"trials": len(trials), "states": dict(Counter(t.state.name.lower() for t in study.trials)),
               "startup_seconds": round(clock.start - STARTED, 1), "test_eval_seconds": round(clock.refunded, 1),
               "records": sorted(records.values(), key=lambda r: r["trial"])}
    if records:  # none when not one epoch fits the budget
        best = max(records.values(), key=lambda r: r["val_accuracy"])
        summary.update({key: best[key] for key in ("accuracy", "f1_macro", "val_accuracy")},
                       best_trial=best["trial"], params=study.trials[best["trial"]].params)
    Path(out).write_text(json.dumps(summary, indent=2))


def budget_callback(budget: float):
    """A TrainerCallback that stops the running trial at the deadline (optuna's timeout only
    stops new trials from starting). A trial cut mid-epoch is pruned without scoring its
    partial epoch, which would overrun the budget; its last full epoch stays recorded."""
    import optuna
    from transformers import TrainerCallback

    class StopAtBudget(TrainerCallback):
        def __init__(self):
            self.start, self.refunded, self.cut = time.monotonic(), 0.0, False
            self.deadline = self.start + budget

        def refund(self, seconds: float) -> None:
            self.refunded += seconds
            self.deadline += seconds

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() > self.deadline:
                self.cut = control.should_training_stop = True

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.cut:
                self.cut = control.should_evaluate = False
                raise optuna.TrialPruned("budget spent")

    return StopAtBudget()


def encoded(tokenizer, split, max_length: int):
    """An autotl Split (texts, integer targets) as a torch dataset for Trainer."""
    import torch

    enc = tokenizer(list(split.texts), truncation=True, max_length=max_length)

    class Encoded(torch.utils.data.Dataset):
        def __len__(self):
            return len(split.targets)

        def __getitem__(self, i):
            return {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                    "labels": int(split.targets[i])}

    return Encoded()


def accuracy_f1(pred) -> dict:
    import numpy as np

    from autotl.metrics import METRICS

    predicted = np.asarray(pred.predictions).argmax(axis=1)
    return {name: METRICS[name](pred.label_ids, predicted) for name in ("accuracy", "f1_macro")}


# -- report ------------------------------------------------------------------------------------

def table_row(r: dict) -> str:
    def num(key, fmt):
        return format(r[key], fmt) if r.get(key) is not None else "-"

    if r["contender"] == "seed":
        budget = "-"
    else:
        x = f"{r['budget_x']:.3g}x = " if r.get("budget_x") else ""
        budget = f"{x}{r['budget_seconds']:.0f} s"
    name = r["contender"] + (" (failed)" if "error" in r else " (no epoch in budget)" if "accuracy" not in r else "")
    return (f"| {r['dataset']} | {r['rows']} | {budget} | {name} | {num('accuracy', '.4f')} | "
            f"{num('f1_macro', '.4f')} | {num('wall_seconds', '.1f')} | {r.get('trials', '-')} | "
            f"{r.get('peak_rss_mib', '-')} |")


def machine() -> dict:
    import optuna
    import torch
    import transformers

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "optuna": optuna.__version__, "python": sys.version.split()[0]}


def save(report: dict, path: Path) -> None:
    """Atomic rewrite, so an interrupted run leaves a readable file with what finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def budgets(args, seed_wall: float | None) -> list[tuple[float | None, float]]:
    """(multiple of the seed, seconds) for each budget to run."""
    if args.budget is not None:
        return [(args.budget / seed_wall if seed_wall else None, args.budget)]
    return [(x, x * seed_wall) for x in args.budget_x]


def record(report: dict, args, dataset: str, data: tuple, contender: str, x, seconds, work: Path) -> dict:
    """Run one contender, print its row, and rewrite the JSON with it."""
    train, test, rows = data
    run_dir = work / f"{len(report['results'])}-{contender}"
    run_dir.mkdir(parents=True)
    result = run(contender, train, test, seconds, run_dir, args.max_length)
    result = {"dataset": dataset, "rows": rows, "contender": contender, "budget_x": x,
              "budget_seconds": seconds, **result}
    if seconds:  # wall includes startup (imports, data, model load), final test scoring and,
        # for hf_search, the per-epoch test scoring refunded to it (test_eval_seconds)
        result["over_budget_seconds"] = round(result["wall_seconds"] - seconds, 1)
    report["results"].append(result)
    save(report, args.out)
    print(table_row(result), flush=True)
    return result


def compare(args, report: dict, tmp: Path) -> None:
    # Every dataset is checked and subsampled first, so bad input fails before any training.
    prepared = [prepare(folder, args.rows, tmp / str(i) / "data") for i, folder in enumerate(args.datasets)]
    print(HEADER, flush=True)
    for i, (folder, data) in enumerate(zip(args.datasets, prepared)):
        work = tmp / str(i)
        seed_wall = args.seed_seconds[i] if args.seed_seconds else None
        if "seed" in args.only:
            result = record(report, args, folder.name, data, "seed", None, None, work)
            if seed_wall is None and "error" not in result:
                seed_wall = result["wall_seconds"]
        searchers = [c for c in ("hf_search", "autotl") if c in args.only]
        if searchers and seed_wall is None and args.budget is None:
            print(f"| {folder.name} | {data[2]} | - | {', '.join(searchers)} skipped: the seed failed, "
                  "so there is no budget | - | - | - | - | - |", flush=True)
            continue
        # Budget outer, contender inner: an interrupted run still holds matched pairs.
        for x, seconds in budgets(args, seed_wall) if searchers else []:
            for contender in searchers:
                record(report, args, folder.name, data, contender, x, seconds, work)


def main(argv: list[str]) -> int:
    out = None
    try:
        args = parse_args(argv)
        out = args.out
        for folder in args.datasets:  # all checked before hours of running
            check(folder)
        report = {"command": shlex.join([sys.executable, *sys.argv]), "cwd": os.getcwd(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine(), "results": []}
        tmp = Path(tempfile.mkdtemp(prefix="autotl-compare-"))
        report["work_dir"] = str(tmp) if args.keep else None
        try:
            compare(args, report, tmp)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
    except UsageError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; finished contenders are in {out}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == WORKER_FLAG:
        hf_search_worker(*sys.argv[2:7])
    else:
        sys.exit(main(sys.argv[1:]))
