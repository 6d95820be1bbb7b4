"""Transferability scores: LogME against a known answer, the probe, the ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autotl.metrics import get_metric
from autotl.transfer import (Transferability, assess, log_evidence, logme, probe_score, rank, spearman,
                             standardise)

ACCURACY = get_metric("accuracy", "classification")


def direct_log_evidence(f, y, alpha, beta):
    """log N(y; 0, I/beta + F F^T/alpha): the model's marginal likelihood, computed densely."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    sign, log_det = np.linalg.slogdet(cov)
    assert sign > 0
    return -0.5 * (n * math.log(2 * math.pi) + log_det + y @ np.linalg.solve(cov, y))


def parts(f, y):
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    z = u.T @ y
    return s ** 2, z ** 2, max(float(y @ y - z @ z), 0.0)


@pytest.mark.parametrize("d", [5, 60])  # fewer and more features than rows
def test_the_closed_form_evidence_equals_the_gaussian_marginal_likelihood(d):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, d))
    y = f[:, 0] + 0.3 * rng.normal(size=40)
    for alpha, beta in [(1.0, 1.0), (0.3, 7.0), (12.0, 0.5)]:
        assert log_evidence(*parts(f, y), 40, d, alpha, beta) == pytest.approx(
            direct_log_evidence(f, y, alpha, beta), rel=1e-9, abs=1e-9)


def test_the_fixed_point_maximises_the_evidence():
    from autotl.transfer import _evidence

    rng = np.random.default_rng(1)
    f = rng.normal(size=(80, 10))
    y = f @ rng.normal(size=10) + 0.5 * rng.normal(size=80)
    sigma, z2, outside = parts(f, y)
    best, alpha, beta = _evidence(sigma, z2, outside, 80, 10)
    assert best == pytest.approx(log_evidence(sigma, z2, outside, 80, 10, alpha, beta) / 80)
    for a, b in [(alpha * 1.5, beta), (alpha / 1.5, beta), (alpha, beta * 1.5), (alpha, beta / 1.5)]:
        assert log_evidence(sigma, z2, outside, 80, 10, a, b) / 80 < best


def clusters(rng, n=200, d=16, classes=3, spread=0.3):
    centres = rng.normal(size=(classes, d)) * 3
    labels = rng.integers(0, classes, n)
    return centres[labels] + spread * rng.normal(size=(n, d)), labels


def test_separable_labels_score_higher_than_random_labels():
    rng = np.random.default_rng(2)
    f, labels = clusters(rng)
    shuffled = rng.permutation(labels)
    assert logme(standardise(f), labels)[0] > logme(standardise(f), shuffled)[0] + 0.1
    separable = assess("a", f, labels, ACCURACY)
    random = assess("a", f, shuffled, ACCURACY)
    assert separable.probe > 0.95 and random.probe < 0.55
    assert separable.probe_se < random.probe_se


def test_the_probe_predicts_every_row_from_folds_that_did_not_see_it():
    # A row's own label must not leak: with pure-noise features, memorising would score 1.0.
    rng = np.random.default_rng(3)
    f = rng.normal(size=(100, 200))  # more features than rows: a ridge fits training rows exactly
    labels = rng.integers(0, 2, 100)
    score, se = probe_score(f, labels, ACCURACY, ridge=1e-6)
    assert score < 0.7 and 0.0 < se < 0.1


def test_regression_targets():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(150, 8))
    y = f @ rng.normal(size=8) + 0.1 * rng.normal(size=150)
    good = assess("a", f, y, get_metric("r2", "regression"), regression=True)
    bad = assess("a", f, rng.permutation(y), get_metric("r2", "regression"), regression=True)
    assert good.probe > 0.9 and bad.probe < 0.2 and good.logme > bad.logme


def t(name, probe, logme_, se=0.02):
    return Transferability(name, logme_, probe, se, 1.0)


def test_ranking_by_probe_then_logme_within_one_standard_error_and_hopeless_marked():
    ranked = rank([t("a", 0.80, 0.1), t("b", 0.81, -0.5), t("c", 0.60, -0.9), t("d", 0.60, 0.5)])
    assert [s.backbone for s in ranked] == ["a", "b", "d", "c"]  # a and b tie: a's LogME is higher
    assert [s.hopeless for s in ranked] == [False, False, False, True]  # d's LogME is higher than a's


def test_ranking_a_lower_is_better_metric():
    ranked = rank([t("a", 0.5, 0.0), t("b", 0.1, 0.0)], maximize=False)
    assert ranked[0].backbone == "b"


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1], [2]))
