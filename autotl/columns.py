"""Which columns of a CSV hold the text (or a text pair) and the label: named, or inferred
from common names and the values (free text is long and not numeric; a label has few
distinct values)."""

from __future__ import annotations

import numpy as np

from autotl import pairs
from autotl.errors import DataError, UsageError, did_you_mean

from .csvread import _NUM, Columns

# Column names people use, in order of preference; matched case-insensitively.
TEXT_NAMES = ("text", "sentence", "review", "content", "body", "document", "message", "comment",
              "utterance", "question", "tweet", "query")
LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "sentiment", "intent",
               "score", "rating", "valence")


def need_column(cols: Columns, name: str, col: str, hint: str = "") -> None:
    if col not in cols:
        raise DataError(f"column '{col}' not found in {name}{did_you_mean(col, cols)}{hint}; "
                        f"columns: {', '.join(cols)}")


def pick_columns(cols: Columns, name: str, text_col, label_col) -> tuple[tuple[str, ...], str]:
    """(text column, or a text pair's two; label column): the named ones, the others inferred."""
    tcols = pairs.parse(text_col, cols) if text_col is not None else ()
    if label_col is not None and label_col in tcols:
        raise UsageError(f"text_col and label_col must differ, got '{label_col}' for both")
    for col in (*tcols, label_col):
        if col is not None:
            need_column(cols, name, col)
    if len(cols) < 2:
        only = ", ".join(f"'{c}'" for c in cols)
        hint = "; it looks like another delimiter: save it comma-separated" \
            if any(d in only for d in "\t;|") else ""
        raise DataError(f"{name} has {len(cols)} column{'s' * (len(cols) != 1)} ({only}); "
                        f"a text column and a label column are needed{hint}")
    if not tcols:
        tcols = infer_texts(cols, exclude=label_col)
    if label_col is None:
        if len(cols) == len(tcols):
            raise DataError(f"{name} has only the text pair's columns ({', '.join(tcols)}); a label column "
                            f"is needed too")
        label_col = infer_label(cols, exclude=tcols)
    return tcols, label_col


def by_name(names: list[str], preferred: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in reversed(names)}  # reversed: the first in file order wins
    return next((lower[p] for p in preferred if p in lower), None)


def infer_texts(cols: Columns, exclude: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """A text pair when exactly two columns hold free text (pairs.free_text_columns), else the
    one text column. A label column (the named one, else one found by its name) is no text."""
    skip = (exclude,) if isinstance(exclude, str) else tuple(exclude or ())
    label = by_name([c for c in cols if c not in skip], LABEL_NAMES) if not skip else None
    free = pairs.free_text_columns({c: v for c, v in cols.items() if c not in (*skip, label)})
    return tuple(free) if len(free) == 2 else (infer_text(cols, exclude),)


def infer_text(cols: Columns, exclude: str | tuple[str, ...] | None) -> str:
    skip = (exclude,) if isinstance(exclude, str) else tuple(exclude or ())
    names = [c for c in cols if c not in skip]
    if not names:
        raise DataError("the data has no columns; it needs a text column")
    strings = [c for c in names if not all(_NUM.fullmatch(v.strip()) for v in present(cols[c]))]
    return by_name(names, TEXT_NAMES) or max(
        strings or names, key=lambda c: np.mean([len(v) for v in present(cols[c])] or [0]))


def present(values: list) -> list[str]:
    return [v for v in values if v is not None]


def infer_label(cols: Columns, exclude: tuple[str, ...]) -> str:
    names = [c for c in cols if c not in exclude]
    distinct = {c: len({v.strip() for v in present(cols[c])}) for c in names}
    # a column with fewer than 2 values cannot be a useful label; prefer any other
    return by_name(names, LABEL_NAMES) or min(names, key=lambda c: (distinct[c] < 2, distinct[c]))
