"""Class imbalance: measured, reported, and acted on (macro-F1 by default, a class-weighted loss searched)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import autotl
from autotl.balance import CLASS_WEIGHT, balanced_weights, class_counts, describe, is_imbalanced, ratio
from autotl.testing import NEGATIVE, NEUTRAL, POSITIVE

from conftest import write_csv  # noqa: E402


def skewed_rows(common: int, rare: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    rows = [(" ".join([*rng.choice(NEUTRAL, 3), rng.choice(NEGATIVE)]), "ham") for _ in range(common)]
    rows += [(" ".join([*rng.choice(NEUTRAL, 3), rng.choice(POSITIVE)]), "spam") for _ in range(rare)]
    return rows


def test_counts_ratio_and_the_tenth_rule():
    assert ratio({"a": 90, "b": 10}) == pytest.approx(1 / 9)
    assert not is_imbalanced({"a": 90, "b": 10})  # a ninth: not under a tenth
    assert is_imbalanced({"a": 91, "b": 9})
    assert not is_imbalanced({"a": 5})
    assert describe({"b": 9, "a": 91}) == "a 91, b 9 (rarest/largest 0.10)"


def test_balanced_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    targets = np.array([0] * 30 + [1] * 5 + [2] * 15)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=targets)
    assert balanced_weights(targets, 3) == pytest.approx(tuple(expected), abs=1e-6)


def test_the_weighted_loss_is_the_weighted_mean_of_the_rows_losses():
    from autotl.metrics import get_metric
    from autotl.train import FitSettings, _loss

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.0]])
    targets = torch.tensor([0, 1, 1])
    settings = FitSettings(metric=get_metric("f1_macro", "classification"), regression=False, pad_id=0,
                           class_weights=(0.5, 3.0))
    rows = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    w = torch.tensor([0.5, 3.0, 3.0])
    assert _loss(logits, targets, settings).item() == pytest.approx(((rows * w).sum() / w.sum()).item(), rel=1e-6)
    plain = FitSettings(metric=settings.metric, regression=False, pad_id=0)
    assert _loss(logits, targets, plain).item() == pytest.approx(rows.mean().item(), rel=1e-6)


def test_a_rare_class_keeps_rows_in_validation(tmp_path):
    from autotl.data import load_data

    target = load_data(write_csv(tmp_path / "d.csv", skewed_rows(120, 4)), seed=3)
    assert set(target.val.targets.tolist()) == {0, 1} and set(target.train.targets.tolist()) == {0, 1}
    assert class_counts(target) == {"ham": 120, "spam": 4}


def _search(tmp_path, tiny_model_dir, rows, caplog, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    with caplog.at_level(logging.INFO, logger="autotl"):
        return autotl.search(write_csv(tmp_path / "d.csv", rows), model=tiny_model_dir, n_trials=3,
                             strategies=["linear_probe"], out=str(tmp_path / "run"), progress=False,
                             use_knowledge=False, **extra)


def test_imbalanced_data_is_chosen_by_macro_f1_and_searches_a_weighted_loss(tmp_path, tiny_model_dir, caplog,
                                                                           monkeypatch):
    import autotl.objective

    seen = []
    real_fit = autotl.objective.fit

    def spy(model, plan, train, val, settings, **kwargs):
        seen.append(settings.class_weights)
        return real_fit(model, plan, train, val, settings, **kwargs)

    monkeypatch.setattr(autotl.objective, "fit", spy)
    result = _search(tmp_path, tiny_model_dir, skewed_rows(110, 8), caplog)
    assert result.metric == "f1_macro"
    assert "class balance: ham 110, spam 8 (rarest/largest 0.07)" in caplog.text
    assert "choosing by f1_macro, not accuracy (pass --metric accuracy" in caplog.text
    drawn = [row["params"] for row in result.leaderboard]
    assert all(CLASS_WEIGHT in p for p in drawn), drawn
    weights = balanced_weights(np.array([0] * 88 + [1] * 6), 2)  # the stratified 80% of 110 and 8
    for params, used in zip(sorted(result.leaderboard, key=lambda r: r["trial"]), seen):
        assert used == (weights if params["params"][CLASS_WEIGHT] == "balanced" else None)


def test_metric_given_is_kept_and_balanced_data_searches_no_weights(tmp_path, tiny_model_dir, caplog):
    result = _search(tmp_path / "a", tiny_model_dir, skewed_rows(110, 8), caplog, metric="accuracy")
    assert result.metric == "accuracy" and "choosing by f1_macro" not in caplog.text
    caplog.clear()
    result = _search(tmp_path / "b", tiny_model_dir, skewed_rows(40, 30), caplog)
    assert result.metric == "accuracy"
    assert all(CLASS_WEIGHT not in row["params"] for row in result.leaderboard)
