"""The first-trial portfolio, learned from benchmark runs instead of hand-set ranks.

Three steps, each resumable and each reading only train.csv (test.csv is never opened):

    python benchmarks/portfolio.py run ../shared/data/* --rows 300,1000 --seeds 0,1
    python benchmarks/portfolio.py build          # -> autotl/portfolio.json, results/portfolio.md
    python benchmarks/portfolio.py simulate       # selection rules and low-fidelity looks

`run` trains every candidate configuration (CANDIDATES: each strategy's literature default
plus a few learning-rate / epoch variants) on each *task* — a dataset, a number of labelled
rows N (a stratified sample of train.csv) and a subsample seed — exactly as a search's
trial would: 80% of the N rows to train, 20% to validate after every epoch, the best epoch
kept. The kept model is then scored on *dev* rows: up to 1,000 other rows of train.csv.
Each result (validation curve, validation and dev predictions, seconds) is appended to
results/portfolio_evidence.jsonl as soon as it exists; a rerun skips what is there.

`build` turns the evidence into autotl/portfolio.json: per size bucket, the greedy
portfolio (AutoGluon's zero-shot construction): repeatedly add the configuration that most
raises the mean over tasks of the best normalized dev score the portfolio holds so far.
Scores are normalized per task between the task's median and best configuration, so a
dataset where everything scores alike weighs as much as one where choices matter. It also
writes a leave-one-dataset-out portfolio per dataset (built without that dataset's
tasks), which `benchmarks/compare.py` uses so that a dataset is never searched with a
portfolio that learned from it — the closest this benchmark gets to unseen data.

`simulate` replays selection rules on the evidence — choose among a portfolio's first k
configurations by their validation predictions, score the choice on dev rows — and
measures whether cheap looks (a configuration's first epoch, or its score on fewer rows)
rank configurations the way their full result does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from rows import dev_rows, subsample  # noqa: E402

EVIDENCE = HERE / "results" / "portfolio_evidence.jsonl"
PORTFOLIO = ROOT / "autotl" / "portfolio.json"
BACKBONE = "all-MiniLM-L6-v2"
DEV_ROWS = 1000


def _c(strategy: str, head: str | None = "mean", **overrides) -> dict:
    """A candidate: `strategy`'s defaults with `overrides` (short names), on `head`."""
    defaults = dict(_registry()[strategy].strategy.defaults)
    defaults.update({f"{strategy}.{k}": v for k, v in overrides.items()})
    return {"strategy": strategy, **({"head.pooling": head} if head else {}), **defaults}


_REGISTRY = None


def _registry():
    global _REGISTRY
    if _REGISTRY is None:
        from autotl.plugins import Registry

        _REGISTRY = Registry().strategies()
    return _REGISTRY


def candidates() -> dict[str, dict]:
    """Name -> configuration (params as a trial records them). Variants stay inside each
    strategy's search space, so the search can enqueue them as they are."""
    return {
        "linear_probe": _c("linear_probe"),
        "baseline": _c("baseline", head=None),
        "full_finetune": _c("full_finetune"),
        "full_finetune_lr1e-4": _c("full_finetune", lr=1e-4),
        "full_finetune_lr1e-4_6ep_bs16": _c("full_finetune", lr=1e-4, epochs=6, batch_size=16),
        "full_finetune_std_lr1e-4_6ep_bs16": _c("full_finetune", head="standard", lr=1e-4, epochs=6,
                                                batch_size=16),
        "full_finetune_10ep_bs16": _c("full_finetune", epochs=10, batch_size=16),
        "lp_ft": _c("lp_ft"),
        "lp_ft_lr1e-4_4ep_bs16": _c("lp_ft", lr=1e-4, epochs=4, batch_size=16),
        "llrd": _c("llrd"),
        "llrd_lr2e-4_6ep_bs16": _c("llrd", lr=2e-4, epochs=6, batch_size=16),
        "llrd_std_lr2e-4_6ep_bs16": _c("llrd", head="standard", lr=2e-4, epochs=6, batch_size=16),
        "ia3": _c("ia3"),
        "lora_lr2e-3_5ep": _c("lora", lr=2e-3, epochs=5),
        "freeze": _c("freeze"),
        "bitfit": _c("bitfit"),
        "wise_ft": _c("wise_ft"),
        "l2sp": _c("l2sp"),
        "reinit_top": _c("reinit_top"),
        "gradual_unfreeze": _c("gradual_unfreeze"),
        "delta": _c("delta"),
        "surgical": _c("surgical"),
    }


# Candidates too slow to be worth evidence at larger sizes (10 epochs of 800 rows cost
# more than the 3x budget of the comparison allows).
MAX_ROWS = {"full_finetune_10ep_bs16": 600}

# What the evidence runs after its first three tasks (sst2, trec6, ag_news at 300 rows, all
# candidates): the literature defaults that train 3 epochs at lr 5e-5 or so (full_finetune,
# l2sp, wise_ft, reinit_top, delta, bitfit, llrd, surgical, ia3) were dominated on every
# task by the longer, faster-learning variants, and CPU hours are scarce; the sampler can
# still draw them. `run --only` takes this list.
SHORTLIST = ("linear_probe", "baseline", "full_finetune_lr1e-4", "full_finetune_lr1e-4_6ep_bs16",
             "full_finetune_std_lr1e-4_6ep_bs16", "full_finetune_10ep_bs16", "llrd_lr2e-4_6ep_bs16",
             "llrd_std_lr2e-4_6ep_bs16", "lp_ft", "lp_ft_lr1e-4_4ep_bs16", "lora_lr2e-3_5ep", "gradual_unfreeze",
             "freeze")


# -- run ---------------------------------------------------------------------------------------

def task_data(folder: Path, rows: int, seed: int):
    """(labelled sample as a DataFrame, dev DataFrame) for one task."""
    import pandas as pd

    full = pd.read_csv(folder / "train.csv")[["text", "label"]].dropna().reset_index(drop=True)
    sample = subsample(full, rows, seed=seed)
    return sample.reset_index(drop=True), dev_rows(full, sample.index, DEV_ROWS, seed=1000 + seed)


def run_task(folder: Path, rows: int, seed: int, names: list[str], done: set, out: Path) -> None:
    import numpy as np

    from autotl.backbone import load_backbone, load_tokenizer
    from autotl.batching import encode
    from autotl.data import load_data
    from autotl.metrics import get_metric
    from autotl.objective import run_params, trial_setup
    from autotl.train import infer, predictions

    todo = [n for n in names if (folder.name, rows, seed, n) not in done and rows <= MAX_ROWS.get(n, rows)]
    if not todo:
        return
    sample, dev = task_data(folder, rows, seed)
    target = load_data(sample, seed=seed)
    metric = get_metric(None, target.task.value)
    backbone = load_backbone(BACKBONE)
    tokenizer = load_tokenizer(backbone.path)
    setup = trial_setup(target, backbone, tokenizer, _registry(), ("standard", "mean"), metric, seed=seed)
    regression = target.task.value == "regression"
    if regression:
        dev_targets = dev["label"].astype(float).to_numpy()
    else:
        index = {name: i for i, name in enumerate(target.label_names)}
        dev = dev[dev["label"].astype(str).isin(index)]
        dev_targets = np.array([index[str(v)] for v in dev["label"]])
    dev_enc = encode(tokenizer, dev["text"].astype(str).tolist(), dev_targets, 128,
                     key=f"{target.fingerprint}:dev")
    configs = candidates()
    for name in todo:
        start = time.monotonic()
        try:
            outcome = run_params(setup, configs[name])
        except Exception as exc:  # a candidate that fails is evidence too
            record = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            result = outcome.result
            pad = tokenizer.pad_token_id or 0
            val_pred = predictions(infer(outcome.model, setup.val, pad_id=pad, device="cpu"), regression)
            dev_pred = predictions(infer(outcome.model, dev_enc, pad_id=pad, device="cpu"), regression)
            record = {"val_score": result.best_score, "best_epoch": result.best_epoch,
                      "curve": list(result.scores), "fit_seconds": round(result.seconds, 2),
                      "dev_score": metric(dev_targets, dev_pred),
                      "val_pred": _compact(val_pred, regression), "dev_pred": _compact(dev_pred, regression)}
            del outcome
        record = {"dataset": folder.name, "rows": rows, "seed": seed, "config": name, "metric": metric.name,
                  "task": target.task.value, "seconds": round(time.monotonic() - start, 2),
                  "val_targets": _compact(setup.val.targets, regression),
                  "dev_targets": _compact(dev_targets, regression), **record}
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        shown = f"val {record['val_score']:.4f} dev {record['dev_score']:.4f}" if "error" not in record \
            else record["error"]
        print(f"{folder.name} rows={rows} seed={seed} {name}: {shown} ({record['seconds']:.0f} s)", flush=True)


def _compact(values, regression: bool) -> list:
    return [round(float(v), 4) for v in values] if regression else [int(v) for v in values]


def read_evidence(path: Path = EVIDENCE) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by an interrupted run: rerun redoes it
            continue
    return out


def cmd_run(args) -> int:
    names = list(candidates()) if not args.only else \
        list(SHORTLIST) if args.only == "shortlist" else args.only.split(",")
    unknown = set(names) - set(candidates())
    if unknown:
        print(f"portfolio.py: unknown candidate {sorted(unknown)[0]}", file=sys.stderr)
        return 2
    done = {(r["dataset"], r["rows"], r["seed"], r["config"]) for r in read_evidence(args.evidence)}
    args.evidence.parent.mkdir(parents=True, exist_ok=True)
    for rows in [int(v) for v in args.rows.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            for folder in args.datasets:
                run_task(folder, rows, seed, names, done, args.evidence)
    return 0


# -- build -------------------------------------------------------------------------------------

def tasks(evidence: list[dict]) -> dict[tuple, dict[str, dict]]:
    """(dataset, rows, seed) -> config name -> its record (failed ones included)."""
    out: dict[tuple, dict[str, dict]] = {}
    for r in evidence:
        out.setdefault((r["dataset"], r["rows"], r["seed"]), {})[r["config"]] = r
    return out


def complete_tasks(by_task: dict, rows: int) -> list[dict[str, dict]]:
    """The tasks of `rows` labelled rows holding every shortlisted configuration: a task still
    being run (the evidence is resumable) would rank its few configurations against nothing."""
    expected = {n for n in SHORTLIST if rows <= MAX_ROWS.get(n, rows)}
    return [t for (_, n, _), t in sorted(by_task.items()) if n == rows and expected <= set(t)]


def normalized(task: dict[str, dict], key: str = "dev_score") -> dict[str, float]:
    """Per config: 1 for the task's best, 0 at or below its median; failures 0."""
    import numpy as np

    sign = -1 if next(iter(task.values()))["metric"] in ("mse", "mae") else 1
    scores = {n: sign * r[key] for n, r in task.items() if key in r}
    if not scores:
        return {}
    best, median = max(scores.values()), float(np.median(list(scores.values())))
    span = best - median
    return {n: (1.0 if span <= 0 and s >= best else max(0.0, (s - median) / span) if span > 0 else 0.0)
            for n, s in {**{n: -np.inf for n in task}, **scores}.items()}


def relative_cost(task: dict[str, dict]) -> dict[str, float]:
    """Per config: its fit seconds over the baseline recipe's on the same task."""
    base = task.get("baseline", {}).get("fit_seconds")
    return {n: r["fit_seconds"] / base for n, r in task.items() if base and "fit_seconds" in r}


def greedy(task_list: list[dict[str, dict]], names: list[str], length: int) -> list[str]:
    """Greedy portfolio: each step adds the configuration that most raises the mean over
    tasks of the best normalized score held so far; a tie goes to the cheaper one."""
    import numpy as np

    norms = [normalized(t) for t in task_list]
    costs = [relative_cost(t) for t in task_list]
    cost = {n: float(np.median([c[n] for c in costs if n in c] or [1.0])) for n in names}
    chosen: list[str] = []
    held = np.zeros(len(task_list))
    while len(chosen) < min(length, len(names)):
        def gain(n):
            return float(np.mean([max(h, norm.get(n, 0.0)) for h, norm in zip(held, norms)]))

        pick = max((n for n in names if n not in chosen), key=lambda n: (round(gain(n), 6), -cost[n]))
        if chosen and gain(pick) <= float(np.mean(held)) + 1e-9:
            break  # nothing left adds to what the portfolio already holds
        chosen.append(pick)
        held = np.array([max(h, norm.get(pick, 0.0)) for h, norm in zip(held, norms)])
    return chosen


BUCKETS = ((300, 550), (1000, None))  # evidence rows -> the largest labelled-row count it serves
LENGTH = 8  # configurations in a portfolio; the sampler takes over after them


def build(evidence: list[dict], exclude: str | None = None) -> dict:
    """The portfolio file's content from `evidence` (without dataset `exclude`)."""
    import numpy as np

    by_task = tasks([r for r in evidence if r["dataset"] != exclude])
    configs = candidates()
    buckets = []
    for rows, upto in BUCKETS:
        task_list = complete_tasks(by_task, rows)
        if not task_list:
            continue
        names = sorted({n for t in task_list for n in t})
        order = greedy(task_list, names, LENGTH)
        costs = [relative_cost(t) for t in task_list]
        buckets.append({
            "evidence_rows": rows, "max_rows": upto, "tasks": len(task_list),
            "order": [{"name": n, "params": configs[n],
                       "relative_cost": round(float(np.median([c[n] for c in costs if n in c] or [1.0])), 2)}
                      for n in order]})
    return {"about": "first trials of a search, learned by benchmarks/portfolio.py build; do not edit by hand",
            "built_from": sorted({r["dataset"] for r in evidence if r["dataset"] != exclude}),
            "evaluated_strategies": sorted({c["strategy"] for c in configs.values()}), "buckets": buckets}


def cmd_build(args) -> int:
    evidence = read_evidence(args.evidence)
    if not evidence:
        print(f"portfolio.py: no evidence in {args.evidence}; run `portfolio.py run` first", file=sys.stderr)
        return 2
    PORTFOLIO.write_text(json.dumps(build(evidence), indent=1) + "\n")
    loo = HERE / "results" / "portfolio_loo"
    loo.mkdir(parents=True, exist_ok=True)
    for dataset in sorted({r["dataset"] for r in evidence}):
        (loo / f"{dataset}.json").write_text(json.dumps(build(evidence, exclude=dataset), indent=1) + "\n")
    text = report(evidence)
    (HERE / "results" / "portfolio.md").write_text(text)
    print(text)
    return 0


def report(evidence: list[dict]) -> str:
    """Markdown: each candidate's normalized dev score and cost per size; the portfolios."""
    import numpy as np

    by_task = tasks(evidence)
    out = ["# Portfolio evidence", "",
           "Generated by `python benchmarks/portfolio.py build` from results/portfolio_evidence.jsonl "
           "(train.csv rows only: 80/20 train/validation split of N rows, scored on up to 1,000 other "
           "train.csv rows). Normalized: 1 = the task's best configuration, 0 = its median or worse.", ""]
    for rows, _ in BUCKETS:
        task_list = complete_tasks(by_task, rows)
        if not task_list:
            continue
        names = sorted({n for t in task_list for n in t})
        norms = [normalized(t) for t in task_list]
        costs = [relative_cost(t) for t in task_list]
        out += [f"## {rows} labelled rows ({len(task_list)} tasks)", "",
                "| configuration | mean normalized dev score | mean dev score minus baseline | wins over baseline "
                "(dev) | relative cost (median) |", "|---|---|---|---|---|"]
        rows_out = []
        for n in names:
            diffs = [t[n]["dev_score"] - t["baseline"]["dev_score"] for t in task_list
                     if "dev_score" in t.get(n, {}) and "dev_score" in t.get("baseline", {})]
            wins = sum(d > 0 for d in diffs)
            mean_norm = float(np.mean([nm.get(n, 0.0) for nm in norms]))
            cost = float(np.median([c[n] for c in costs if n in c] or [float("nan")]))
            rows_out.append((mean_norm, f"| {n} | {mean_norm:.3f} | {np.mean(diffs) if diffs else float('nan'):+.4f} | "
                                        f"{wins}/{len(diffs)} | {cost:.2f} |"))
        out += [line for _, line in sorted(rows_out, reverse=True)] + [""]
        out += [f"Greedy portfolio: {', '.join(greedy(task_list, names, LENGTH))}", ""]
    return "\n".join(out) + "\n"


# -- simulate ----------------------------------------------------------------------------------

def cmd_simulate(args) -> int:
    from simulate import simulate  # benchmarks/simulate.py

    evidence = read_evidence(args.evidence)
    by_task = tasks(evidence)
    complete = {id(t) for rows, _ in BUCKETS for t in complete_tasks(by_task, rows)}
    evidence = [r for r in evidence if id(by_task[(r["dataset"], r["rows"], r["seed"])]) in complete]
    text = simulate(evidence, build)
    (HERE / "results" / "portfolio_simulation.md").write_text(text)
    print(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence", type=Path, default=EVIDENCE)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="collect evidence (resumable)")
    r.add_argument("datasets", nargs="+", type=Path)
    r.add_argument("--rows", default="300,1000")
    r.add_argument("--seeds", default="0,1")
    r.add_argument("--only", help="comma-separated candidate names, or 'shortlist' (SHORTLIST)")
    sub.add_parser("build", help="write autotl/portfolio.json and results/portfolio.md")
    sub.add_parser("simulate", help="replay selection rules; low-fidelity looks")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    return {"run": cmd_run, "build": cmd_build, "simulate": cmd_simulate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
