"""Activation cache: what a frozen encoder feeds the head, computed once and reused.

When a stage trains nothing inside the encoder (a linear probe, LP-FT's first stage), the
head's input for every row is fixed. It is computed once per (encoder weights, pooling,
rows) and every such trial trains the head on it: a probe trial costs seconds.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

import numpy as np
import torch

from .batching import Encoded, in_row_order, model_inputs

log = logging.getLogger("autotl")
_MAX_ENTRIES = 8  # (encoder, pooling, split) entries kept; each is rows x hidden floats


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Cheap identity of a module's current weights (sums and squared sums per tensor)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in module.named_parameters():
            t = p.detach().double()
            h.update(name.encode())
            h.update(np.array([t.sum().item(), (t * t).sum().item()]).tobytes())
    return h.hexdigest()


class FeatureCache:
    """LRU map from (encoder weights, pooling, rows) to head-input features on the CPU."""

    def __init__(self, max_entries: int = _MAX_ENTRIES):
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.computed = 0  # how many times features were computed (tests and logs read it)

    def clear(self) -> None:
        """Forget every entry (a cold start, e.g. for timing)."""
        self._store.clear()

    def features(self, model, data: Encoded, *, pad_id: int, device, autocast) -> torch.Tensor:
        key = self._key(model, data)
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        feats = compute_features(model, data, pad_id=pad_id, device=device, autocast=autocast)
        self.computed += 1
        self._keep(key, feats)
        return feats

    def put(self, model, data: Encoded, feats: torch.Tensor) -> None:
        """Record `feats` as `model`'s features of `data`, known without a forward pass (rows
        put together from rows already cached: self-training's labelled + pseudo-labelled rows)."""
        if len(feats) != len(data):
            raise ValueError(f"{len(feats)} feature rows for {len(data)} rows")
        self._keep(self._key(model, data), feats)

    def _key(self, model, data: Encoded) -> tuple:
        return weights_fingerprint(model.encoder), model.pooling.value, data.key

    def _keep(self, key: tuple, feats: torch.Tensor) -> None:
        self._store[key] = feats
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)


def compute_features(model, data: Encoded, *, pad_id: int, device, autocast) -> torch.Tensor:
    """Head inputs for every row of `data`, in row order, in float32 on the CPU."""
    was_training = model.training
    model.eval()

    def features_of(index):
        inputs = model_inputs(data, index, pad_id, device)
        with autocast():
            return model.features(*inputs)

    out = in_row_order(data, 128, features_of)
    model.train(was_training)
    return torch.from_numpy(out)


CACHE = FeatureCache()  # one per process: a search's trials share it
