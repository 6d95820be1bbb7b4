"""Replay selection rules and cheap looks on the portfolio evidence (no training).

Used by `python benchmarks/portfolio.py simulate`. Everything here reads the evidence that
`portfolio.py run` collected from train.csv rows: a configuration's validation predictions
(the 20% split a search chooses with) and its dev score (up to 1,000 other train.csv rows,
standing in for unseen data). A rule chooses with validation predictions only; it is
judged by the dev score of what it chose.
"""

from __future__ import annotations

import numpy as np

from autotl.metrics import METRICS
from autotl.select import Evidence, choose


def _weights(name: str) -> int:
    """The evidence does not record trainable parameters: their order, from the strategy
    (a probe trains the head, adapters a little more, freeze/surgical/gradual part of the
    encoder, the rest all of it)."""
    if name.startswith("linear_probe"):
        return 1
    if name.startswith(("lora", "ia3", "bitfit")):
        return 2
    if name.startswith(("freeze", "surgical", "gradual_unfreeze")):
        return 3
    return 4


def _rules(metric, cands: list[tuple[str, dict]], targets) -> dict[str, str]:
    """Rule name -> the configuration it picks among `cands` (name, record)."""
    sign = 1 if metric.maximize else -1
    argmax = max(cands, key=lambda c: sign * c[1]["val_score"])[0]
    # the rejected rule: training seconds as the simplicity key (ties to the cheapest to train)
    by_seconds = [Evidence(i, n, r["fit_seconds"], {0: np.asarray(r["val_pred"])}, int(1000 * r["fit_seconds"]))
                  for i, (n, r) in enumerate(cands)]
    by_weights = [Evidence(i, n, r["fit_seconds"], {0: np.asarray(r["val_pred"])}, _weights(n))
                  for i, (n, r) in enumerate(cands)]
    # autotl's rule since 7 December: among the ties, the configuration the (leave-one-dataset-
    # out) portfolio put first wins — the prior learned on other datasets, not simplicity.
    # `cands` come in portfolio order: each one's place is its prior rank, as study.PRIOR_RANK.
    by_order = [Evidence(i, n, r["fit_seconds"], {0: np.asarray(r["val_pred"])}, _weights(n), prior=i)
                for i, (n, r) in enumerate(cands)]
    return {"argmax validation": argmax,
            "one-SE, ties to the cheapest to train (rejected)": choose(metric, by_seconds, targets).chosen.label,
            "one-SE, ties to the simplest (autotl's rule until 7 December)": choose(metric, by_weights, targets).chosen.label,
            "one-SE, ties to the portfolio's order (autotl's rule)": choose(metric, by_order, targets).chosen.label}


def simulate(evidence: list[dict], build) -> str:
    """Markdown: for portfolio prefixes of 2, 3, 4 and 8 configurations (leave-one-dataset-
    out portfolios), each rule's mean dev score minus the baseline recipe's, its worst task,
    and wins/losses against the baseline; then the cheap-look correlations."""
    by_task: dict[tuple, dict[str, dict]] = {}
    for r in evidence:
        if "dev_score" in r:
            by_task.setdefault((r["dataset"], r["rows"], r["seed"]), {})[r["config"]] = r
    datasets = sorted({d for d, _, _ in by_task})
    loo = {d: build(evidence, exclude=d) for d in datasets}
    out = ["# Selection rules replayed on the evidence", "",
           "Each task: the first k configurations of its leave-one-dataset-out portfolio, chosen among "
           "by validation predictions, judged by dev score (other train.csv rows). Differences are "
           "against the baseline recipe on the same task, in points of the task's metric.", "",
           "| rows | k | rule | tasks | mean dev minus baseline | worst task | wins / losses vs baseline "
           "| mean relative cost |", "|---|---|---|---|---|---|---|---|"]
    for rows in sorted({n for _, n, _ in by_task}):
        for k in (2, 3, 4, 8):
            results: dict[str, list[float]] = {}
            costs = []
            for (dataset, n, seed), task in sorted(by_task.items()):
                if n != rows or "baseline" not in task:
                    continue
                bucket = next((b for b in loo[dataset]["buckets"] if b["evidence_rows"] == rows), None)
                if bucket is None:
                    continue
                names = [c["name"] for c in bucket["order"] if c["name"] in task][:k]
                if not names:
                    continue
                metric = METRICS[task["baseline"]["metric"]]
                targets = {0: np.asarray(task["baseline"]["val_targets"])}
                sign = 1 if metric.maximize else -1
                base = task["baseline"]["dev_score"]
                picks = _rules(metric, [(nm, task[nm]) for nm in names], targets)
                picks["baseline alone"] = "baseline"
                picks["first fine-tune of the portfolio"] = next((nm for nm in names if nm != "linear_probe"),
                                                                 names[0])
                picks["first of the portfolio"] = names[0]
                for rule, name in picks.items():
                    results.setdefault(rule, []).append(sign * (task[name]["dev_score"] - base))
                costs.append(sum(task[nm]["fit_seconds"] for nm in names) / task["baseline"]["fit_seconds"])
            for rule, diffs in results.items():
                d = np.asarray(diffs)
                out.append(f"| {rows} | {k} | {rule} | {len(d)} | {100 * d.mean():+.2f} | {100 * d.min():+.2f} | "
                           f"{int((d > 0).sum())} / {int((d < 0).sum())} | {np.mean(costs):.1f} |")
    out += ["", *cheap_looks(by_task)]
    return "\n".join(out) + "\n"


def _spearman(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def cheap_looks(by_task) -> list[str]:
    """Do cheap looks rank configurations as their full result does? Spearman correlation
    per task (then averaged) between (a) the validation score after epoch 2 (the halving
    pruner's first rung) and the dev score of the finished configuration, among the
    configurations that ran at least 3 epochs; (b) a configuration's dev score on 300 rows
    and on 1,000 rows of the same dataset and seed."""
    rung, rows_corr = [], []
    for task in by_task.values():
        long = [r for r in task.values() if len(r.get("curve", [])) >= 3]
        if len(long) >= 3:
            sign = -1 if long[0]["metric"] in ("mse", "mae") else 1
            rung.append(_spearman([sign * r["curve"][1] for r in long], [sign * r["dev_score"] for r in long]))
    for (dataset, rows, seed), task in by_task.items():
        other = by_task.get((dataset, 1000, seed)) if rows == 300 else None
        if other:
            shared = sorted(set(task) & set(other))
            rows_corr.append(_spearman([task[n]["dev_score"] for n in shared],
                                       [other[n]["dev_score"] for n in shared]))
    lines = ["## Cheap looks", "", "| look | tasks | mean Spearman with the full result |", "|---|---|---|"]
    for name, values in (("validation after epoch 2 vs finished dev score", rung),
                         ("dev score on 300 rows vs on 1,000 rows", rows_corr)):
        v = [x for x in values if np.isfinite(x)]
        lines.append(f"| {name} | {len(v)} | {np.mean(v):.2f} |" if v else f"| {name} | 0 | - |")
    return lines
