"""RUN_DIR/report.html: the search on one self-contained page.

The leaderboard, score against seconds with the Pareto front, every trial's validation
curve, parameter importances, the final model on the test set (confusion matrix and
per-class scores, or residuals) and the margin over the baseline recipe. Charts are inline
SVG (charts.py); there is no script and no external file, and a Content-Security-Policy
forbids both, so the page opens offline and a hostile label name or text, escaped
everywhere, stays text. Written beside report.md at the end of a search; `autotl report
RUN_DIR` rebuilds both at any time, mid-search included.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from .errors import UsageError

REPORT_HTML = "report.html"
TEST_PREDICTIONS = "test_predictions.csv"  # the final model on --test: text, true, predicted
SHOWN_ERRORS = 10  # test rows listed under "largest errors"
SHOWN_IMPORTANCES = 15  # parameters in the importance chart (all that matter in its table)
SECTIONS = ("summary", "baseline", "leaderboard", "pareto", "curves", "importances", "test")

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 3rem; background: #fff; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-top: 0; }
section { margin-top: 2rem; } svg { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.complete td:first-child { border-left: 4px solid #4c9a2a; } tr.pruned td:first-child { border-left: 4px solid #aaa; }
tr.fail td:first-child { border-left: 4px solid #c0392b; } .scroll { overflow-x: auto; }
code { font-size: 12px; word-break: break-all; }
"""
# Nothing may load or run: no scripts, no remote files; inline styles only (the SVGs use them).
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def save_test_predictions(run_dir: Path, target, predicted) -> None:
    """RUN_DIR/test_predictions.csv: each --test row's text, true and predicted label (or
    value), for report.html's confusion matrix or residuals. Written whole, then renamed."""
    import numpy as np

    from .pairs import shown  # a text pair as one string

    predicted = np.asarray(predicted)
    if predicted.ndim != 1:  # one label or value per row is what the report can draw
        return
    names = target.label_names if target.task.value == "classification" else None
    file = Path(run_dir) / TEST_PREDICTIONS
    tmp = file.with_name(f".{TEST_PREDICTIONS}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("text", "true", "predicted"))
        for text, true, guess in zip(target.test.texts, target.test.targets, predicted):
            writer.writerow((shown(text), *((names[int(true)], names[int(guess)]) if names else
                                     (f"{float(true):.6g}", f"{float(guess):.6g}"))))
    os.replace(tmp, file)


def write_html_report(study, rows: list[dict], info: dict | None, run_dir: Path, metric: str) -> Path:
    """RUN_DIR/report.html for `study` (its leaderboard `rows`; `info`: best/autotl.json or None)."""
    path = Path(run_dir) / REPORT_HTML
    tmp = path.with_name(f".{REPORT_HTML}.tmp-{os.getpid()}")
    tmp.write_text(render(study, rows, info, Path(run_dir), metric), encoding="utf-8")
    os.replace(tmp, path)  # a reader mid-search never sees half a page
    return path


def render(study, rows: list[dict], info: dict | None, run_dir: Path, metric: str) -> str:
    """The page's HTML; the charts and the test section only once a trial has completed."""
    done = [r for r in rows if r["state"] == "complete"]
    maximize = study.direction.name == "MAXIMIZE"
    counts = ", ".join(f"{sum(r['state'] == s for r in rows)} {s}" for s in ("complete", "pruned", "fail", "running"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<h1>autotl report</h1>",
             f'<p class="meta">Study <b>{escape(study.study_name)}</b>, validation {escape(metric)} '
             f"({'higher' if maximize else 'lower'} is better); trials: {counts}. Written {when}; "
             f"<code>autotl report {escape(str(run_dir))}</code> writes it again.</p>",
             _summary(rows, done, info, metric), _baseline(study, metric), _data(study, rows), _leaderboard(rows, metric)]
    if done:
        parts += [_pareto(done, metric, maximize), _curves(study, rows, metric), _importances(study),
                  _test(info, run_dir)]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>autotl report: {escape(study.study_name)}</title>\n<style>{_STYLE}</style></head>\n"
            f"<body><main>\n{body}\n</main></body></html>\n")


def _data(study, rows: list[dict]) -> str:
    """Class balance, token lengths and unlabeled rows of the training data (report.data_lines)."""
    from .report import data_lines
    from .study import DATA_PROFILE

    lines = data_lines(study.user_attrs.get(DATA_PROFILE), rows)
    if not lines:
        return ""
    return _section("data", "Data", "<ul>" + "".join(f"<li>{escape(line.lstrip('- '))}</li>" for line in lines) + "</ul>")


def _section(name: str, title: str, *content: str) -> str:
    return f'<section id="{name}"><h2>{escape(title)}</h2>\n' + "\n".join(content) + "\n</section>"


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset(), classes=None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{escape(classes[i])}"' if classes else ""
        cells = "".join(f'<td class="num">{escape(_text(v))}</td>' if j in numeric else f"<td>{escape(_text(v))}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _text(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else escape(str(value))


def _summary(rows: list[dict], done: list[dict], info: dict | None, metric: str) -> str:
    if not done:
        return _section("summary", "Result", "<p>No trial finished yet, so there is nothing to compare: no "
                        "scores, curves or best model so far.</p>")
    win = next((r for r in done if info and r["trial"] == info.get("trial")), None)
    if win is None:
        best = done[0]
        return _section("summary", "Result", f"<p>RUN_DIR/best holds no model of this study yet; the best trial "
                        f"so far is #{best['trial']} ({escape(best['strategy'])}/{escape(best['head'])}), "
                        f"validation {escape(metric)} {_text(best['score'])}.</p>")
    se = f" ± {win['se']:.4f}" if isinstance(win.get("se"), float) else ""
    lines = [f"<p><b>Final model</b> (RUN_DIR/best): trial {win['trial']}, <b>{escape(win['strategy'])}</b> with "
             f"the {escape(win['head'])} head on {escape(str(win['backbone']))} ({escape(win['summary'])}): "
             f"validation {escape(metric)} <b>{_text(win['score'])}</b>{escape(se)}, "
             f"{_count(win['trainable_params'])} trainable parameters, {escape(str(win['seconds']))} s.</p>"]
    if info.get("soup"):
        members = ", ".join(map(str, info["soup"]["members"]))
        lines.append(f"<p>A weight soup of trials {escape(members)}: validation {_text(info['soup']['val'])}.</p>")
    if info.get("refit"):
        lines.append(f"<p>Refit on all {escape(str(info['refit']['rows']))} labelled rows (train + validation) "
                     "for the epochs that won.</p>")
    elif info.get("refit_skipped"):
        lines.append(f"<p>No refit: {escape(str(info['refit_skipped']))}.</p>")
    if info.get("second_look"):
        look = info["second_look"]
        lines.append(f"<p>Second look (the epoch kept ended mid-schedule): trained again for "
                     f"{escape(str(look['epochs']))} epoch(s) on a schedule ending there, validation "
                     f"{_text(look['val'])} against the trial's {_text(look['trial_val'])}.</p>")
    test = (info.get("scores") or {}).get("test")
    if test:
        scores = ", ".join(f"{escape(k)} {_text(float(v))}" for k, v in test["metrics"].items())
        lines.append(f"<p><b>Test set</b> ({escape(str(test['rows']))} rows, scored once): {scores}.</p>")
    return _section("summary", "Result", *lines)


def _baseline(study, metric: str) -> str:
    from .decide import CHOICE, baseline_caveat

    decision = study.user_attrs.get(CHOICE)
    if not decision:
        text = ("The search has not chosen its final model yet (it is running, or was stopped before the "
                "end), so there is no margin over the baseline recipe yet.")
    elif not decision.get("baseline"):
        text = ("The baseline recipe did not run in this search (excluded, or the budget ended first), "
                "so there is no margin over it.")
    else:
        base = decision["baseline"]
        text = (f"The chosen model scores <b>{base['margin']:+.4f} ± {base['se']:.4f}</b> {escape(metric)} over "
                f"the baseline recipe (trial {escape(str(base['trial']))}: the model's own head, lr 5e-5, 3 epochs, "
                f"batch 32), paired on {escape(str(base['rows']))} validation rows{escape(baseline_caveat(base))}.")
    reason = f"<p>How it was chosen: {escape(decision['reason'])}.</p>" if decision else ""
    return _section("baseline", "Margin over the baseline recipe", f"<p>{text}</p>", reason)


def _leaderboard(rows: list[dict], metric: str) -> str:
    several = len({r.get("backbone") for r in rows}) > 1
    header = ["trial", "state", *(["backbone"] if several else []), "strategy", "head", metric, "± se",
              "best epoch", "epochs", "seconds", "trainable", "notes", "params"]
    body = [[r["trial"], r["state"], *([r["backbone"]] if several else []), r["strategy"], r["head"], r["score"],
             r["se"], r["best_epoch"] + 1 if isinstance(r["best_epoch"], int) else "", r["epochs"], r["seconds"],
             r["trainable_params"], r["error"] or r["summary"], json.dumps(r["params"], default=str)]
            for r in rows]
    numeric = {header.index(h) for h in (metric, "± se", "best epoch", "epochs", "seconds", "trainable")}
    table = _table(header, body, numeric, classes=[r["state"] for r in rows]) if rows else "<p>No trial yet.</p>"
    return _section("leaderboard", "Leaderboard", "<p>Every trial, best first; a pruned trial's score is its "
                    "last epoch's.</p>", table)


def _pareto(done: list[dict], metric: str, maximize: bool) -> str:
    from .charts import Point, pareto_front, score_vs_seconds

    points = [Point(r["trial"], r["strategy"], r["seconds"], r["score"]) for r in done
              if isinstance(r["seconds"], float) and isinstance(r["score"], float)]
    front = pareto_front(points, maximize)
    listed = ", ".join(f"#{p.trial} {escape(p.strategy)} ({p.score:.4f} in {p.seconds:.1f} s)" for p in front)
    return _section("pareto", "Score against seconds, per strategy",
                    score_vs_seconds(points, front, metric, "chart-pareto"),
                    f"<p>Pareto front (no other trial is both faster and better): {listed}.</p>")


def _curves(study, rows: list[dict], metric: str) -> str:
    from .charts import Curve, validation_curves

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    curves = [Curve(r["trial"], r["strategy"], r["state"], tuple(v for _, v in sorted(values.items())))
              for r in rows if (values := trials[r["trial"]].intermediate_values)]
    return _section("curves", "Validation curves", validation_curves(curves, metric, "chart-curves"),
                    "<p>Solid: complete trials; dashed, ending in a cross: pruned; dotted: running or failed.</p>")


def _importances(study) -> str:
    from .charts import importance_bars

    values, reason = _param_importances(study)
    if reason:
        return _section("importances", "Parameter importances",
                        f"<p>Parameter importances cannot be computed for this study: {escape(reason)}.</p>")
    ranked = [(k, float(v)) for k, v in values.items() if v > 0]
    rest = len(values) - len(ranked)
    return _section("importances", "Parameter importances",
                    "<p>How much each parameter explains of the validation score across completed trials "
                    "(optuna.importance.get_param_importances; a strategy's own parameters count only where "
                    "that strategy ran).</p>",
                    importance_bars(dict(ranked[:SHOWN_IMPORTANCES]), "chart-importances"),
                    _table(["parameter", "importance"], [list(r) for r in ranked], {1}),
                    f"<p>The other {rest} parameter(s) show no measurable importance.</p>" if rest else "")


def _param_importances(study) -> tuple[dict[str, float], str | None]:
    """Optuna's importances, best first, or why there are none worth showing."""
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete < 3:  # with two trials, any parameter that differs explains the whole difference
        return {}, f"only {complete} trial(s) completed, and importances need at least 3"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = get_param_importances(study)
        except (ValueError, RuntimeError) as exc:  # e.g. a search space Optuna's evaluator cannot use
            return {}, str(exc).rstrip(".")
    # Optuna warns when its numbers carry no information (trials too few to tell apart).
    equal = [str(w.message).rstrip(".") for w in caught if "will be equal" in str(w.message)]
    if equal:
        return {}, equal[0]
    if not any(v > 0 for v in values.values()):
        return {}, "no parameter explains any of the score's variation"
    return values, None


def _test(info: dict | None, run_dir: Path) -> str:
    test = ((info or {}).get("scores") or {}).get("test")
    title = "The final model on the test set"
    if not test:
        return _section("test", title, "<p>No test set was scored: pass <code>--test T.csv</code> to "
                        "<code>autotl search</code> to score the final model once on held-out rows.</p>")
    predictions = _read_predictions(run_dir)
    if predictions is None or len(predictions) != test["rows"]:
        return _section("test", title, f"<p>The test scores are in the summary above, but {TEST_PREDICTIONS} "
                        "(what the charts need) is missing or belongs to another model: run the search again "
                        "with --test to write it.</p>")
    task = (info.get("data") or {}).get("task")
    if task == "classification":
        return _section("test", title, *_classification(predictions, info["data"].get("label_names") or []))
    if task == "regression":
        return _section("test", title, *_regression(predictions))
    return _section("test", title, f"<p>No test chart for the task '{escape(str(task))}'.</p>")


def _read_predictions(run_dir: Path) -> list[dict] | None:
    try:
        with open(run_dir / TEST_PREDICTIONS, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError:
        return None


def _classification(predictions: list[dict], label_names: list[str]) -> list[str]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from .charts import confusion_matrix_chart

    true, guess = [p["true"] for p in predictions], [p["predicted"] for p in predictions]
    labels = list(dict.fromkeys([*label_names, *true, *guess]))  # the training order, then any stranger
    matrix = confusion_matrix(true, guess, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(true, guess, labels=labels, zero_division=0)
    per_class = [[label, float(p), float(r), float(f), int(s)]
                 for label, p, r, f, s in zip(labels, precision, recall, f1, support)]
    wrong = [[p["text"][:300], p["true"], p["predicted"]] for p in predictions if p["true"] != p["predicted"]]
    return ["<p>Rows: the true label; columns: the predicted one.</p>",
            confusion_matrix_chart(matrix, labels, "chart-confusion"),
            '<div id="per-class">',
            _table(["label", "precision", "recall", "F1", "test rows"], per_class, {1, 2, 3, 4}), "</div>",
            f"<h3>Misclassified test rows ({len(wrong)}; the first {min(len(wrong), SHOWN_ERRORS)})</h3>",
            _table(["text", "true", "predicted"], wrong[:SHOWN_ERRORS])]


def _regression(predictions: list[dict]) -> list[str]:
    from .charts import residual_charts

    true = [float(p["true"]) for p in predictions]
    guess = [float(p["predicted"]) for p in predictions]
    worst = sorted(zip(predictions, true, guess), key=lambda x: -abs(x[2] - x[1]))[:SHOWN_ERRORS]
    mean = sum(g - t for t, g in zip(true, guess)) / len(true)
    return [f"<p>Mean residual (predicted − true): {mean:+.4f}.</p>",
            residual_charts(true, guess, "chart-residuals"),
            f"<h3>Largest test errors (the first {len(worst)})</h3>",
            _table(["text", "true", "predicted", "residual"],
                   [[p["text"][:300], t, g, g - t] for p, t, g in worst], {1, 2, 3})]


def rebuild_reports(run_dir, *, storage: str | None = None, study_name: str | None = None) -> Path:
    """Write RUN_DIR/report.md and report.html again from the study and RUN_DIR/best: at
    any time, while the search still runs too. `storage`: the search's --storage (default
    RUN_DIR/study.journal); `study_name`: default the run directory's own study."""
    from .decide import CHOICE
    from .final import read_info
    from .knowledge import KNOWLEDGE_ATTR
    from .report import leaderboard, write_report
    from .study import DATA_PROFILE, IDENTITY_ATTR, TRANSFERABILITY

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} {'is not a directory' if run_dir.exists() else 'does not exist'}; "
                         "pass the --out directory of an `autotl search`")
    study = _open_study(run_dir, storage, study_name)
    metric = (study.user_attrs.get(IDENTITY_ATTR) or {}).get("metric")
    if not metric:
        raise UsageError(f"study '{study.study_name}' was not started by `autotl search` (it records no metric)")
    rows = leaderboard(study)
    info = read_info(run_dir)
    if info is not None and info.get("study") != study.study_name:
        info = None  # best/ of another study: not this report's model
    write_report(rows, info, run_dir, metric, decision=study.user_attrs.get(CHOICE),
                 ranking=study.user_attrs.get(TRANSFERABILITY), knowledge=study.user_attrs.get(KNOWLEDGE_ATTR),
                 profile=study.user_attrs.get(DATA_PROFILE))
    return write_html_report(study, rows, info, run_dir, metric)


def _open_study(run_dir: Path, storage: str | None, study_name: str | None):
    """The run's study, opened without creating anything: a missing journal is an error."""
    from .config import RunConfig
    from .runner import OWNER
    from .storage import open_storage, storage_arg
    from .study import load_study

    url = storage_arg(storage, run_dir)
    if "://" not in url and not Path(url).is_file():
        if storage is None:
            raise UsageError(f"{run_dir} holds no autotl study (no {Path(url).name}); pass the --out directory of "
                             "an `autotl search`, or --storage and --study-name for a study kept elsewhere")
        raise UsageError(f"study journal {url} does not exist")
    if study_name is None:
        try:
            study_name = json.loads((run_dir / OWNER).read_text()).get("study")
        except (OSError, ValueError, AttributeError):
            study_name = None
    return load_study(open_storage(url, run_dir), study_name or RunConfig.study_name)
