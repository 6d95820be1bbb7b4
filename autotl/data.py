"""CSV or DataFrame -> TargetData: the columns (columns.py), task inference, validation, splits."""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import re
from dataclasses import dataclass

import numpy as np

from autotl import multilabel as ml
from autotl import pairs
from autotl.errors import DataError, UsageError

from .columns import infer_text, infer_texts, need_column, pick_columns
from .csvread import _NUM, Columns, check_field_sizes
from .csvread import read_columns as _read

log = logging.getLogger("autotl")

MIN_TRAIN_ROWS = 4
# Unlabeled rows kept at most (a seeded random sample of them). What uses them is linear in
# their number and repeated: self-training pseudo-labels all of them in every trial, and the
# longest masked-LM setting (tapt: 1000 steps x 32 rows) reads 32,000 rows, so more than
# this costs every trial time and adds little.
MAX_UNLABELED = 20_000
_INT = re.compile(r"[+-]?\d{1,4000}")  # int() refuses longer digit strings (Python's 4300-digit cap)
_NAN = re.compile(r"[+-]?nan", re.IGNORECASE)  # str(float("nan")); as missing as a blank cell
_INF = re.compile(r"[+-]?inf(?:inity)?", re.IGNORECASE)



class Task(str, enum.Enum):
    """What the label column holds."""

    CLASSIFICATION = "classification"  # string or integer labels -> cross-entropy
    REGRESSION = "regression"  # float labels -> mean squared error
    MULTILABEL = "multilabel"  # label sets (delimited, or several 0/1 columns) -> sigmoid + BCE
    MULTITASK = "multitask"  # several label columns, not all 0/1: one head per column (multitask.py)


@dataclass(frozen=True)
class Split:
    """One slice of the data, ready for tokenization."""

    # the text column, as read; for a text pair, (first, second) tuples (pairs.py)
    texts: tuple[str, ...] | tuple[tuple[str, str], ...]
    # int64 class ids (index into label_names), float32 values, or (multi-label) an int64
    # rows x labels 0/1 matrix
    targets: np.ndarray


@dataclass(frozen=True)
class TargetData:
    """The target task: what the search trains on, validates on and (once) tests on."""

    task: Task
    text_col: str  # name of the text column in the source ("a,b": a text pair, see text_pair)
    label_col: str  # name of the label column in the source ("a,b,c": several 0/1 columns)
    label_names: tuple[str, ...]  # class (or label) names, index = class id (target column); () for regression
    train: Split
    val: Split
    test: Split | None  # scored once, for the final model; never seen by the search
    source: str  # path of the CSV, or "<DataFrame>"
    # sha256 over the train and validation rows (texts and targets) and the unlabeled texts:
    # what trials learn from and are scored on, so a worker (which never reads the test set)
    # computes the same
    fingerprint: str
    dropped_rows: int = 0  # rows dropped for missing text or label (all files together)
    # multi-label: how a label set is written in one cell (read with it, predicted joined by it)
    label_sep: str | None = None
    # the two columns encoded together as a text pair (pairs.py); None for one text column
    text_pair: tuple[str, str] | None = None
    # texts of rows without a label (an empty label cell in `data`, every row of the `unlabeled`
    # file), for the strategies that learn from them (tapt, self_training); at most MAX_UNLABELED
    unlabeled: tuple = ()
    unlabeled_found: int = 0  # rows without a label found, before the MAX_UNLABELED cap
    # multi-task: one multitask.TaskSpec per label column (targets: rows x tasks); () otherwise
    tasks: tuple = ()

    @property
    def num_outputs(self) -> int:
        """Width of the model's output layer (multi-task: every task head's outputs together)."""
        if self.tasks:
            return sum(t.width for t in self.tasks)
        return 1 if self.task is Task.REGRESSION else len(self.label_names)

    def schema(self) -> dict:
        """What autotl.json records so `predict` can read new data the same way."""
        schema = {"text_col": self.text_col, "label_col": self.label_col, "task": self.task.value,
                  "label_names": list(self.label_names), "num_train": len(self.train.texts),
                  "num_val": len(self.val.texts),
                  "num_test": None if self.test is None else len(self.test.texts),
                  "source": self.source, "fingerprint": self.fingerprint}
        if self.task is Task.MULTILABEL:
            schema["label_sep"] = self.label_sep
        if self.text_pair is not None:  # absent for one text column: autotl.json as before pairs
            schema["text_pair"] = list(self.text_pair)
        if self.tasks:  # predict reads each task's kind and classes from here
            schema["tasks"] = [t.as_json() for t in self.tasks]
        return schema


def load_data(data, *, text_col=None, label_col=None, label_sep=None, val=None, val_frac=0.2, test=None,
              seed=0, encoding="utf-8", unlabeled=None) -> TargetData:
    """Read `data` (CSV path or DataFrame), infer columns and task, and split off validation.

    Multi-label data is a label column of sets joined by `label_sep` (inferred as "|" when
    more than half its rows hold one), or `label_col` "a,b,c" naming several 0/1 columns.
    `val` and `test` (path or DataFrame, same columns) replace the random validation split
    and add a held-out test set. Rows of `data` with a text but an empty label, and every
    text of `unlabeled` (path or DataFrame with the same text column; a label column is
    ignored), become `TargetData.unlabeled`. Several label columns of which some value is not 0/1
    are the tasks of a multi-task target (multitask.py). Raises DataError for unusable data, UsageError
    for bad arguments; logs what was inferred.
    """
    if not 0 < val_frac < 1:
        raise UsageError(f"val_frac must satisfy 0 < val_frac < 1, got {val_frac}")
    text_col, label_col = _as_name(text_col), _as_name(label_col)
    listed = tuple(n.strip() for n in label_col.split(",")) if label_col else ()
    paired = tuple(n.strip() for n in text_col.split(",")) if text_col else ()  # a text pair "a,b"
    cols, name = _read(data, encoding, "<DataFrame>", named=(text_col, label_col, *listed, *paired))
    label_cols = ml.listed_columns(label_col, cols)
    if label_cols:
        from . import multitask  # imports torch: only for several label columns

        if multitask.several_tasks(cols, label_cols, name):
            return multitask.load(cols, name, label_cols, text_col=text_col, label_sep=label_sep, val=val,
                                  val_frac=val_frac, test=test, seed=seed, encoding=encoding, unlabeled=unlabeled)
    tcols, lcol = _label_source(cols, name, text_col, label_col, label_cols, label_sep)
    tcol = pairs.texts_column(cols, tcols)
    without_label: list = []
    texts, labels, dropped = _usable(cols, name, tcol, lcol, unlabeled=without_label)
    sep = None if label_cols else ml.separator(labels, label_sep, f"label column '{lcol}' in {name}")
    if label_cols or sep is not None:
        task = Task.MULTILABEL
        sets = labels if label_cols else ml.parse_sets(labels, sep)
        label_names = label_cols or ml.label_names_of(sets, f"label column '{lcol}' in {name}")
        targets = ml.encode(sets, label_names, name)
        ml.check_label_counts(targets, label_names, name, 1, ml.LEARN_FIX)
        sep = sep or ml.SEPARATOR  # how predict writes a label set of 0/1 columns
    else:
        task, label_names = infer_task(labels, name, lcol)
        targets = encode_labels(labels, task, label_names, name)
    if len(texts) < MIN_TRAIN_ROWS:
        raise DataError(f"{name} has only {len(texts)} usable rows; at least {MIN_TRAIN_ROWS} "
                        f"are needed to train; add rows")
    if val is None:
        train_idx, val_idx = split_rows(targets, task, label_names, val_frac, seed, name)
        train, val_split = take_rows(texts, targets, train_idx), take_rows(texts, targets, val_idx)
        if len(train_idx) < MIN_TRAIN_ROWS:
            raise DataError(f"{name}: only {len(train_idx)} rows left for training after splitting "
                            f"off {len(val_idx)} for validation; at least {MIN_TRAIN_ROWS} are "
                            f"needed; add rows, lower val_frac, or pass --val VAL.csv")
    else:
        train = take_rows(texts, targets, np.arange(len(texts)))
        val_split, n = _extra(val, "<val DataFrame>", encoding, tcols, lcol, task, label_names, label_cols, sep)
        dropped += n
    test_split = None
    if test is not None:
        test_split, n = _extra(test, "<test DataFrame>", encoding, tcols, lcol, task, label_names, label_cols, sep)
        dropped += n
    if unlabeled is not None:
        without_label += _unlabeled_file(unlabeled, encoding, tcols)
    kept = _capped(without_label, seed)
    _log_summary(name, tcols, lcol, text_col is None, label_col is None, task, label_names,
                 train, val_split, test_split, ml.source_note(label_cols, sep, label_sep),
                 unlabeled=(len(without_label), len(kept)))
    return TargetData(task=task, text_col=tcol, label_col=lcol, label_names=label_names,
                      train=train, val=val_split, test=test_split, source=name,
                      fingerprint=data_fingerprint(task, label_names, train, val_split, unlabeled=kept),
                      dropped_rows=dropped, label_sep=sep, text_pair=tcols if len(tcols) == 2 else None,
                      unlabeled=kept, unlabeled_found=len(without_label))


def read_texts(data, text_col: str | tuple[str, str] | None = None, encoding: str = "utf-8", hint: str = "",
               name: str = "<DataFrame>") -> tuple[str | tuple[str, str], list]:
    """For predict: (column used, texts) from a CSV path or DataFrame; for a text pair
    (`text_col` "a,b", or the two names as a tuple): ((a, b), (first, second) tuples).

    Keeps every row (missing texts become "") so predictions line up with the input.
    `hint` is added to the error when `text_col` is missing; `name` names a DataFrame in errors.
    """
    pair = tuple(str(c) for c in text_col) if isinstance(text_col, (tuple, list)) else None
    text_col = None if pair else _as_name(text_col)
    cols, name = _read(data, encoding, name, named=pair or (text_col, *(text_col.split(",") if text_col else ())))
    columns = pair or (pairs.parse(text_col, cols) if text_col is not None else None)
    for col in columns or ():
        need_column(cols, name, col, hint)
    columns = columns or (infer_text(cols, exclude=None),)
    check_field_sizes(cols, name, columns)
    texts = [[v if v is not None else "" for v in cols[col]] for col in columns]
    if len(columns) == 2:
        return columns, list(zip(*texts))
    return columns[0], texts[0]


def _label_source(cols: Columns, name: str, text_col, label_col, label_cols: tuple[str, ...],
                  label_sep) -> tuple[tuple[str, ...], str]:
    """(text column, or the two of a text pair; label column); several 0/1 label columns become
    one column of label-name tuples (None where a cell is missing), named "a,b,c"."""
    if not label_cols:
        tcols, lcol = pick_columns(cols, name, text_col, label_col)
        check_field_sizes(cols, name, (*tcols, lcol))
        cols[lcol] = _nan_as_missing(cols[lcol])
        return tcols, lcol
    if label_sep is not None:
        raise UsageError(f"label_sep is for one column of label sets, but label_col '{label_col}' names several "
                         "0/1 columns; leave out --label-sep")
    ml.check_columns(label_cols, cols, name)
    tcols = pairs.parse(text_col, cols) if text_col is not None else ()
    for col in tcols:
        need_column(cols, name, col)
        if col in label_cols:
            raise UsageError(f"text_col and label_col must differ, got '{col}' in both")
    tcols = tcols or infer_texts(cols, exclude=label_cols)
    check_field_sizes(cols, name, (*tcols, *label_cols))
    lcol = ",".join(label_cols)
    cols[lcol] = ml.sets_from_columns(cols, label_cols, name)
    return tcols, lcol


def _as_name(col) -> str | None:
    """A column name as given (DataFrame columns may be ints) -> the str that `_read` uses."""
    return None if col is None else str(col)


# -- labels, task -------------------------------------------------------------------------------

def _usable(cols: Columns, name: str, tcol: str, lcol: str,
            unlabeled: list | None = None) -> tuple[list[str], list[str], int]:
    """Texts and stripped labels of rows that have both; warns once about the rest. Given an
    `unlabeled` list, the texts of rows without a label go there instead of being dropped."""
    pairs = [(t, lab.strip() if isinstance(lab, str) else lab) for t, lab in zip(cols[tcol], cols[lcol])
             if t is not None and lab is not None]
    without_label = [t for t, lab in zip(cols[tcol], cols[lcol]) if t is not None and lab is None]
    if unlabeled is not None:
        unlabeled += without_label
    dropped = len(cols[tcol]) - len(pairs) - (len(without_label) if unlabeled is not None else 0)
    if dropped:
        log.warning("%s: dropped %d of %d rows with missing text%s",
                    name, dropped, len(cols[tcol]), "" if unlabeled is not None else " or label")
    return [t for t, _ in pairs], [lab for _, lab in pairs], dropped


def _nan_as_missing(values: list) -> list:
    """'nan' (how str() writes a missing float) in an otherwise numeric column is a missing
    label, as a blank cell or a DataFrame NaN is: the row is dropped with the others."""
    present = [v.strip() for v in values if v is not None]
    nans = {v for v in present if _NAN.fullmatch(v)}
    if not nans or not all(v in nans or _NUM.fullmatch(v) or _INF.fullmatch(v) for v in present):
        return values
    return [None if v is not None and v.strip() in nans else v for v in values]


def _check_finite(labels: list[str], name: str) -> None:
    """Numbers with an infinite among them: refused, never a class name or a training target."""
    infinite = [v for v in labels if _INF.fullmatch(v)]
    if infinite and all(_NUM.fullmatch(v) or _INF.fullmatch(v) for v in labels):
        raise DataError(f"{name} has labels that are not finite numbers: {_listing(infinite)} "
                        f"({len(infinite)} row{'s' * (len(infinite) != 1)}); fix or remove those rows "
                        f"(a missing label may be left blank)")


def infer_task(labels: list[str], name: str, lcol: str) -> tuple[Task, tuple[str, ...]]:
    _check_finite(labels, f"label column '{lcol}' in {name}")
    if labels and all(_NUM.fullmatch(v) for v in labels) and \
            not all(_INT.fullmatch(v) for v in labels):
        if len(set(map(float, labels))) < 2:
            raise DataError(f"label column '{lcol}' in {name} has a single value ({labels[0]}); "
                            f"a regression target needs at least 2 distinct values")
        return Task.REGRESSION, ()
    if labels and all(_INT.fullmatch(v) for v in labels):
        names = tuple(str(i) for i in sorted({int(v) for v in labels}))
    else:
        names = tuple(sorted(set(labels)))
    if len(names) < 2:
        found = f"only one class ('{names[0]}')" if names else "no labels"
        raise DataError(f"label column '{lcol}' in {name} has {found}; at least 2 classes "
                        f"are needed; add rows of another class or pick another --label-col")
    return Task.CLASSIFICATION, names


def encode_labels(labels: list[str], task: Task, label_names: tuple[str, ...], name: str) -> np.ndarray:
    """Targets for `labels`: class ids of known classes, or float values for regression."""
    if task is Task.REGRESSION:
        _check_finite(labels, name)
        bad = [v for v in labels if not _NUM.fullmatch(v)]
        if bad:
            raise DataError(f"{name} has non-numeric labels for a regression target: "
                            f"{_listing(bad)}; use numbers only")
        with np.errstate(over="ignore"):  # overflow is reported below
            values = np.asarray([float(v) for v in labels], dtype=np.float32)
        huge = [v for v, x in zip(labels, values) if not np.isfinite(x)]
        if huge:
            raise DataError(f"{name} has labels beyond the float32 range (±3.4e38): {_listing(huge)}; "
                            f"rescale the target")
        return values
    if all(_INT.fullmatch(n) for n in label_names):  # "07" and "7" are the same integer class
        labels = [str(int(v)) if _INT.fullmatch(v) else v for v in labels]
    index = {n: i for i, n in enumerate(label_names)}
    unknown = [v for v in labels if v not in index]
    if unknown:
        raise DataError(f"{name} has labels not seen in the training data: {_listing(unknown)}; "
                        f"known classes: {_listing(label_names)}")
    return np.asarray([index[v] for v in labels], dtype=np.int64)


def _listing(values, limit: int = 5, width: int = 40) -> str:
    unique = list(dict.fromkeys(values))
    more = f" (+{len(unique) - limit} more)" if len(unique) > limit else ""
    shown = (v if len(v) <= width else f"{v[:width - 3]}..." for v in map(str, unique[:limit]))
    return ", ".join(f"'{v}'" for v in shown) + more


# -- splits ------------------------------------------------------------------------------------

def split_rows(targets: np.ndarray, task: Task, label_names: tuple[str, ...], frac: float,
           seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices: stratified by class, each class on both sides (label sets:
    by each row's rarest label, `multilabel.strata`)."""
    if task is Task.REGRESSION:
        groups = [np.arange(len(targets))]
    elif task is Task.MULTILABEL:
        ml.check_label_counts(targets, label_names, name, 2, ml.SPLIT_FIX)
        groups = ml.strata(targets)
    else:
        counts = np.bincount(targets, minlength=len(label_names))
        small = [label_names[c] for c in np.flatnonzero(counts < 2)]
        if small:
            others = f" (and {_listing(small[1:])})" if len(small) > 1 else ""
            raise DataError(f"class '{small[0]}'{others} has only 1 row in {name}; each class "
                            f"needs at least 2 to split off a validation set; add rows, remove "
                            f"the class, or pass --val VAL.csv")
        groups = [np.flatnonzero(targets == c) for c in range(len(label_names))]
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(targets), dtype=bool)
    for rows in groups:
        quota = min(max(int(len(rows) * frac + 0.5), 1), len(rows) - 1)
        is_val[rng.permutation(rows)[:quota]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def take_rows(texts: list[str], targets: np.ndarray, idx: np.ndarray) -> Split:
    return Split(texts=tuple(texts[i] for i in idx), targets=targets[idx])


def _extra(data, frame_name: str, encoding: str, tcols: tuple[str, ...], lcol: str, task: Task,
           label_names: tuple[str, ...], label_cols: tuple[str, ...] = (),
           sep: str | None = None) -> tuple[Split, int]:
    """A separate validation or test set, read with the training data's columns and classes."""
    cols, name = _read(data, encoding, frame_name, named=(*tcols, lcol, *label_cols))
    for col in (*tcols, *(label_cols or (lcol,))):
        need_column(cols, name, col)
    check_field_sizes(cols, name, (*tcols, *(label_cols or (lcol,))))
    tcol = pairs.texts_column(cols, tcols)
    cols[lcol] = ml.sets_from_columns(cols, label_cols, name) if label_cols else _nan_as_missing(cols[lcol])
    texts, labels, dropped = _usable(cols, name, tcol, lcol)
    if not texts:
        raise DataError(f"{name} has no rows with both text and label; fill in column "
                        f"'{tcol}' and '{lcol}'")
    if task is Task.MULTILABEL:
        sets = labels if label_cols else ml.parse_sets(labels, sep)
        return Split(tuple(texts), ml.encode(sets, label_names, name)), dropped
    return Split(tuple(texts), encode_labels(labels, task, label_names, name)), dropped


def data_fingerprint(task: Task, label_names: tuple[str, ...], *splits: Split | None, unlabeled=()) -> str:
    h = hashlib.sha256(json.dumps([task.value, list(label_names)]).encode())
    for s in splits:
        payload = None if s is None else [list(s.texts), s.targets.tolist()]
        h.update(json.dumps(payload).encode())
    if unlabeled:  # only when there are some: labelled-only data keeps its fingerprint
        h.update(json.dumps(["unlabeled", list(unlabeled)]).encode())
    return h.hexdigest()


def _unlabeled_file(data, encoding: str, tcols: tuple[str, ...]) -> list:
    """Every text of the unlabeled rows' file, read from the training data's text column(s)."""
    cols, name = _read(data, encoding, "<unlabeled DataFrame>", named=tcols)
    for col in tcols:
        need_column(cols, name, col, " (unlabeled rows need the training data's text column)")
    check_field_sizes(cols, name, tcols)
    texts = [t for t in cols[pairs.texts_column(cols, tcols)] if t is not None]
    if not texts:
        raise DataError(f"{name} has no texts in column '{','.join(tcols)}'; fill it in, or leave out --unlabeled")
    return texts


def _capped(texts: list, seed: int) -> tuple:
    """At most MAX_UNLABELED of `texts`: a seeded random sample, in their order."""
    if len(texts) <= MAX_UNLABELED:
        return tuple(texts)
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), MAX_UNLABELED, replace=False))
    log.info("%d unlabeled rows: a random %d of them are used (at most %d: self-training pseudo-labels every "
             "one in each trial)", len(texts), MAX_UNLABELED, MAX_UNLABELED)
    return tuple(texts[i] for i in keep)


def _log_summary(name, tcols, lcol, text_inferred, label_inferred, task, label_names,
                 train, val, test, sets_note: str = "", unlabeled: tuple[int, int] = (0, 0)) -> None:
    shown = ", ".join(label_names[:8]) + (f", ... (+{len(label_names) - 8} more)"
                                          if len(label_names) > 8 else "")
    if task is Task.CLASSIFICATION:
        kind = f"classification, {len(label_names)} classes: {shown}"
    elif task is Task.MULTILABEL:
        per_row = np.concatenate([train.targets, val.targets]).sum(axis=1).mean()
        kind = f"multi-label, {len(label_names)} labels, {per_row:.2f} per row ({sets_note}): {shown}"
    else:
        values = np.concatenate([train.targets, val.targets])
        kind = f"regression, values {values.min():g} to {values.max():g}"
    n_test = 0 if test is None else len(test.texts)
    rows = f"{len(train.texts) + len(val.texts) + n_test} rows ({len(train.texts)} train, " \
        f"{len(val.texts)} val" + (f", {n_test} test)" if test is not None else ")")
    if unlabeled[0]:  # (found, used)
        rows += f"; {unlabeled[0]} unlabeled rows found, {unlabeled[1]} kept"
    log.info("%s: %s, label column '%s'%s; %s; %s",
             name, pairs.describe(tcols, text_inferred), lcol, " (inferred)" * label_inferred, kind, rows)
