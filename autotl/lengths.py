"""Long texts: how long the rows are in tokens, `--max-length auto`, and head+tail truncation.

Every search measures the training texts' token lengths (untruncated, special tokens
included) with its first backbone's tokenizer and reports percentiles and the share of rows
cut at max_length. `--max-length auto` takes the 95th percentile, capped at the model's limit.
When more than a tenth of the rows are cut, head+tail truncation becomes a searched option
(`text.truncation`: head or head_tail): a long text's beginning and end both carry the
label more often than its middle (Sun et al. 2019 kept the first quarter and the last three
quarters of the budget), and a head-only cut drops the end.
"""

from __future__ import annotations

import math

import numpy as np

TRUNCATION = "text.truncation"  # the searched parameter (only when many rows are cut)
HEAD, HEAD_TAIL = "head", "head_tail"
MANY_TRUNCATED = 0.10  # share of rows cut above which head+tail is searched
AUTO = "auto"
MIN_LENGTH, MAX_LENGTH = 8, 8192  # what --max-length accepts
PERCENTILES = (50, 90, 95, 99)


def token_lengths(tokenizer, texts) -> np.ndarray:
    """Each text's (or text pair's, pairs.token_lengths) length in tokens, special tokens
    included, never truncated."""
    from . import pairs

    if not texts:
        return np.zeros(0, dtype=int)
    if pairs.is_pairs(texts):
        return pairs.token_lengths(tokenizer, texts)
    body = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return np.asarray([len(ids) for ids in body], dtype=int) + tokenizer.num_special_tokens_to_add()


def profile(lengths: np.ndarray, max_length: int) -> dict:
    """Percentiles of the token lengths and the share of rows longer than max_length."""
    found = {f"p{q}": int(math.ceil(np.percentile(lengths, q))) for q in PERCENTILES} if len(lengths) else {}
    return {**found, "max": int(lengths.max()) if len(lengths) else 0, "max_length": int(max_length),
            "truncated": float((lengths > max_length).mean()) if len(lengths) else 0.0}


def model_limit(tokenizer, config=None) -> int:
    """The most tokens the backbone takes: its position embeddings (less the offset some
    models reserve) or the tokenizer's model_max_length, whichever is known and smaller."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions) - (2 if getattr(config, "model_type", "") in ("roberta", "mpnet") else 0))
    told = getattr(tokenizer, "model_max_length", None)
    if told and told < 1_000_000:  # transformers' "no limit" is a huge sentinel
        limits.append(int(told))
    return min(limits) if limits else 512


def auto_max_length(lengths: np.ndarray, limit: int) -> int:
    """The 95th percentile of the token lengths, within [8, limit]."""
    p95 = int(math.ceil(np.percentile(lengths, 95))) if len(lengths) else MIN_LENGTH
    return max(MIN_LENGTH, min(p95, limit, MAX_LENGTH))


def describe(found: dict) -> str:
    return (f"median {found.get('p50')}, 95th percentile {found.get('p95')}, longest {found.get('max')}; "
            f"{100 * found['truncated']:.1f}% of rows longer than max_length {found['max_length']}")


def head_tail_ids(tokenizer, texts, max_length: int) -> list[list[int]]:
    """Token ids keeping each long text's first quarter and last three quarters of the budget."""
    prefix, suffix = _specials(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    return [prefix + head_tail_cut(ids, room) + suffix
            for ids in tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]]


def head_tail_cut(ids, keep: int) -> list[int]:
    """`ids` cut to `keep` tokens: the first quarter of them from its beginning, the rest from
    its end (unchanged when it fits); a text pair's segments are cut the same way (pairs.py)."""
    ids = list(ids)
    if len(ids) <= keep:
        return ids
    head = keep // 4
    return ids[:head] + ids[len(ids) - (keep - head):]


def _specials(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one text (e.g. [CLS] / [SEP]),
    read off a probe text (transformers 5's fast tokenizers lack build_inputs_with_special_tokens)."""
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next(i for i in range(len(full) - len(body) + 1) if full[i:i + len(body)] == body)
    return list(full[:start]), list(full[start + len(body):])
