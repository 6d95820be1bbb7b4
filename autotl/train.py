"""The one training loop: a Plan, a model and encoded data in; the best epoch's model out.

Strategies never see this loop. Per stage it freezes what the Plan does not train, runs
frozen blocks in eval mode (a frozen layer is a fixed feature extractor: no dropout),
computes what stays frozen once (the head's input when the whole encoder is frozen, the
hidden states below the frozen depth otherwise: `StageForward`), validates after every
epoch, reports to the caller (which may prune), and keeps the best epoch's weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import multilabel, multitask
from .activations import ACTIVATIONS
from .batching import Encoded, batch_order, in_row_order, model_inputs
from .budget import Budget
from .errors import StrategyError
from .features import CACHE as FEATURES
from .metrics import Metric
from .select import epoch_tie_margin
from .strategy import Context, Plan, Stage, StageRows, Step


# An earlier epoch is kept instead of the schedule's last one only when it beats it
# significantly: one-sided, at this level, Bonferroni-corrected for the earlier epochs compared
# (`schedule_end_margin`). Measured on rows of train.csv outside the training sample
# (benchmarks/epoch_average.py, never test.csv): see README, "Which epoch is kept".
SCHEDULE_END_LEVEL = 0.05


def schedule_end_margin(epochs: int, level: float = SCHEDULE_END_LEVEL) -> float:
    """Paired standard errors by which the best of `epochs` epochs must beat the last for the
    last not to be kept: the normal quantile of 1 - level / (epochs - 1) (2.33 for 6 epochs)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - level / max(1, epochs - 1))


@dataclass(frozen=True)
class FitSettings:
    """How to train, independent of the strategy."""

    metric: Metric  # validation score; the epoch kept by it: _Best
    regression: bool  # MSE loss on one output instead of cross-entropy
    pad_id: int  # tokenizer's padding id
    device: str = "cpu"  # "cpu" or "cuda[:n]"
    seed: int = 0  # dropout, head init and batch order
    # once passed, no new epoch starts (the first always runs); a schedule that would run
    # past it is shrunk to the epochs that fit (`fitted_span`)
    deadline: Budget | None = None
    max_epochs: int | None = None  # stop after this many epochs in all (a refit's best epoch)
    finalize_choice: dict | None = None  # a refit re-applies what finalize chose in the trial
    # epochs each stage's learning-rate schedule spans: a refit replays its trial's
    # (FitResult.horizon) so that its first best_epoch + 1 epochs follow the same rates
    horizon: tuple[int, ...] | None = None
    progress: bool = False  # a tqdm bar per trial on stderr
    use_cache: bool = True  # reuse what frozen layers compute (features.py, activations.py)
    accumulation: int = 1  # micro-batches per optimizer step (an out-of-memory retry uses 2)
    batch_order: str = "bucketed"  # "bucketed": rows of similar length together; "shuffled": plain
    desc: str = ""  # the bar's label
    # label sets: one sigmoid output per label (BCE loss), predictions thresholded at a value
    # tuned on the validation rows (`multilabel.tune_threshold`)
    multilabel: bool = False
    class_weights: tuple[float, ...] | None = None  # cross-entropy weights per class (balance.py)
    # where work that trials share across worker processes is kept (TAPT's adapted backbones,
    # tapt.py): the run directory in a search; None: a temporary directory of this process
    work_dir: str | None = None
    # multi-task (multitask.py): the tasks, in output order; their losses summed by
    # `task_weighting` (the trial's searched multitask.WEIGHTING)
    tasks: tuple = ()
    task_weighting: str = "equal"


@dataclass(frozen=True)
class FitResult:
    """What one training run achieved."""

    best_score: float  # validation metric of the epoch kept (_Best)
    best_epoch: int  # the epoch kept, 0-based, counted over all stages
    scores: tuple[float, ...]  # validation metric after each epoch run
    seconds: float  # wall time of fit()
    trainable_params: int  # elements trained in any stage
    truncated: bool  # stopped before the Plan's last epoch because the deadline passed
    finalized: dict | None = None  # what the Plan's finalize chose (e.g. WiSE-FT's alpha)
    val_predictions: np.ndarray | None = None  # the kept model's predictions on the validation rows
    threshold: float | None = None  # multi-label: the kept model's decision threshold, tuned on validation
    horizon: tuple[int, ...] | None = None  # epochs per stage the schedules spanned, when shrunk to the deadline
    # whether the kept epoch was its stage's last, its learning rate decayed to zero; False: a
    # snapshot taken mid-schedule, which a refit would not reproduce (final.refit_allowed)
    kept_at_schedule_end: bool = True
    spans: tuple[int, ...] | None = None  # epochs each stage's schedule spanned as run (final.second_look)
    planned_epochs: int | None = None  # epochs the Plan asked for (all stages, max_epochs applied)


def autocast_for(device: str):
    """bf16 autocast on GPUs that support it; a no-op elsewhere."""
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def to_device(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """Host to device; to a GPU through pinned memory without waiting for the copy (the
    training step queued next does not need the host to sync)."""
    if device.startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def release_memory(device: str) -> None:
    """Give back what a finished (or failed) trial held: its model, optimizer state and
    activations, to the Python heap and, on a GPU, to the device."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _stage_setup(model, stage: Stage) -> tuple[list, bool]:
    """Set requires_grad for the stage; return (trainable params, encoder fully frozen)."""
    trainable = {id(p): p for g in stage.groups for p in g.params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    encoder_frozen = not any(p.requires_grad for p in model.encoder.parameters())
    return list(trainable.values()), encoder_frozen


def _set_modes(model, encoder_frozen: bool) -> None:
    model.train()
    for block in ([model.encoder] if encoder_frozen else model.blocks()):
        if not any(p.requires_grad for p in block.parameters()):
            block.eval()


class _Schedule:
    """Linear warmup, then linear decay to zero at the end of `epochs` epochs of `steps`
    steps. The span can shrink mid-stage (`shrink`): a trial the deadline would cut ends its
    decay in the epochs that fit, instead of stopping at a high learning rate (measured:
    AG News, 1,000 rows, 1x the recipe's time: the first trial, 6 planned epochs, stopped
    after 2 and its refit scored 0.845 against the recipe's 0.872)."""

    def __init__(self, optimizer, epochs: int, steps: int, warmup_ratio: float):
        self.epochs, self.steps, self.warmup_ratio = epochs, steps, warmup_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        total = self.epochs * self.steps
        warmup = int(total * self.warmup_ratio)
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    def step(self) -> None:
        self.scheduler.step()

    def shrink(self, epochs: int) -> None:
        self.epochs = min(self.epochs, epochs)
        # the rate of the next step was set on the old span: set it on the new one
        step = self.scheduler.last_epoch
        for group, base in zip(self.scheduler.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self._factor(step)


def fitted_span(spans: list[int], stage: int, done: int, fit_epochs: int) -> int:
    """Stage `stage`'s span (in epochs) when only `fit_epochs` more epochs fit before the
    deadline: the epochs still planned (this stage's rest, then the later stages') are cut
    in proportion, this stage keeping its share (floored; the later stages are fitted again
    when they run). Never grows: a schedule that lengthened would raise the learning rate."""
    rest = spans[stage] - done
    left = rest + sum(spans[stage + 1:])
    if fit_epochs >= left or left <= 0:  # nothing planned is left to cut (the last epoch ran past the deadline)
        return spans[stage]
    return done + (max(0, fit_epochs) * rest) // left


def _loss(logits: torch.Tensor, targets: torch.Tensor, settings: FitSettings,
          row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The task's mean loss; with `row_weights` (a stage's StageRows), each row's loss times its
    weight, over the same denominator as the plain mean (all-1 weights change nothing)."""
    functional, reduction = torch.nn.functional, "mean" if row_weights is None else "none"
    weight = None
    if settings.regression:
        loss = functional.mse_loss(logits.squeeze(-1).float(), targets.float(), reduction=reduction)
    elif settings.multilabel:  # each label its own yes/no: a 0/1 target matrix
        loss = functional.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction=reduction)
        loss = loss if row_weights is None else loss.mean(dim=1)
    else:
        if settings.class_weights is not None:
            weight = torch.tensor(settings.class_weights, dtype=torch.float32, device=logits.device)
        loss = functional.cross_entropy(logits.float(), targets, weight=weight, reduction=reduction)
    if row_weights is None:
        return loss
    # cross_entropy's weighted mean divides by the rows' class weights, not by the row count
    denominator = weight[targets].sum() if weight is not None else len(loss)
    return (loss * row_weights.float()).sum() / denominator


def infer(model, data: Encoded, *, pad_id: int, device: str, batch_size: int = 128) -> np.ndarray:
    """Raw outputs (logits or regression values) for every row, in row order."""
    model.eval()
    autocast = autocast_for(device)

    def outputs_of(index):
        inputs = model_inputs(data, index, pad_id, device)
        with autocast():
            return model(*inputs)

    return in_row_order(data, batch_size, outputs_of)


def predictions(outputs: np.ndarray, regression: bool, threshold: float | None = None) -> np.ndarray:
    """Values, class ids, or (given a multi-label model's `threshold`) 0/1 label-set rows."""
    if threshold is not None:
        return multilabel.decide(multilabel.sigmoid(outputs), threshold)
    return outputs[:, 0] if regression else outputs.argmax(axis=1)


@dataclass(frozen=True)
class Scored:
    """A model's outputs on labelled rows, judged by the validation metric."""

    score: float
    predictions: np.ndarray
    threshold: float | None = None  # multi-label: the decision threshold, tuned on these very rows


def judge(outputs: np.ndarray, targets: np.ndarray, settings: FitSettings) -> Scored:
    """Score raw outputs on validation rows; a multi-label model's threshold is tuned on them
    first (the best epoch is then the best with its own best threshold)."""
    if settings.tasks:  # rows x tasks: class ids and values, scored by the tasks' combined metric
        predicted = multitask.decide(outputs, settings.tasks)
        return Scored(settings.metric(targets, predicted), predicted)
    if not settings.multilabel:
        predicted = predictions(outputs, settings.regression)
        return Scored(settings.metric(targets, predicted), predicted)
    probabilities = multilabel.sigmoid(outputs)
    threshold = multilabel.tune_threshold(targets, probabilities, settings.metric)
    predicted = multilabel.decide(probabilities, threshold)
    return Scored(settings.metric(targets, predicted), predicted, threshold)


class StageForward:
    """How a stage turns rows into (head input, outputs), cheapest first:

    - ``pooled``: the whole encoder is frozen; the head reads cached features (`features.py`).
    - ``layers``: the embeddings and the bottom `depth` layers are frozen; the trainable top
      runs on cached hidden states (`activations.py`).
    - ``tokens``: the whole model runs on token ids.
    """

    def __init__(self, model, settings: FitSettings, *, encoder_frozen: bool):
        self.model, self.settings = model, settings
        self.autocast = autocast_for(settings.device)
        self.mode, self.depth = "tokens", 0
        if settings.use_cache and model.splittable and encoder_frozen:
            self.mode = "pooled"
        elif settings.use_cache and model.layer_cacheable and model.frozen_depth() >= 1:
            self.mode, self.depth = "layers", model.frozen_depth()
        self._sources: dict[str, object] = {}  # data key -> cached features or Activations

    def _source(self, data: Encoded):
        if data.key not in self._sources:
            s = self.settings
            if self.mode == "pooled":
                source = FEATURES.features(self.model, data, pad_id=s.pad_id, device=s.device,
                                           autocast=self.autocast)
            else:
                source = ACTIVATIONS.get(self.model, data, self.depth, pad_id=s.pad_id, device=s.device,
                                         autocast=self.autocast)
            self._sources[data.key] = source
        return self._sources[data.key]

    def __call__(self, data: Encoded, index: np.ndarray):
        """(head input or None when the model cannot be split, outputs) for rows `index`."""
        model, device = self.model, self.settings.device
        source = self._source(data) if self.mode != "tokens" else None
        with self.autocast():
            if self.mode == "pooled":
                pooled = to_device(source[torch.as_tensor(index)], device)
                return pooled, model.head(pooled)
            if source is not None:  # layers, cached
                hidden, mask = source.batch(index)
                mask = to_device(mask, device)
                hidden = model.run_layers(to_device(hidden, device), mask, self.depth)
                pooled = model.pool(hidden, mask)
                return pooled, model.head(pooled)
            inputs = tuple(to_device(t, device) for t in model_inputs(data, index, self.settings.pad_id))
            if model.splittable:
                pooled = model.features(*inputs)
                return pooled, model.head(pooled)
            return None, model(*inputs)

    def outputs(self, data: Encoded, batch_size: int = 128) -> np.ndarray:
        """Outputs for every row of `data` in row order, in eval mode without gradients."""
        self.model.eval()
        return in_row_order(data, batch_size, lambda index: self(data, index)[1])


class _Best:
    """The epoch kept: the best validated so far, or a later one within one standard error
    of it (`select.epoch_tie_margin`, paired on the same rows) — its score, predictions and
    weights; and, once the schedule has run to its end, that last epoch unless the best
    beats it significantly (`prefer_schedule_end`, `schedule_end_margin`). On a few
    hundred validation rows an early peak above the last epoch is noise more often than not,
    and the early epoch's weights sit mid-schedule, at a high learning rate, which a refit
    then replays. `margin(predictions, best predictions)` None: the best epoch alone (no
    validation)."""

    def __init__(self, params: list, maximize: bool, margin=None):
        self.params, self.sign, self.margin = params, 1 if maximize else -1, margin
        self.score, self.epoch, self.state, self.predictions, self.threshold = None, -1, None, None, None
        self.top_score, self.top_predictions = None, None  # the best epoch's
        self.last: tuple[int, Scored] | None = None  # the last epoch validated

    def prefer_schedule_end(self, within_se: float) -> None:
        """Keep the last epoch validated, whose weights the model holds — called when it ended
        the schedule — unless the best epoch beats it by more than `within_se` paired standard
        errors. The best of several noisy, correlated epoch scores is biased upward; the
        schedule's end is what a refit reproduces."""
        if self.last is None or self.margin is None or self.last[0] == self.epoch:
            return
        epoch, judged = self.last
        if self._behind(judged, within_se):
            return
        self.score, self.epoch, self.predictions, self.threshold = judged.score, epoch, judged.predictions, \
            judged.threshold
        self.state = None  # the model's own weights are the last epoch's

    def _behind(self, judged: Scored, within_se: float) -> bool:
        """Whether the best epoch beats `judged` by more than `within_se` paired standard errors."""
        return self.sign * (self.top_score - judged.score) > within_se * self.margin(judged.predictions,
                                                                                   self.top_predictions)

    def offer(self, epoch: int, judged: Scored) -> None:
        self.last = (epoch, judged)
        if self.top_score is None or self.sign * judged.score > self.sign * self.top_score:
            self.top_score, self.top_predictions = judged.score, judged.predictions
        elif self.margin is None or self._behind(judged, 1.0):
            return
        self.score, self.epoch, self.predictions = judged.score, epoch, judged.predictions
        self.threshold = judged.threshold
        self.state = [p.detach().to("cpu", copy=True) for p in self.params]

    def restore(self) -> None:
        """Put the best epoch's weights back into the model."""
        if self.state is not None:
            with torch.no_grad():
                for p, saved in zip(self.params, self.state):
                    p.copy_(saved)


def _train_epoch(model, stage: Stage, forward: StageForward, params: list, optimizer, scheduler,
                 rows: StageRows, batch_size: int, settings: FitSettings, rng, bar) -> torch.Tensor:
    """One pass over `rows`; returns the last batch's loss (checked once per epoch)."""
    train = rows.data
    for index in batch_order(train.lengths, batch_size, rng, pool=1 if settings.batch_order == "shuffled" else 50):
        # Micro-batches (gradient accumulation) give the same step in less memory.
        for part in np.array_split(index, min(settings.accumulation, len(index))):
            pooled, logits = forward(train, part)
            weights = None if rows.weights is None else to_device(torch.as_tensor(rows.weights[part]), settings.device)
            targets = to_device(torch.as_tensor(train.targets[part]), settings.device)
            if settings.tasks:
                loss = multitask.loss(logits, targets, settings.tasks, multitask.log_vars_of(model, settings.task_weighting))
            else:
                loss = _loss(logits, targets, settings, weights)
            if stage.penalty is not None:
                loss = loss + stage.penalty(model, Step(pooled, part, train, settings.pad_id))
            (loss * (len(part) / len(index))).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
    return loss


def fit(model, plan: Plan, train: Encoded, val: Encoded | None, settings: FitSettings,
        on_epoch: Callable[[int, float, int], None] | None = None, unlabeled: Encoded | None = None,
        corpus: Encoded | None = None) -> FitResult:
    """Train `model` by `plan`; leave it holding the best epoch's weights.

    `on_epoch(epoch, score, epochs_left)` runs after each validated epoch (0-based); it may
    raise (e.g. optuna.TrialPruned) to stop training. `unlabeled` (rows without labels) and
    `corpus` (rows to read as plain text) are for the stages whose `start` reads them
    (self-training, TAPT): `strategy.Context`.

    Without `val` (a refit on all labelled rows) nothing is validated and the model keeps
    its last epoch's weights; the result's score is NaN.
    """
    start = time.monotonic()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model.to(settings.device)
    # Multi-task objectives (a mean over tasks) have no per-row margin here: the best epoch alone.
    margin = None if val is None or settings.tasks else (
        lambda first, top: epoch_tie_margin(settings.metric, val.targets, first, top))
    best = _Best(list({id(p): p for s in plan.stages for g in s.groups for p in g.params}.values()),
                 settings.metric.maximize, margin)
    steps_per_epoch = math.ceil(len(train) / plan.batch_size)
    total = plan.epochs if settings.max_epochs is None else min(plan.epochs, settings.max_epochs)
    bar = _bar(settings, sum(s.epochs for s in plan.stages) * steps_per_epoch)
    epoch, truncated, last_epoch_seconds, last_epoch_steps, scores = 0, False, 0.0, 1, []
    schedule_ends = set()  # epochs whose last step ran at the end of their stage's decay
    planned = [s.epochs for s in plan.stages]
    spans = list(settings.horizon) if settings.horizon is not None else list(planned)
    deadline = settings.deadline
    context = Context(train, unlabeled, settings.work_dir, settings.pad_id, settings.device, settings.seed, corpus,
                      settings.deadline)
    try:
        for index, stage in enumerate(plan.stages):
            rows = _stage_rows(model, stage, context)
            stage_steps = math.ceil(len(rows.data) / plan.batch_size)
            bar.total += stage.epochs * (stage_steps - steps_per_epoch)  # a stage on other rows
            params, encoder_frozen = _stage_setup(model, stage)
            forward = StageForward(model, settings, encoder_frozen=encoder_frozen)
            optimizer = torch.optim.AdamW([{"params": list(g.params), "lr": g.lr, "weight_decay": g.weight_decay}
                                           for g in stage.groups if g.params])
            scheduler = _Schedule(optimizer, spans[index], stage_steps, plan.warmup_ratio)
            done = 0  # epochs of this stage run
            while done < spans[index]:
                if epoch >= total:
                    break
                # Not an epoch that would end past the deadline: the last one's time predicts it,
                # per step (a stage on other rows, e.g. self-training's labelled + pseudo-labelled
                # rows, takes as many times longer as it has steps).
                if deadline is not None and epoch > 0 and deadline.passed(
                        within=last_epoch_seconds * stage_steps / last_epoch_steps):
                    truncated = True
                    break
                epoch_start = time.monotonic()
                _set_modes(model, encoder_frozen)
                loss = _train_epoch(model, stage, forward, params, optimizer, scheduler, rows, plan.batch_size,
                                    settings, rng, bar)
                if not math.isfinite(loss.item()):  # one host sync per epoch, not per step
                    raise StrategyError(f"loss became {loss.item()} in epoch {epoch + 1}; "
                                        "the learning rate is probably too high")
                if val is not None:
                    judged = judge(forward.outputs(val), val.targets, settings)
                    scores.append(judged.score)
                    bar.set_postfix_str(f"epoch {epoch + 1} {settings.metric.name}={scores[-1]:.4f}")
                    best.offer(epoch, judged)
                last_epoch_seconds, last_epoch_steps = time.monotonic() - epoch_start, stage_steps
                done += 1
                if done >= spans[index]:  # the span this epoch's rates were set on (before any shrink below)
                    schedule_ends.add(epoch)
                if deadline is not None:
                    deadline.note_epoch(last_epoch_seconds)
                    if (left := deadline.remaining()) is not None:
                        fit = int(left // max(last_epoch_seconds, 1e-9))
                        span = fitted_span(spans, index, done, fit)
                        if span < spans[index]:
                            bar.total -= (spans[index] - span) * stage_steps
                            # No epoch fits: the rates never reached zero, a cut like the deadline's.
                            truncated = fit <= 0
                            spans[index] = span
                            scheduler.shrink(span)
                if val is not None and on_epoch is not None:
                    left_epochs = min(total, epoch + 1 - done + sum(spans[index:])) - epoch - 1  # planned, run
                    on_epoch(epoch, scores[-1], max(0, left_epochs))  # may raise optuna.TrialPruned
                epoch += 1
            if truncated or epoch >= total:
                break
    finally:
        bar.close()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    if val is not None and not truncated and epoch == sum(spans) and epoch - 1 in schedule_ends:
        best.prefer_schedule_end(schedule_end_margin(epoch))  # every stage ran its (fitted) schedule to the end
    best.restore()
    model.eval()
    horizon = tuple(spans) if spans != planned and settings.horizon is None else None
    result = _finish(model, plan, val, settings, best, scores, epoch, truncated, time.monotonic() - start, horizon)
    return replace(result, kept_at_schedule_end=result.best_epoch in schedule_ends, spans=tuple(spans),
                   planned_epochs=total)


def _stage_rows(model, stage: Stage, context: Context) -> StageRows:
    """What the stage trains on: its `start`'s rows, else the labelled training rows. The start
    runs in a forked RNG, so whether it computes (TAPT's first trial) or reads a cached result,
    the training that follows draws the same dropout masks."""
    if stage.start is None:
        return StageRows(context.train)
    device = torch.device(context.device)
    gpus = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        rows = stage.start(model, context)
    return StageRows(context.train) if rows is None else rows


def _finish(model, plan: Plan, val, settings: FitSettings, best: _Best, scores: list, epochs_run: int,
            truncated: bool, seconds: float, horizon: tuple[int, ...] | None) -> FitResult:
    """The Plan's finalize step (on the best epoch's weights), then the result."""
    score, epoch, predicted, finalized, threshold = best.score, best.epoch, best.predictions, None, best.threshold
    if val is None:
        score, epoch = float("nan"), epochs_run - 1
        if plan.finalize is not None:  # a refit: apply what the trial chose, nothing to score
            finalized = plan.finalize(model, None, settings.finalize_choice)
    elif plan.finalize is not None:
        sign = 1 if settings.metric.maximize else -1
        finalized = plan.finalize(model, lambda: sign * evaluate(model, val, settings), None)
        judged = validate(model, val, settings)  # the model kept is the finalized one
        score, predicted, threshold = judged.score, judged.predictions, judged.threshold
    return FitResult(score, epoch, tuple(scores), seconds, plan.trainable_parameters(), truncated, finalized,
                     predicted, threshold, horizon)


def validate(model, data: Encoded, settings: FitSettings) -> Scored:
    """`judge` the model as it is on the labelled rows `data` (a full forward pass)."""
    return judge(infer(model, data, pad_id=settings.pad_id, device=settings.device), data.targets, settings)


def predict(model, data: Encoded, settings: FitSettings) -> np.ndarray:
    """Predictions (class ids, values, or label sets at the threshold tuned on `data`, which
    must be validation rows) for every row of `data`, the model as it is."""
    return validate(model, data, settings).predictions


def evaluate(model, data: Encoded, settings: FitSettings) -> float:
    """The validation metric for `data` with the model as it is (a full forward pass)."""
    return validate(model, data, settings).score


def _bar(settings: FitSettings, total: int):
    from tqdm.auto import tqdm

    # disable=None: bars only on a terminal, so CI logs and pipes stay readable.
    return tqdm(total=total, desc=settings.desc, disable=None if settings.progress else True, leave=False,
                unit="step", dynamic_ncols=True)
