"""Tokenize once, pad per batch, bucket by length: no padding to a global maximum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Encoded:
    """A split as token ids (unpadded) and targets."""

    ids: tuple[tuple[int, ...], ...]  # one token-id sequence per row, truncated to max_length
    targets: np.ndarray  # int64 class ids or float32 values, aligned with ids
    key: str  # identifies the rows and tokenization, for the feature cache
    # Text pairs: each row's token type ids (segment 0, then 1), aligned with ids; None for
    # single texts, whose segment is all 0: the model's default, so none are passed
    types: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index, key: str) -> "Encoded":
        """The rows `index`, in that order, under the cache key `key`."""
        types = None if self.types is None else tuple(self.types[i] for i in index)
        return Encoded(tuple(self.ids[i] for i in index), self.targets[index], key, types)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


def encode(tokenizer, texts, targets, max_length: int, key: str, truncation: str = "head") -> Encoded:
    """Token ids for `texts`, truncated to `max_length` (special tokens included): their
    beginning ("head"), or their beginning and end ("head_tail", lengths.head_tail_ids).
    Text pairs ((first, second) tuples) get the tokenizer's pair encoding, cut longest_first
    ("head") or each segment head+tail within its longest_first share (pairs.head_tail_encode)."""
    from . import pairs

    if pairs.is_pairs(texts):
        ids, types = pairs.encode(tokenizer, texts, max_length, truncation)
        return Encoded(tuple(tuple(x) for x in ids), np.asarray(targets), key,
                       None if types is None else tuple(tuple(x) for x in types))
    if truncation == "head_tail":
        from .lengths import head_tail_ids

        ids = head_tail_ids(tokenizer, texts, max_length)
    else:
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return Encoded(tuple(tuple(x) for x in ids), np.asarray(targets), key)


def truncation_of(info: dict) -> str:
    """How the model described by autotl.json's `info` cut long texts in training."""
    from .lengths import HEAD, TRUNCATION

    return (info.get("params") or {}).get(TRUNCATION, HEAD)


def concat(first: Encoded, second: Encoded) -> Encoded:
    """The rows of both, in order (a refit's train + validation rows)."""
    if (first.types is None) != (second.types is None):
        raise ValueError("cannot concatenate text-pair rows with single-text rows")
    types = None if first.types is None else first.types + second.types
    return Encoded(first.ids + second.ids, np.concatenate([first.targets, second.targets]),
                   f"{first.key}+{second.key}", types)


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                pool: int = 50) -> list[np.ndarray]:
    """Index batches of similar length. Shuffled (rng given): random pools of `pool` batches
    are sorted by length, then the batch order is shuffled (pool=1: plain random batches);
    unshuffled: sorted by length."""
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    span = batch_size * pool
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(data: Encoded, index: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for the rows in `index`, padded to the longest of them."""
    rows = [data.ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def model_inputs(data: Encoded, index: np.ndarray, pad_id: int, device=None) -> tuple[torch.Tensor, ...]:
    """What the model is called with for the rows in `index`: (input_ids, attention_mask) as
    `collate` pads them, and for text pairs their token_type_ids (padded with 0), on `device`
    when given. Single texts get no token_type_ids, so any model taking (ids, mask) serves them."""
    ids, mask = collate(data, index, pad_id)
    inputs = [ids, mask]
    if data.types is not None:
        types = torch.zeros_like(ids)
        for i, row in enumerate(index):
            segment = data.types[row]
            types[i, :len(segment)] = torch.tensor(segment, dtype=torch.long)
        inputs.append(types)
    return tuple(t.to(device) for t in inputs) if device is not None else tuple(inputs)


def in_row_order(data: Encoded, batch_size: int, outputs_of) -> np.ndarray:
    """outputs_of(index) for length-sorted batches of `data`, without gradients, as one
    float32 array in row order."""
    out = None
    with torch.no_grad():
        for index in batch_order(data.lengths, batch_size, None):
            batch = outputs_of(index).float().cpu().numpy()
            if out is None:
                out = np.empty((len(data), batch.shape[1]), dtype=np.float32)
            out[index] = batch
    return out
