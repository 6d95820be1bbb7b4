"""Class imbalance: measured on every classification search, acted on when it is strong.

When the rarest class has under a tenth of the largest class's rows, accuracy rewards a
model that ignores the rare classes, so the default metric becomes macro-F1 (said in the
output; `--metric` overrides it), and a class-weighted loss becomes a searched option of
every trial (`loss.class_weight`: none or balanced, weights n_rows / (n_classes * n_class)
from the training rows, as scikit-learn's "balanced"). Stratified splits (data.py) already
keep every class on both sides.
"""

from __future__ import annotations

import numpy as np

IMBALANCE_RATIO = 0.1  # rarest / largest class below this: imbalanced
CLASS_WEIGHT = "loss.class_weight"  # the searched parameter (only on imbalanced data)
CHOICES = ("none", "balanced")
IMBALANCED_METRIC = "f1_macro"


def class_counts(target) -> dict[str, int]:
    """Rows per class over the training and validation rows (classification only)."""
    labels = target.label_names
    counts = np.zeros(len(labels), dtype=int)
    for split in (target.train, target.val):
        if split is not None:
            counts += np.bincount(np.asarray(split.targets, dtype=int), minlength=len(labels))
    return {name: int(n) for name, n in zip(labels, counts)}


def ratio(counts: dict[str, int]) -> float:
    """The rarest class's rows over the largest's (1.0 when balanced)."""
    largest = max(counts.values())
    return min(counts.values()) / largest if largest else 1.0


def is_imbalanced(counts: dict[str, int]) -> bool:
    return len(counts) > 1 and ratio(counts) < IMBALANCE_RATIO


def balanced_weights(train_targets, num_classes: int) -> tuple[float, ...]:
    """n_rows / (n_classes * rows of the class), from the training rows."""
    counts = np.bincount(np.asarray(train_targets, dtype=int), minlength=num_classes).astype(float)
    weights = len(train_targets) / (num_classes * np.maximum(counts, 1.0))
    return tuple(round(float(w), 6) for w in weights)


def describe(counts: dict[str, int], limit: int = 8) -> str:
    """'spam 75, ham 925 (rarest/largest 0.08)': the largest classes first."""
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{name} {n}" for name, n in ordered[:limit])
    more = f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else ""
    return f"{shown}{more} (rarest/largest {ratio(counts):.2f})"
