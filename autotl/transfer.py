"""Transferability: how well each backbone's frozen features suit the target, before any
training, from one forward pass over the training rows (the probe's feature cache).

Two scores per backbone:
- **LogME** (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021): the log marginal likelihood per row of a Bayesian linear model
  y = F w + noise, w ~ N(0, 1/alpha), noise ~ N(0, 1/beta), with alpha and beta set by
  the paper's fixed-point iteration (evidence maximisation). One SVD of the features
  serves every target column; classification averages it over one-hot columns (label
  sets: over their own 0/1 columns). It is
  computed on standardised features (as the probe is), so a backbone's raw feature scale
  does not count.
- **The probe's cross-validated score**, in the search's own metric: a ridge probe on the
  standardised features, its penalty alpha/beta from LogME (the evidence-optimal ridge),
  scored over K folds with its standard error.

Backbones are ranked by the probe score, which speaks the user's metric; within one
standard error of each other, the higher LogME goes first. A backbone whose probe score
is more than `HOPELESS_SE` standard errors below the best's and whose LogME is lower too
is *hopeless*: it keeps its probe evidence and gets no trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FOLDS = 5
HOPELESS_SE = 3.0  # a probe score this many standard errors below the best one's, LogME lower too
_ITERATIONS = 100
_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Transferability:
    """What one backbone's frozen features promise for this target."""

    backbone: str
    logme: float  # evidence per row (higher is better; comparable across backbones on one target)
    probe: float  # the ridge probe's K-fold score in the search's metric
    probe_se: float
    ridge: float  # the probe's penalty (alpha/beta from LogME, on standardised features)
    hopeless: bool = False
    seconds: float = 0.0  # its forward pass over the training rows: what a step of it costs, relatively

    def as_dict(self) -> dict:
        return {"backbone": self.backbone, "logme": self.logme, "probe": self.probe, "probe_se": self.probe_se,
                "ridge": self.ridge, "hopeless": self.hopeless, "seconds": self.seconds}


def logme(features: np.ndarray, targets: np.ndarray, *, regression: bool = False) -> tuple[float, float]:
    """(LogME evidence per row, the evidence-optimal ridge penalty alpha/beta), averaged over
    the one-hot columns of a classification target."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    columns = _columns(targets, regression)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2  # eigenvalues of F^T F (the rest are zero)
    evidences, ratios = [], []
    for y in columns.T:
        z = u.T @ y
        outside = max(float(y @ y - z @ z), 0.0)  # ||y||^2 outside the span of F
        evidence, alpha, beta = _evidence(sigma, z ** 2, outside, n, d)
        evidences.append(evidence)
        ratios.append(alpha / beta)
    return float(np.mean(evidences)), float(np.median(ratios))


def _evidence(sigma, z2, outside, n: int, d: int) -> tuple[float, float, float]:
    """Maximise the evidence over (alpha, beta) by the fixed-point updates; return it per
    row with the final alpha and beta."""
    alpha, beta = 1.0, 1.0
    for _ in range(_ITERATIONS):
        shrink = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / shrink))
        m2 = float(np.sum(beta ** 2 * sigma * z2 / shrink ** 2))  # ||m||^2, m the posterior mean
        res2 = float(np.sum(alpha ** 2 * z2 / shrink ** 2)) + outside  # ||F m - y||^2
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = (n - gamma) / max(res2, 1e-12)
        done = abs(new_alpha - alpha) / alpha < _TOLERANCE and abs(new_beta - beta) / beta < _TOLERANCE
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return log_evidence(sigma, z2, outside, n, d, alpha, beta) / n, alpha, beta


def log_evidence(sigma, z2, outside, n: int, d: int, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of the Bayesian linear model, from F's singular values."""
    shrink = alpha + beta * sigma
    m2 = float(np.sum(beta ** 2 * sigma * z2 / shrink ** 2))
    res2 = float(np.sum(alpha ** 2 * z2 / shrink ** 2)) + outside
    log_det = float(np.sum(np.log(shrink))) + (d - len(sigma)) * math.log(alpha)  # log|alpha I + beta F^T F|
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)


def probe_score(features: np.ndarray, targets: np.ndarray, metric, *, ridge: float, regression: bool = False,
                folds: int = FOLDS, seed: int = 0) -> tuple[float, float]:
    """(score, standard error) of a ridge probe in `metric` over `folds` folds: every row is
    predicted once by a probe that did not train on it."""
    from .select import standard_error

    f = standardise(features)
    targets = np.asarray(targets)
    order = np.random.default_rng(seed).permutation(len(f))
    predicted = np.empty(targets.shape, dtype=np.float64 if regression else np.int64)
    columns = _columns(targets, regression)
    for part in np.array_split(order, min(folds, len(f))):
        train = np.setdiff1d(order, part)
        weights = _ridge(f[train], columns[train], ridge)
        out = np.c_[f[part], np.ones(len(part))] @ weights
        if targets.ndim == 2:  # label sets: a ridge fit to 0/1 reads as a probability
            predicted[part] = out >= 0.5
        else:
            predicted[part] = out[:, 0] if regression else out.argmax(axis=1)
    return metric(targets, predicted), standard_error(metric, targets, predicted)


def _ridge(f: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge weights with an unpenalised intercept (last row)."""
    mean_f, mean_y = f.mean(axis=0), y.mean(axis=0)
    fc = f - mean_f
    w = np.linalg.solve(fc.T @ fc + penalty * np.eye(f.shape[1]), fc.T @ (y - mean_y))
    return np.vstack([w, mean_y - mean_f @ w])


def standardise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    return (f - f.mean(axis=0)) / (f.std(axis=0) + 1e-8)


def _columns(targets: np.ndarray, regression: bool) -> np.ndarray:
    """The target as columns: itself for regression and label sets (0/1 columns), one-hot
    for classification."""
    t = np.asarray(targets)
    if regression or t.ndim == 2:
        return t.astype(np.float64).reshape(len(t), -1)
    classes = np.unique(t)
    return (t[:, None] == classes[None, :]).astype(np.float64)


def assess(backbone: str, features: np.ndarray, targets: np.ndarray, metric, *, regression: bool = False,
           seed: int = 0) -> Transferability:
    """Both scores of one backbone's features."""
    f = standardise(features)
    evidence, ridge = logme(f, targets, regression=regression)
    score, se = probe_score(f, targets, metric, ridge=ridge, regression=regression, seed=seed)
    return Transferability(backbone, evidence, score, se, ridge)


def rank(scores: list[Transferability], *, maximize: bool = True) -> list[Transferability]:
    """Best first: by probe score; within one standard error, by LogME. The hopeless are marked."""
    sign = 1.0 if maximize else -1.0
    by_probe = sorted(scores, key=lambda s: -sign * s.probe)
    ordered = []
    for s in by_probe:  # insertion: a later one moves ahead of a tied one with lower LogME
        at = len(ordered)
        while at > 0 and _tied(ordered[at - 1], s) and ordered[at - 1].logme < s.logme:
            at -= 1
        ordered.insert(at, s)
    best = ordered[0]
    return [_mark(s, best, sign) for s in ordered]


def _tied(a: Transferability, b: Transferability) -> bool:
    return abs(a.probe - b.probe) <= max(_finite(a.probe_se), _finite(b.probe_se))


def _mark(s: Transferability, best: Transferability, sign: float) -> Transferability:
    gap = sign * (best.probe - s.probe)
    se = max(_finite(s.probe_se), _finite(best.probe_se), 1e-12)
    hopeless = s is not best and gap > HOPELESS_SE * se and s.logme < best.logme
    return Transferability(s.backbone, s.logme, s.probe, s.probe_se, s.ridge, hopeless, s.seconds)


def _finite(x: float) -> float:
    return 0.0 if x is None or not math.isfinite(x) else float(x)


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation of two score lists (ties averaged); nan for fewer than two."""
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties share their mean rank
        ranks[x == value] = ranks[x == value].mean()
    return ranks
