"""Which rows a benchmark trains on, and which rows it may choose with.

`subsample` draws the training rows of a benchmark cell (stratified, seeded). `dev_rows`
draws *dev* rows from the same train.csv, disjoint from them: evidence for building
defaults, portfolios and selection rules. test.csv is for the final comparison only, so
nothing tuned on dev rows has seen a test row.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


def subsample(frame, rows: int, seed: int = 0):
    """`rows` rows, each class in proportion (largest remainder) and at least 2 rows, so a
    stratified validation split keeps every class on both sides. Regression labels (floats)
    are drawn plainly at random."""
    import numpy as np

    if rows >= len(frame):
        return frame
    rng = np.random.default_rng(seed)
    if is_regression(frame["label"]):
        return frame.iloc[np.sort(rng.permutation(len(frame))[:rows])]
    groups = frame.groupby("label").indices
    if rows < 2 * len(groups):
        raise UsageError(f"--rows {rows} is too few for {len(groups)} classes (2 per class at least)")
    sizes = np.array([len(g) for g in groups.values()])
    share = rows * sizes / sizes.sum()
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share)[: rows - quota.sum()]] += 1
    quota = np.minimum(np.maximum(quota, 2), sizes)
    picked = np.concatenate([rng.permutation(g)[:q] for g, q in zip(groups.values(), quota)])
    return frame.iloc[np.sort(picked)]


def dev_rows(frame, used, rows: int, seed: int = 12345):
    """Up to `rows` rows of `frame` whose index is not in `used`, at random."""
    import numpy as np

    rest = frame.loc[~frame.index.isin(used)]
    rng = np.random.default_rng(seed)
    return rest.iloc[np.sort(rng.permutation(len(rest))[:rows])]


def is_regression(labels) -> bool:
    """Float labels (any value with a fractional part) mean a regression target."""
    import pandas as pd

    values = pd.to_numeric(labels, errors="coerce")
    return bool(values.notna().all() and (values % 1 != 0).any())
