"""Multi-label classification: label sets read from the data, the metrics, the decision threshold.

A row may carry any number of labels. Two ways to give them:
- one column of delimited label sets, ``sports|politics``: `--label-sep`, or inferred when
  more than half the rows of the label column hold ``|``. A blank cell is a missing label,
  as in every task (the row is dropped), not an empty set;
- several 0/1 columns, one per label: ``--label-col sports,politics,tech`` (a row of zeros
  is a row without labels).

Targets are a 0/1 int64 matrix, rows x labels (column j: `label_names[j]`). The model has one
sigmoid output per label (BCE-with-logits loss); a label is predicted when its probability
reaches the decision threshold. The threshold is **one global value** tuned on the validation
rows over `THRESHOLDS`, not one per label: with a few hundred validation rows most labels
have a handful of positives, and a per-label threshold picked on five rows fits their noise
(every label's threshold is a free parameter), while the global one is estimated from every
row and label at once. The threshold travels with the model (autotl.json) and `predict`
applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .errors import DataError, UsageError, did_you_mean

SEPARATOR = "|"  # inferred when more than half the label cells hold it; predict joins label sets with it
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95
DEFAULT_THRESHOLD = 0.5  # for a model saved without a tuned one
log = logging.getLogger("autotl")


# -- reading label sets ------------------------------------------------------------------------

def listed_columns(label_col: str | None, columns) -> tuple[str, ...]:
    """The label columns `label_col` lists ("a,b,c": several 0/1 columns), or () when it names
    one column (a column whose own name holds a comma included) or nothing."""
    if label_col is None or "," not in label_col or label_col in columns:
        return ()
    return tuple(n.strip() for n in label_col.split(","))


def check_columns(names: tuple[str, ...], columns, source: str) -> None:
    """Several label columns: at least two, each named once and present."""
    if len(names) < 2 or any(not n for n in names):
        raise UsageError(f"label_col '{','.join(names)}' must name one column, or two or more 0/1 columns "
                         "separated by single commas")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"label_col names {', '.join(twice)} more than once; name each label column once")
    for n in names:
        if n not in columns:
            raise DataError(f"column '{n}' not found in {source}{did_you_mean(n, columns)}; columns: "
                            f"{', '.join(columns)}")


def sets_from_columns(cols: dict, names: tuple[str, ...], source: str) -> list:
    """Per row: the tuple of label names whose column holds 1, or None when a cell is missing
    (the row is dropped like a row without a label). Any value but 0 or 1 (true or false, as
    a DataFrame's bool column reads) is refused."""
    for n in names:
        bad = [(i, v) for i, v in enumerate(cols[n]) if v is not None and _bit(v) is None]
        if bad:
            row, value = bad[0]
            raise DataError(f"label column '{n}' in {source} holds '{value.strip()[:40]}' (row {row + 1}, header "
                            f"not counted; {len(bad)} such row{'s' * (len(bad) != 1)}); each of several label "
                            f"columns must hold only 0 or 1")
    out = []
    for cells in zip(*(cols[n] for n in names)):
        out.append(None if any(v is None for v in cells) else tuple(n for n, v in zip(names, cells) if _bit(v)))
    return out


def is_bit(value: str) -> bool:
    """Whether a cell reads as 0 or 1 (several columns that all do are a multi-label target)."""
    return _bit(value) is not None


def _bit(value: str) -> int | None:
    """1 or 0 for '1', '1.0', 'true' / '0', '0.0', 'false' (any case); None for anything else."""
    text = value.strip().lower()
    if text in ("true", "false"):
        return int(text == "true")
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def separator(labels: Sequence[str], given: str | None, where: str) -> str | None:
    """The label-set separator of a label column: `given` (refused when no row holds it: the
    column holds single labels), else SEPARATOR when more than half the rows hold it, else None."""
    if given is not None:
        if not isinstance(given, str) or not given.strip():
            raise UsageError(f"label_sep must be a non-blank string such as '|', got {given!r}")
        if not any(given in v for v in labels):
            raise DataError(f"label_sep '{given}' was given, but no row of {where} holds it: the column holds "
                            "single labels; leave out --label-sep, or pick the column of label sets with --label-col")
        return given
    holding = sum(SEPARATOR in v for v in labels)
    if labels and holding > len(labels) / 2:
        return SEPARATOR
    if holding:  # too few to be sure: class names may hold it too
        log.warning("%s: %d of %d labels hold '%s'; read as single labels (label sets are inferred when more than "
                    "half the rows hold it); if they are label sets, pass --label-sep '%s'", where, holding,
                    len(labels), SEPARATOR, SEPARATOR)
    return None


def parse_sets(labels: Sequence[str], sep: str) -> list[tuple[str, ...]]:
    """'b|a| a' -> ('a', 'b'): names stripped, blanks and repeats dropped, sorted."""
    return [tuple(sorted({p.strip() for p in v.split(sep) if p.strip()})) for v in labels]


def label_names_of(sets: Sequence[tuple[str, ...]], where: str) -> tuple[str, ...]:
    """Every label that occurs, sorted; at least two (one label is a binary classification)."""
    names = tuple(sorted({n for s in sets for n in s}))
    if len(names) < 2:
        found = f"only one label ('{names[0]}')" if names else "no labels"
        raise DataError(f"{where} has {found}; a multi-label target needs at least 2 labels (for one label, "
                        "use a single-label column of yes/no classes)")
    return names


def encode(sets: Sequence[tuple[str, ...]], label_names: Sequence[str], source: str) -> np.ndarray:
    """Rows x labels 0/1 matrix of `sets`; labels not among `label_names` are refused."""
    index = {n: j for j, n in enumerate(label_names)}
    unknown = sorted({n for s in sets for n in s if n not in index})
    if unknown:
        shown = ", ".join(f"'{n}'" for n in unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise DataError(f"{source} has labels not seen in the training data: {shown}; known labels: "
                        f"{', '.join(label_names)}")
    targets = np.zeros((len(sets), len(label_names)), dtype=np.int64)
    for i, s in enumerate(sets):
        targets[i, [index[n] for n in s]] = 1
    return targets


def source_note(label_cols: tuple[str, ...], sep: str | None, given: str | None) -> str:
    """How the data summary says where the label sets came from ('' when not multi-label)."""
    if label_cols:
        return "one 0/1 column per label"
    if sep is None:
        return ""
    return f"label sets separated by '{sep}'" + ("" if given else ", inferred: more than half the rows hold it")


def joined(row: np.ndarray, label_names: Sequence[str], sep: str) -> str:
    """A 0/1 row as its label set: the names it holds, joined by `sep` ('' for none)."""
    return sep.join(n for n, on in zip(label_names, row) if on)


# -- splitting ---------------------------------------------------------------------------------

SPLIT_FIX = "to split off a validation set; add rows, remove the label, or pass --val VAL.csv"
LEARN_FIX = "to be learned; add rows that have it, or remove the label"


def check_label_counts(targets: np.ndarray, label_names: Sequence[str], source: str, minimum: int, why: str) -> None:
    """Every label set on at least `minimum` rows (1: to be learned at all; 2: one for each
    side of the validation split); else one DataError naming the labels and `why`."""
    counts = targets.sum(axis=0)
    small = [(label_names[j], int(counts[j])) for j in np.flatnonzero(counts < minimum)]
    if small:
        (label, n), others = small[0], [s[0] for s in small[1:]]
        more = f" (and {', '.join(repr(o) for o in others[:5])}{' ...' if len(others) > 5 else ''})" if others else ""
        raise DataError(f"label '{label}'{more} is set on {n} row{'s' * (n != 1)} of {source}; each label needs at "
                        f"least {minimum} {why}")


def strata(targets: np.ndarray) -> list[np.ndarray]:
    """Row groups for a stratified split: each row goes with its rarest label (the label a
    random split would most likely leave on one side only); rows without labels form one
    group. Splitting each group by the validation fraction keeps every label with 2+ rows
    of its own stratum on both sides, and label frequencies close to the whole's."""
    counts = targets.sum(axis=0)
    rarity = np.where(targets > 0, counts[None, :], np.iinfo(np.int64).max)
    key = np.where(targets.any(axis=1), rarity.argmin(axis=1), -1)
    return [np.flatnonzero(key == k) for k in np.unique(key)]


# -- metrics -----------------------------------------------------------------------------------

def _counts(targets: np.ndarray, predicted: np.ndarray, axis=None):
    t, p = targets.astype(bool), predicted.astype(bool)
    return (np.sum(t & p, axis=axis), np.sum(~t & p, axis=axis), np.sum(t & ~p, axis=axis))


def f1_micro(targets: np.ndarray, predicted: np.ndarray) -> float:
    """F1 over every (row, label) decision pooled; 1.0 when nothing is true or predicted."""
    tp, fp, fn = _counts(targets, predicted)
    return 1.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))


def f1_macro(targets: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of each label's F1, over the labels true or predicted on some row (as the
    single-label macro-F1 averages over the classes present); 1.0 when there are none."""
    tp, fp, fn = _counts(targets, predicted, axis=0)
    present = tp + fp + fn > 0
    if not present.any():
        return 1.0
    return float(np.mean(2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])))


def subset_accuracy(targets: np.ndarray, predicted: np.ndarray) -> float:
    """Share of rows whose whole label set is right."""
    return float(np.mean(np.all(targets == predicted, axis=1)))


# -- the decision threshold ----------------------------------------------------------------------

def sigmoid(outputs: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(outputs, -60.0, 60.0)))


def decide(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The predicted label sets: 1 where a label's probability reaches `threshold`."""
    return (probabilities >= threshold).astype(np.int64)


def tune_threshold(targets: np.ndarray, probabilities: np.ndarray, metric) -> float:
    """The grid threshold with the best `metric` on these rows; among equal scores the one
    nearest 0.5 (the neutral choice: an even score gives no reason to move away from it)."""
    sign = 1 if metric.maximize else -1
    scored = [(sign * metric(targets, decide(probabilities, t)), -abs(t - DEFAULT_THRESHOLD), t) for t in THRESHOLDS]
    return max(scored)[2]
