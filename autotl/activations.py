"""Layer activation cache: the hidden states below a frozen depth, computed once per search.

A trial that freezes the embeddings and the bottom k layers for a whole stage (freeze-k,
surgical top, gradual unfreezing, ...) feeds its trainable top the same inputs every epoch:
the states after layer k. They are computed once per (bottom weights, depth, tokenized rows)
— the data key covers the dataset, tokenizer and max length — and every trial that freezes
at least that deep reuses them: a deeper request starts from the deepest cached depth below
it and runs only the layers in between. Per step only the trainable top runs.

States are kept unpadded (one flat [tokens, hidden] float32 tensor per entry plus row
offsets) on the CPU, in an LRU bounded in bytes (``AUTOTL_ACTIVATION_CACHE_MB``, default
2048 per process). An entry that alone would exceed the bound is not cached: the trial runs
its frozen layers every step, as without the cache, and one log line says so.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .batching import Encoded, batch_order, model_inputs
from .features import weights_fingerprint

log = logging.getLogger("autotl")
DEFAULT_MAX_MB = 2048


@dataclass(frozen=True)
class Activations:
    """Hidden states of every row at one depth, unpadded."""

    states: torch.Tensor  # [total tokens, hidden] float32 on the CPU
    offsets: np.ndarray  # row i is states[offsets[i]:offsets[i + 1]]
    depth: int  # layers applied after the embeddings

    @property
    def nbytes(self) -> int:
        return self.states.numel() * self.states.element_size()

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [batch, width, hidden] zero-padded, attention_mask [batch, width]) for `index`."""
        starts, ends = self.offsets[index], self.offsets[np.asarray(index) + 1]
        width = int((ends - starts).max())
        out = self.states.new_zeros((len(index), width, self.states.shape[1]))
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for i, (a, b) in enumerate(zip(starts, ends)):
            out[i, :b - a] = self.states[a:b]
            mask[i, :b - a] = 1
        return out, mask


def block_fingerprints(model) -> list[str]:
    """One cheap identity per block (embeddings, layer 0, layer 1, ...) of its current weights."""
    return [weights_fingerprint(block) for block in model.blocks()]


def max_bytes_from_env() -> int:
    raw = os.environ.get("AUTOTL_ACTIVATION_CACHE_MB", str(DEFAULT_MAX_MB))
    try:
        return max(0, int(float(raw) * 2**20))
    except ValueError:
        log.warning("AUTOTL_ACTIVATION_CACHE_MB=%r is not a number; using %d", raw, DEFAULT_MAX_MB)
        return DEFAULT_MAX_MB * 2**20


class ActivationCache:
    """LRU of `Activations`, keyed by (fingerprints of the blocks below, data key)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes_from_env() if max_bytes is None else max_bytes
        self._store: OrderedDict[tuple, Activations] = OrderedDict()
        self.computed_layers = 0  # layer passes over a whole split (tests and logs read it)
        self._warned: set[tuple] = set()

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._store.values())

    def clear(self) -> None:
        self._store.clear()

    def get(self, model, data: Encoded, depth: int, *, pad_id: int, device, autocast) -> Activations | None:
        """States after `depth` frozen layers for every row of `data`; None if too big to keep."""
        prints = block_fingerprints(model)
        keys = [(tuple(prints[:d + 1]), data.key) for d in range(depth + 1)]
        if keys[depth] in self._store:
            self._store.move_to_end(keys[depth])
            return self._store[keys[depth]]
        tokens = int(data.lengths.sum())
        need = tokens * model.config.hidden_size * 4
        if need > self.max_bytes:
            if (data.key, depth) not in self._warned:
                self._warned.add((data.key, depth))
                log.info("activation cache: layer-%d states of %d rows need %.0f MiB, over the %.0f MiB bound "
                         "(AUTOTL_ACTIVATION_CACHE_MB); running the frozen layers every step instead",
                         depth, len(data), need / 2**20, self.max_bytes / 2**20)
            return None
        start = next((self._store[keys[d]] for d in range(depth - 1, -1, -1) if keys[d] in self._store), None)
        entry = _compute(model, data, depth, start, pad_id=pad_id, device=device, autocast=autocast)
        self.computed_layers += depth - (start.depth if start is not None else 0)
        while self._store and self.nbytes + entry.nbytes > self.max_bytes:
            self._store.popitem(last=False)
        self._store[keys[depth]] = entry
        return entry


def _compute(model, data: Encoded, depth: int, start: Activations | None, *, pad_id: int, device,
             autocast) -> Activations:
    """Run the embeddings (or start from `start`'s states) and layers up to `depth` in eval mode."""
    lengths = data.lengths
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    states = torch.empty((int(offsets[-1]), model.config.hidden_size), dtype=torch.float32)
    was_training = model.training
    model.eval()  # frozen blocks are fixed feature extractors: no dropout
    with torch.no_grad():
        for index in batch_order(lengths, 128, None):
            if start is None:
                ids, mask, *types = model_inputs(data, index, pad_id, device)  # types: text pairs only
                with autocast():
                    hidden = model.run_layers(model.embed(ids, *types), mask, 0, depth)
            else:
                hidden, mask = start.batch(index)
                hidden, mask = hidden.to(device), mask.to(device)
                with autocast():
                    hidden = model.run_layers(hidden, mask, start.depth, depth)
            hidden = hidden.float().cpu()
            for i, row in enumerate(index):
                states[offsets[row]:offsets[row + 1]] = hidden[i, :lengths[row]]
    model.train(was_training)
    return Activations(states, offsets, depth)


ACTIVATIONS = ActivationCache()  # one per process: a search's trials share it
