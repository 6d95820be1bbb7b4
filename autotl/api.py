"""`autotl.search`, `autotl.predict`, `autotl.load`: the product as a Python API.

`search` reads top to bottom in the order of the data flow: plugins, data, metric,
backbone, run directory, study, trials, best model, test score, leaderboard, report.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .backbone import DEFAULT_MODEL
from .errors import AutotlError, UsageError

log = logging.getLogger("autotl")
DEFAULT_TRIALS = 20  # when neither n_trials nor timeout is given


@dataclass(frozen=True)
class SearchResult:
    """What a search produced."""

    run_dir: Path  # everything: study storage, leaderboard, report, best/
    best_model: Path | None  # RUN_DIR/best (a Hugging Face model directory), None if no trial finished
    best_params: dict  # strategy, head and the strategy's namespaced params
    best_score: float | None  # validation score of the best trial
    metric: str  # the validation metric's name
    test_scores: dict | None  # every metric of the task on --test, for the best model only
    leaderboard: list[dict] = field(repr=False)  # one row per trial, best first
    interrupted: bool = False  # stopped by Ctrl-C; finished trials and best/ are kept


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device '{device}' requested but no CUDA GPU is visible; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N")
    return device


def search(data, *, text_col: str | None = None, label_col: str | None = None,
           model: str = DEFAULT_MODEL, strategies: list[str] | None = None,
           n_trials: int | None = None, timeout: float | None = None, metric: str | None = None,
           val_frac: float = 0.2, val=None, test=None, out=None, storage: str | None = None,
           study_name: str = "autotl", seed: int = 0, max_length: int = 128,
           standard_head: bool = False, refit: bool = True, disable_plugins: tuple[str, ...] = (),
           encoding: str = "utf-8", device: str = "auto", progress: bool = True,
           pruner: str = "halving") -> SearchResult:
    """Search transfer strategies x hyperparameters on a labelled text dataset.

    `data` is a CSV path or a pandas DataFrame with a text and a label column (inferred
    when not named). Returns the leaderboard, the best params and the best model's path
    (``RUN_DIR/best``, a Hugging Face model directory). Re-running with the same `out`
    resumes the study. With `refit` (the default) the winning configuration is finally
    retrained on train + validation rows; `timeout` bounds the whole search, refit
    included. `pruner` stops weak trials early: "halving" (successive halving over epochs
    within each strategy's trials), "median" or "none". Raises `autotl.AutotlError`
    subclasses for bad input.
    """
    from .budget import Budget

    from .backbone import load_backbone, load_tokenizer
    from .data import load_data
    from .metrics import get_metric
    from .model import Pooling
    from .plugins import Registry

    _check_budget(n_trials, timeout, max_length)
    from .study import make_pruner

    make_pruner(pruner)  # an unknown name fails before any data is read
    selected = Registry(tuple(disable_plugins)).select(strategies)
    target = load_data(data, text_col=text_col, label_col=label_col, val=val, val_frac=val_frac,
                       test=test, seed=seed, encoding=encoding)
    chosen_metric = get_metric(metric, target.task.value)
    backbone = load_backbone(model)
    device = resolve_device(device)
    run_dir = Path(out) if out else Path("autotl-runs") / _stem(data)
    run_dir.mkdir(parents=True, exist_ok=True)
    poolings = (Pooling.STANDARD.value,) if standard_head else (Pooling.STANDARD.value, Pooling.MEAN.value)
    tokenizer = load_tokenizer(backbone.path)
    log.info("backbone %s (%d layers) on %s; searching %s; run directory %s", backbone.name,
             backbone.num_layers, device, ", ".join(selected), run_dir)
    budget = Budget(timeout)
    setup = _trial_setup(target, backbone, tokenizer, selected, poolings, chosen_metric, device,
                         seed, max_length, budget, progress)
    if n_trials is None and timeout is None:
        n_trials = DEFAULT_TRIALS
    from .runner import run_study

    return run_study(setup=setup, target=target, tokenizer=tokenizer, run_dir=run_dir,
                     storage=storage, study_name=study_name, seed=seed, n_trials=n_trials,
                     budget=budget, refit=refit, max_length=max_length, backbone=backbone, pruner=pruner,
                     record={"data": target.fingerprint, "model": backbone.name,
                             "metric": chosen_metric.name, "strategies": sorted(selected),
                             "heads": list(poolings), "max_length": max_length, "seed": seed})


def _check_budget(n_trials, timeout, max_length) -> None:
    if n_trials is not None and n_trials < 1:
        raise UsageError(f"n_trials must be >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"timeout must be > 0 seconds, got {timeout}")
    if not 8 <= max_length <= 8192:
        raise UsageError(f"max_length must satisfy 8 <= max_length <= 8192, got {max_length}")


def _stem(data) -> str:
    return Path(data).stem if isinstance(data, (str, os.PathLike)) else "dataframe"


def _trial_setup(target, backbone, tokenizer, selected, poolings, metric, device, seed,
                 max_length, budget, progress):
    from .batching import encode
    from .objective import TrialSetup
    from .train import FitSettings

    def enc(split, name):
        return encode(tokenizer, split.texts, split.targets, max_length,
                      key=f"{target.fingerprint}:{name}:{backbone.path}:{max_length}")

    regression = target.task.value == "regression"
    return TrialSetup(
        backbone_path=backbone.path, strategies=selected, poolings=poolings,
        train=enc(target.train, "train"), val=enc(target.val, "val"),
        label_names=target.label_names, num_outputs=target.num_outputs,
        target_mean=float(target.train.targets.mean()) if regression else 0.0,
        fit=FitSettings(metric=metric, regression=regression, pad_id=tokenizer.pad_token_id or 0,
                        device=device, seed=seed,
                        deadline=budget,
                        progress=progress))


def load(run, device: str = "cpu"):
    """(model, tokenizer, info) of a finished search: RUN_DIR or RUN_DIR/best."""
    from .export import load_model

    return load_model(run, resolve_device(device))


def predict(run, data, *, text_col: str | None = None, encoding: str = "utf-8",
            device: str = "auto", batch_size: int = 64):
    """Labels (and class probabilities) for the rows of `data` with a search's best model.

    Returns a DataFrame: the text column, ``prediction`` and, for classification, one
    ``prob_<label>`` column per class. One row per input row, in order.
    """
    import numpy as np
    import pandas as pd

    from .batching import encode
    from .data import read_texts
    from .errors import DataError
    from .train import infer

    device = resolve_device(device)
    model, tokenizer, info = load(run, device)
    schema_col = info["data"]["text_col"]
    try:
        column, texts = read_texts(data, text_col or schema_col, encoding=encoding)
    except DataError:
        if text_col is not None:
            raise
        column, texts = read_texts(data, None, encoding=encoding)  # new file, other header
    encoded = encode(tokenizer, texts, np.zeros(len(texts)), info["max_length"], key="predict")
    outputs = infer(model, encoded, pad_id=tokenizer.pad_token_id or 0, device=device, batch_size=batch_size)
    frame = pd.DataFrame({column: texts})
    if info["data"]["task"] == "regression":
        frame["prediction"] = outputs[:, 0]
        return frame
    labels = info["data"]["label_names"]
    probs = _softmax(outputs)
    frame["prediction"] = [labels[i] for i in probs.argmax(axis=1)]
    for i, label in enumerate(labels):
        frame[f"prob_{label}"] = probs[:, i]
    return frame


def _softmax(x):
    import numpy as np

    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["search", "predict", "load", "SearchResult", "AutotlError"]
