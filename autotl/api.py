"""`autotl.search`, `autotl.predict`, `autotl.load`: the product as a Python API.

`search` reads top to bottom in the order of the data flow: plugins, data, metric,
backbone, run directory, study, trials, best model, test score, leaderboard, report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import AutotlError, UsageError
from .result import SearchResult

log = logging.getLogger("autotl")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device '{device}' requested but no CUDA GPU is visible; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N")
    return device


def search(data, **settings) -> SearchResult:
    """Search transfer strategies x hyperparameters on a labelled text dataset.

    `data` is a CSV path or a pandas DataFrame with a text and a label column (inferred
    when not named). `settings` are `autotl.config.RunConfig`'s fields, all optional:

    - data: `text_col` ("a,b": two columns encoded as a text pair; inferred when exactly two
      columns hold free text), `label_col` ("a,b,c": several 0/1 label columns, multi-label),
      `label_sep` (multi-label sets in one column; "|" is inferred), `val` (a validation CSV
      or DataFrame instead of a `val_frac` split), `test` (scored once, for the final
      model), `unlabeled` (texts without labels, for `tapt` and `self_training`; rows of
      `data` with an empty label are unlabeled too), `encoding`;
    - what to search: `model`, `strategies`, `disable_plugins`, `standard_head`, `metric`,
      `max_length`, `seed`, `portfolio`;
    - budget: `n_trials`, `timeout` (seconds, the whole search included), `pruner`;
    - the end: `refit`, `rescore`, `soup`, `ensemble`;
    - where: `out` (RUN_DIR), `storage`, `study_name`, `artifacts`, `device`,
      `trials_per_device`, `progress`.

    Returns a `SearchResult`: the leaderboard, the chosen configuration and its model's
    path (``RUN_DIR/best``, a Hugging Face model directory). Re-running with the same `out`
    resumes the study. The first trials come from a portfolio learned from benchmark runs,
    the `baseline` recipe among them; at the end, when validation cannot tell the best trials
    apart, up to `rescore` rounds of cross-validation folds re-score them before the choice
    (the cheaper of statistical ties wins); `soup` tries a greedy weight soup; the choice
    is retrained on train + validation rows (`refit`); `ensemble` K > 1 also saves an
    averaged-prediction ensemble in RUN_DIR/ensemble, which `predict(RUN_DIR, ...)` and
    `load(RUN_DIR)` serve. With several devices or `trials_per_device` > 1, trials run in
    that many worker processes. Raises `autotl.AutotlError` subclasses for bad input.
    """
    from .budget import Budget
    from .config import RunConfig
    from .devices import parse_devices, worker_slots

    config = RunConfig.build(data, **settings)
    slots = worker_slots(parse_devices(config.device), config.trials_per_device)
    budget = Budget(config.timeout)
    prepared = prepare(config, device=slots[0].device, budget=budget, progress=config.progress, test=config.test)
    config = prepared.config  # --max-length auto resolved to a number of tokens
    log.info("%s %s on %s; searching %s; run directory %s",
             "backbone" if len(prepared.backbones) == 1 else "backbones",
             ", ".join(f"{b.name} ({b.num_layers} layers)" for b in prepared.backbones),
             ", ".join(dict.fromkeys(s.device for s in slots)), ", ".join(prepared.setup.strategies),
             config.run_dir)
    from .runner import run_study

    return run_study(config, prepared, budget=budget, slots=slots)


@dataclass(frozen=True)
class Prepared:
    """A search's data, backbone and the setup its trials share, built from a RunConfig."""

    target: object  # TargetData
    backbone: object
    tokenizer: object
    setup: object  # TrialSetup of the first backbone (setup.for_params finds the others')
    identity: dict  # what a worker must match to join the study (config.identity)
    backbones: tuple = ()  # every backbone searched, in the order given
    config: object = None  # the RunConfig, with `max_length` "auto" resolved
    profile: dict | None = None  # what the data looks like: class balance, token lengths (report)


def prepare(config, *, device: str, budget, progress: bool, test=None, data=None) -> Prepared:
    """Plugins, data, metric, backbone and the trials' shared setup. `data` overrides the
    recorded data path (a worker's own copy); `test` is read only by the search process."""
    from .backbone import load_backbone, load_tokenizer
    from .balance import IMBALANCE_RATIO, IMBALANCED_METRIC, balanced_weights, class_counts, describe, is_imbalanced
    from .config import identity
    from .data import load_data
    from .metrics import get_metric
    from .model import Pooling
    from .objective import trial_setup
    from .plugins import Registry
    from .strategy import offered

    selected = Registry(config.disable_plugins).select(list(config.strategies) if config.strategies else None)
    target = load_data(data or config.data, text_col=config.text_col, label_col=config.label_col,
                       label_sep=config.label_sep, val=config.val, val_frac=config.val_frac, test=test,
                       seed=config.seed, encoding=config.encoding, unlabeled=config.unlabeled)
    selected = offered(selected, target, named=bool(config.strategies))  # e.g. tapt needs unlabeled rows
    balance = None
    if target.task.value == "classification":
        balance = class_counts(target)
        log.info("class balance: %s", describe(balance))
    if target.task.value == "multitask":
        config, chosen_metric = _multitask_config(config, target)
    elif config.metric is None and balance is not None and is_imbalanced(balance):
        log.info("the rarest class has under %.0f%% of the largest class's rows: choosing by %s, not accuracy "
                 "(pass --metric accuracy to choose by accuracy); a class-weighted loss is searched too",
                 100 * IMBALANCE_RATIO, IMBALANCED_METRIC)
        chosen_metric = get_metric(IMBALANCED_METRIC, target.task.value)
    else:
        chosen_metric = get_metric(config.metric, target.task.value)
    weights = (balanced_weights(target.train.targets, len(target.label_names))
               if balance is not None and is_imbalanced(balance) else None)
    backbones = [load_backbone(name) for name in config.models()]  # all found before any training
    config, lengths = _resolve_lengths(config, target, backbones)
    device = resolve_device(device)
    poolings = (Pooling.STANDARD.value,) if config.standard_head else (Pooling.STANDARD.value, Pooling.MEAN.value)
    if target.task.value == "multitask":  # one head per task: autotl's own mean-pooled heads only
        poolings = (Pooling.MEAN.value,)
    setups = {b.name: trial_setup(target, b, load_tokenizer(b.path), selected, poolings, chosen_metric,
                                  device=device, seed=config.seed, max_length=config.max_length, budget=budget,
                                  progress=progress, class_weights=weights,
                                  # TAPT's adapted backbones go to RUN_DIR/tapt (a remote worker's own temp dir)
                                  work_dir=str(config.run_dir) if config.run_dir.is_dir() else None,
                                  head_tail=_search_head_tail(config, lengths))
              for b in backbones}
    if len(setups) > 1:  # each backbone's setup finds the others' (for_params)
        shared: dict = {}
        shared.update({name: replace(s, backbones=shared, head_tail=s.head_tail and replace(s.head_tail, backbones=shared))
                       for name, s in setups.items()})
        setups = shared
    setup = setups[backbones[0].name]
    ident = identity(config, fingerprint=target.fingerprint, model=",".join(b.name for b in backbones),
                     metric=chosen_metric.name, strategies=selected, heads=poolings)
    profile = {"class_balance": balance, "lengths": lengths,
               **({"text_pair": list(target.text_pair)} if target.text_pair else {}),
               **({"unlabeled": _unlabeled_profile(target, selected)} if target.unlabeled_found else {})}
    return Prepared(target, backbones[0], load_tokenizer(backbones[0].path), setup, ident, tuple(backbones),
                    config=config, profile=profile)


def _unlabeled_profile(target, strategies) -> dict:
    """How many unlabeled rows were found and kept, and which searched strategies read them
    (a strategy says so with `reads_unlabeled`); one log line, a warning when none does."""
    readers = [name for name, reg in strategies.items() if getattr(reg.strategy, "reads_unlabeled", False)]
    if readers:
        log.info("unlabeled rows: %d kept, read by %s", len(target.unlabeled), ", ".join(readers))
    else:
        log.warning("%d unlabeled rows found, but no strategy searched reads them (tapt, self_training and "
                    "probe_self_training do; name them with --strategies, or leave --strategies out)",
                    target.unlabeled_found)
    return {"found": target.unlabeled_found, "kept": len(target.unlabeled), "readers": readers}


def _multitask_config(config, target):
    """(config, metric) for several task columns: refuses what a multi-task model cannot do
    (the pipeline head, an ensemble), leaves out the soup, and builds the combined metric."""
    from .multitask import task_metric

    if config.standard_head:
        raise UsageError("--standard-head cannot train several task columns: a multi-task model has one head per "
                         "task (autotl's own, not a transformers pipeline model); leave out --standard-head")
    if config.ensemble > 1:
        raise UsageError("--ensemble is not supported with several task columns (multi-task); leave it out")
    if config.soup:
        log.info("several task columns: no weight soup at the end (not supported for multi-task models)")
        config = replace(config, soup=False)
    return config, task_metric(target.tasks, config.metric)


def _search_head_tail(config, lengths: dict) -> bool:
    """Whether `text.truncation` is searched: when many rows are cut, except under
    --standard-head, whose promise is a model `transformers.pipeline` serves as autotl does —
    and a pipeline cuts long texts at their head (longest-first for pairs), never head+tail."""
    from .lengths import MANY_TRUNCATED

    return lengths["truncated"] > MANY_TRUNCATED and not config.standard_head


def _resolve_lengths(config, target, backbones):
    """(config with `max_length` a number, the token-length profile of the training texts),
    measured with the first backbone's tokenizer; logged, with a hint when many rows are cut."""
    from transformers import AutoConfig

    from . import lengths as ln
    from .backbone import load_tokenizer

    tokenizer = load_tokenizer(backbones[0].path)
    found = ln.token_lengths(tokenizer, target.train.texts)
    limit = min(ln.model_limit(load_tokenizer(b.path), AutoConfig.from_pretrained(b.path)) for b in backbones)
    if config.max_length == ln.AUTO:
        config = replace(config, max_length=ln.auto_max_length(found, limit))
        log.info("max length auto: %d tokens (the training texts' 95th percentile, within the model's limit %d)",
                 config.max_length, limit)
    profile = {**ln.profile(found, config.max_length), "model_limit": limit}
    log.info("text length in tokens: %s", ln.describe(profile))
    if profile["truncated"] > ln.MANY_TRUNCATED:
        hint = " (pass --max-length auto or a larger value to keep more)" if config.max_length < limit else ""
        if not _search_head_tail(config, profile):
            how = "head+tail truncation is not searched with --standard-head (a transformers pipeline cuts at the head)"
        elif target.text_pair:
            how = "head+tail truncation (each text of a pair within its longest-first share) is searched too"
        else:
            how = "head+tail truncation is searched too"
        log.info("%.0f%% of the rows are cut at %d tokens: %s%s", 100 * profile["truncated"], config.max_length,
                 how, hint)
    return config, profile


def work(*, storage: str, study_name: str = "autotl", data=None, device: str = "auto",
         artifacts=None, out=None, threads: int | None = None, progress: bool = False, unlabeled=None) -> int:
    """Join a study started by `search` and run its trials until its budget is spent.

    The study records the search's RunConfig; `data` overrides the data path (another
    machine's copy: the rows must be the same), `unlabeled` the search's --unlabeled file
    (likewise a copy with the same texts), `artifacts` the artifact store's directory
    (must be the one the search reads: a shared directory), `out` where to keep best/
    (default: the search's run directory when it exists here). A worker whose data,
    backbone, metric, strategies or heads differ from the study's is refused with one
    error. Returns the number of trials this worker finished.
    """
    import optuna

    from .budget import Budget
    from .errors import DataError
    from .objective import WORKER_ID
    from .runner import work as run_trials
    from .storage import open_storage
    from .study import check_identity, join_study

    if threads:
        import torch

        torch.set_num_threads(threads)
    study, config = join_study(open_storage(storage, None), study_name)
    data_path = str(data) if data is not None else config.data
    if not Path(data_path).is_file():
        raise DataError(f"the study's data {data_path} is not on this machine; pass --data with a copy of it")
    if unlabeled is not None and config.unlabeled is None:
        raise UsageError("--unlabeled: this study's search was given no unlabeled file; run the worker without it")
    if unlabeled is not None or config.unlabeled is not None:
        config = replace(config, unlabeled=str(unlabeled if unlabeled is not None else config.unlabeled))
        if not Path(config.unlabeled).is_file():
            raise DataError(f"the study's unlabeled rows {config.unlabeled} are not on this machine; pass "
                            "--unlabeled with a copy of them")
    store_dir = _artifact_dir(artifacts, config)
    seconds_left = config.seconds_left()
    if seconds_left is not None and seconds_left <= 0:
        log.info("study '%s': its budget is already spent; nothing to do", study_name)
        return 0
    budget = Budget(seconds_left)
    prepared = prepare(config, data=data_path, device=device, budget=budget, progress=progress)
    check_identity(study, prepared.identity, joining=True)
    from .artifacts import open_artifacts
    from .candidates import KEEP

    run_dir = Path(out) if out else (config.run_dir if config.run_dir.is_dir() else None)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    before = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
    info_base = {"backbone": prepared.backbone.name, "metric": prepared.setup.fit.metric.name,
                 "data": prepared.target.schema(), "study": study_name}
    interrupted = run_trials(study, prepared.setup, tokenizer=prepared.tokenizer, run_dir=run_dir,
                             store=open_artifacts(store_dir), budget=budget, n_trials=config.n_trials,
                             refit=config.refit, info_base=info_base, max_length=config.max_length,
                             keep=max(KEEP, config.ensemble), rescore=config.rescore)
    if interrupted:
        raise KeyboardInterrupt
    return sum(t.user_attrs.get("worker") == WORKER_ID and t.number not in before
               for t in study.get_trials(deepcopy=False, states=finished))


def export_best(*, storage: str, study_name: str = "autotl", out, artifacts=None) -> dict:
    """Write the study's best model (uploaded by whichever worker trained it) as OUT/best."""
    from .artifacts import export_best as export_from_store
    from .artifacts import open_artifacts
    from .storage import open_storage
    from .study import load_config, load_study

    study = load_study(open_storage(storage, None), study_name)
    return export_from_store(study, open_artifacts(_artifact_dir(artifacts, load_config(study))), Path(out))


def _artifact_dir(artifacts, config) -> Path:
    """The artifact store's directory: `artifacts`, else the one the search recorded."""
    store_dir = Path(artifacts) if artifacts else Path(config.artifacts)
    if not store_dir.is_dir():
        raise UsageError(f"artifact store {store_dir} not found on this machine; mount the search's shared "
                         "directory there or pass --artifacts DIR (the one the search reads)")
    return store_dir


def load(run, device: str = "cpu"):
    """(model, tokenizer, info) of a finished search: RUN_DIR or RUN_DIR/best."""
    from .export import load_model

    return load_model(run, resolve_device(device))


def task_outputs(outputs, info: dict) -> dict:
    """A multi-task model's outputs split per task: {task: logits (classification) or values
    (regression)}; `outputs` are the model's from `load`, `info` its info."""
    from .multitask import task_outputs as split

    return split(outputs, info)


def predict(run, data, *, text_col: str | None = None, encoding: str = "utf-8",
            device: str = "auto", batch_size: int = 64, onnx: bool = False):
    """Labels (and class probabilities) for the rows of `data` (a CSV or JSON lines path,
    "-" for standard input, or a DataFrame) with a search's best model.

    Returns a DataFrame: the text column (a text pair's two), ``prediction`` and, for classification, one
    ``prob_<label>`` column per class. Multi-label: ``prediction`` is the label set joined by
    the training data's separator ("|" by default; "" for none) and ``prob_<label>`` each
    label's own probability. Multi-task (several task columns): one column per task, named as
    the task, and ``prob_<task>_<label>`` for each class of a classification task. One row per
    input row, in order. `onnx`: run
    RUN_DIR/best/model.onnx (written by `autotl export RUN_DIR --onnx`) in onnxruntime on
    the CPU instead of PyTorch; the same columns.
    """
    import numpy as np
    import pandas as pd

    from . import pairs
    from .batching import encode, truncation_of
    from .data import read_texts
    from .inputs import predict_input
    from .train import infer

    if onnx:  # the same batching and columns below; only the forward pass differs
        from .onnx_export import load_onnx

        model, tokenizer, info = load_onnx(run, device)
        device = "cpu"
    else:
        device = resolve_device(device)
        model, tokenizer, info = load(run, device)
    data, name = predict_input(data, encoding)  # after load: a bad RUN_DIR is reported before stdin is read
    column, texts = read_texts(data, text_col or pairs.trained_columns(info["data"]), encoding=encoding, name=name,
                               hint="" if text_col else pairs.missing_hint(info["data"]))
    pairs.check_columns(column, info["data"])
    encoded = encode(tokenizer, texts, np.zeros(len(texts)), info["max_length"], key="predict",
                     truncation=truncation_of(info))
    outputs = infer(model, encoded, pad_id=tokenizer.pad_token_id or 0, device=device, batch_size=batch_size)
    frame = pd.DataFrame(pairs.frame_columns(column, texts))
    if info["data"]["task"] == "multitask":  # each task's column (and its class probabilities)
        from .multitask import prediction_columns

        return frame.assign(**prediction_columns(outputs, info["data"]["tasks"]))
    if info["data"]["task"] == "regression":
        frame["prediction"] = outputs[:, 0]
        return frame
    labels = info["data"]["label_names"]
    if info["data"]["task"] == "multilabel":  # label sets at the threshold tuned on validation
        from . import multilabel

        probs = multilabel.sigmoid(outputs)
        chosen = multilabel.decide(probs, info.get("threshold", multilabel.DEFAULT_THRESHOLD))
        sep = info["data"].get("label_sep") or multilabel.SEPARATOR
        frame["prediction"] = [multilabel.joined(row, labels, sep) for row in chosen]
    else:
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
