"""Validation and test metrics, by name; each knows its task and direction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import multilabel
from .errors import UsageError, one_of


@dataclass(frozen=True)
class Metric:
    """A score computed from targets and model outputs."""

    name: str  # what --metric takes
    task: str  # "classification", "regression" or "multilabel"
    maximize: bool  # direction of the study
    fn: Callable[[np.ndarray, np.ndarray], float]  # (targets, predictions) -> score
    also: tuple[str, ...] = ()  # other tasks it serves (f1_macro: multi-label too)

    def __call__(self, targets, predictions) -> float:
        return float(self.fn(np.asarray(targets), np.asarray(predictions)))

    def fits(self, task: str) -> bool:
        return task == self.task or task in self.also


def _f1(targets: np.ndarray, predicted: np.ndarray, average: str) -> float:
    classes = np.unique(np.concatenate([targets, predicted]))
    scores, weights = [], []
    for c in classes:
        tp = np.sum((predicted == c) & (targets == c))
        fp = np.sum((predicted == c) & (targets != c))
        fn = np.sum((predicted != c) & (targets == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        weights.append(np.sum(targets == c))
    if average == "weighted":
        return float(np.average(scores, weights=weights)) if sum(weights) else 0.0
    return float(np.mean(scores))


def _f1_macro(targets: np.ndarray, predicted: np.ndarray) -> float:
    # one name for both tasks (as `--metric f1_macro` reads either way); a 2-D target is label sets
    return multilabel.f1_macro(targets, predicted) if targets.ndim == 2 else _f1(targets, predicted, "macro")


def _r2(targets, predicted) -> float:
    total = np.sum((targets - targets.mean()) ** 2)
    return float(1.0 - np.sum((targets - predicted) ** 2) / total) if total > 0 else 0.0


def _pearson(targets, predicted) -> float:
    if np.std(targets) == 0 or np.std(predicted) == 0:
        return 0.0
    return float(np.corrcoef(targets, predicted)[0, 1])


METRICS = {m.name: m for m in [
    Metric("accuracy", "classification", True, lambda t, p: np.mean(t == p)),
    Metric("f1_macro", "classification", True, _f1_macro, also=("multilabel",)),
    Metric("f1_weighted", "classification", True, lambda t, p: _f1(t, p, "weighted")),
    Metric("r2", "regression", True, _r2),
    Metric("pearson", "regression", True, _pearson),
    Metric("mse", "regression", False, lambda t, p: np.mean((t - p) ** 2)),
    Metric("mae", "regression", False, lambda t, p: np.mean(np.abs(t - p))),
    Metric("f1_micro", "multilabel", True, multilabel.f1_micro),
    Metric("subset_accuracy", "multilabel", True, multilabel.subset_accuracy),
]}
DEFAULT = {"classification": "accuracy", "regression": "r2", "multilabel": "f1_micro"}


def get_metric(name: str | None, task: str) -> Metric:
    """The named metric (default for the task when None); must fit the task."""
    if name is None:
        return METRICS[DEFAULT[task]]
    if name not in METRICS:
        raise UsageError(one_of("metric", name, METRICS))
    metric = METRICS[name]
    if not metric.fits(task):
        fitting = [m for m, v in METRICS.items() if v.fits(task)]
        raise UsageError(f"metric '{name}' is for {metric.task} but this data is {task}; "
                         f"choose from: {', '.join(fitting)}")
    return metric
