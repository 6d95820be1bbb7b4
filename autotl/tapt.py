"""Task-adaptive pretraining (Gururangan et al. 2020): the backbone trained as a masked
language model on the task's own texts before it is fine-tuned.

The adapted backbone depends only on the backbone, the texts and the masked-LM setting, not
on the trial: it is computed once per search for each setting and kept on disk as a Hugging
Face model directory, ``WORK_DIR/tapt/<key>/``, that every trial asking for the same setting
loads. It is written to a temporary directory and renamed, under a file lock, so several
worker processes compute it once and nobody reads a half-written one. The key covers the
backbone directory, the token ids of the texts (which also fixes the tokenizer and max
length), the setting and the seed.

The texts are the search's training rows plus the unlabeled rows, never its validation
rows (`strategy.Context.corpus`). A refit and the re-scoring folds reuse the search's adapted
backbones rather than adapt on their own rows: their cost is then what the search measured
(1,000 masked-LM steps take minutes on a CPU, and the budget keeps no time back for them);
a fold's validation texts are in that corpus, never their labels.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("autotl")
FOLDER = "tapt"


@dataclass(frozen=True)
class MLMSetting:
    """How the backbone is adapted; part of the cache key."""

    steps: int  # optimizer steps of masked-LM training
    lr: float = 1e-4  # peak learning rate: Gururangan et al.'s TAPT value
    batch_size: int = 32  # sequences per step
    mask_probability: float = 0.15  # BERT's masking rate (80% [MASK], 10% random, 10% kept)
    warmup_ratio: float = 0.06  # Gururangan et al.'s warmup; gentle on a freshly initialized MLM head
    weight_decay: float = 0.01


def cache_key(backbone_path: str, corpus, setting: MLMSetting, seed: int) -> str:
    """The adapted backbone's identity: backbone directory, token ids, setting, seed."""
    h = hashlib.sha256(json.dumps([str(backbone_path), asdict(setting), seed]).encode())
    h.update(np.fromiter((len(row) for row in corpus), dtype=np.int64, count=len(corpus)).tobytes())
    for row in corpus:
        h.update(np.asarray(row, dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def adapted_backbone(backbone_path: str, corpus, setting: MLMSetting, *, work_dir: str | None,
                     device: str, seed: int, deadline=None) -> Path:
    """The directory of `backbone_path` adapted on `corpus` (token-id rows) by `setting`:
    read from the cache when some trial computed it, else computed now (once, under a lock;
    StrategyError, nothing kept, when the `deadline` Budget passes meanwhile)."""
    root = Path(work_dir) if work_dir else _process_dir()
    folder = root / FOLDER
    target = folder / cache_key(backbone_path, corpus, setting, seed)
    if target.is_dir():  # renamed into place only when complete
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / f"{target.name}.lock"):
        if target.is_dir():  # another process computed it while this one waited
            return target
        tmp = folder / f".tmp-{target.name}-{os.getpid()}"
        for stale in folder.glob(f".tmp-{target.name}-*"):  # a crashed writer's, under this very lock
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        log.info("tapt: masked-LM training of the backbone for %d steps on %d texts (once for every trial "
                 "with this setting)", setting.steps, len(corpus))
        try:
            train_mlm(backbone_path, corpus, setting, tmp, device=device, seed=seed, deadline=deadline)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.replace(tmp, target)
        log.info("tapt: adapted backbone in %s (%.0f s)", target, time.monotonic() - started)
    return target


def train_mlm(backbone_path: str, corpus, setting: MLMSetting, out: Path, *, device: str, seed: int,
              deadline=None) -> None:
    """Masked-LM training of `backbone_path` on `corpus`; saves the model and tokenizer in `out`.
    StrategyError once the `deadline` Budget has passed: a cut adaptation is not the setting's."""
    import torch
    from transformers import DataCollatorForLanguageModeling

    from .backbone import load_masked_lm, load_tokenizer
    from .errors import StrategyError
    from .train import autocast_for

    torch.manual_seed(seed)  # a freshly initialized MLM head starts the same every time
    tokenizer = load_tokenizer(backbone_path)
    model = load_masked_lm(backbone_path).to(device)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=setting.mask_probability, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=setting.lr, weight_decay=setting.weight_decay)
    warmup = max(1, int(setting.steps * setting.warmup_ratio))
    decay = max(1, setting.steps - warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (setting.steps - step) / decay)))
    autocast, head = autocast_for(device), _head_of(model)
    model.train()
    for step, index in zip(range(setting.steps), _endless_batches(corpus, setting.batch_size, seed)):
        if deadline is not None and deadline.passed():
            raise StrategyError(f"the search's time ran out after {step} of {setting.steps} masked-LM steps; "
                                "nothing adapted is kept")
        batch = collator([{"input_ids": list(corpus[i])} for i in index])
        labels = batch.pop("labels").to(device)
        masked = labels != -100
        if masked.any():  # a batch of very short rows may have no token masked
            with autocast():
                loss = _masked_loss(model, head, {k: v.to(device) for k, v in batch.items()}, labels, masked)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "tapt.json").write_text(json.dumps({"backbone": str(backbone_path), "rows": len(corpus),
                                               "setting": asdict(setting), "seed": seed}, indent=2))


def _endless_batches(corpus, batch_size: int, seed: int):
    """Batches of similar-length rows, epoch after epoch, each epoch in a new order."""
    from .batching import batch_order

    lengths = np.fromiter((len(row) for row in corpus), dtype=np.int64, count=len(corpus))
    rng = np.random.default_rng(seed)
    while True:
        yield from batch_order(lengths, batch_size, rng)


def _head_of(model):
    """The MLM head as one module (BERT's `cls`, RoBERTa's `lm_head`), or None when the
    architecture spreads it over several (DistilBERT): then the model computes its own loss."""
    heads = [m for _, m in model.named_children() if m is not model.base_model]
    return heads[0] if len(heads) == 1 else None


def _masked_loss(model, head, batch: dict, labels, masked):
    """Cross-entropy over the masked tokens. With one head module, the vocabulary projection
    runs on the masked positions only (15% of them): measured 1.9x faster per step on
    MiniLM on a CPU, where projecting every position onto 30k words dominated."""
    import torch

    if head is None:
        return model(**batch, labels=labels).loss
    hidden = model.base_model(**batch).last_hidden_state
    logits = head(hidden[masked])
    return torch.nn.functional.cross_entropy(logits.float(), labels[masked])


def load_adapted(model, path: Path) -> None:
    """Put the adapted encoder weights at `path` into `model` (a TransferModel) in place, so
    the Plan's parameter groups keep pointing at them. The masked-LM form has no pooler: a
    standard head keeps the backbone's pretrained one."""
    from .backbone import load_masked_lm
    from .errors import StrategyError

    state = load_masked_lm(str(path)).base_model.state_dict()
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    strays = [k for k in missing if not k.startswith("pooler.")] + list(unexpected)
    if strays:
        raise StrategyError(f"the adapted backbone in {path} does not fit the model's encoder "
                            f"({len(strays)} mismatched weights, e.g. {strays[0]})")


@functools.lru_cache(maxsize=1)
def _process_dir() -> Path:
    """Outside a search (no run directory): a temporary directory of this process."""
    path = Path(tempfile.mkdtemp(prefix="autotl-tapt-"))
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
