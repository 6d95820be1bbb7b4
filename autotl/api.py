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
           pruner: str = "halving", trials_per_device: int = 1, artifacts=None, portfolio=None,
           rescore: int = 2, soup: bool = True, ensemble: int = 0) -> SearchResult:
    """Search transfer strategies x hyperparameters on a labelled text dataset.

    `data` is a CSV path or a pandas DataFrame with a text and a label column (inferred
    when not named). Returns the leaderboard, the best params and the best model's path
    (``RUN_DIR/best``, a Hugging Face model directory). Re-running with the same `out`
    resumes the study. With `refit` (the default) the winning configuration is finally
    retrained on train + validation rows; `timeout` bounds the whole search, refit
    included. `pruner` stops weak trials early: "halving" (successive halving over epochs
    within each strategy's trials), "median" or "none".

    `device` is "auto" (every visible GPU, else the CPU), "cpu", or GPUs "cuda:0,1,...";
    with more than one device, or `trials_per_device` > 1, trials run in that many worker
    processes at once. Models that beat the best so far go to the `artifacts` directory
    (default RUN_DIR/artifacts), an Optuna artifact store that `autotl export` reads.
    The first trials come from a portfolio learned from benchmark runs (`portfolio`: a file
    written by ``benchmarks/portfolio.py build``; default the one shipped with autotl), the
    `baseline` recipe among them. At the end, when validation cannot tell the best trials
    apart, up to `rescore` rounds of cross-validation folds re-score them before the choice
    (the cheaper of statistical ties wins); `soup` tries a greedy weight soup of the top
    fine-tunes; `ensemble` K > 1 also saves an averaged-prediction ensemble of the top K in
    RUN_DIR/ensemble, which `predict(RUN_DIR, ...)` and `load(RUN_DIR)` then serve.
    Raises `autotl.AutotlError` subclasses for bad input.
    """
    import time

    from .budget import Budget
    from .devices import parse_devices, worker_slots
    from .runspec import RunSpec
    from .study import make_pruner

    _check_budget(n_trials, timeout, max_length)
    _check_end(rescore, ensemble)
    make_pruner(pruner)  # an unknown name fails before any data is read
    if portfolio is not None:
        from .portfolio import load as load_portfolio

        load_portfolio(portfolio)  # a bad file fails before any data is read
        portfolio = str(Path(portfolio).resolve())
    slots = worker_slots(parse_devices(device), trials_per_device)
    run_dir = Path(out) if out else Path("autotl-runs") / _stem(data)
    if n_trials is None and timeout is None:
        n_trials = DEFAULT_TRIALS
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(data=_data_path(data, run_dir), text_col=text_col, label_col=label_col,
                   val=None if val is None else str(Path(val).resolve()), val_frac=val_frac, encoding=encoding,
                   model=model, strategies=strategies, disable_plugins=list(disable_plugins), metric=metric,
                   max_length=max_length, seed=seed, standard_head=standard_head, pruner=pruner,
                   n_trials=n_trials, deadline=None if timeout is None else time.time() + timeout,
                   run_dir=str(run_dir.resolve()),
                   artifacts=str(Path(artifacts).resolve() if artifacts else (run_dir / "artifacts").resolve()),
                   portfolio=portfolio, rescore=rescore, soup=soup, ensemble=ensemble)
    budget = Budget(timeout)
    prepared = _prepare(spec, data=data, test=test, device=slots[0].device, budget=budget, progress=progress)
    log.info("backbone %s (%d layers) on %s; searching %s; run directory %s", prepared.backbone.name,
             prepared.backbone.num_layers, ", ".join(dict.fromkeys(s.device for s in slots)),
             ", ".join(prepared.setup.strategies), run_dir)
    from .runner import run_study

    return run_study(setup=prepared.setup, target=prepared.target, tokenizer=prepared.tokenizer, run_dir=run_dir,
                     storage=storage, study_name=study_name, seed=seed, n_trials=n_trials,
                     budget=budget, refit=refit, max_length=max_length, backbone=prepared.backbone, pruner=pruner,
                     record=prepared.record, spec=spec, slots=slots)


@dataclass(frozen=True)
class _Prepared:
    target: object
    backbone: object
    tokenizer: object
    setup: object
    record: dict  # what identifies the study: a worker with other data or settings cannot join


def _prepare(spec, *, data=None, test=None, device: str, budget, progress: bool) -> _Prepared:
    """Plugins, data, metric, backbone and the trials' shared setup, from a RunSpec."""
    from .backbone import load_backbone, load_tokenizer
    from .data import load_data
    from .metrics import get_metric
    from .model import Pooling
    from .objective import trial_setup
    from .plugins import Registry

    selected = Registry(tuple(spec.disable_plugins)).select(spec.strategies)
    target = load_data(spec.data if data is None else data, text_col=spec.text_col, label_col=spec.label_col,
                       val=spec.val, val_frac=spec.val_frac, test=test, seed=spec.seed, encoding=spec.encoding)
    chosen_metric = get_metric(spec.metric, target.task.value)
    backbone = load_backbone(spec.model)
    device = resolve_device(device)
    poolings = (Pooling.STANDARD.value,) if spec.standard_head else (Pooling.STANDARD.value, Pooling.MEAN.value)
    tokenizer = load_tokenizer(backbone.path)
    setup = trial_setup(target, backbone, tokenizer, selected, poolings, chosen_metric, device=device,
                        seed=spec.seed, max_length=spec.max_length, budget=budget, progress=progress)
    record = {"data": target.fingerprint, "model": backbone.name, "metric": chosen_metric.name,
              "strategies": sorted(selected), "heads": list(poolings), "max_length": spec.max_length,
              "seed": spec.seed}
    return _Prepared(target, backbone, tokenizer, setup, record)


def _data_path(data, run_dir: Path) -> str:
    """The CSV's absolute path; a DataFrame is saved in the run directory so workers can read it."""
    if isinstance(data, (str, os.PathLike)):
        return str(Path(data).resolve())
    path = (run_dir / "data.csv").resolve()
    data.to_csv(path, index=False)
    return str(path)


def work(*, storage: str, study_name: str = "autotl", data=None, device: str = "auto",
         artifacts=None, out=None, threads: int | None = None, progress: bool = False) -> int:
    """Join a study started by `search` and run its trials until its budget is spent.

    The study records the data path, strategies, metric and budget; `data` overrides the
    path (another machine's copy: its content hash must match), `artifacts` the artifact
    store's directory (must be the one the search reads: a shared directory), `out` where
    to keep best/ (default: the search's run directory when it exists here). Returns the
    number of trials this worker finished.
    """
    import optuna

    from .budget import Budget
    from .errors import DataError
    from .runner import work as run_trials
    from .study import load_spec, open_storage

    if threads:
        import torch

        torch.set_num_threads(threads)
    study = _load_study(open_storage(storage, None), study_name)
    spec = load_spec(study)
    data_path = str(data) if data is not None else spec.data
    if not Path(data_path).is_file():
        raise DataError(f"the study's data {data_path} is not on this machine; pass --data with a copy of it")
    store_dir = _artifact_dir(artifacts, spec)
    seconds_left = spec.seconds_left()
    if seconds_left is not None and seconds_left <= 0:
        log.info("study '%s': its budget is already spent; nothing to do", study_name)
        return 0
    budget = Budget(seconds_left)
    prepared = _prepare(spec, data=data_path, device=device, budget=budget, progress=progress)
    recorded = study.user_attrs.get("autotl", {})
    for key, value in prepared.record.items():
        if recorded.get(key) != value:
            what = "the dataset (content hash)" if key == "data" else key
            raise UsageError(f"this worker's {what} differs from study '{study_name}''s: {value!r} here, "
                             f"{recorded.get(key)!r} in the study; pass --data with the study's dataset and "
                             "install the same plugins")
    from .artifacts import open_artifacts
    from .candidates import KEEP

    run_dir = Path(out) if out else (Path(spec.run_dir) if spec.run_dir and Path(spec.run_dir).is_dir() else None)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    before = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
    info_base = {"backbone": prepared.backbone.name, "metric": prepared.setup.fit.metric.name,
                 "data": prepared.target.schema(), "study": study_name}
    interrupted = run_trials(study, prepared.setup, tokenizer=prepared.tokenizer, run_dir=run_dir,
                             store=open_artifacts(store_dir), budget=budget, n_trials=spec.n_trials,
                             refit=True, info_base=info_base, max_length=spec.max_length,
                             keep=max(KEEP, spec.ensemble), rescore=spec.rescore)
    if interrupted:
        raise KeyboardInterrupt
    import socket

    host = f"{socket.gethostname()}:{os.getpid()}"  # as Objective records each trial's worker
    return sum(t.user_attrs.get("worker") == host and t.number not in before
               for t in study.get_trials(deepcopy=False, states=finished))


def export_best(*, storage: str, study_name: str = "autotl", out, artifacts=None) -> dict:
    """Write the study's best model (uploaded by whichever worker trained it) as OUT/best."""
    from .artifacts import export_best as export_from_store
    from .artifacts import open_artifacts
    from .study import load_spec, open_storage

    study = _load_study(open_storage(storage, None), study_name)
    return export_from_store(study, open_artifacts(_artifact_dir(artifacts, load_spec(study))), Path(out))


def _artifact_dir(artifacts, spec) -> Path:
    """The artifact store's directory: `artifacts`, else the one the search recorded."""
    store_dir = Path(artifacts) if artifacts else Path(spec.artifacts)
    if not store_dir.is_dir():
        raise UsageError(f"artifact store {store_dir} not found on this machine; mount the search's shared "
                         "directory there or pass --artifacts DIR (the one the search reads)")
    return store_dir


def _load_study(storage, study_name: str):
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UsageError(f"no study '{study_name}' in this storage; studies there: "
                         f"{', '.join(names) or 'none'}") from None


def _check_budget(n_trials, timeout, max_length) -> None:
    if n_trials is not None and n_trials < 1:
        raise UsageError(f"n_trials must be >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"timeout must be > 0 seconds, got {timeout}")
    if not 8 <= max_length <= 8192:
        raise UsageError(f"max_length must satisfy 8 <= max_length <= 8192, got {max_length}")


def _check_end(rescore, ensemble) -> None:
    from .decide import FOLDS

    if not 0 <= rescore <= FOLDS - 1:
        raise UsageError(f"rescore must satisfy 0 <= rescore <= {FOLDS - 1} (re-scoring rounds), got {rescore}")
    if ensemble == 1 or ensemble < 0:
        raise UsageError(f"ensemble must be 0 (none) or at least 2 members, got {ensemble}")


def _stem(data) -> str:
    return Path(data).stem if isinstance(data, (str, os.PathLike)) else "dataframe"


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


__all__ = ["search", "work", "export_best", "predict", "load", "SearchResult", "AutotlError"]
