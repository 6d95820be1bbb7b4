"""CSV or DataFrame -> TargetData: column and task inference, validation, splits."""

from __future__ import annotations

import codecs
import enum
import hashlib
import io
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from autotl.errors import DataError, UsageError, did_you_mean

log = logging.getLogger("autotl")

# Column names people use, in order of preference; matched case-insensitively.
TEXT_NAMES = ("text", "sentence", "review", "content", "body", "document", "message", "comment",
              "utterance", "question", "tweet", "query")
LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "sentiment", "intent",
               "score", "rating", "valence")
MIN_TRAIN_ROWS = 4
_INT = re.compile(r"[+-]?\d+")
_NUM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

Columns = dict[str, list]  # column name -> values as str, None where missing


class Task(str, enum.Enum):
    """What the label column holds."""

    CLASSIFICATION = "classification"  # string or integer labels -> cross-entropy
    REGRESSION = "regression"  # float labels -> mean squared error


@dataclass(frozen=True)
class Split:
    """One slice of the data, ready for tokenization."""

    texts: tuple[str, ...]  # the text column, as read
    targets: np.ndarray  # int64 class ids (index into label_names) or float32 values


@dataclass(frozen=True)
class TargetData:
    """The target task: what the search trains on, validates on and (once) tests on."""

    task: Task
    text_col: str  # name of the text column in the source
    label_col: str  # name of the label column in the source
    label_names: tuple[str, ...]  # class names, index = class id; () for regression
    train: Split
    val: Split
    test: Split | None  # scored once, for the final model; never seen by the search
    source: str  # path of the CSV, or "<DataFrame>"
    # sha256 over the train and validation rows (texts and targets): what trials learn from
    # and are scored on, so a worker (which never reads the test set) computes the same
    fingerprint: str
    dropped_rows: int = 0  # rows dropped for missing text or label (all files together)

    @property
    def num_outputs(self) -> int:
        """Width of the model's output layer."""
        return len(self.label_names) if self.task is Task.CLASSIFICATION else 1

    def schema(self) -> dict:
        """What autotl.json records so `predict` can read new data the same way."""
        return {"text_col": self.text_col, "label_col": self.label_col, "task": self.task.value,
                "label_names": list(self.label_names), "num_train": len(self.train.texts),
                "num_val": len(self.val.texts),
                "num_test": None if self.test is None else len(self.test.texts),
                "source": self.source, "fingerprint": self.fingerprint}


def load_data(data, *, text_col=None, label_col=None, val=None, val_frac=0.2, test=None,
              seed=0, encoding="utf-8") -> TargetData:
    """Read `data` (CSV path or DataFrame), infer columns and task, and split off validation.

    `val` and `test` (path or DataFrame, same columns) replace the random validation split
    and add a held-out test set. Raises DataError for unusable data, UsageError for bad
    arguments; logs what was inferred.
    """
    if not 0 < val_frac < 1:
        raise UsageError(f"val_frac must satisfy 0 < val_frac < 1, got {val_frac}")
    cols, name = _read(data, encoding, "<DataFrame>")
    tcol, lcol = _pick_columns(cols, name, text_col, label_col)
    texts, labels, dropped = _usable(cols, name, tcol, lcol)
    task, label_names = _infer_task(labels, name, lcol)
    targets = _encode(labels, task, label_names, name)
    if len(texts) < MIN_TRAIN_ROWS:
        raise DataError(f"{name} has only {len(texts)} usable rows; at least {MIN_TRAIN_ROWS} "
                        f"are needed to train; add rows")
    if val is None:
        train_idx, val_idx = _split(targets, task, label_names, val_frac, seed, name)
        train, val_split = _take(texts, targets, train_idx), _take(texts, targets, val_idx)
        if len(train_idx) < MIN_TRAIN_ROWS:
            raise DataError(f"{name}: only {len(train_idx)} rows left for training after splitting "
                            f"off {len(val_idx)} for validation; at least {MIN_TRAIN_ROWS} are "
                            f"needed; add rows, lower val_frac, or pass --val VAL.csv")
    else:
        train = _take(texts, targets, np.arange(len(texts)))
        val_split, n = _extra(val, "<val DataFrame>", encoding, tcol, lcol, task, label_names)
        dropped += n
    test_split = None
    if test is not None:
        test_split, n = _extra(test, "<test DataFrame>", encoding, tcol, lcol, task, label_names)
        dropped += n
    _log_summary(name, tcol, lcol, text_col is None, label_col is None, task, label_names,
                 train, val_split, test_split)
    return TargetData(task=task, text_col=tcol, label_col=lcol, label_names=label_names,
                      train=train, val=val_split, test=test_split, source=name,
                      fingerprint=_fingerprint(task, label_names, train, val_split),
                      dropped_rows=dropped)


def read_texts(data, text_col: str | None = None, encoding: str = "utf-8", hint: str = "") -> tuple[str, list[str]]:
    """For predict: (column used, texts) from a CSV path or DataFrame.

    Keeps every row (missing texts become "") so predictions line up with the input.
    `hint` is added to the error when `text_col` is missing.
    """
    cols, name = _read(data, encoding, "<DataFrame>")
    if text_col is not None:
        _need(cols, name, text_col, hint)
    col = text_col if text_col is not None else _infer_text(cols, exclude=None)
    return col, [v if v is not None else "" for v in cols[col]]


# -- reading -------------------------------------------------------------------------------

def _read(data, encoding: str, frame_name: str) -> tuple[Columns, str]:
    """Columns of a CSV path or DataFrame, every value a str or None (missing)."""
    if isinstance(data, pd.DataFrame):
        return {str(c): _frame_column(data[c]) for c in data.columns}, frame_name
    if not isinstance(data, (str, os.PathLike)):
        raise UsageError(f"data must be a CSV path or a pandas DataFrame, "
                         f"got {type(data).__name__}")
    path, name = Path(data), str(data)
    if not path.exists():
        raise DataError(f"{name} not found; check the path")
    if path.is_dir():
        raise DataError(f"{name} is a directory; pass the CSV file inside it")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {name}: {e.strerror}; check its permissions") from None
    frame = _parse(_decode(raw, name, encoding), name)
    return {c: [v if v.strip() else None for v in frame[c].tolist()] for c in frame.columns}, name


def _frame_column(series: pd.Series) -> list:
    values = [_cell(v) for v in series.tolist()]
    # pandas stores an int column with gaps as float (1 -> 1.0); undo that, or integer
    # class labels would look like regression values
    if series.dtype.kind == "f" and series.isna().any() and (series.dropna() % 1 == 0).all():
        values = [None if v is None else str(int(float(v))) for v in values]
    return values


def _cell(v) -> str | None:
    """A DataFrame value as str, or None when missing (None, NaN, NA, blank)."""
    if isinstance(v, str):
        return v if v.strip() else None
    try:
        if v is None or bool(pd.isna(v)):
            return None
    except (TypeError, ValueError):  # array-like cell: pd.isna gives an array
        pass
    return str(v)


def _decode(raw: bytes, name: str, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise UsageError(f"unknown encoding '{encoding}'; use a Python codec name such as "
                         f"utf-8 or latin-1") from None
    if not raw.strip():
        raise DataError(f"{name} is empty; it needs a header line (e.g. text,label) and data rows")
    if b"\x00" in raw:  # text CSVs never hold NUL bytes; UTF-16 and binary files do
        raise DataError(f"{name} is not a CSV: it holds NUL bytes (binary or UTF-16); "
                        f"save it as a UTF-8 CSV")
    if codec == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        shown = "UTF-8" if codec == "utf-8" else encoding
        fix = "re-save it as UTF-8 or pass --encoding latin-1" if codec == "utf-8" else \
            "pass the file's actual encoding with --encoding"
        raise DataError(f"{name} is not {shown}: invalid byte 0x{raw[e.start]:02x} at line {line}; "
                        f"{fix}") from None


def _parse(text: str, name: str) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            # pandas only warns when a row has more fields than the header, then drops them
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                                na_filter=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning) as e:
        detail = re.sub(r"^Error tokenizing data\. C error: ", "", " ".join(str(e).split()))
        raise DataError(f"{name} is not a valid CSV: {detail}; quote fields that contain "
                        f"commas or line breaks") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty; it needs a header line and data rows") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if any(_NUM.fullmatch(c) for c in frame.columns):
        raise DataError(f"{name} has no header: its first line looks like data "
                        f"({', '.join(frame.columns)}); add a header line such as text,label")
    if frame.empty:
        raise DataError(f"{name} has a header ({', '.join(frame.columns)}) but no data rows")
    return frame


# -- columns, labels, task -------------------------------------------------------------------

def _need(cols: Columns, name: str, col: str, hint: str = "") -> None:
    if col not in cols:
        raise DataError(f"column '{col}' not found in {name}{did_you_mean(col, cols)}{hint}; "
                        f"columns: {', '.join(cols)}")


def _pick_columns(cols: Columns, name: str, text_col, label_col) -> tuple[str, str]:
    if text_col is not None and text_col == label_col:
        raise UsageError(f"text_col and label_col must differ, got '{text_col}' for both")
    for col in (text_col, label_col):
        if col is not None:
            _need(cols, name, col)
    if len(cols) < 2:
        only = ", ".join(f"'{c}'" for c in cols)
        hint = "; it looks like another delimiter: save it comma-separated" \
            if any(d in only for d in "\t;|") else ""
        raise DataError(f"{name} has {len(cols)} column{'s' * (len(cols) != 1)} ({only}); "
                        f"a text column and a label column are needed{hint}")
    if text_col is None:
        text_col = _infer_text(cols, exclude=label_col)
    if label_col is None:
        label_col = _infer_label(cols, exclude=text_col)
    return text_col, label_col


def _by_name(names: list[str], preferred: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in reversed(names)}  # reversed: the first in file order wins
    return next((lower[p] for p in preferred if p in lower), None)


def _infer_text(cols: Columns, exclude: str | None) -> str:
    names = [c for c in cols if c != exclude]
    if not names:
        raise DataError("the data has no columns; it needs a text column")
    strings = [c for c in names if not all(_NUM.fullmatch(v.strip()) for v in _present(cols[c]))]
    return _by_name(names, TEXT_NAMES) or max(
        strings or names, key=lambda c: np.mean([len(v) for v in _present(cols[c])] or [0]))


def _present(values: list) -> list[str]:
    return [v for v in values if v is not None]


def _infer_label(cols: Columns, exclude: str) -> str:
    names = [c for c in cols if c != exclude]
    distinct = {c: len({v.strip() for v in _present(cols[c])}) for c in names}
    # a column with fewer than 2 values cannot be a useful label; prefer any other
    return _by_name(names, LABEL_NAMES) or min(names, key=lambda c: (distinct[c] < 2, distinct[c]))


def _usable(cols: Columns, name: str, tcol: str, lcol: str) -> tuple[list[str], list[str], int]:
    """Texts and stripped labels of rows that have both; warns once about the rest."""
    pairs = [(t, lab.strip()) for t, lab in zip(cols[tcol], cols[lcol])
             if t is not None and lab is not None]
    dropped = len(cols[tcol]) - len(pairs)
    if dropped:
        log.warning("%s: dropped %d of %d rows with missing text or label",
                    name, dropped, len(cols[tcol]))
    return [t for t, _ in pairs], [lab for _, lab in pairs], dropped


def _infer_task(labels: list[str], name: str, lcol: str) -> tuple[Task, tuple[str, ...]]:
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


def _encode(labels: list[str], task: Task, label_names: tuple[str, ...], name: str) -> np.ndarray:
    """Targets for `labels`: class ids of known classes, or float values for regression."""
    if task is Task.REGRESSION:
        bad = [v for v in labels if not _NUM.fullmatch(v)]
        if bad:
            raise DataError(f"{name} has non-numeric labels for a regression target: "
                            f"{_listing(bad)}; use numbers only")
        return np.asarray([float(v) for v in labels], dtype=np.float32)
    if all(_INT.fullmatch(n) for n in label_names):  # "07" and "7" are the same integer class
        labels = [str(int(v)) if _INT.fullmatch(v) else v for v in labels]
    index = {n: i for i, n in enumerate(label_names)}
    unknown = [v for v in labels if v not in index]
    if unknown:
        raise DataError(f"{name} has labels not seen in the training data: {_listing(unknown)}; "
                        f"known classes: {_listing(label_names)}")
    return np.asarray([index[v] for v in labels], dtype=np.int64)


def _listing(values, limit: int = 5) -> str:
    unique = list(dict.fromkeys(values))
    more = f" (+{len(unique) - limit} more)" if len(unique) > limit else ""
    return ", ".join(f"'{v}'" for v in unique[:limit]) + more


# -- splits ------------------------------------------------------------------------------------

def _split(targets: np.ndarray, task: Task, label_names: tuple[str, ...], frac: float,
           seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices: stratified by class, each class on both sides."""
    if task is Task.REGRESSION:
        groups = [np.arange(len(targets))]
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


def _take(texts: list[str], targets: np.ndarray, idx: np.ndarray) -> Split:
    return Split(texts=tuple(texts[i] for i in idx), targets=targets[idx])


def _extra(data, frame_name: str, encoding: str, tcol: str, lcol: str, task: Task,
           label_names: tuple[str, ...]) -> tuple[Split, int]:
    """A separate validation or test set, read with the training data's columns and classes."""
    cols, name = _read(data, encoding, frame_name)
    _need(cols, name, tcol)
    _need(cols, name, lcol)
    texts, labels, dropped = _usable(cols, name, tcol, lcol)
    if not texts:
        raise DataError(f"{name} has no rows with both text and label; fill in column "
                        f"'{tcol}' and '{lcol}'")
    return Split(tuple(texts), _encode(labels, task, label_names, name)), dropped


def _fingerprint(task: Task, label_names: tuple[str, ...], *splits: Split | None) -> str:
    h = hashlib.sha256(json.dumps([task.value, list(label_names)]).encode())
    for s in splits:
        payload = None if s is None else [list(s.texts), s.targets.tolist()]
        h.update(json.dumps(payload).encode())
    return h.hexdigest()


def _log_summary(name, tcol, lcol, text_inferred, label_inferred, task, label_names,
                 train, val, test) -> None:
    if task is Task.CLASSIFICATION:
        shown = ", ".join(label_names[:8]) + (f", ... (+{len(label_names) - 8} more)"
                                              if len(label_names) > 8 else "")
        kind = f"classification, {len(label_names)} classes: {shown}"
    else:
        values = np.concatenate([train.targets, val.targets])
        kind = f"regression, values {values.min():g} to {values.max():g}"
    n_test = 0 if test is None else len(test.texts)
    rows = f"{len(train.texts) + len(val.texts) + n_test} rows ({len(train.texts)} train, " \
        f"{len(val.texts)} val" + (f", {n_test} test)" if test is not None else ")")
    log.info("%s: text column '%s'%s, label column '%s'%s; %s; %s",
             name, tcol, " (inferred)" * text_inferred, lcol, " (inferred)" * label_inferred,
             kind, rows)
