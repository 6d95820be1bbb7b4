"""An ensemble of the top configurations: their predictions averaged, saved as RUN_DIR/ensemble.

Members may differ in strategy, head and even architecture; only their outputs meet.
Classification averages the members' class probabilities (and returns the log of the mean,
so argmax and softmax downstream read it like logits); multi-label averages each label's
sigmoid probability (and returns its logit, which a sigmoid downstream reads back, with the
decision threshold tuned on the ensemble's own validation outputs); regression averages the
values.

``RUN_DIR/ensemble/`` holds ``member-<i>/`` (each a complete model directory, as
``best/`` is), the tokenizer and ``ensemble.json``. It is replaced like ``best/``: written
to a temporary directory, swapped in by two renames; a crash between them leaves
``ensemble.old``, which loading restores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

FOLDER = "ensemble"
INFO = "ensemble.json"
KIND = "ensemble"


def combine(outputs: torch.Tensor, regression: bool, multilabel: bool = False) -> torch.Tensor:
    """Members' outputs stacked on dim 0 -> the ensemble's: the mean value (regression),
    the logit of each label's mean probability (multi-label), or the log of the mean class
    probability (computed stably, in float32)."""
    outputs = outputs.float()
    if regression:
        return outputs.mean(0)
    if multilabel:  # log p - log(1 - p), each a log-mean of sigmoids: no p of exactly 0 or 1
        return _log_mean_sigmoid(outputs) - _log_mean_sigmoid(-outputs)
    return torch.logsumexp(torch.log_softmax(outputs, dim=-1), dim=0) - math.log(outputs.shape[0])


def _log_mean_sigmoid(outputs: torch.Tensor) -> torch.Tensor:
    """log of the mean over dim 0 of sigmoid(outputs) (the constant log K cancels in a logit)."""
    return torch.logsumexp(torch.nn.functional.logsigmoid(outputs), dim=0)


class EnsembleModel(nn.Module):
    """Member models called with (input_ids, attention_mask[, token_type_ids]); their outputs averaged."""

    def __init__(self, members: Sequence[nn.Module], *, regression: bool, multilabel: bool = False):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member model, got none")
        self.members = nn.ModuleList(members)
        self.regression = regression
        self.multilabel = multilabel

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *token_type_ids) -> torch.Tensor:
        # token_type_ids: text pairs only (batching.model_inputs); passed on as given
        return combine(torch.stack([m(input_ids, attention_mask, *token_type_ids).float() for m in self.members]),
                       self.regression, self.multilabel)


def ensemble_scores(setup, models: Sequence[nn.Module]) -> tuple[float, np.ndarray]:
    """(validation score, predictions) of the ensemble of `models` on `setup.val`."""
    judged = ensemble_judged(setup, models)
    return judged.score, judged.predictions


def ensemble_judged(setup, models: Sequence[nn.Module]):
    """The ensemble of `models` judged on `setup.val` (`train.Scored`: score, predictions and,
    multi-label, its threshold). Each member runs over the rows in turn (one model's
    activations in memory at a time)."""
    from .train import infer, judge

    if setup.val is None:
        raise ValueError("ensemble_scores needs validation rows (setup.val is None: a refit setup?)")
    fit = setup.fit
    outputs = [infer(m.to(fit.device), setup.val, pad_id=fit.pad_id, device=fit.device) for m in models]
    combined = combine(torch.from_numpy(np.stack(outputs)), fit.regression, fit.multilabel).numpy()
    return judge(combined, setup.val.targets, fit)


def save_ensemble(models: Sequence[nn.Module], tokenizer, run_dir, member_infos: list[dict], info: dict, *,
                  max_length: int) -> Path:
    """Write `models` as RUN_DIR/ensemble, atomically; returns the path.

    Each member is a model directory with its own autotl.json (`member_infos[i]`, completed
    as `save_best` completes best/'s); ``ensemble.json`` is `info` plus the member folders.
    One process writes it (the end of a search): the swap takes no lock.
    """
    from .export import save_best

    if not models or len(models) != len(member_infos):
        raise ValueError(f"save_ensemble needs one member info per model and at least one model, got "
                         f"{len(models)} model(s) and {len(member_infos)} info(s)")
    run_dir = Path(run_dir)
    tmp = run_dir / f".{FOLDER}-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = []
    for i, (model, member_info) in enumerate(zip(models, member_infos)):
        written = save_best(model, tokenizer, tmp, member_info, max_length=max_length, lock=False)
        names.append(f"member-{i}")
        os.replace(written, tmp / names[-1])
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(tmp)  # the ensemble directory loads a tokenizer like a model directory
    (tmp / INFO).write_text(json.dumps({**info, "members": names, "kind": KIND}, indent=2, default=str) + "\n")
    from .export import swap_dir

    return swap_dir(run_dir, tmp, FOLDER)


def find_ensemble(path) -> Path | None:
    """The ensemble directory at `path` (itself, or RUN_DIR/ensemble), None if there is none.
    Read-only: a swap a writer left half done is read from `ensemble.old` in place (only
    writers rename)."""
    path = Path(path)
    if (path / INFO).is_file():
        return path
    for folder in (path / FOLDER, path / f"{FOLDER}.old"):
        if (folder / INFO).is_file():
            return folder
    return None


def load_ensemble(path, device: str = "cpu") -> tuple[EnsembleModel, object, dict]:
    """(model, tokenizer, info) from RUN_DIR or RUN_DIR/ensemble. `info` is the first
    member's autotl.json (data schema, max_length, ...) with ensemble.json on top."""
    from transformers import AutoTokenizer

    from .errors import ModelError
    from .export import INFO as MEMBER_INFO
    from .export import load_model

    folder = find_ensemble(path)
    if folder is None:
        raise ModelError(f"{path} holds no ensemble (no {FOLDER}/{INFO})")
    try:
        info = json.loads((folder / INFO).read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder / INFO} is unreadable ({exc}); run the same `autotl search` command with "
                         "--ensemble again") from None
    names = info.get("members") or []
    if not names:
        raise ModelError(f"{folder / INFO} lists no members; run the search again to rewrite it")
    members = [load_model(folder / name, device)[0] for name in names]
    first = json.loads((folder / names[0] / MEMBER_INFO).read_text())
    info = {**first, **info}
    task = (info.get("data") or {}).get("task")
    problem = members[0].config.problem_type
    regression = task == "regression" if task else problem == "regression"
    multilabel = task == "multilabel" if task else problem == "multi_label_classification"
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return EnsembleModel(members, regression=regression, multilabel=multilabel).to(device).eval(), tokenizer, info
