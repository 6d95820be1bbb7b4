"""CSV or DataFrame -> TargetData: column and task inference, validation, splits.

CONTRACT (being implemented by a helper; the rest of autotl codes against this).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


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
    fingerprint: str  # sha256 over train+val (+test) texts and targets: identifies the dataset
    dropped_rows: int = 0  # rows dropped for missing text or label (all files together)

    @property
    def num_outputs(self) -> int:
        """Width of the model's output layer."""
        return len(self.label_names) if self.task is Task.CLASSIFICATION else 1

    def schema(self) -> dict:
        """What autotl.json records so `predict` can read new data the same way."""
        raise NotImplementedError


def load_data(data, *, text_col=None, label_col=None, val=None, val_frac=0.2, test=None,
              seed=0, encoding="utf-8") -> TargetData:
    raise NotImplementedError


def read_texts(data, text_col: str | None = None, encoding: str = "utf-8") -> tuple[str, list[str]]:
    """For predict: (column used, texts) from a CSV path or DataFrame."""
    raise NotImplementedError
