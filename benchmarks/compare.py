"""autotl against the seed recipe and Hugging Face's own search: a resumable benchmark matrix.

A *run* is one contender on one (dataset, rows, seed), at one budget. For each dataset
folder (train.csv and test.csv, columns text,label), each --rows N (a stratified subsample
of train.csv drawn with seed S, benchmarks/rows.py) and each --seeds S, it runs, one after
the other and each in its own subprocess (so peak RSS is that contender's alone):

  seed       the hand recipe ("recipe" in the tables), benchmarks/seed_recipe.py: Trainer full
             fine-tune, standard head, lr 5e-5, 3 epochs, batch 32, training seed S. Its wall
             seconds set the budget of the other two: --budget-x times it.
  hf_search  Trainer.hyperparameter_search(backend="optuna") with model_init and the default
             hp space (which searches Trainer's seed too), full fine-tune only, on autotl's own
             80/20 stratified split (seed S), TPE seeded with S. Every epoch is scored on
             validation and test; the reported test score is that of the trial with the best
             validation score (its last evaluated epoch). Optuna's timeout stops new trials at
             the budget; a callback stops the running one, its deadline moved back by the
             seconds spent scoring test (this script's bookkeeping, not the contender's work).
  autotl     `autotl search TRAIN --test TEST --timeout BUDGET --seed S` (refit included in the
             budget), with `--portfolio DIR/<dataset>.json` when --loo-portfolio DIR holds one
             (a leave-one-dataset-out first-trial portfolio, see benchmarks/portfolio.py).

For each (dataset, rows, seed) the recipe runs first, then for each budget hf_search and
autotl (budget outer, contender inner: an interrupted run still holds matched pairs). All
train on the same rows; test.csv is used whole and scored once per run. Classification is
scored by test accuracy (and macro F1), regression (float labels: emobank_valence) by r2.

Every finished run is saved at once to --out (an atomic rewrite) with its key (dataset,
rows, seed, contender, budget_x), the git commit (and whether autotl/ or plugins/ had
uncommitted changes), the machine, wall seconds, peak RSS and test scores; the markdown
summary (benchmarks/matrix_table.py) is rewritten beside it (same name, .md). A rerun
skips the keys already saved (a run that failed is tried again; --redo runs them all
again) and takes a budget from the recipe's saved wall seconds, so the matrix can be run
in pieces: Ctrl-C keeps what finished, and --limit-minutes stops starting runs after that
long. Several processes may share one --out (e.g. one per core, each pinned with `taskset`
and given other datasets): each result is merged into the file as it is on disk, under a
lock. Reproduce the full matrix with, from the repository root:

    python benchmarks/compare.py ../shared/data/{sst2,trec6,ag_news,tweeteval_emotion,sms_spam,banking77,emobank_valence} --rows 300,1000 --seeds 0,1 --budget-x 1,3 --loo-portfolio benchmarks/results/portfolio_loo

and regenerate the table from the JSON alone with `python benchmarks/compare.py --table`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STARTED = time.monotonic()  # this process's start, give or take the stdlib imports
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import matrix_table  # noqa: E402  (benchmarks/matrix_table.py)
from rows import UsageError, is_regression, subsample  # noqa: E402  (benchmarks/rows.py)
from seed_recipe import head_config, primary_metric, scores, start_at_mean  # noqa: E402

CONTENDERS = ("seed", "hf_search", "autotl")
SEARCHERS = ("hf_search", "autotl")
BACKBONE = "all-MiniLM-L6-v2"
WORKER_FLAG = "--hf-search-worker"  # argv[1] of the subprocess that runs hf_search
DEFAULT_OUT = HERE / "results" / "compare_matrix.json"


class TimeLimit(Exception):
    """--limit-minutes has passed: start no more runs."""


# -- command line ------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own complaints: one line, exit 2, like ours
        raise UsageError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="*", type=Path, help="folders with train.csv and test.csv")
    p.add_argument("--rows", default="300,1000", help="comma-separated training rows per cell: a stratified "
                   "subsample of train.csv (default 300,1000)")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds: of the subsample and of every "
                   "contender's training (default 0,1)")
    p.add_argument("--budget-x", default="1,3", help="comma-separated budgets, as multiples of the recipe's "
                   "wall seconds on the same rows and seed (default 1,3)")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    p.add_argument("--loo-portfolio", type=Path, metavar="DIR", help="pass --portfolio DIR/<dataset>.json "
                   "to autotl where that file exists")
    p.add_argument("--no-knowledge", action="store_true", help="autotl neither reads nor records its "
                   "knowledge base of past searches, so no cell learns from another (or from runs before)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON, read to resume "
                   f"(default {DEFAULT_OUT.relative_to(ROOT)}); the table goes beside it (.md)")
    p.add_argument("--redo", action="store_true", help="run keys already in --out again (replacing them)")
    p.add_argument("--limit-minutes", type=float, metavar="M", help="start no new run after M minutes")
    p.add_argument("--table", action="store_true", help="only regenerate the table from --out")
    p.add_argument("--dry-run", action="store_true", help="print the runs still to do and their commands")
    p.add_argument("--keep", action="store_true", help="keep the working folder (logs, run dirs)")
    args = p.parse_args(argv)
    if args.table:
        if args.datasets:
            raise UsageError("--table reads --out only; it takes no dataset folders")
        return args
    if not args.datasets:
        raise UsageError("name at least one dataset folder (or pass --table)")
    args.rows = numbers(args.rows, int, "--rows")
    args.seeds = numbers(args.seeds, int, "--seeds", positive=False)
    args.budget_x = numbers(args.budget_x, float, "--budget-x")
    args.only = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else list(CONTENDERS)
    if unknown := set(args.only) - set(CONTENDERS):
        raise UsageError(f"unknown contender {min(unknown)}; choose from {', '.join(CONTENDERS)}")
    if args.limit_minutes is not None and args.limit_minutes <= 0:
        raise UsageError("--limit-minutes must be positive")
    if args.loo_portfolio is not None and not args.loo_portfolio.is_dir():
        raise UsageError(f"--loo-portfolio {args.loo_portfolio}: no such folder")
    names = Counter(folder.name for folder in args.datasets)
    if twice := [n for n, k in names.items() if k > 1]:
        raise UsageError(f"two dataset folders are named {twice[0]}; results are keyed by folder name")
    return args


def numbers(text: str, kind: type, flag: str, positive: bool = True) -> list:
    """Comma-separated numbers of `kind`, each once, in the order given."""
    try:
        values = list(dict.fromkeys(kind(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise UsageError(f"{flag} {text}: not a comma-separated list of {kind.__name__} values") from None
    if not values or (positive and min(values) <= 0) or min(values) < 0:
        raise UsageError(f"{flag} {text}: give one or more {'positive' if positive else 'non-negative'} values")
    return values


# -- data --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """The training rows of one (dataset, rows, seed), written once so every contender
    trains on exactly the same rows; `folder` is laid out as a dataset folder (train.csv,
    test.csv) for seed_recipe."""

    dataset: str
    rows: int
    seed: int
    folder: Path
    train_rows: int
    regression: bool

    @property
    def train(self) -> Path:
        return self.folder / "train.csv"

    @property
    def test(self) -> Path:
        return self.folder / "test.csv"

    def key(self, contender: str, x: float | None) -> tuple:
        return (self.dataset, self.rows, self.seed, contender, None if contender == "seed" else x)


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


def prepare(folder: Path, rows: int, seed: int, work: Path) -> Cell:
    """Subsample train.csv (rows.subsample, seed `seed`) into work/data; link test.csv."""
    import pandas as pd

    train = subsample(pd.read_csv(folder / "train.csv")[["text", "label"]].dropna(), rows, seed=seed)
    out = work / "data"
    out.mkdir(parents=True)
    train.to_csv(out / "train.csv", index=False)
    (out / "test.csv").symlink_to((folder / "test.csv").resolve())
    return Cell(folder.name, rows, seed, out, len(train), is_regression(train["label"]))


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


def portfolio(args, dataset: str) -> Path | None:
    """The leave-one-dataset-out portfolio for `dataset`, when --loo-portfolio holds one."""
    if args.loo_portfolio is None:
        return None
    path = args.loo_portfolio / f"{dataset}.json"
    return path if path.is_file() else None


def command(contender: str, cell: Cell, x: float | None, budget: float | None, work: Path,
            args) -> tuple[list[str], object]:
    """(command line, reader of its scores once it exits) for one contender. `budget` None
    (only in a dry run: the recipe has not run yet) shows as a placeholder."""
    py, length, seed = sys.executable, ["--max-length", str(args.max_length)], str(cell.seed)
    if contender == "seed":  # cell.folder is a dataset folder: train.csv + test.csv
        out = work / "seed.json"
        return ([py, str(HERE / "seed_recipe.py"), str(cell.folder), "--seed", seed, "--json", str(out), *length],
                lambda: recipe_result(out))
    timeout = f"{budget:.1f}" if budget is not None else f"<{x:g}x recipe seconds>"
    if contender == "hf_search":
        out = work / "hf_search.json"
        return ([py, str(HERE / "compare.py"), WORKER_FLAG, str(cell.train), str(cell.test), timeout,
                 str(args.max_length), seed, str(out)], lambda: json.loads(out.read_text()))
    run_dir = work / "autotl-run"
    extra = ["--portfolio", str(path)] if (path := portfolio(args, cell.dataset)) else []
    return ([py, "-m", "autotl.cli", "search", str(cell.train), "--test", str(cell.test), "--timeout", timeout,
             "--seed", seed, "--out", str(run_dir), "--no-progress", *length, *extra,
             *(["--no-knowledge"] if args.no_knowledge else [])],
            lambda: autotl_result(run_dir))


def recipe_result(path: Path) -> dict:
    row = json.loads(path.read_text())
    return {k: row[k] for k in ("accuracy", "f1_macro", "r2", "train_seconds") if k in row} | {"trials": 1}


def autotl_result(run_dir: Path) -> dict:
    info = json.loads((run_dir / "best" / "autotl.json").read_text())
    with open(run_dir / "leaderboard.csv", newline="") as f:
        states = Counter(row["state"] for row in csv.DictReader(f))
    test = info["scores"]["test"]["metrics"]  # every metric of the task: accuracy, f1_macro, ... or r2, ...
    return {**test, "trials": sum(states.values()), "states": dict(states), "best_trial": info.get("trial"),
            "strategy": info.get("strategy"), "val_score": info["scores"].get("val"), "params": info.get("params"),
            "refit": info.get("refit"),
            # why the export is not a refit, and what a second look found: what explains a cell
            **{k: info[k] for k in ("refit_skipped", "second_look", "soup") if info.get(k) is not None}}


def run(contender: str, cell: Cell, x: float | None, budget: float | None, work: Path, args) -> dict:
    """Run a contender; its scores, or the error and the tail of its log."""
    cmd, read = command(contender, cell, x, budget, work, args)
    log = work / f"{contender}.log"
    rc, wall, rss = run_child(cmd, log)
    row = {"wall_seconds": round(wall, 1), "peak_rss_mib": round(rss), "returncode": rc}
    try:
        return {**read(), **row} if rc == 0 else {**row, "error": log.read_text()[-2000:]}
    except (OSError, KeyError, ValueError, TypeError) as e:
        return {**row, "error": f"{type(e).__name__}: {e}\n{log.read_text()[-2000:]}"}


# -- hf_search (runs in its own subprocess) ----------------------------------------------------

def hf_search_worker(train_csv: str, test_csv: str, budget: str, max_length: str, seed: str, out: str) -> None:
    import optuna
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)

    from autotl.backbone import resolve
    from autotl.data import load_data

    # autotl's own loader and split (val_frac 0.2, stratified, seed S): the very same rows.
    data = load_data(train_csv, val_frac=0.2, test=test_csv, seed=int(seed))
    regression = data.task.value == "regression"
    primary = primary_metric(regression)
    path, labels = resolve(BACKBONE), list(data.label_names)
    tokenizer = AutoTokenizer.from_pretrained(path)
    clock = budget_callback(float(budget))  # starts where autotl's does: data and tokenizer loaded
    trials: list = []  # optuna trials in start order; model_init(trial) sees each one
    records: dict[int, dict] = {}  # trial number -> its last evaluated epoch

    def model_init(trial=None):
        if trial is not None:
            trials.append(trial)
        model = AutoModelForSequenceClassification.from_pretrained(path, **head_config(labels, regression))
        if regression:  # as the recipe: the output starts at the training labels' mean
            start_at_mean(model, data.train.targets.tolist())
        return model

    def compute_objective(metrics: dict) -> float:
        # Called after every epoch's evaluation: keep test beside val, optimise val only.
        # Scoring test each epoch is this benchmark's cost, not the contender's: refund it.
        clock.refund(metrics.get("eval_test_runtime", 0.0))
        test = {k.removeprefix("eval_test_"): v for k, v in metrics.items()
                if k.startswith("eval_test_") and not k.endswith(("_runtime", "_per_second", "_loss"))}
        records[trials[-1].number] = {"trial": trials[-1].number, "epoch": metrics.get("epoch"),
                                      "val_score": metrics[f"eval_val_{primary}"], **test}
        return metrics[f"eval_val_{primary}"]

    targs = TrainingArguments(output_dir=str(Path(out).parent / "trainer"), eval_strategy="epoch",
                              save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
                              per_device_eval_batch_size=64, seed=int(seed))
    train, val, test = (encoded(tokenizer, split, int(max_length), regression)
                        for split in (data.train, data.val, data.test))
    trainer = Trainer(model_init=model_init, args=targs, train_dataset=train, eval_dataset={"val": val, "test": test},
                      data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=lambda pred: scores(pred.label_ids, pred.predictions, regression),
                      callbacks=[clock])
    try:
        trainer.hyperparameter_search(backend="optuna", direction="maximize", n_trials=100,
                                      timeout=max(1.0, clock.deadline - time.monotonic()),
                                      compute_objective=compute_objective,
                                      sampler=optuna.samplers.TPESampler(seed=int(seed)))
    except ValueError as e:  # HF reads study.best_trial, which raises when no trial completed
        if "No trials are completed" not in str(e):  # (all pruned, or cut by the budget)
            raise
    study = trials[0].study
    summary = {"trials": len(trials), "states": dict(Counter(t.state.name.lower() for t in study.trials)),
               "startup_seconds": round(clock.start - STARTED, 1), "test_eval_seconds": round(clock.refunded, 1),
               "records": sorted(records.values(), key=lambda r: r["trial"])}
    if records:  # none when not one epoch fits the budget
        best = max(records.values(), key=lambda r: r["val_score"])
        summary.update({k: v for k, v in best.items() if k not in ("trial", "epoch")},
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


def encoded(tokenizer, split, max_length: int, regression: bool):
    """An autotl Split (texts, class ids or float targets) as a torch dataset for Trainer."""
    import torch

    enc = tokenizer(list(split.texts), truncation=True, max_length=max_length)
    label = float if regression else int

    class Encoded(torch.utils.data.Dataset):
        def __len__(self):
            return len(split.targets)

        def __getitem__(self, i):
            return {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                    "labels": label(split.targets[i])}

    return Encoded()


# -- results -----------------------------------------------------------------------------------

def machine() -> dict:
    import optuna
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
            "optuna": optuna.__version__, "python": sys.version.split()[0]}


def git_state() -> dict:
    """The commit of the working tree, and whether autotl/ or plugins/ differ from it."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        return {"commit": git("rev-parse", "HEAD") or None,
                "dirty": bool(git("status", "--porcelain", "--", "autotl", "plugins"))}
    except OSError:  # no git
        return {"commit": None, "dirty": None}


def key_of(r: dict) -> tuple:
    return (r["dataset"], r["rows"], r.get("seed"), r["contender"],
            None if r["contender"] == "seed" else r.get("budget_x"))


class Store:
    """The results JSON: every finished run by key, rewritten atomically after each (so an
    interrupted run leaves a readable file with what finished), and the table beside it."""

    def __init__(self, path: Path):
        self.path = path
        self.read()

    def read(self) -> None:
        path = self.path
        try:
            self.report = json.loads(path.read_text()) if path.exists() else {"sessions": [], "results": []}
        except (OSError, ValueError) as e:
            raise UsageError(f"--out {path}: cannot read it as JSON ({e})") from None
        if not isinstance(self.report.get("results"), list):
            raise UsageError(f"--out {path}: not a results file of this script (no results list)")
        self.report.setdefault("sessions", [])
        self.done = {key_of(r): r for r in self.report["results"]}

    @contextlib.contextmanager
    def locked(self):
        """The file as it is now on disk, held against the other processes sharing it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.read()
            yield

    def add_session(self, session: dict) -> None:
        with self.locked():
            self.report["sessions"].append(session)
            self.save()

    def get(self, key: tuple) -> dict | None:
        self.read()  # what another process sharing the file may have added
        return self.done.get(key)

    def recipe_wall(self, cell: Cell) -> float | None:
        """The recipe's wall seconds on this cell, when it ran without error."""
        r = self.get(cell.key("seed", None))
        return r["wall_seconds"] if r and "error" not in r else None

    def put(self, result: dict) -> None:
        key = key_of(result)
        with self.locked():
            self.report["results"] = [r for r in self.report["results"] if key_of(r) != key] + [result]
            self.done[key] = result
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)
        matrix_table.write(self.report, self.path)


# -- the matrix --------------------------------------------------------------------------------

class Matrix:
    """Runs what is missing from the store, in order, one run at a time."""

    def __init__(self, args, store: Store, cells: list[Cell], work: Path):
        self.args, self.store, self.cells, self.work = args, store, cells, work
        self.machine = None if args.dry_run else machine()
        self.ran = self.skipped = 0

    def go(self) -> None:
        for cell in self.cells:
            if "seed" in self.args.only:
                self.maybe_run(cell, "seed", None, None)
            searchers = [c for c in SEARCHERS if c in self.args.only]
            wall = self.store.recipe_wall(cell)
            if searchers and wall is None and not self.args.dry_run:
                print(f"{label(cell)}: {', '.join(searchers)} skipped: no successful recipe run, so no budget",
                      flush=True)
                continue
            for x in self.args.budget_x:  # budget outer, contender inner
                for contender in searchers:
                    self.maybe_run(cell, contender, x, x * wall if wall is not None else None)

    def maybe_run(self, cell: Cell, contender: str, x: float | None, budget: float | None) -> None:
        done = self.store.get(cell.key(contender, x))
        if done is not None and "error" not in done and not self.args.redo:  # a failed run is retried
            self.skipped += 1
            return
        work = self.work / cell.dataset / f"{cell.rows}-{cell.seed}" / (contender + (f"-{x:g}x" if x else ""))
        if self.args.dry_run:
            work.mkdir(parents=True, exist_ok=True)
            cmd = command(contender, cell, x, budget, work, self.args)[0]
            print(f"{label(cell)} {name(contender, x)}:\n  {shlex.join(cmd)}")
            self.ran += 1
            return
        if self.args.limit_minutes is not None and time.monotonic() - STARTED > 60 * self.args.limit_minutes:
            raise TimeLimit()
        work.mkdir(parents=True, exist_ok=True)
        git = git_state()  # at the start: the code the run imports
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result = run(contender, cell, x, budget, work, self.args)
        self.store.put(self.record(cell, contender, x, budget, result, git, started))
        self.ran += 1
        print(progress(self.store.get(cell.key(contender, x))), flush=True)

    def record(self, cell: Cell, contender: str, x, budget, result: dict, git: dict, started: str) -> dict:
        metric = primary_metric(cell.regression)
        row = {"dataset": cell.dataset, "rows": cell.rows, "seed": cell.seed, "contender": contender,
               "budget_x": x, "budget_seconds": round(budget, 1) if budget is not None else None,
               "train_rows": cell.train_rows, "task": "regression" if cell.regression else "classification",
               "metric": metric, "score": result.get(metric), **result}
        if budget is not None:  # wall includes startup (imports, data, model load), final test scoring and,
            # for hf_search, the per-epoch test scoring refunded to it (test_eval_seconds)
            row["over_budget_seconds"] = round(row["wall_seconds"] - budget, 1)
        if contender == "autotl":
            path = portfolio(self.args, cell.dataset)
            row["portfolio"] = str(path) if path else None
            row["knowledge"] = not self.args.no_knowledge
        return {**row, **git, "started": started, "max_length": self.args.max_length, "machine": self.machine}


def label(cell: Cell) -> str:
    return f"{cell.dataset} rows={cell.rows} seed={cell.seed}"


def name(contender: str, x: float | None) -> str:
    return matrix_table.NAMES[contender] + (f" {x:g}x" if x is not None else "")


def progress(r: dict) -> str:
    head = f"{r['dataset']} rows={r['rows']} seed={r['seed']} {name(r['contender'], r['budget_x'])}"
    if "error" in r:
        return f"{head}: FAILED (exit {r['returncode']}) after {r['wall_seconds']:.0f} s"
    score = f"{r['score']:.3f}" if r.get("score") is not None else "no score"
    return f"{head}: {r['metric']} {score}, {r['wall_seconds']:.0f} s, {r.get('trials', '-')} trials, " \
           f"{r['peak_rss_mib']} MiB"


def prepare_all(args, work: Path) -> list[Cell]:
    """Every dataset checked and every subsample drawn first, so bad input fails before any
    training; in run order: dataset, rows, seed."""
    for folder in args.datasets:
        check(folder)
    cells = []
    for folder in args.datasets:
        if args.loo_portfolio is not None and portfolio(args, folder.name) is None and "autotl" in args.only:
            print(f"note: no {args.loo_portfolio / (folder.name + '.json')}; autotl uses its own portfolio "
                  f"on {folder.name}", flush=True)
        for rows in args.rows:
            for seed in args.seeds:
                cells.append(prepare(folder, rows, seed, work / folder.name / f"{rows}-{seed}"))
    return cells


def matrix(args) -> int:
    store = Store(args.out)
    work = Path(tempfile.mkdtemp(prefix="autotl-compare-"))
    try:
        cells = prepare_all(args, work)
        runner = Matrix(args, store, cells, work)
        if not args.dry_run:
            store.add_session({
                "command": shlex.join([sys.executable, *sys.argv]), "cwd": os.getcwd(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "work_dir": str(work) if args.keep else None})
        try:
            runner.go()
        except TimeLimit:
            print(f"--limit-minutes {args.limit_minutes:g} reached; rerun the same command to go on", flush=True)
        done = f"{runner.ran} runs to do (dry run)" if args.dry_run else f"{runner.ran} runs done"
        print(f"{done}, {runner.skipped} already in {args.out}; table: {args.out.with_suffix('.md')}", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted; finished runs are in {args.out}", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def table(args) -> int:
    if not args.out.is_file():
        raise UsageError(f"--out {args.out}: no such results file")
    report = Store(args.out).report
    md = matrix_table.write(report, args.out)
    print(md.read_text(), end="")
    return 0


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        return table(args) if args.table else matrix(args)
    except UsageError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == WORKER_FLAG:
        hf_search_worker(*sys.argv[2:8])
    else:
        sys.exit(main(sys.argv[1:]))
