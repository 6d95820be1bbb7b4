"""One trial, from suggestion to score; and the same run rebuilt from params alone."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .balance import CHOICES as CLASS_WEIGHT_CHOICES, CLASS_WEIGHT
from .batching import Encoded
from .lengths import HEAD, HEAD_TAIL, TRUNCATION
from .errors import StrategyError
from .heartbeat import Heartbeat
from .redact import mask
from .workers import TOKEN_ENV
from .model import Pooling, TransferModel, build_model
from .multitask import TASK_SCORES, WEIGHTING as TASK_WEIGHTING, WEIGHTINGS as TASK_WEIGHTINGS, task_scores
from .plugins import Registered
from .train import FitResult, FitSettings, fit, release_memory

log = logging.getLogger("autotl")

# This process, as the trials it runs record it ("worker" user attr): host, pid and a random
# part, so two workers on machines that share a host name and pid numbers (containers) differ.
# A local worker gets its random part from the search that started it (AUTOTL_WORKER_TOKEN),
# so the search knows its workers' ids and can re-queue their trials the moment they exit.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{os.environ.get(TOKEN_ENV) or secrets.token_hex(4)}"

BACKBONE = "backbone"  # with several backbones, the first decision of a trial (then the strategy)
STRATEGY = "strategy"  # the first decision of every trial on one backbone
POOLING = "head.pooling"  # the head, searched with the strategy
VAL_PREDICTIONS = "val_predictions"  # user attr: the kept model's predictions on the validation rows
THRESHOLD = "threshold"  # user attr of a multi-label trial: its decision threshold, tuned on validation
HORIZON = "horizon"  # user attr: epochs per stage its schedules spanned, when shrunk to fit the --timeout
# user attr, True when the epoch kept ended mid-schedule (its learning rate not yet decayed): no refit
MID_SCHEDULE = "kept_mid_schedule"
SPANS = "schedule_spans"  # user attr of such a trial: epochs each stage's schedule spanned (final.second_look)
PLANNED_EPOCHS = "planned_epochs"  # user attr of a trial that ran fewer epochs than planned (the --timeout)
DUPLICATE_OF = "duplicate_of"  # user attr: the earlier trial that already ran this configuration
SKIPPED = "skipped"  # user attr: why the trial did not run (it would not finish within the budget)
UPLOAD_ERROR = "upload_error"  # trial user attr: why its model is not in the artifact store
RELATIVE_COST = "relative_cost"  # user attr of a portfolio trial: its time over the baseline recipe's


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its params; shared by all trials of a search."""

    backbone_path: str  # local directory (or hub id) of the pretrained encoder
    strategies: dict[str, Registered]  # the strategies being searched
    poolings: tuple[str, ...]  # head choices: ("standard",) with --standard-head
    train: Encoded
    val: Encoded | None  # None for a refit on all labelled rows
    label_names: tuple[str, ...]
    num_outputs: int
    fit: FitSettings  # metric, device, seed, deadline, progress
    target_mean: float = 0.0  # regression: the training targets' mean (the output bias's start)
    backbone: str = ""  # the backbone's name as the user gave it
    # With several backbones: every backbone's own setup by name (this one's included), each
    # with the rows tokenized by its own tokenizer. A trial's setup is for_params(its params).
    backbones: Mapping[str, "TrialSetup"] = field(default_factory=dict, compare=False, repr=False)
    # Imbalanced classes (balance.py): the balanced loss weights, and `loss.class_weight` is searched
    class_weights: tuple[float, ...] | None = None
    # Many rows cut at max_length (lengths.py): this setup with the rows cut head+tail, and
    # `text.truncation` is searched; for_params picks it for a trial that drew head_tail
    head_tail: "TrialSetup | None" = field(default=None, compare=False, repr=False)
    # Rows without labels (their targets are -1), for the strategies whose stages read them
    # (tapt, self_training: `Stage.start`); None when the data has none
    unlabeled: Encoded | None = field(default=None, compare=False, repr=False)
    # The training rows + the unlabeled rows, as text for TAPT (`strategy.Context.corpus`);
    # a setup derived for a refit or a fold keeps the search's, so it reuses its adapted backbones
    corpus: Encoded | None = field(default=None, compare=False, repr=False)

    def for_params(self, params: Mapping) -> "TrialSetup":
        """The setup of the backbone `params` name (this one when they name none).
        Call it before deriving a setup (folds, refit rows): a derived setup keeps the
        other backbones' full rows."""
        name = params.get(BACKBONE)
        if name is None or name == self.backbone:
            own = self
        elif name not in self.backbones:
            raise StrategyError(f"backbone '{name}' is not one this search loaded ({', '.join(self.backbones)})")
        else:
            own = self.backbones[name]
        if params.get(TRUNCATION) == HEAD_TAIL and own.head_tail is not None:
            return own.head_tail
        return own

    def backbone_names(self) -> tuple[str, ...]:
        return tuple(self.backbones) or (self.backbone,)


def trial_setup(target, backbone, tokenizer, strategies: dict[str, Registered], poolings: tuple[str, ...],
                metric, *, device: str = "cpu", seed: int = 0, max_length: int = 128, budget=None,
                progress: bool = False, class_weights: tuple[float, ...] | None = None,
                head_tail: bool = False, work_dir: str | None = None) -> TrialSetup:
    """The setup every trial of a search shares: the target's splits (and unlabeled rows)
    tokenized once. `work_dir`: where trials share work across processes (FitSettings)."""
    import numpy as np

    from .batching import concat, encode

    def enc(split, name, truncation=HEAD):
        return enc_texts(split.texts, split.targets, name, truncation)

    def enc_texts(texts, targets, name, truncation):
        cut = "" if truncation == HEAD else f":{truncation}"  # the head cut keeps its old cache keys
        return encode(tokenizer, texts, targets, max_length,
                      key=f"{target.fingerprint}:{name}:{backbone.path}:{max_length}{cut}", truncation=truncation)

    regression = target.task.value == "regression"
    def enc_unlabeled(truncation=HEAD):
        if not target.unlabeled:
            return None
        return enc_texts(target.unlabeled, np.full(len(target.unlabeled), -1), "unlabeled", truncation)

    unlabeled = enc_unlabeled()
    train = enc(target.train, "train")
    setup = TrialSetup(
        backbone_path=backbone.path, backbone=backbone.name, strategies=strategies, poolings=poolings,
        train=train, val=enc(target.val, "val"),
        label_names=target.label_names, num_outputs=target.num_outputs,
        target_mean=float(target.train.targets.mean()) if regression else 0.0, class_weights=class_weights,
        fit=FitSettings(metric=metric, regression=regression, pad_id=tokenizer.pad_token_id or 0,
                        device=device, seed=seed, deadline=budget, progress=progress,
                        multilabel=target.task.value == "multilabel", work_dir=work_dir,
                        tasks=getattr(target, "tasks", ())),
        unlabeled=unlabeled, corpus=None if unlabeled is None else concat(train, unlabeled))
    if head_tail:  # every row a trial reads cut alike: its unlabeled rows too (pseudo-labels, tapt's corpus)
        cut_train, cut_unlabeled = enc(target.train, "train", HEAD_TAIL), enc_unlabeled(HEAD_TAIL)
        setup = replace(setup, head_tail=replace(
            setup, train=cut_train, val=enc(target.val, "val", HEAD_TAIL), unlabeled=cut_unlabeled,
            corpus=None if cut_unlabeled is None else concat(cut_train, cut_unlabeled)))
    return setup


@dataclass
class TrialOutcome:
    """A trained model and how it got there."""

    model: TransferModel
    result: FitResult
    summary: str  # the Plan's one-line description


def run_params(setup: TrialSetup, params: dict, on_epoch=None, desc: str = "") -> TrialOutcome:
    """Build, prepare and train the configuration `params` (a trial's, or best_params) on
    `setup`, which must be the setup of the backbone `params` name (`for_params`)."""
    if params.get(BACKBONE, setup.backbone) != setup.backbone:
        raise RuntimeError(f"a setup of backbone '{setup.backbone}' was given params of '{params[BACKBONE]}'")
    name = params[STRATEGY]
    strategy = setup.strategies[name].strategy
    pooling = Pooling(head_of(params, strategy))
    own = {k: v for k, v in params.items() if k.startswith(f"{name}.")}
    import torch

    torch.manual_seed(setup.fit.seed)  # the same head init for a config, whenever it runs
    model = build_model(setup.backbone_path, pooling, num_outputs=setup.num_outputs,
                        label_names=setup.label_names, regression=setup.fit.regression,
                        target_mean=setup.target_mean, multi_label=setup.fit.multilabel, tasks=setup.fit.tasks)
    try:
        plan = strategy.prepare(model, own)
    except Exception as exc:
        raise StrategyError(f"strategy '{name}' failed in prepare(): {type(exc).__name__}: {exc}") from exc
    settings = setup.fit if not desc else _with_desc(setup.fit, desc)
    if params.get(CLASS_WEIGHT) == "balanced" and setup.class_weights is not None:
        settings = replace(settings, class_weights=setup.class_weights)
    if setup.fit.tasks:
        settings = replace(settings, task_weighting=params.get(TASK_WEIGHTING, "equal"))
    result = fit(model, plan, setup.train, setup.val, settings, on_epoch=on_epoch, unlabeled=setup.unlabeled,
                 corpus=setup.corpus)
    return TrialOutcome(model, result, plan.summary)


def tokenizer_of(setup: TrialSetup):
    """The tokenizer of `setup`'s backbone (cached per path: every trial shares it)."""
    from .backbone import load_tokenizer

    return load_tokenizer(setup.backbone_path)


def head_of(params: dict, strategy) -> str:
    """The head a configuration trains: its searched pooling, or the one its strategy fixes
    (the `baseline` recipe always uses the architecture's own head)."""
    return getattr(strategy, "head", None) or params[POOLING]


def _with_desc(settings: FitSettings, desc: str) -> FitSettings:
    return replace(settings, desc=desc)


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def compact(predicted) -> list:
    """Predictions as JSON-able values: class ids as ints, label sets as rows of 0/1 ints,
    regression values to 5 digits."""
    import numpy as np

    predicted = np.asarray(predicted)
    if predicted.ndim == 2 and predicted.dtype.kind == "f":  # multi-task: class ids and values side by side
        return [[float(f"{v:.5g}") for v in row] for row in predicted]
    if predicted.ndim == 2:
        return predicted.astype(int).tolist()
    if predicted.dtype.kind in "iu":
        return [int(v) for v in predicted]
    return [float(f"{v:.5g}") for v in predicted]


def _same_configuration(trial) -> int | None:
    """The number of a finished trial with exactly this trial's parameters, if any."""
    from optuna.trial import TrialState

    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != trial.number and t.params == trial.params:
            return t.number
    return None


def _uncut_seconds(trial, seconds: float) -> float:
    """A finished trial's `seconds` scaled to all its planned epochs. Its relative cost is
    that of the whole configuration: read from a trial the --timeout cut (2 of 6 epochs run),
    one cost unit would come out as small as the cut, and every later trial would look cheap
    enough to start, then be cut in turn (measured: AG News, 1,000 rows, 1x: the baseline
    recipe started with 99 s left, was cut to 1 of its 3 epochs, and the search ended 38 s past
    its --timeout)."""
    planned, run = trial.user_attrs.get(PLANNED_EPOCHS), len(trial.intermediate_values)
    return seconds * planned / run if planned and 0 < run < planned else seconds


def _estimated_seconds(trial, name: str, params: dict) -> float | None:
    """Seconds the configuration would take: the median seconds per epoch of the finished
    trials of the same strategy and backbone, times its epochs (all stages); before any, a portfolio
    trial's relative cost times what one unit cost the finished portfolio trials; else the
    costliest seconds per epoch of any finished trial on that backbone, times its epochs;
    on a backbone nothing finished on yet (a several-backbone search), the same estimate made
    on each other backbone, scaled by the two backbones' forward-pass seconds from the ranking
    (the costliest such); None only before anything finished.

    The last fallback is deliberately pessimistic: a strategy not seen yet (a sampled l2sp
    whose enqueued trial was skipped for time) may train every weight, and a trial with no
    estimate starts however little time is left (measured: AG News, 1,000 rows, 3x, both
    seeds ended about 30 s past the --timeout with no time left for the refit)."""
    from optuna.trial import TrialState

    finished = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    mine = params.get(BACKBONE)
    own = _estimate_on(finished, trial, name, params)
    if own is not None or mine is None:
        return own
    # Nothing finished on this backbone: another's times say little by themselves (110M vs 22M
    # weights), but its forward pass over the same rows, timed by the ranking, scales them
    # (measured here: all-mpnet-base-v2 6.6-7.3x all-MiniLM-L6-v2's on four datasets). Without
    # it, the first trial on the large backbone started with no estimate and was cut to the
    # epochs left, where the small backbone's next trials would have fitted.
    from .study import TRANSFERABILITY

    forward = {r.get("backbone"): r.get("seconds") for r in trial.study.user_attrs.get(TRANSFERABILITY) or []}
    scaled = []
    for other in {t.params.get(BACKBONE) for t in finished} - {mine}:
        estimate = _estimate_on(finished, trial, name, {**params, BACKBONE: other})
        if estimate is not None and forward.get(mine) and forward.get(other):
            scaled.append(estimate * forward[mine] / forward[other])
    return max(scaled) if scaled else None


def _estimate_on(finished, trial, name: str, params: dict) -> float | None:
    """`_estimated_seconds` from the finished trials on params' own backbone only."""
    import statistics

    from optuna.trial import TrialState

    per_epoch, unit, any_epoch = [], [], []
    for t in finished:
        seconds = t.user_attrs.get("seconds") or (t.duration.total_seconds() if t.duration else None)
        if not seconds or not t.intermediate_values or t.params.get(BACKBONE) != params.get(BACKBONE):
            continue  # another backbone's times say nothing of this one's (110M vs 22M weights)
        epoch_seconds = seconds / len(t.intermediate_values)
        any_epoch.append(epoch_seconds)
        if t.params.get(STRATEGY) == name:
            per_epoch.append(epoch_seconds)
        if t.user_attrs.get(RELATIVE_COST) and t.state is TrialState.COMPLETE:
            unit.append(_uncut_seconds(t, seconds) / t.user_attrs[RELATIVE_COST])
    epochs = max(1, sum(int(v) for k, v in params.items() if k.endswith("epochs") and isinstance(v, (int, float))))
    if per_epoch:
        return statistics.median(per_epoch) * epochs
    cost = trial.user_attrs.get(RELATIVE_COST)
    if cost and unit:
        return cost * statistics.median(unit)
    return max(any_epoch) * epochs if any_epoch else None


class Objective:
    """Optuna objective: the backbone first (when several were loaded), then the strategy,
    the head, and that strategy's own space."""

    def __init__(self, setup: TrialSetup, on_complete=None, backbones: tuple[str, ...] | None = None):
        self.setup = setup
        # The backbones offered to the sampler (the ranking may leave a hopeless one out);
        # fixed for the whole study, as Optuna needs a categorical's choices to be.
        self.backbones = tuple(backbones) if backbones else setup.backbone_names()
        # on_complete(trial, outcome): runs while the trial is still running (it may still
        # write to it, e.g. upload the model as its artifact), before the score is reported.
        self.on_complete = on_complete
        self.pending: dict[int, TrialOutcome] = {}  # finished models awaiting the callback
        self.interrupted: dict | None = None  # params of a trial cut off by Ctrl-C, to re-queue

    def _run(self, trial, params: dict, report, desc: str) -> TrialOutcome:
        """run_params; out of GPU memory, once more in micro-batches of half the batch."""
        from dataclasses import replace

        setup = self.setup.for_params(params)
        try:
            return run_params(setup, params, on_epoch=report, desc=desc)
        except Exception as exc:
            if not _out_of_memory(exc):
                raise
        # Outside the except block: the failed attempt's tensors are free to go.
        release_memory(self.setup.fit.device)
        log.warning("trial %d ran out of GPU memory; retrying it once with 2 micro-batches per step "
                    "(gradient accumulation, the same effective batch)", trial.number)
        trial.set_user_attr("oom_retry", "retried with 2 micro-batches per step")
        retry = replace(setup, fit=replace(setup.fit, accumulation=2))
        try:
            return run_params(retry, params, on_epoch=report, desc=desc)
        except Exception as exc:
            if not _out_of_memory(exc):
                raise
        release_memory(self.setup.fit.device)
        raise StrategyError("out of GPU memory even in micro-batches of half the batch; lower --max-length, "
                            "run fewer --trials-per-device, or use a GPU with more memory")

    def _worth_running(self, trial, name: str, params: dict) -> None:
        """Prune at once a repeat of a configuration that ran, or one that would not finish
        in what is left of the budget (neither counts toward n_trials)."""
        import optuna

        earlier = _same_configuration(trial)
        if earlier is not None:  # e.g. the sampler drew the parameterless baseline again
            trial.set_user_attr(DUPLICATE_OF, earlier)
            raise optuna.TrialPruned(f"same configuration as trial {earlier}")
        deadline = self.setup.fit.deadline
        left = deadline.remaining() if deadline is not None else None
        # Only the trial itself must fit: should it win without time for its refit, its own
        # model is final (measured: on a few hundred rows a strong configuration trained on
        # 80% of them beats a weak one refit on all, by far).
        needed = _estimated_seconds(trial, name, params) if left is not None else None
        if needed is not None and needed > left:  # better a cheaper configuration than a cut one
            trial.set_user_attr(SKIPPED, f"needs about {needed:.0f} s, {max(0.0, left):.0f} s left")
            raise optuna.TrialPruned(f"skipped: needs about {needed:.0f} s")

    def __call__(self, trial) -> float:
        import optuna

        setup, params = self.setup, None

        def report(epoch: int, score: float, epochs_left: int) -> None:
            trial.report(score, epoch)
            # A trial's last epoch is never pruned: its result costs nothing more to keep.
            if epochs_left > 0 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} ({score:.4f})")

        try:  # from its first line: a Ctrl-C anywhere in the trial is recorded and re-queued
            trial.set_user_attr("worker", WORKER_ID)
            chosen = {}
            if len(setup.backbone_names()) > 1:  # every trial of a several-backbone study names its own
                chosen[BACKBONE] = trial.suggest_categorical(BACKBONE, list(self.backbones))
            name = trial.suggest_categorical(STRATEGY, list(setup.strategies))
            strategy = setup.strategies[name].strategy
            # A strategy that fixes its head (the baseline recipe) has no pooling to search.
            pooling = getattr(strategy, "head", None) or trial.suggest_categorical(POOLING, list(setup.poolings))
            trial.set_user_attr("head", pooling)
            params = {**chosen, STRATEGY: name, POOLING: pooling, **strategy.search_space(trial)}
            if setup.head_tail is not None:  # many rows cut: keep their beginning, or beginning and end
                params[TRUNCATION] = trial.suggest_categorical(TRUNCATION, [HEAD, HEAD_TAIL])
            if setup.class_weights is not None:  # imbalanced classes: weigh the loss, or not
                params[CLASS_WEIGHT] = trial.suggest_categorical(CLASS_WEIGHT, list(CLASS_WEIGHT_CHOICES))
            if setup.fit.tasks:  # multi-task: how the task losses are weighted
                params[TASK_WEIGHTING] = trial.suggest_categorical(TASK_WEIGHTING, list(TASK_WEIGHTINGS))
            self._worth_running(trial, name, params)
            on = f" on {chosen[BACKBONE]}" if chosen else ""
            with Heartbeat(trial.study, trial._trial_id):  # silent past the grace, it is taken for dead
                outcome = self._run(trial, params, report, f"trial {trial.number} {name}/{pooling}{on}")
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C); re-queued")
            trial.set_user_attr("interrupted", True)
            # Cut before all its parameters were drawn: re-queue what it was given (an
            # enqueued configuration) or what was drawn so far; the rest is drawn again.
            self.interrupted = params if params is not None else _given_params(trial)
            raise
        except Exception as exc:
            trial.set_user_attr("error", mask(f"{type(exc).__name__}: {exc}"))  # kept in the study and report
            log.debug("trial %d failed:\n%s", trial.number, mask(traceback.format_exc()))
            raise
        result = outcome.result
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epoch_scores", list(result.scores))
        trial.set_user_attr("seconds", round(result.seconds, 2))
        trial.set_user_attr("trainable_params", result.trainable_params)
        if result.val_predictions is not None:
            trial.set_user_attr(VAL_PREDICTIONS, compact(result.val_predictions))
        if result.threshold is not None:
            trial.set_user_attr(THRESHOLD, result.threshold)
        if setup.fit.tasks and result.val_predictions is not None:
            own = setup.for_params(params)
            trial.set_user_attr(TASK_SCORES, task_scores(own.val.targets, result.val_predictions, setup.fit.tasks))
        chosen = ", ".join(f"{k}={v}" for k, v in (result.finalized or {}).items())
        trial.set_user_attr("summary", f"{outcome.summary} ({chosen})" if chosen else outcome.summary)
        if result.finalized is not None:
            trial.set_user_attr("finalized", result.finalized)
        if result.truncated:
            trial.set_user_attr("truncated", "stopped early at the --timeout")
        if result.planned_epochs and len(result.scores) < result.planned_epochs:
            trial.set_user_attr(PLANNED_EPOCHS, result.planned_epochs)
        if result.horizon is not None:  # its refit replays these schedules (final._refit)
            trial.set_user_attr(HORIZON, list(result.horizon))
            trial.set_user_attr("summary", f"{trial.user_attrs['summary']}; schedule fitted to the --timeout: "
                                           f"{sum(result.horizon)} epoch(s)")
        if not result.kept_at_schedule_end:  # final.refit_allowed and final.second_look read them
            trial.set_user_attr(MID_SCHEDULE, True)
            trial.set_user_attr(SPANS, list(result.spans or ()))
        if self.on_complete is not None:
            try:
                self.on_complete(trial, outcome)
            except Exception as exc:  # say why on the trial: "no trial finished" then names it
                trial.set_user_attr("error", mask(f"after training: {type(exc).__name__}: {exc}"))
                raise
        self.pending[trial.number] = outcome
        return result.best_score


def _given_params(trial) -> dict | None:
    """The configuration a trial was enqueued with, else the params drawn so far (None if none)."""
    fixed = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
    return dict(fixed or trial.params) or None
