"""report.html (autotl/html_report.py, autotl/charts.py): its sections on built studies (no
training: optuna's create_trial), escaping, the Pareto front, `autotl report`, and the page a
real tiny search writes."""

from __future__ import annotations

import csv
import datetime
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autotl.charts import Point, pareto_front
from autotl.cli import main
from autotl.html_report import SECTIONS, TEST_PREDICTIONS, save_test_predictions, write_html_report
from autotl.report import leaderboard
from autotl.testing import sentiment_rows

from conftest import fails, write_csv

HOSTILE_LABEL = "<script>alert(1)</script>"
HOSTILE_TEXT = '<img src=x onerror="alert(2)"> $5 off & more'
CHARTS = ("chart-pareto", "chart-curves", "chart-importances")


class Page(HTMLParser):
    """What a browser would build from the page: its tags (with attributes) and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def ids(self, tag: str | None = None) -> set[str]:
        return {a["id"] for t, a in self.tags if "id" in a and (tag is None or t == tag)}

    def within(self, element_id: str, text: str) -> str:
        """The page source of the element `element_id`, up to the first closing tag of its kind."""
        start = text.rindex("<", 0, text.index(f'id="{element_id}"'))
        tag = text[start + 1:].split()[0]
        return text[start:text.index(f"</{tag}>", start)]


# -- studies built without training ------------------------------------------------------------

STRATEGIES = ["linear_probe", "full_finetune", "freeze"]


def add_trial(study, number: int, *, strategy: str, lr: float, scores: list[float], seconds: float,
              state=TrialState.COMPLETE, summary: str = "a plan", head: str = "mean"):
    params = {"strategy": strategy, "head.pooling": head, f"{strategy}.lr": lr}
    distributions = {"strategy": CategoricalDistribution(STRATEGIES),
                     "head.pooling": CategoricalDistribution(["mean", "standard"]),
                     f"{strategy}.lr": FloatDistribution(1e-5, 1e-1, log=True)}
    trial = create_trial(state=state, value=max(scores) if state is TrialState.COMPLETE else None,
                         params=params, distributions=distributions,
                         intermediate_values=dict(enumerate(scores)),
                         user_attrs={"best_epoch": int(np.argmax(scores)), "trainable_params": 1000 + number,
                                     "summary": summary, "head": head})
    trial.datetime_start = trial.datetime_complete - datetime.timedelta(seconds=seconds)
    study.add_trial(trial)


def built_study(*, trials: int = 6, pruned: bool = True, metric: str = "accuracy", summary: str = "a plan"):
    """An in-memory study shaped like autotl's: `trials` complete ones whose score grows with
    their learning rate, and a pruned one."""
    study = optuna.create_study(direction="maximize" if metric != "mse" else "minimize", study_name="autotl")
    study.set_user_attr("autotl", {"metric": metric})
    for i in range(trials):
        lr = 10 ** (-5 + 4 * i / max(1, trials - 1))
        final = 0.5 + 0.4 * i / max(1, trials - 1)
        add_trial(study, i, strategy=STRATEGIES[i % 3], lr=lr, scores=[0.5, final - 0.05, final],
                  seconds=1.0 + 2 * i, summary=summary)
    if pruned:
        add_trial(study, trials, strategy="freeze", lr=1e-3, scores=[0.4, 0.45], seconds=3.0,
                  state=TrialState.PRUNED)
    study.set_user_attr("choice", {"chosen": trials - 1, "reason": "the best score", "finalists": [],
                                   "baseline": {"trial": 0, "margin": 0.1234, "se": 0.0456, "rows": 40}})
    return study


def info_for(study, *, labels=("negative", "positive"), task="classification", rows=5) -> dict:
    best = study.best_trial
    return {"trial": best.number, "study": study.study_name, "data": {"task": task, "label_names": list(labels)},
            "scores": {"val": best.value, "test": {"rows": rows, "metrics": {"accuracy": 0.6}}}}


def predictions_file(run_dir: Path, texts, true, predicted, labels=None) -> None:
    """RUN_DIR/test_predictions.csv through the search's own writer."""
    task = SimpleNamespace(value="classification" if labels else "regression")
    target = SimpleNamespace(task=task, label_names=labels,
                             test=SimpleNamespace(texts=list(texts), targets=np.asarray(true)))
    save_test_predictions(run_dir, target, np.asarray(predicted))


def page_of(study, info, run_dir: Path) -> str:
    return write_html_report(study, leaderboard(study), info, run_dir, "accuracy").read_text()


@pytest.fixture
def classification_page(tmp_path):
    study = built_study()
    labels = ("negative", "positive")
    # true a a a b b, predicted a a b b b: negative P 2/2 R 2/3 F1 .8; positive P 2/3 R 1 F1 .8
    predictions_file(tmp_path, [f"row {i}" for i in range(5)], [0, 0, 0, 1, 1], [0, 0, 1, 1, 1], labels)
    return page_of(study, info_for(study, labels=labels), tmp_path)


# -- the page's sections ----------------------------------------------------------------------

def test_every_section_and_chart_is_present(classification_page):
    page = Page(classification_page)
    assert set(SECTIONS) <= page.ids("section")
    assert {*CHARTS, "chart-confusion"} <= page.ids("svg")
    assert "per-class" in page.ids()
    assert "+0.1234 ± 0.0456" in classification_page  # the margin over the baseline recipe


def test_per_class_scores_and_misclassified_rows(classification_page):
    table = Page(Page(classification_page).within("per-class", classification_page)).text
    cells = [c for c in table if c.strip()]
    assert cells[5:] == ["negative", "1.0000", "0.6667", "0.8000", "3",
                         "positive", "0.6667", "1.0000", "0.8000", "2"], cells
    misclassified = Page(classification_page).within("test", classification_page)
    assert "row 2" in misclassified and "row 0" not in misclassified  # only the wrong row is listed


def test_the_page_is_self_contained(classification_page):
    page = Page(classification_page)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "img", "object")]
    references = [a.get("src") or a.get("href") or a.get("xlink:href") for _, a in page.tags]
    # inside the page only: an SVG's own definitions, or an image embedded in it (the heat map's pixels)
    assert all(r is None or r.startswith(("#", "data:image/png;base64,")) for r in references), references
    policy = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert policy and "default-src 'none'" in policy[0]


def test_label_names_and_texts_are_escaped_everywhere(tmp_path):
    study = built_study(summary=f"plan {HOSTILE_LABEL}")
    labels = (HOSTILE_LABEL, "costs $5 or $6")  # between two "$" matplotlib would parse math
    predictions_file(tmp_path, [HOSTILE_TEXT, "fine", "also fine"], [0, 1, 1], [1, 1, 0], labels)
    text = page_of(study, info_for(study, labels=labels, rows=3), tmp_path)
    page = Page(text)
    assert not [t for t, _ in page.tags if t in ("script", "img")]  # nothing became markup...
    assert HOSTILE_LABEL not in text and "<img" not in text
    shown = "".join(page.text)
    assert HOSTILE_LABEL in shown and HOSTILE_TEXT in shown  # ...they are shown as text
    confusion = Page(page.within("chart-confusion", text)).text
    assert HOSTILE_LABEL in confusion and "costs $5 or $6" in confusion  # the chart's own tick labels too


def test_regression_shows_residuals_largest_error_first(tmp_path):
    study = built_study()
    predictions_file(tmp_path, ["small miss", "big miss", "exact"], [1.0, 2.0, 3.0], [1.5, 4.5, 3.0])
    text = page_of(study, info_for(study, task="regression", rows=3), tmp_path)
    page = Page(text)
    assert "chart-residuals" in page.ids("svg") and "chart-confusion" not in page.ids()
    errors = page.within("test", text)
    assert errors.index("big miss") < errors.index("small miss") < errors.index("exact")
    assert "+1.0000" in errors  # mean residual: (0.5 + 2.5 + 0) / 3


def test_without_a_test_set_the_page_says_so(tmp_path):
    study = built_study()
    info = info_for(study)
    info["scores"]["test"] = None
    text = page_of(study, info, tmp_path)
    assert "No test set was scored" in text and "chart-confusion" not in text
    assert set(CHARTS) <= Page(text).ids("svg")


def test_predictions_of_another_model_are_not_drawn(tmp_path):
    study = built_study()
    predictions_file(tmp_path, ["a", "b"], [0, 1], [0, 1], ("negative", "positive"))
    text = page_of(study, info_for(study, rows=5), tmp_path)  # the model was scored on 5 rows
    assert "belongs to another model" in text and "chart-confusion" not in text


def test_pruned_trials_are_drawn_dashed(tmp_path):
    for pruned in (True, False):
        run = tmp_path / str(pruned)
        run.mkdir()
        text = page_of(built_study(pruned=pruned), None, run)
        curves = Page(text).within("chart-curves", text)
        assert ("pruned" in Page(curves).text) is pruned  # its legend entry
        assert ("stroke-dasharray" in curves) is pruned  # its dashed line


def test_importances_rank_the_parameter_that_drives_the_score(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="autotl")
    study.set_user_attr("autotl", {"metric": "accuracy"})
    rng = np.random.default_rng(0)
    for i in range(16):  # the score follows the learning rate; the head is drawn at random
        lr = float(10 ** rng.uniform(-5, -1))
        add_trial(study, i, strategy="linear_probe", lr=lr, scores=[0.9 + 0.02 * np.log10(lr)], seconds=1,
                  head=str(rng.choice(["mean", "standard"])))
    text = page_of(study, None, tmp_path)
    cells = [c for c in Page(Page(text).within("importances", text)).text if c.strip()]
    ranked = cells[cells.index("importance", cells.index("parameter")) + 1::2]
    assert ranked[0] == "linear_probe.lr", cells
    assert "chart-importances" in Page(text).ids("svg")


@pytest.mark.parametrize("complete", [1, 2])
def test_importances_with_too_few_trials_are_a_sentence(tmp_path, complete):
    text = page_of(built_study(trials=complete, pruned=True), None, tmp_path)
    assert f"only {complete} trial(s) completed" in text and "chart-importances" not in text


def test_a_study_without_a_finished_trial_still_gets_a_page(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="autotl")
    study.set_user_attr("autotl", {"metric": "accuracy"})
    study.ask({"strategy": CategoricalDistribution(STRATEGIES)})  # running
    text = page_of(study, None, tmp_path)
    assert "No trial finished yet" in text
    assert "<td>running</td>" in text and "<svg" not in text


@pytest.mark.parametrize("maximize, front", [(True, [1, 2, 4]), (False, [1])])
def test_pareto_front(maximize, front):
    points = [Point(1, "a", 1.0, 0.5), Point(2, "b", 2.0, 0.7), Point(3, "a", 3.0, 0.6),
              Point(4, "c", 4.0, 0.9), Point(5, "b", 4.0, 0.8), Point(6, "c", 1.0, 0.5)]
    assert [p.trial for p in pareto_front(points, maximize)] == front


# -- `autotl report RUN_DIR` -------------------------------------------------------------------

def test_report_on_a_directory_without_a_run_is_one_error_line(capsys, tmp_path):
    assert "does not exist" in fails(capsys, ["report", tmp_path / "never-ran"])
    line = fails(capsys, ["report", tmp_path])
    assert f"{tmp_path} holds no autotl study (no study.journal)" in line and "--out directory" in line
    assert not (tmp_path / "study.journal").exists()  # a read command creates nothing
    line = fails(capsys, ["report", tmp_path, "--storage", tmp_path / "elsewhere.journal"])
    assert "elsewhere.journal does not exist" in line


def journal_study(run_dir: Path, name: str = "autotl"):
    from autotl.storage import open_storage

    run_dir.mkdir(exist_ok=True)
    study = optuna.create_study(storage=open_storage(None, run_dir), study_name=name, direction="maximize")
    study.set_user_attr("autotl", {"metric": "accuracy"})
    return study


def test_report_names_the_studies_a_journal_holds(capsys, tmp_path):
    journal_study(tmp_path, name="other")
    line = fails(capsys, ["report", tmp_path])
    assert "no study 'autotl'" in line and "studies there: other" in line
    assert main(["report", str(tmp_path), "--study-name", "other"]) == 0


def test_report_while_the_search_runs(capsys, tmp_path):
    study = journal_study(tmp_path)
    running = study.ask({"strategy": CategoricalDistribution(STRATEGIES)})
    assert main(["report", str(tmp_path)]) == 0
    assert "No trial finished yet" in (tmp_path / "report.html").read_text()
    add_trial(study, 1, strategy="freeze", lr=1e-3, scores=[0.6, 0.7], seconds=2.0)
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'report.html'}" in out
    text = (tmp_path / "report.html").read_text()
    assert "<td>running</td>" in text and "<td>complete</td>" in text
    assert {"chart-pareto", "chart-curves"} <= Page(text).ids("svg")
    assert "not chosen its final model yet" in text
    assert (tmp_path / "report.md").read_text().startswith("# autotl report")
    study.tell(running, state=TrialState.FAIL)


# -- the page a real tiny search writes ---------------------------------------------------------

def tiny_search(root: Path, model_dir: str) -> Path:
    """A real CLI search on the tiny BERT with a test set (about 10 s on one core); its RUN_DIR."""
    data = write_csv(root / "data.csv", sentiment_rows(60))
    test = write_csv(root / "test.csv", sentiment_rows(20, seed=1))
    run = root / "run"
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["search", data, "--model", model_dir, "--n-trials", "3", "--out", str(run), "--test", test,
                     "--no-progress", "--no-knowledge", "--strategies", "baseline,linear_probe,freeze"])
    assert code == 0, out.getvalue() + err.getvalue()
    return run


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model_dir):
    return tiny_search(tmp_path_factory.mktemp("html-search"), tiny_model_dir)


def test_the_search_writes_the_page_and_the_test_predictions(searched):
    text = (searched / "report.html").read_text()
    page = Page(text)
    assert set(SECTIONS) <= page.ids("section")
    assert {"chart-pareto", "chart-curves", "chart-confusion"} <= page.ids("svg")
    importances = page.within("importances", text)  # three trials: either is right
    assert ("chart-importances" in importances) != ("cannot be computed" in importances)
    info = json.loads((searched / "best" / "autotl.json").read_text())
    with open(searched / TEST_PREDICTIONS, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == info["scores"]["test"]["rows"] == 20
    assert {r["true"] for r in rows} <= {"negative", "positive"} and {r["predicted"] for r in rows} <= {"negative", "positive"}
    # the page's per-class F1 (scikit-learn) agrees with the search's own f1_macro
    cells = [c for c in Page(page.within("per-class", text)).text if c.strip()]
    f1 = [float(cells[i]) for i in (8, 13)]
    assert np.mean(f1) == pytest.approx(info["scores"]["test"]["metrics"]["f1_macro"], abs=1e-4)
    assert sum(int(cells[i]) for i in (9, 14)) == 20


def test_autotl_report_rebuilds_both_reports(searched, capsys):
    markdown = (searched / "report.md").read_text()
    (searched / "report.md").unlink()
    (searched / "report.html").unlink()
    assert main(["report", str(searched)]) == 0
    assert (searched / "report.md").read_text() == markdown
    assert set(SECTIONS) <= Page((searched / "report.html").read_text()).ids("section")
