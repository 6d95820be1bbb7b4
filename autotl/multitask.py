"""Several label columns, not all 0/1: multi-task, one shared encoder and one head per column.

``--label-col a,b`` names several columns. When every one holds only 0/1 they are the labels
of a multi-label target (multilabel.py, unchanged); otherwise each column is its own task,
classification or regression, inferred exactly as a single label column is (data.py).

- Targets: a float32 rows x tasks matrix (class ids as floats, or values); a row is kept only
  when every task column has a value (one missing label drops the row, as for one column).
- Model: the encoder, mean pooling and `MultiTaskHead` (dropout, then one linear layer per
  task; the outputs are concatenated, task after task, so the loop, the feature caches and
  `infer` see one output matrix). Only the mean-pooled head: the architecture's own head has
  one classifier, so multi-task is autotl's loader only (not a transformers pipeline model).
- Loss: a weighted sum of the per-task losses (cross-entropy, or MSE), the weighting searched
  (`WEIGHTING`): ``equal`` sums them; ``uncertainty`` is Kendall, Gal & Cipolla (2018), each
  task's loss scaled by exp(-s) plus s, s a learned log-variance (in the simplified form
  that uses the same factor for both kinds, as common implementations do), trained with the head.
- Validation: the mean of the tasks' primary metrics (accuracy, r2), or ``--metric a:accuracy``
  (one task's metric alone). Per-task scores are recorded (trial user attr, autotl.json).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import DataError, UsageError, did_you_mean

log = logging.getLogger("autotl")

WEIGHTING = "tasks.weighting"  # the searched loss weighting
WEIGHTINGS = ("equal", "uncertainty")
TASK_SCORES = "task_scores"  # trial user attr: each task's validation score by its primary metric
PRIMARY = {"classification": "accuracy", "regression": "r2"}
MEAN_METRIC = "mean_task_score"  # the default objective's name
HEAD_KEY = "heads.0.weight"  # in the head's saved state: a multi-task head


@dataclass(frozen=True)
class TaskSpec:
    """One label column of a multi-task target."""

    name: str  # the column's name
    kind: str  # "classification" or "regression"
    label_names: tuple[str, ...]  # classes, index = class id; () for regression
    mean: float = 0.0  # regression: the training targets' mean (the output bias's start)
    # regression: the training targets' variance; the task's MSE is divided by it, so that an
    # "equal" weighting weighs the tasks alike whatever a value's units (an MSE of values
    # around 50 would otherwise swamp a cross-entropy near 0.7)
    scale: float = 1.0

    @property
    def width(self) -> int:
        """Outputs of this task's head."""
        return len(self.label_names) if self.kind == "classification" else 1

    def as_json(self) -> dict:
        return {"name": self.name, "task": self.kind, "label_names": list(self.label_names), "mean": self.mean,
                "scale": self.scale}

    @classmethod
    def from_json(cls, d: dict) -> "TaskSpec":
        return cls(d["name"], d["task"], tuple(d["label_names"]), float(d.get("mean", 0.0)), float(d.get("scale", 1.0)))


def _slices(tasks: Sequence[TaskSpec]) -> list[slice]:
    """Where each task's outputs sit in the concatenated output matrix."""
    out, start = [], 0
    for t in tasks:
        out.append(slice(start, start + t.width))
        start += t.width
    return out


# -- the data ------------------------------------------------------------------------------------

STRAY_SHARE = 0.05  # non-0/1 cells a 0/1 column may hold and still be read as one (then refused as typos)


def several_tasks(cols: dict, names: tuple[str, ...], source: str) -> bool:
    """Whether the listed label columns are tasks rather than the 0/1 columns of a multi-label
    target: some column holds values other than 0/1 on more than one row and more than
    STRAY_SHARE of its rows. A stray value in 0/1 columns is a typo, and multilabel.py refuses
    it by name, as it always did."""
    from . import multilabel as ml

    ml.check_columns(names, cols, source)
    for n in names:
        present = [v for v in cols[n] if v is not None]
        other = sum(not ml.is_bit(v) for v in present)
        if other > max(1, STRAY_SHARE * len(present)):
            return True
    return False


def load(cols: dict, source: str, names: tuple[str, ...], *, text_col, label_sep, val, val_frac, test, seed,
         encoding, unlabeled):
    """TargetData of a multi-task CSV already read into `cols` (data.load_data's arguments)."""
    from . import data as d
    from . import pairs
    from .csvread import check_field_sizes

    if label_sep is not None:
        raise UsageError("label_sep is for one column of label sets; several task columns take none; leave out "
                         "--label-sep")
    if unlabeled is not None:
        raise UsageError("--unlabeled is not supported with several task columns (multi-task); leave it out")
    tcols = pairs.parse(text_col, cols) if text_col is not None else d.infer_texts(cols, exclude=names)
    for col in tcols:
        d.need_column(cols, source, col)
        if col in names:
            raise UsageError(f"text_col and label_col must differ, got '{col}' in both")
    check_field_sizes(cols, source, (*tcols, *names))
    tcol = pairs.texts_column(cols, tcols)
    texts, labels, dropped = _rows(cols, source, tcol, names)
    kinds = [d.infer_task(labels[n], source, n) for n in names]
    specs = tuple(TaskSpec(n, task.value, classes) for n, (task, classes) in zip(names, kinds))
    targets = _encode(specs, labels, source)
    if len(texts) < d.MIN_TRAIN_ROWS:
        raise DataError(f"{source} has only {len(texts)} rows with a text and every task's label; at least "
                        f"{d.MIN_TRAIN_ROWS} are needed to train; add rows")
    if val is None:
        # stratified by the first classification task (each of its classes on both sides)
        first = next((j for j, s in enumerate(specs) if s.kind == "classification"), None)
        by = (targets[:, first].astype(np.int64), d.Task.CLASSIFICATION, specs[first].label_names) \
            if first is not None else (targets[:, 0], d.Task.REGRESSION, ())
        train_idx, val_idx = d.split_rows(by[0], by[1], by[2], val_frac, seed, source)
        train, val_split = d.take_rows(texts, targets, train_idx), d.take_rows(texts, targets, val_idx)
        if len(train_idx) < d.MIN_TRAIN_ROWS:
            raise DataError(f"{source}: only {len(train_idx)} rows left for training after splitting off "
                            f"{len(val_idx)} for validation; at least {d.MIN_TRAIN_ROWS} are needed; add rows, "
                            "lower --val-frac, or pass --val VAL.csv")
    else:
        train = d.take_rows(texts, targets, np.arange(len(texts)))
        val_split, n = _extra(val, "<val DataFrame>", encoding, tcols, specs)
        dropped += n
    test_split = None
    if test is not None:
        test_split, n = _extra(test, "<test DataFrame>", encoding, tcols, specs)
        dropped += n
    specs = tuple(TaskSpec(s.name, s.kind, s.label_names, *_moments(train.targets[:, j]))
                  if s.kind == "regression" else s for j, s in enumerate(specs))
    log.info("%s: %s; %d tasks: %s; %d train, %d val rows", source, pairs.describe(tcols, text_col is None),
             len(specs),
             "; ".join(f"{s.name} ({s.kind}{f', {s.width} classes' if s.kind == 'classification' else ''})"
                       for s in specs), len(train.texts), len(val_split.texts))
    return d.TargetData(task=d.Task.MULTITASK, text_col=tcol, label_col=",".join(names), label_names=(),
                        train=train, val=val_split, test=test_split, source=source,
                        fingerprint=d.data_fingerprint(d.Task.MULTITASK, tuple(s.name for s in specs), train, val_split),
                        dropped_rows=dropped, text_pair=tcols if len(tcols) == 2 else None, tasks=specs)


def _moments(values: np.ndarray) -> tuple[float, float]:
    """A regression task's (mean, variance) on the training rows; variance 1 when constant."""
    variance = float(np.var(values))
    return float(np.mean(values)), variance if variance > 1e-12 else 1.0


def _rows(cols: dict, source: str, tcol: str, names: tuple[str, ...]):
    """(texts, {task: stripped labels}, dropped) of the rows with a text and every task's label."""
    keep = [i for i, t in enumerate(cols[tcol]) if t is not None and all(cols[n][i] is not None for n in names)]
    dropped = len(cols[tcol]) - len(keep)
    if dropped:
        log.warning("%s: dropped %d of %d rows with missing text or a missing task label", source, dropped,
                    len(cols[tcol]))
    return ([cols[tcol][i] for i in keep], {n: [cols[n][i].strip() for i in keep] for n in names}, dropped)


def _encode(specs: Sequence[TaskSpec], labels: dict, source: str) -> np.ndarray:
    from . import data as d

    columns = [d.encode_labels(labels[s.name], d.Task(s.kind), s.label_names, f"label column '{s.name}' in {source}")
               for s in specs]
    return np.stack([c.astype(np.float32) for c in columns], axis=1) if columns else np.zeros((0, 0), np.float32)


def _extra(frame, frame_name: str, encoding: str, tcols: tuple[str, ...], specs: Sequence[TaskSpec]):
    """A separate validation or test set with the training data's columns and classes."""
    from . import data as d
    from . import pairs
    from .csvread import read_columns

    names = tuple(s.name for s in specs)
    cols, source = read_columns(frame, encoding, frame_name, named=(*tcols, *names))
    for col in (*tcols, *names):
        d.need_column(cols, source, col)
    tcol = pairs.texts_column(cols, tcols)
    texts, labels, dropped = _rows(cols, source, tcol, names)
    if not texts:
        raise DataError(f"{source} has no rows with a text and every task's label ({', '.join(names)})")
    return d.Split(tuple(texts), _encode(specs, labels, source)), dropped


# -- the model -----------------------------------------------------------------------------------

class MultiTaskHead(nn.Module):
    """Dropout, then one linear layer per task on the pooled features; outputs concatenated."""

    def __init__(self, hidden_size: int, widths: Sequence[int], dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, w) for w in widths)
        # Kendall et al.'s log-variances s, one per task; used only by the "uncertainty"
        # weighting (always present, so every weighting saves and loads the same state)
        self.log_vars = nn.Parameter(torch.zeros(len(widths)))

    def per_task(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Each task's outputs, in task order."""
        x = self.dropout(features)
        return [head(x) for head in self.heads]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.per_task(features), dim=-1)


def build_head(hidden_size: int, tasks: Sequence[TaskSpec], dropout: float) -> MultiTaskHead:
    """A fresh head; a regression task's bias starts at its targets' mean (as build_model does)
    and its weights at its targets' spread: its first outputs then vary about as much as its
    targets do, so its loss (MSE over their variance) starts near 1 whatever their units, not
    at (initial output noise)^2 / variance (about 10^4 for values in thousandths)."""
    head = MultiTaskHead(hidden_size, [t.width for t in tasks], dropout)
    with torch.no_grad():
        for t, linear in zip(tasks, head.heads):
            if t.kind == "regression":
                linear.bias.fill_(t.mean)
                linear.weight.mul_(t.scale ** 0.5)
    return head


def head_from_state(state: dict) -> MultiTaskHead:
    """The saved head (export.py), its shapes read from the weights."""
    count = len(state["log_vars"])
    weights = [state[f"heads.{j}.weight"] for j in range(count)]
    head = MultiTaskHead(weights[0].shape[1], [w.shape[0] for w in weights], 0.0)
    head.load_state_dict(state)
    return head


def log_vars_of(model, weighting: str) -> torch.Tensor | None:
    """The learned log-variances when the weighting is "uncertainty", else None (equal)."""
    return model.head_.log_vars if weighting == "uncertainty" else None


# -- loss, predictions, metrics ------------------------------------------------------------------

def task_losses(outputs: torch.Tensor, targets: torch.Tensor, tasks: Sequence[TaskSpec]) -> torch.Tensor:
    """One loss per task: cross-entropy on class ids, MSE on values over their variance."""
    functional, losses = torch.nn.functional, []
    for j, (t, where) in enumerate(zip(tasks, _slices(tasks))):
        out = outputs[:, where].float()
        if t.kind == "classification":
            losses.append(functional.cross_entropy(out, targets[:, j].long()))
        else:
            losses.append(functional.mse_loss(out[:, 0], targets[:, j].float()) / t.scale)
    return torch.stack(losses)


def loss(outputs: torch.Tensor, targets: torch.Tensor, tasks: Sequence[TaskSpec],
         log_vars: torch.Tensor | None = None) -> torch.Tensor:
    """The weighted sum of the task losses: each weighted 1 (equal), or Kendall's
    exp(-s) * loss + s with the learned log-variance s (uncertainty)."""
    per_task = task_losses(outputs, targets, tasks)
    if log_vars is None:
        return per_task.sum()
    return (torch.exp(-log_vars) * per_task + log_vars).sum()


def decide(outputs: np.ndarray, tasks: Sequence[TaskSpec]) -> np.ndarray:
    """Rows x tasks: each classification task's class id (as a float), each regression task's value."""
    columns = [outputs[:, where].argmax(axis=1).astype(np.float32) if t.kind == "classification"
               else outputs[:, where][:, 0].astype(np.float32) for t, where in zip(tasks, _slices(tasks))]
    return np.stack(columns, axis=1)


def _column_metric(metric, j: int, kind: str):
    def score(targets: np.ndarray, predicted: np.ndarray) -> float:
        t, p = targets[:, j], predicted[:, j]
        return metric(t.astype(np.int64), p.astype(np.int64)) if kind == "classification" else metric(t, p)
    return score


def task_scores(targets: np.ndarray, predicted: np.ndarray, tasks: Sequence[TaskSpec]) -> dict:
    """{task: {primary metric: score}} on these rows."""
    from .metrics import METRICS

    return {t.name: {PRIMARY[t.kind]: _column_metric(METRICS[PRIMARY[t.kind]], j, t.kind)(targets, predicted)}
            for j, t in enumerate(tasks)}


def task_metric(tasks: Sequence[TaskSpec], name: str | None):
    """The validation objective: the mean of the tasks' primary metrics (`name` None), or
    `name` "task:metric", that task's metric alone."""
    from .metrics import Metric, get_metric

    if name is None:
        def mean_score(targets, predicted):
            return float(np.mean([s for scores in task_scores(targets, predicted, tasks).values()
                                  for s in scores.values()]))
        return Metric(MEAN_METRIC, "multitask", True, mean_score)
    names = [t.name for t in tasks]
    if ":" not in name:
        raise UsageError(f"with several task columns, --metric is TASK:METRIC (e.g. {names[0]}:"
                         f"{PRIMARY[tasks[0].kind]}), or left out for the mean of the tasks' primary metrics; "
                         f"got '{name}'")
    task_name, metric_name = name.rsplit(":", 1)
    if task_name not in names:
        raise UsageError(f"--metric '{name}' names no task: '{task_name}' is not one of the task columns "
                         f"({', '.join(names)}){did_you_mean(task_name, names)}")
    j = names.index(task_name)
    metric = get_metric(metric_name, tasks[j].kind)
    return Metric(name, "multitask", metric.maximize, _column_metric(metric, j, tasks[j].kind))


def held_out_metrics(targets: np.ndarray, predicted: np.ndarray, tasks: Sequence[TaskSpec]) -> dict:
    """Every metric of each task's kind on the test rows, as "task:metric", and the mean objective."""
    from .metrics import METRICS

    scores = {f"{t.name}:{name}": _column_metric(m, j, t.kind)(targets, predicted)
              for j, t in enumerate(tasks) for name, m in METRICS.items() if m.fits(t.kind)}
    scores[MEAN_METRIC] = task_metric(tasks, None)(targets, predicted)
    return scores


def task_outputs(outputs, info: dict) -> dict:
    """A multi-task model's outputs (autotl.load's model called on a batch: one matrix, the
    tasks' columns side by side) split per task, by name: a classification task's logits
    (rows x classes, in `info`'s label order), a regression task's values (rows). `info`
    is what autotl.load returned with the model. Works on tensors and numpy arrays."""
    tasks = [TaskSpec.from_json(d) for d in (info.get("data") or {}).get("tasks") or ()]
    if not tasks:
        raise UsageError("this model has one task; task_outputs splits a multi-task model's outputs "
                         "(a search with --label-col a,b)")
    if outputs.shape[-1] != sum(t.width for t in tasks):
        raise UsageError(f"outputs have {outputs.shape[-1]} columns but the model's tasks need "
                         f"{sum(t.width for t in tasks)}; pass the outputs of the model loaded with this info")
    return {t.name: outputs[:, where][:, 0] if t.kind == "regression" else outputs[:, where]
            for t, where in zip(tasks, _slices(tasks))}


def prediction_columns(outputs: np.ndarray, tasks_json: Sequence[dict]) -> dict:
    """predict's columns: each task's prediction under its own name, and for a classification
    task one ``prob_<task>_<label>`` column per class."""
    tasks = [TaskSpec.from_json(d) for d in tasks_json]
    columns = {}
    for t, where in zip(tasks, _slices(tasks)):
        out = outputs[:, where]
        if t.kind == "regression":
            columns[t.name] = out[:, 0]
            continue
        e = np.exp(out - out.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        columns[t.name] = [t.label_names[i] for i in probs.argmax(axis=1)]
        columns.update({f"prob_{t.name}_{label}": probs[:, i] for i, label in enumerate(t.label_names)})
    return columns
