"""Pseudo-labels for self-training: the model as it is labels the unlabeled rows it is sure of."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

import numpy as np
import torch

from .batching import concat
from .features import CACHE as FEATURES
from .strategy import Context, StageRows

log = logging.getLogger("autotl")


def confident(probabilities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose highest class probability is above `threshold`, their most likely class)."""
    rows = np.flatnonzero(probabilities.max(axis=1) > threshold)
    return rows, probabilities[rows].argmax(axis=1)


def pseudo_labelled(model, context: Context, *, threshold: float, weight: float,
                    frozen_encoder: bool = False) -> StageRows:
    """The labelled training rows plus the unlabeled rows `model` (the teacher) labels with a
    probability above `threshold`, those counting `weight` each in the loss.

    `frozen_encoder` (the encoder never trains, teacher or student: a self-trained probe): the
    teacher's outputs come from the unlabeled rows' cached features, computed once per search,
    and the student's features are put together from cached ones, so no trial after the first
    runs the encoder at all."""
    from .errors import StrategyError
    from .train import infer

    unlabeled, train = context.unlabeled, context.train
    if unlabeled is None or not len(unlabeled):
        raise StrategyError("self-training needs unlabeled rows; leave label cells empty or pass --unlabeled U.csv")
    cached = frozen_encoder and model.splittable
    if cached:
        unlabeled_features = _features(model, unlabeled, context)
        outputs = _head_outputs(model, unlabeled_features, context.device)
    else:
        outputs = infer(model, unlabeled, pad_id=context.pad_id, device=context.device)
    rows, labels = confident(_softmax(outputs), threshold)
    log.debug("self-training: %d of %d unlabeled rows pseudo-labelled (probability above %.2f)",
              len(rows), len(unlabeled), threshold)
    digest = hashlib.sha256(rows.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()[:12]
    picked = unlabeled.take(rows, f"{unlabeled.key}:pseudo:{digest}")
    picked = replace(picked, targets=labels.astype(train.targets.dtype))
    data = concat(train, picked)  # the labelled rows first, as the weights below
    if cached:
        FEATURES.put(model, data, torch.cat([_features(model, train, context),
                                             unlabeled_features[torch.as_tensor(rows)]]))
    weights = np.concatenate([np.ones(len(train), dtype=np.float32), np.full(len(rows), weight, dtype=np.float32)])
    return StageRows(data, weights)


def _features(model, data, context: Context):
    from .train import autocast_for

    return FEATURES.features(model, data, pad_id=context.pad_id, device=context.device,
                             autocast=autocast_for(context.device))


def _head_outputs(model, features, device: str, batch_size: int = 1024) -> np.ndarray:
    """The head's outputs on cached features, in eval mode (no dropout), as float32 on the CPU."""
    from .train import to_device

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = [model.head(to_device(features[i:i + batch_size], device)).float().cpu()
               for i in range(0, len(features), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
