"""The Strategy protocol and the Plan it hands to the one training loop.

A strategy is a small object: a ``name``, a ``search_space(trial)`` made only of
``trial.suggest_*`` calls with keys namespaced ``"<name>.<param>"``, a ``prepare(model,
params) -> Plan`` that never reads the trial (so a winner is rebuilt from its params alone),
and ``defaults`` — the literature's recipe, the strategy's first trial when the learned
portfolio (`portfolio.py`) has no evidence about it.
Strategies never see the training loop; they describe what to train and the loop does it.

Two optional extensions serve strategies that learn from more than the labelled rows (TAPT,
self-training); a strategy without them works as before:

- ``unsupported(data) -> str | None`` on the strategy: why it cannot run on `data` (a
  `TargetData`: e.g. it has no unlabeled rows, or the task is not single-label), else None.
  A strategy that says why is left out of the search (`offered`); named with
  ``--strategies``, it is a usage error carrying that reason.
- ``Stage.start(model, Context) -> StageRows | None``: runs when the stage begins, on the
  model as the previous stage left it. It may change the model's weights in place (TAPT
  loads the adapted encoder) and returns the rows the stage trains on (self-training: the
  labelled rows plus pseudo-labelled ones, with a loss weight per row), or None for the
  labelled training rows. `Context` carries the unlabeled rows, never the validation rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable



@dataclass(frozen=True)
class Step:
    """What a penalty may look at besides the model, for the current batch."""

    features: Any  # what the head read this batch ([batch, hidden] tensor), None if unsplittable
    rows: Any  # indices of the batch's rows in `data` (numpy array)
    data: Any  # the Encoded training split (its `key` identifies it for the feature cache)
    pad_id: int = 0  # the tokenizer's padding id, to encode rows the same way


# (model, Step) -> scalar tensor added to the loss
Penalty = Callable[[Any, Step], Any]
# (model, score, chosen) -> dict | None: runs once after training, on the best epoch's
# weights; may change the model (merge adapters, interpolate weights). score() validates the
# model as it is now, higher is better whatever the metric. Returns what it chose (JSON-able);
# in the final refit on all labelled rows score is None and `chosen` is the trial's choice.
Finalize = Callable[[Any, Callable[[], float] | None, dict | None], dict | None]


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that share optimizer settings."""

    params: tuple  # torch.nn.Parameter objects; everything not in any group stays frozen
    lr: float  # peak learning rate (linear warmup, then linear decay to 0)
    weight_decay: float = 0.0  # AdamW decoupled weight decay


@dataclass(frozen=True)
class Context:
    """What a Stage's `start` may read besides the model."""

    train: Any  # the labelled rows this run trains on (Encoded; in a refit: train + validation rows)
    unlabeled: Any = None  # Encoded rows without labels (their targets mean nothing); None: the data has none
    work_dir: str | None = None  # where work shared by trials and worker processes is kept; None: a temp dir
    pad_id: int = 0  # the tokenizer's padding id, to batch rows the same way
    device: str = "cpu"
    seed: int = 0
    # Encoded rows to read as plain text (TAPT's masked-LM corpus): the search's training rows
    # and the unlabeled rows, never its validation rows; the same in a refit and in re-scoring
    # folds, so they reuse the search's work. None: `train` and `unlabeled`
    corpus: Any = None
    deadline: Any = None  # the search's Budget (None: none): a long start stops once it has passed


@dataclass(frozen=True)
class StageRows:
    """The rows a stage trains on instead of the labelled training rows."""

    data: Any  # Encoded rows with targets the loss can read (class ids, values or label sets)
    weights: Any = None  # float per row multiplying its loss (pseudo-labels count less); None: all 1


# (model, Context) -> StageRows | None: see the module docstring
Start = Callable[[Any, Context], "StageRows | None"]


@dataclass(frozen=True)
class Stage:
    """A phase of training with a fixed set of trainable parameters."""

    groups: tuple[ParamGroup, ...]  # what trains in this stage; every other weight is frozen
    epochs: int  # passes over the training split; validated (and maybe pruned) after each
    penalty: Penalty | None = None  # extra loss term, e.g. L2-SP's pull to pretrained weights
    start: Start | None = None  # runs as the stage begins: may load weights, pick other rows


@dataclass(frozen=True)
class Plan:
    """What the training loop does for one trial."""

    stages: tuple[Stage, ...]  # run in order; the model carries over from stage to stage
    batch_size: int = 32  # examples per optimizer step
    warmup_ratio: float = 0.1  # fraction of each stage's steps spent warming the lr up
    summary: str = ""  # one line for the leaderboard, e.g. "embeddings + 4/6 layers frozen"
    finalize: Finalize | None = None  # after training: e.g. WiSE-FT's interpolation, merging LoRA

    def __post_init__(self):
        if not self.stages:
            raise ValueError("a Plan needs at least one Stage")
        for stage in self.stages:
            if stage.epochs < 1:
                raise ValueError(f"Stage.epochs must be >= 1, got {stage.epochs}")
            if not any(group.params for group in stage.groups):
                raise ValueError("every Stage needs at least one trainable parameter")
        if self.batch_size < 1:
            raise ValueError(f"Plan.batch_size must be >= 1, got {self.batch_size}")

    @property
    def epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def trainable_parameters(self) -> int:
        """Distinct parameters (elements) that train in any stage."""
        seen = {id(p): p for s in self.stages for g in s.groups for p in g.params}
        return sum(p.numel() for p in seen.values())


@runtime_checkable
class Strategy(Protocol):
    """A transfer method. Register instances through the ``autotl_strategies`` hook."""

    name: str  # unique, identifier-like; prefix of every parameter key
    description: str  # one line for `autotl strategies` and the report
    defaults: Mapping[str, Any]  # the literature's recipe as namespaced params (see portfolio.py)
    # optional `head: str`: the head this strategy always uses ("standard" or "mean"); the
    # search then does not choose one for it (the baseline recipe fixes "standard")
    # optional `unsupported(data) -> str | None`: why it cannot run on this data (module docstring)
    # optional `trains_like: str`: a strategy whose learned fine-tuning settings (lr, epochs, batch
    # size, weight decay; the head stays this one's) replace these defaults in the first trial (portfolio.py)
    # optional `opt_in: str`: why it is searched only when the user names it (--strategies);
    # `offered` leaves it out of a search over every installed strategy, saying so
    # optional `reads_unlabeled: bool`: it learns from the unlabeled rows (`Stage.start`'s
    # context); the summary and the report count its trials as the ones that read them

    def search_space(self, trial) -> dict[str, Any]:
        """Suggest this strategy's parameters; keys are ``f"{name}.{param}"``."""

    def prepare(self, model, params: Mapping[str, Any]) -> Plan:
        """Freeze/regroup `model` for `params` and say how to train it. Never reads a trial."""


def unsupported(strategy, data) -> str | None:
    """Why `strategy` cannot run on `data` (its optional ``unsupported(data)``), or None."""
    if getattr(strategy, "head", None) == "standard" and getattr(data, "tasks", ()):
        return ("it trains the architecture's own single head, and several task columns need one head per task "
                "(autotl's multi-task head)")
    check = getattr(strategy, "unsupported", None)
    return check(data) if callable(check) else None


def offered(strategies: Mapping[str, Any], data, *, named: bool) -> dict:
    """The registered `strategies` (name -> Registered) that can run on `data`; the others are
    left out with one log line, or, when the user `named` them, refused with their reason. A
    strategy with `opt_in` runs only when `named`."""
    from .errors import UsageError

    kept = {}
    for name, registered in strategies.items():
        reason = unsupported(registered.strategy, data)
        if reason is None and not named and getattr(registered.strategy, "opt_in", None):
            logging.getLogger("autotl").info("strategy %s is searched only when named with --strategies: %s", name,
                                             registered.strategy.opt_in)
        elif reason is None:
            kept[name] = registered
        elif named:
            raise UsageError(f"strategy '{name}' cannot run on this data: {reason}")
        else:
            logging.getLogger("autotl").info("strategy %s is not searched: %s", name, reason)
    return kept


def key(strategy_name: str, param: str) -> str:
    """The namespaced parameter key."""
    return f"{strategy_name}.{param}"


def namespaced(strategy_name: str, **params) -> dict:
    """`params` with every key namespaced: a strategy's `defaults` in one line."""
    return {key(strategy_name, k): v for k, v in params.items()}


@dataclass(frozen=True)
class Training:
    """The optimizer settings most strategies search, read back from namespaced params."""

    lr: float
    epochs: int
    batch_size: int
    weight_decay: float
    warmup_ratio: float = 0.1


@dataclass(frozen=True)
class TrainingSpace:
    """Ranges for `suggest_training`; strategies pick ranges that suit what they train."""

    lr: tuple[float, float] = (1e-5, 2e-4)  # log-uniform
    epochs: tuple[int, int] = (2, 4)
    batch_sizes: Sequence[int] = (16, 32)
    weight_decay: tuple[float, float] | None = (0.0, 0.1)  # None: not searched, 0


def suggest_training(trial, name: str, space: TrainingSpace) -> dict[str, Any]:
    """The shared optimizer part of a search space, namespaced under `name`."""
    params = {
        key(name, "lr"): trial.suggest_float(key(name, "lr"), *space.lr, log=True),
        key(name, "epochs"): trial.suggest_int(key(name, "epochs"), *space.epochs),
        key(name, "batch_size"): trial.suggest_categorical(key(name, "batch_size"), list(space.batch_sizes)),
    }
    if space.weight_decay is not None:
        wd = key(name, "weight_decay")
        params[wd] = trial.suggest_float(wd, *space.weight_decay)
    return params


def one_stage(params, training: Training, *, penalty: Penalty | None = None, summary: str = "",
              finalize: Finalize | None = None, warmup_ratio: float = 0.1) -> Plan:
    """The common Plan: one group of parameters trained for `training.epochs`."""
    group = ParamGroup(tuple(params), training.lr, training.weight_decay)
    return Plan((Stage((group,), training.epochs, penalty=penalty),), batch_size=training.batch_size,
                warmup_ratio=warmup_ratio, summary=summary, finalize=finalize)


class TrainedStrategy:
    """The shared shape of autotl's own strategies (plugins may use it or not: the Strategy
    protocol is duck-typed). A subclass sets the class attributes `name`, `description`,
    `space` (the TrainingSpace it searches) and `defaults`, adds its own parameters in
    `own_space` (namespaced with `self.key`), and writes `prepare`; `search_space` is its own
    parameters plus the shared training ones, and `training(params)` reads those back."""

    name: str = ""
    description: str = ""
    space: TrainingSpace = TrainingSpace()
    defaults: Mapping[str, Any] = {}

    def key(self, param: str) -> str:
        return key(self.name, param)

    def own_space(self, trial) -> dict[str, Any]:
        """The strategy's own parameters (beyond lr, epochs, batch size, weight decay)."""
        return {}

    def search_space(self, trial) -> dict[str, Any]:
        return {**self.own_space(trial), **suggest_training(trial, self.name, self.space)}

    def training(self, params: Mapping[str, Any]) -> Training:
        return read_training(self.name, params)

    def prepare(self, model, params: Mapping[str, Any]) -> Plan:
        raise NotImplementedError(f"{type(self).__name__} must define prepare(model, params)")


def snapshot(params) -> list:
    """Detached copies of `params` as they are now (the pretrained weights, before training)."""
    return [p.detach().clone() for p in params]


def read_training(name: str, params: Mapping[str, Any]) -> Training:
    """The `suggest_training` values back out of a params dict."""
    return Training(
        lr=float(params[key(name, "lr")]),
        epochs=int(params[key(name, "epochs")]),
        batch_size=int(params[key(name, "batch_size")]),
        weight_decay=float(params.get(key(name, "weight_decay"), 0.0)),
    )
