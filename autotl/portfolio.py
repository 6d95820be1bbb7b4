"""The first trials of a search: a portfolio learned from benchmark runs, not hand-set ranks.

`portfolio.json` (beside this module) is written by ``python benchmarks/portfolio.py
build`` from evidence collected on many datasets: per size bucket (labelled rows), the
configurations in the order a greedy portfolio construction picked them — each one the
configuration that added most to the best score held so far, averaged over datasets
(AutoGluon's zero-shot portfolios). A search enqueues them first, so even a small budget
tries the configurations that were strongest elsewhere, then the sampler takes over.

Around the learned order: the `baseline` recipe is always among the first trials (every
leaderboard shows what the hand recipe would have scored), and a strategy the evidence
never evaluated — a newly installed plugin — gets its own default trial after the learned
ones, so it is compared against the zoo. Such a strategy that declares ``trains_like =
"full_finetune"`` (tapt and self_training: a full fine-tune with something before or after)
takes its training settings (lr, epochs, batch size, weight decay) from that strategy's first
learned configuration in the bucket with the same head instead of its literature defaults: those
defaults are tuned for large data (the recipe's lr 5e-5 for 3 epochs underfits 100 rows),
while the evidence shows which fine-tuning settings work at the dataset's size. Strategies
the user names with ``--strategies``
are compared first: each one's first trial (learned, else its defaults) comes before any
second trial of another.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UsageError

PORTFOLIO_FILE = Path(__file__).with_name("portfolio.json")
STRATEGY, POOLING = "strategy", "head.pooling"  # as objective.py names them (kept import-light)
BASELINE = "baseline"
BASELINE_WITHIN = 3  # the baseline runs among the first this many trials
DEFAULT_HEAD = "mean"  # head of an unevaluated strategy's default trial, where allowed


def load(path=None) -> dict:
    """The portfolio file's content (`path`, or the one shipped with autotl)."""
    path = Path(path) if path is not None else PORTFOLIO_FILE
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"portfolio file {path} not found; pass a file written by "
                         "`python benchmarks/portfolio.py build`") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"portfolio file {path} is not readable JSON ({exc}); regenerate it with "
                         "`python benchmarks/portfolio.py build`") from None
    if not isinstance(content, dict) or not isinstance(content.get("buckets"), list) or not content["buckets"]:
        raise UsageError(f"portfolio file {path} has no 'buckets' list; regenerate it with "
                         "`python benchmarks/portfolio.py build`")
    return content


def bucket_for(content: dict, rows: int) -> dict:
    """The bucket serving a dataset of `rows` labelled rows: the first whose max_rows
    covers it, else the last (largest)."""
    buckets = sorted(content["buckets"], key=lambda b: float("inf") if b.get("max_rows") is None else b["max_rows"])
    return next((b for b in buckets if b.get("max_rows") is None or rows <= b["max_rows"]), buckets[-1])


def first_trials(strategies: dict, poolings: tuple[str, ...], rows: int, path=None, *,
                 each_strategy: bool = False, prefer: list[dict] | None = None) -> list[dict]:
    """Params of the trials to enqueue first, in order, for the searched `strategies`
    (name -> Registered) and allowed heads, on a dataset of `rows` labelled rows. With
    `each_strategy` (the user named the strategies), every one of them gets a trial.
    `prefer` (a warm start's configurations, knowledge.py) come before the learned order."""
    content = load(path)
    trials: list[dict] = [dict(p) for p in prefer or ()]
    learned = bucket_for(content, rows).get("order", [])
    for entry in learned:
        params = dict(entry["params"])
        reg = strategies.get(params.get(STRATEGY))
        if reg is None:
            continue  # not installed, or not selected with --strategies
        fixed = getattr(reg.strategy, "head", None)
        if fixed:
            params.pop(POOLING, None)
        elif params.get(POOLING) not in poolings:
            continue  # e.g. a mean-pooled configuration under --standard-head
        if params not in trials:
            trials.append(params)
    if BASELINE in strategies and not any(t[STRATEGY] == BASELINE for t in trials[:BASELINE_WITHIN]):
        trials = [t for t in trials if t[STRATEGY] != BASELINE]
        trials.insert(min(BASELINE_WITHIN - 1, len(trials)), {STRATEGY: BASELINE})
    evaluated = set(content.get("evaluated_strategies", ()))
    for params in default_trials(strategies, poolings, learned):
        name = params[STRATEGY]
        if (each_strategy or name not in evaluated) and not any(t[STRATEGY] == name for t in trials):
            trials.append(params)
    if each_strategy:  # the user asked to compare these: each one's first trial comes first
        firsts = [t for i, t in enumerate(trials) if all(u[STRATEGY] != t[STRATEGY] for u in trials[:i])]
        trials = firsts + [t for t in trials if t not in firsts]
    return trials


def relative_costs(rows: int, path=None) -> dict[str, float]:
    """Params key -> the configuration's training time relative to the baseline recipe's
    (the median over the evidence), for the bucket serving `rows`; `cost_key` makes the key.
    The baseline itself is always there, at 1 (without it the baseline trial had no estimate
    and started however little time was left)."""
    content = load(path)
    out = {cost_key({STRATEGY: BASELINE}): 1.0}  # the unit every relative cost is measured in
    for entry in bucket_for(content, rows).get("order", []):
        if isinstance(entry.get("relative_cost"), (int, float)):
            params = dict(entry["params"])
            if params.get(STRATEGY) == BASELINE:
                params.pop(POOLING, None)
            out[cost_key(params)] = float(entry["relative_cost"])
    return out


def cost_key(params: dict) -> str:
    """A configuration's key in `relative_costs`: its params but the backbone (a cost relative
    to the baseline recipe's on the same backbone holds across backbones)."""
    return json.dumps({k: v for k, v in params.items() if k != "backbone"}, sort_keys=True, default=str)


def default_trials(strategies: dict, poolings: tuple[str, ...], learned: list[dict] = ()) -> list[dict]:
    """One trial per strategy with its literature defaults (mean head where allowed), in order;
    a strategy with `trains_like` takes its training settings from the `learned` order (the
    bucket's configurations) where that strategy appears in it (`inherit_training`)."""
    head = DEFAULT_HEAD if DEFAULT_HEAD in poolings else poolings[0]
    out = []
    for name, reg in strategies.items():
        fixed = getattr(reg.strategy, "head", None)
        params = {STRATEGY: name, **({} if fixed else {POOLING: head}), **reg.strategy.defaults}
        out.append(inherit_training(params, reg.strategy, learned))
    return out


TRAINING_KEYS = ("lr", "epochs", "batch_size", "weight_decay")


def inherit_training(params: dict, strategy, learned: list[dict]) -> dict:
    """`params` (a strategy's default trial) with the training settings of the first `learned`
    configuration of the strategy it `trains_like` that has the same head (else the first of
    that strategy): only the keys its own defaults have, kept inside its TrainingSpace. The
    head stays the default trial's: the evidence ranks a head for that strategy at the
    bucket's sizes, and the standard head's untrained pooler fails on the smallest data."""
    like = getattr(strategy, "trains_like", None)
    sources = [dict(e["params"]) for e in learned if like and e["params"].get(STRATEGY) == like]
    source = next((p for p in sources if p.get(POOLING) == params.get(POOLING)), sources[0] if sources else None)
    if source is None:
        return params
    name, space = params[STRATEGY], getattr(strategy, "space", None)
    out = dict(params)
    for field in TRAINING_KEYS:
        mine, theirs = f"{name}.{field}", f"{like}.{field}"
        if mine in out and theirs in source:
            out[mine] = _within(source[theirs], field, space)
    return out


def _within(value, field: str, space):
    """`value` clipped into the strategy's TrainingSpace range for `field` (a batch size
    outside its choices: the nearest choice); as it is when the strategy has no such range."""
    if space is None:
        return value
    if field == "batch_size":
        choices = list(getattr(space, "batch_sizes", ()) or ())
        return min(choices, key=lambda c: abs(c - value)) if choices and value not in choices else value
    bounds = getattr(space, field, None)  # TrainingSpace names its ranges as the params: lr, epochs, weight_decay
    return value if bounds is None else type(value)(min(max(value, bounds[0]), bounds[1]))
