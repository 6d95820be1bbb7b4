"""A baseline trial the --timeout cut short is less than the hand recipe: every margin over
it says so (the CLI summary, report.md, report.html); a whole one is named as before."""

from types import SimpleNamespace

from autotl import cli, report
from autotl.decide import baseline_caveat, cut_short
from autotl.objective import PLANNED_EPOCHS

DECISION = {"chosen": 1, "best": 1, "reason": "the best", "rounds": 0, "metric": "accuracy", "finalists": [],
            "baseline": {"trial": 2, "margin": 0.255, "se": 0.034, "rows": 200}}


def _trial(epochs_run: int, **attrs):
    return SimpleNamespace(intermediate_values={e: 0.5 for e in range(epochs_run)}, user_attrs=attrs)


def test_a_trial_cut_short_says_how_many_of_its_epochs_ran():
    assert cut_short(_trial(1, **{PLANNED_EPOCHS: 3})) == "1 of its 3 epochs"
    assert cut_short(_trial(3)) is None


def _cut(decision: dict) -> dict:
    return {**decision, "baseline": {**decision["baseline"], "cut": "1 of its 3 epochs"}}


def test_the_report_and_the_summary_say_the_baseline_was_cut():
    whole, cut = report._decision_lines(DECISION, "accuracy"), report._decision_lines(_cut(DECISION), "accuracy")
    assert not any("cut it short" in line for line in whole)
    assert any("the baseline ran 1 of its 3 epochs: the --timeout cut it short" in line for line in cut)
    result = SimpleNamespace(leaderboard=[{"trial": 1, "strategy": "full_finetune", "head": "mean"}], chosen=1,
                             final={}, best_score=0.9, metric="accuracy", best_model="best", test_scores=None, unlabeled=None,
                             decision=_cut(DECISION))
    summary = cli._summary(result)
    assert "margin over the baseline recipe (trial 2): +0.2550" in summary and "cut it short" in summary
    assert baseline_caveat(DECISION["baseline"]) == ""


def test_the_html_report_says_the_baseline_was_cut():
    from autotl import html_report
    from autotl.decide import CHOICE

    page = html_report._baseline(SimpleNamespace(user_attrs={CHOICE: _cut(DECISION)}), "accuracy")
    assert "+0.2550 ± 0.0340" in page and "the baseline ran 1 of its 3 epochs" in page
    assert "cut it short" not in html_report._baseline(SimpleNamespace(user_attrs={CHOICE: DECISION}), "accuracy")
