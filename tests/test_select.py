"""Standard errors, paired differences and the one-standard-error rule, without training."""

import math

import numpy as np
import pytest

from autotl.metrics import METRICS
from autotl.select import Evidence, choose, finalists, paired_difference, standard_error

ACC = METRICS["accuracy"]


def _predictions(targets, wrong):
    """`targets` with the rows in `wrong` flipped (binary)."""
    out = np.array(targets).copy()
    out[list(wrong)] = 1 - out[list(wrong)]
    return out


def test_accuracy_standard_error_is_the_binomial_one():
    targets = np.array([0, 1] * 100)  # 200 rows
    predicted = _predictions(targets, range(30))  # 170 right: p = 0.85
    assert standard_error(ACC, targets, predicted) == pytest.approx(math.sqrt(0.85 * 0.15 / 200), rel=1e-12)


def test_bootstrap_standard_error_of_f1_is_near_the_binomial_scale():
    # macro-F1 on a balanced binary task tracks accuracy: its bootstrap SE must be close to
    # the binomial SE of accuracy (not 0, not 10x off).
    targets = np.array([0, 1] * 200)
    predicted = _predictions(targets, range(0, 400, 5))  # 80% right
    binomial = math.sqrt(0.8 * 0.2 / 400)
    assert standard_error(METRICS["f1_macro"], targets, predicted) == pytest.approx(binomial, rel=0.25)


def test_paired_difference_of_accuracy_uses_per_row_differences():
    targets = np.zeros(100, dtype=int)
    first = _predictions(targets, range(10))  # 90 right
    second = _predictions(targets, range(5, 25))  # 80 right; rows 5-9 wrong for both
    d = paired_difference(ACC, targets, first, second)
    per_row = (first == targets).astype(float) - (second == targets).astype(float)
    assert d.score == pytest.approx(0.10)
    assert d.se == pytest.approx(per_row.std(ddof=1) / 10)
    # Rows both get right or wrong do not add noise: the paired SE is below the unpaired one.
    unpaired = math.sqrt(standard_error(ACC, targets, first) ** 2 + standard_error(ACC, targets, second) ** 2)
    assert d.se < unpaired


def test_one_standard_error_rule_takes_the_simpler_and_cheaper_of_two_tied_configurations():
    targets = np.array([0, 1] * 50)
    full = Evidence(1, "full", cost=100.0, predictions={0: _predictions(targets, range(10))},  # 0.90
                    weights=22_000_000)
    probe = Evidence(2, "probe", cost=5.0, predictions={0: _predictions(targets, range(8, 19))},  # 0.89
                     weights=770)
    choice = choose(ACC, [full, probe], {0: targets})
    assert choice.best.key == 1 and choice.chosen.key == 2
    assert set(choice.tied) == {1, 2}
    assert "one-standard-error rule" in choice.reason and "simpler" in choice.reason


def test_between_equally_simple_ties_the_better_score_wins_then_the_cheaper():
    targets = np.array([0, 1] * 50)
    long = Evidence(1, "6 epochs", cost=100.0, predictions={0: _predictions(targets, range(10))}, weights=10)
    short = Evidence(2, "3 epochs", cost=50.0, predictions={0: _predictions(targets, range(8, 19))}, weights=10)
    assert choose(ACC, [long, short], {0: targets}).chosen.key == 1  # tied, as simple: the better score
    same = Evidence(3, "same, cheaper", cost=10.0, predictions={0: _predictions(targets, range(10))}, weights=10)
    assert choose(ACC, [long, same], {0: targets}).chosen.key == 3  # tied and equal: the cheaper


def test_a_full_fine_tune_without_the_pooler_is_not_simpler_than_one_with_it():
    """AG News, 1,000 rows, 1x: a BSS trial cut after 1 of its 3 epochs (22,566,916 trained
    weights, the mean head) tied a finished full fine-tune (22,714,756, the standard head's
    pooler too) and was taken as "simpler". Counts within 10% are equally simple: the better
    score wins; a probe is still simpler than both."""
    targets = np.array([0, 1] * 50)
    full = Evidence(0, "full_finetune/standard", cost=391.0, predictions={0: _predictions(targets, range(10))},
                    weights=22_714_756)  # 0.90
    bss = Evidence(5, "bss/mean", cost=78.0, predictions={0: _predictions(targets, range(8, 19))},
                   weights=22_566_916)  # 0.89, tied
    choice = choose(ACC, [full, bss], {0: targets})
    assert set(choice.tied) == {0, 5} and choice.chosen.key == 0
    probe = Evidence(7, "probe", cost=5.0, predictions={0: _predictions(targets, range(9, 20))}, weights=1_540)
    assert choose(ACC, [full, bss, probe], {0: targets}).chosen.key == 7


def test_a_clear_winner_is_kept_even_when_costlier():
    targets = np.array([0, 1] * 200)
    costly = Evidence(1, "costly", cost=100.0, predictions={0: _predictions(targets, range(20))})  # 0.95
    cheap = Evidence(2, "cheap", cost=5.0, predictions={0: _predictions(targets, range(20, 100))})  # 0.80
    choice = choose(ACC, [costly, cheap], {0: targets})
    assert choice.chosen.key == 1 and choice.tied == (1,)


def test_more_evidence_breaks_a_tie():
    # On the first 100 rows the two tie; re-scored on a second fold, the costly one is
    # clearly better, so the pooled, paired comparison keeps it.
    t0, t1 = np.array([0, 1] * 50), np.array([0, 1] * 200)
    costly = Evidence(1, "costly", 100.0, {0: _predictions(t0, range(10)), 1: _predictions(t1, range(20))}, 100)
    cheap = Evidence(2, "cheap", 5.0, {0: _predictions(t0, range(8, 19)), 1: _predictions(t1, range(20, 90))}, 1)
    assert choose(ACC, [costly, cheap], {0: t0}).chosen.key == 2
    assert choose(ACC, [costly, cheap], {0: t0, 1: t1}).chosen.key == 1


def test_a_minimized_metric_prefers_the_lower_score():
    mse = METRICS["mse"]
    targets = np.linspace(0, 1, 200)
    good = Evidence(1, "good", 10.0, {0: targets + 0.01})
    bad = Evidence(2, "bad", 1.0, {0: targets + np.where(np.arange(200) % 2, 0.5, -0.5)})
    assert choose(mse, [good, bad], {0: targets}).chosen.key == 1


def test_finalists_are_the_best_and_those_within_two_standard_errors():
    targets = np.array([0, 1] * 100)
    ev = [Evidence(1, "a", 1.0, {0: _predictions(targets, range(20))}),  # 0.90
          Evidence(2, "b", 1.0, {0: _predictions(targets, range(15, 40))}),  # 0.875: close
          Evidence(3, "c", 1.0, {0: _predictions(targets, range(100, 200))})]  # 0.50: far
    assert [e.key for e in finalists(ACC, ev, {0: targets})] == [1, 2]


def test_among_ties_the_configuration_the_prior_ranks_first_wins_over_the_simplest():
    # The simplest of a tie is usually a probe, which the portfolio evidence ranks low; the
    # prior (the first trials' learned order) breaks the tie instead.
    targets = np.array([0, 1] * 50)
    full = Evidence(1, "full", cost=100.0, predictions={0: _predictions(targets, range(8, 19))},  # 0.89
                    weights=22_000_000, prior=0)
    probe = Evidence(2, "probe", cost=5.0, predictions={0: _predictions(targets, range(10))},  # 0.90
                     weights=770, prior=3)
    choice = choose(ACC, [full, probe], {0: targets})
    assert choice.best.key == 2 and choice.chosen.key == 1
    assert "ranked higher by the evidence" in choice.reason and "first trial 1 against 4" in choice.reason


def test_a_ranked_configuration_wins_a_tie_with_one_the_sampler_proposed():
    targets = np.array([0, 1] * 50)
    sampled = Evidence(1, "tpe", cost=10.0, predictions={0: _predictions(targets, range(10))}, weights=770)  # 0.90
    first = Evidence(2, "portfolio", cost=100.0, predictions={0: _predictions(targets, range(8, 19))},  # 0.89
                     weights=22_000_000, prior=1)
    choice = choose(ACC, [sampled, first], {0: targets})
    assert choice.chosen.key == 2
    assert "a configuration the sampler proposed" in choice.reason


def test_a_clear_winner_the_sampler_proposed_beats_a_ranked_configuration():
    targets = np.array([0, 1] * 100)
    sampled = Evidence(1, "tpe", cost=10.0, predictions={0: _predictions(targets, range(10))}, weights=770)  # 0.95
    first = Evidence(2, "portfolio", cost=10.0, predictions={0: _predictions(targets, range(10, 60))},  # 0.75
                     weights=770, prior=0)
    choice = choose(ACC, [sampled, first], {0: targets})
    assert choice.tied == (1,) and choice.chosen.key == 1


def test_the_best_ranked_first_among_its_ties_says_so():
    targets = np.array([0, 1] * 50)
    best = Evidence(1, "full", cost=100.0, predictions={0: _predictions(targets, range(10))}, weights=10, prior=0)
    other = Evidence(2, "probe", cost=5.0, predictions={0: _predictions(targets, range(8, 19))}, weights=1, prior=2)
    choice = choose(ACC, [best, other], {0: targets})
    assert choice.chosen.key == 1 and "ranked first by the evidence" in choice.reason
