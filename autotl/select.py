"""Choosing is separate from training: evidence in, a choice out.

Trials produce evidence — a configuration's predictions on validation rows, and what it
cost. This module turns evidence into numbers with their uncertainty and into a choice,
with no model in sight, so a selection rule is a few lines and testable on its own.

- Every score carries its standard error: binomial for accuracy (and a label set's subset
  accuracy: each row right or wrong as a whole), a seeded bootstrap over the rows for every
  other metric (rows, not labels: a multi-label row's labels are resampled together).
- Two configurations scored on the same rows are compared by their *paired* difference
  (bootstrap over the rows they share): most rows are right or wrong for both, so the
  difference is known far better than either score.
- The choice is the one-standard-error rule: the best-scoring configuration, unless others
  are within one standard error of the paired difference to it (Breiman et al. 1984;
  Hastie et al., ESL §7.10): a gap smaller than the noise is no reason to take the one that
  scored higher, whose score is also the most optimistic of the lot. Among the ties the
  *prior* decides: the configuration ranked first by the evidence the first trials were
  ordered by (a warm start's picks, the learned portfolio, the baseline recipe last), over
  any the sampler proposed. Replayed on the portfolio evidence (dev rows, leave-one-dataset-
  out portfolios; benchmarks/results/portfolio_simulation.md) this beat breaking ties to the
  simplest at every portfolio length: +31.5 against +31.0 points over the recipe at 300
  rows, +5.7 against +5.2 at 1,000 — the simplest of a tie is usually a probe, which the
  same evidence ranks low. Ties with no ranked member (all from the sampler) go to the
  simplest: fewer weights trained away from the pretrained model (a probe, then adapters,
  then partial, then full fine-tunes; counts within 10% of each other are equally simple);
  between equally simple ties the better score wins, then the cheaper to train.
  (Breaking ties by training seconds alone was measured and rejected: replayed on
  validation-only evidence at 300 rows it chose, among full fine-tunes of equal
  complexity, the shorter schedule and lost 1-2 points against argmax;
  benchmarks/results/portfolio_simulation.md.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BOOTSTRAP = 400  # resamples for standard errors of metrics without a closed form
# Trained weights within this factor of the fewest count as equally simple: "simpler" means
# another kind of model (a probe, adapters, a partial fine-tune), not a full fine-tune without
# the pooler's 0.6% (measured: AG News 1,000 rows, 1x, a BSS trial cut after 1 of its 3 epochs,
# 22,566,916 weights, was taken over a finished full fine-tune, 22,714,756, as "simpler").
AS_SIMPLE = 1.1


@dataclass(frozen=True)
class Evidence:
    """What one configuration showed on validation rows."""

    key: int  # the trial number that stands for the configuration
    label: str  # how the report names it, e.g. "trial 3 full_finetune/mean"
    cost: float  # seconds it took to train (what choosing it costs again in the refit)
    # evaluation id -> predictions on that evaluation's rows (0: the search's validation
    # split; 1, 2, ...: re-scoring folds). Paired comparisons use the evaluations both share.
    predictions: dict[int, np.ndarray] = field(default_factory=dict)
    weights: int = 0  # trainable parameters: how far from the pretrained model it may move (simplicity)
    prior: int | None = None  # rank among the first trials (study.PRIOR_RANK, 0 first); None: the sampler's


@dataclass(frozen=True)
class Estimate:
    score: float
    se: float
    rows: int  # validation rows the estimate pools


@dataclass(frozen=True)
class Choice:
    """The chosen configuration and how it was chosen."""

    chosen: Evidence
    best: Evidence  # the best-scoring one (the chosen unless a cheaper one tied)
    estimates: dict[int, Estimate]  # key -> pooled score ± se
    differences: dict[int, Estimate]  # key -> paired (score - best's score) ± se
    tied: tuple[int, ...]  # keys within one standard error of the best
    reason: str


def _rows_right(metric, targets: np.ndarray, predictions: np.ndarray) -> np.ndarray | None:
    """Per row 1.0 if right, else 0.0, when `metric` is the mean of that (accuracy; subset
    accuracy for label sets, a row right only as a whole); None for other metrics."""
    if metric.name == "accuracy":
        return (targets == predictions).astype(float)
    if metric.name == "subset_accuracy":
        return np.all(targets == predictions, axis=1).astype(float)
    return None


def standard_error(metric, targets, predictions, rng_seed: int = 0) -> float:
    """Standard error of `metric` on these rows: binomial for accuracy, else bootstrap."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    n = len(targets)
    if n < 2:
        return float("nan")
    right = _rows_right(metric, targets, predictions)
    if right is not None:
        p = float(np.mean(right))
        return float(np.sqrt(p * (1 - p) / n))
    rng = np.random.default_rng(rng_seed)
    draws = [metric(targets[i], predictions[i]) for i in (rng.integers(0, n, n) for _ in range(BOOTSTRAP))]
    return float(np.std(draws, ddof=1))


def epoch_tie_margin(metric, targets, first, second) -> float:
    """One standard error of the difference between two epochs' predictions on the same
    rows, cheap enough to run after every epoch (train.fit keeps the last epoch within it
    of the best). Closed forms: classification and label sets by each row's correctness
    (exact for accuracy, a proxy in the same units for F1), r2 by the per-row squared
    errors over the targets' variance; other regression metrics fall back to the bootstrap."""
    targets, first, second = np.asarray(targets), np.asarray(first), np.asarray(second)
    n = len(targets)
    if n < 2:
        return 0.0
    if np.issubdtype(targets.dtype, np.floating) and targets.ndim == 1:  # regression
        if metric.name != "r2":
            return paired_difference(metric, targets, first, second).se
        variance = float(np.var(targets))
        if variance == 0.0:
            return 0.0
        per_row = (first - targets) ** 2 - (second - targets) ** 2
        return float(np.std(per_row, ddof=1) / np.sqrt(n) / variance)
    right = (lambda p: np.mean(targets == p, axis=1)) if targets.ndim == 2 else (lambda p: targets == p)
    per_row = right(first).astype(float) - right(second).astype(float)
    return float(np.std(per_row, ddof=1) / np.sqrt(n))


def paired_difference(metric, targets, first, second, rng_seed: int = 0) -> Estimate:
    """`metric`(first) - `metric`(second) on the same rows, with the standard error of the
    difference (bootstrap resamples the rows once for both; accuracy: per-row differences)."""
    targets, first, second = np.asarray(targets), np.asarray(first), np.asarray(second)
    n = len(targets)
    diff = metric(targets, first) - metric(targets, second)
    if n < 2:
        return Estimate(diff, float("nan"), n)
    if _rows_right(metric, targets, first) is not None:
        per_row = _rows_right(metric, targets, first) - _rows_right(metric, targets, second)
        return Estimate(diff, float(np.std(per_row, ddof=1) / np.sqrt(n)), n)
    rng = np.random.default_rng(rng_seed)
    draws = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, n, n)
        draws.append(metric(targets[i], first[i]) - metric(targets[i], second[i]))
    return Estimate(diff, float(np.std(draws, ddof=1)), n)


def _pooled(evidence: Evidence, targets: dict[int, np.ndarray], only: Sequence[int] | None = None):
    ids = [e for e in sorted(evidence.predictions) if e in targets and (only is None or e in only)]
    if not ids:
        return np.array([]), np.array([])
    return (np.concatenate([targets[e] for e in ids]), np.concatenate([evidence.predictions[e] for e in ids]))


def estimate(metric, evidence: Evidence, targets: dict[int, np.ndarray]) -> Estimate:
    """The configuration's score pooled over every evaluation it has, ± standard error."""
    t, p = _pooled(evidence, targets)
    return Estimate(metric(t, p), standard_error(metric, t, p), len(t))


def compare(metric, first: Evidence, second: Evidence, targets: dict[int, np.ndarray]) -> Estimate:
    """Paired difference first - second over the evaluations both have."""
    shared = sorted(set(first.predictions) & set(second.predictions) & set(targets))
    t, a = _pooled(first, targets, shared)
    _, b = _pooled(second, targets, shared)
    return paired_difference(metric, t, a, b)


def choose(metric, candidates: Sequence[Evidence], targets: dict[int, np.ndarray]) -> Choice:
    """The one-standard-error rule over `candidates` (at least one).

    The best is the highest pooled score (lowest for a minimized metric). A candidate ties
    with it when the paired difference is within one standard error of zero; among the
    ties the one with the best prior rank wins; when none has a rank, the simplest (fewest
    trainable weights, those within AS_SIMPLE of the fewest counting as equally few), then
    the better-scoring, then the cheaper to train, then the earlier trial.
    """
    if not candidates:
        raise ValueError("choose() needs at least one candidate")
    sign = 1 if metric.maximize else -1
    estimates = {c.key: estimate(metric, c, targets) for c in candidates}
    best = max(candidates, key=lambda c: (sign * estimates[c.key].score, -c.key))
    differences = {c.key: compare(metric, c, best, targets) for c in candidates}
    tied = [c for c in candidates
            if c is best or sign * differences[c.key].score >= -_finite(differences[c.key].se)]
    ranked = [c for c in tied if c.prior is not None]
    if ranked:
        chosen = min(ranked, key=lambda c: (c.prior, c.key))
    else:
        fewest = min(c.weights for c in tied)
        simplest = [c for c in tied if c.weights <= fewest * AS_SIMPLE]
        chosen = min(simplest, key=lambda c: (-sign * estimates[c.key].score, c.cost, c.key))
    return Choice(chosen, best, estimates, differences, tuple(c.key for c in tied),
                  _reason(metric, chosen, best, tied, estimates, differences))


def _finite(se: float) -> float:
    return 0.0 if not np.isfinite(se) else se


def _reason(metric, chosen, best, tied, estimates, differences) -> str:
    e = estimates[best.key]
    if chosen is best:
        if len(tied) == 1:
            return (f"{best.label} has the best {metric.name} ({e.score:.4f} ± {e.se:.4f} on {e.rows} rows); "
                    "no other finalist is within one standard error of it")
        also = ("ranked first by the evidence the first trials came from" if best.prior is not None
                else "the simplest")
        return (f"{best.label} has the best {metric.name} ({e.score:.4f} ± {e.se:.4f} on {e.rows} rows) and is "
                f"also {also} of the {len(tied)} within one standard error of it")
    d = differences[chosen.key]
    if chosen.prior is not None:
        against = f"{best.prior + 1}" if best.prior is not None else "a configuration the sampler proposed"
        why = f"ranked higher by the evidence the first trials came from (first trial {chosen.prior + 1} against {against})"
    elif chosen.weights < best.weights:
        why = f"simpler ({chosen.weights:,} trained weights against {best.weights:,})"
    else:
        why = f"as simple and cheaper to train ({chosen.cost:.0f} s against {best.cost:.0f} s)"
    return (f"{chosen.label} is within one standard error of the best, {best.label} "
            f"({d.score:+.4f} ± {d.se:.4f}, paired on {d.rows} rows), and {why}: the one-standard-error "
            "rule takes it")


def finalists(metric, candidates: Sequence[Evidence], targets: dict[int, np.ndarray], *, limit: int = 3,
              within: float = 2.0) -> list[Evidence]:
    """The best candidate and those whose paired difference to it is within `within`
    standard errors — the ones the validation rows cannot yet tell apart — best first, at
    most `limit`."""
    if not candidates:
        return []
    sign = 1 if metric.maximize else -1
    estimates = {c.key: estimate(metric, c, targets) for c in candidates}
    ranked = sorted(candidates, key=lambda c: (-sign * estimates[c.key].score, c.key))
    best = ranked[0]
    out = [best]
    for c in ranked[1:]:
        d = compare(metric, c, best, targets)
        if sign * d.score >= -within * _finite(d.se):
            out.append(c)
        if len(out) == limit:
            break
    return out
