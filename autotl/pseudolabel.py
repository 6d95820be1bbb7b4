"""Pseudo-labels for self-training: the model as it is labels the unlabeled rows it is sure of."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

import numpy as np

from .batching import concat
from .strategy import Context, StageRows

log = logging.getLogger("autotl")


def confident(probabilities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose highest class probability is above `threshold`, their most likely class)."""
    rows = np.flatnonzero(probabilities.max(axis=1) > threshold)
    return rows, probabilities[rows].argmax(axis=1)


def pseudo_labelled(model, context: Context, *, threshold: float, weight: float) -> StageRows:
    """The labelled training rows plus the unlabeled rows `model` (the teacher) labels with a
    probability above `threshold`, those counting `weight` each in the loss."""
    from .errors import StrategyError
    from .train import infer

    unlabeled, train = context.unlabeled, context.train
    if unlabeled is None or not len(unlabeled):
        raise StrategyError("self-training needs unlabeled rows; leave label cells empty or pass --unlabeled U.csv")
    outputs = infer(model, unlabeled, pad_id=context.pad_id, device=context.device)
    rows, labels = confident(_softmax(outputs), threshold)
    log.debug("self-training: %d of %d unlabeled rows pseudo-labelled (probability above %.2f)",
              len(rows), len(unlabeled), threshold)
    digest = hashlib.sha256(rows.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()[:12]
    picked = unlabeled.take(rows, f"{unlabeled.key}:pseudo:{digest}")
    picked = replace(picked, targets=labels.astype(train.targets.dtype))
    data = concat(train, picked)  # the labelled rows first, as the weights below
    weights = np.concatenate([np.ones(len(train), dtype=np.float32), np.full(len(rows), weight, dtype=np.float32)])
    return StageRows(data, weights)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
