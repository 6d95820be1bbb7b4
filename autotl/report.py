"""The leaderboard (CSV, JSON, a printed table) and the human report of why the winner won."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from optuna.trial import TrialState

from .objective import BACKBONE, POOLING, STRATEGY, UPLOAD_ERROR

COLUMNS = ["trial", "state", "backbone", "strategy", "head", "score", "se", "best_epoch", "epochs", "seconds",
           "trainable_params", "summary", "params", "error"]


def _standard_errors(study) -> dict[int, float]:
    """Trial number -> standard error of its validation score (from its validation predictions)."""
    import numpy as np

    from .metrics import METRICS
    from .objective import VAL_PREDICTIONS
    from .select import standard_error
    from .study import VAL_TARGETS

    targets = study.user_attrs.get(VAL_TARGETS)
    metric = METRICS.get((study.user_attrs.get("autotl") or {}).get("metric", ""))
    if targets is None or metric is None:
        return {}
    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        predicted = t.user_attrs.get(VAL_PREDICTIONS)
        if predicted is not None and len(predicted) == len(targets):
            out[t.number] = round(standard_error(metric, np.asarray(targets), np.asarray(predicted)), 4)
    return out


def leaderboard(study) -> list[dict]:
    """One row per trial, best first (unfinished and failed trials last); a complete trial's
    score comes with its standard error."""
    rows = []
    errors = _standard_errors(study)
    from .study import did_not_run

    only = ((study.user_attrs.get("autotl") or {}).get("model") or "").split(",")[0]  # a one-backbone study's

    # WAITING trials (portfolio entries the budget did not reach), repeats of a configuration
    # and trials skipped for lack of time have not run: not listed
    for t in study.get_trials(deepcopy=False, states=[s for s in TrialState if s is not TrialState.WAITING]):
        if did_not_run(t):
            continue
        own = {k: v for k, v in t.params.items() if k not in (BACKBONE, STRATEGY, POOLING)}
        rows.append({
            "trial": t.number,
            "state": t.state.name.lower(),
            "backbone": t.params.get(BACKBONE) or only,
            "strategy": t.params.get(STRATEGY, ""),
            "head": t.params.get(POOLING) or t.user_attrs.get("head", ""),
            "score": t.value if t.state is TrialState.COMPLETE else _last(t),
            "se": errors.get(t.number, ""),
            "best_epoch": t.user_attrs.get("best_epoch", ""),
            "epochs": len(t.intermediate_values),  # validated epochs run (a pruned trial's too)
            "seconds": round(t.duration.total_seconds(), 1) if t.duration else "",
            "trainable_params": t.user_attrs.get("trainable_params", ""),
            "summary": "; ".join(filter(None, [
                # why `autotl export` cannot fetch this trial's model
                f"model not uploaded: {t.user_attrs[UPLOAD_ERROR]}" if UPLOAD_ERROR in t.user_attrs else "",
                t.user_attrs.get("summary", t.user_attrs.get("truncated", ""))])),
            "params": own,
            "error": t.user_attrs.get("error", ""),
        })
    sign = 1 if study.direction.name == "MAXIMIZE" else -1
    rank = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}
    rows.sort(key=lambda r: (rank.get(r["state"], 5), -sign * (r["score"] if r["score"] != "" else 0)))
    return rows


def _last(t):
    """A pruned trial's last reported score, for reference."""
    return t.intermediate_values[t.last_step] if t.last_step is not None else ""


def write_leaderboard(rows: list[dict], run_dir: Path) -> None:
    with open(run_dir / "leaderboard.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "params": json.dumps(row["params"], default=str)})
    (run_dir / "leaderboard.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")


def format_table(rows: list[dict], metric: str, limit: int = 15) -> str:
    """A fixed-width leaderboard for the terminal (a backbone column when several were searched)."""
    several = len({r.get("backbone") for r in rows}) > 1
    width = max([len("backbone")] + [len(str(r.get("backbone", ""))) for r in rows]) if several else 0
    backbone = f"{'backbone':<{width}} " if several else ""
    head = (f"{'#':>4}  {'state':<8} {backbone}{'strategy':<16} {'head':<8} {metric:>9} {'± se':>7} {'epoch':>5} "
            f"{'sec':>7} {'trainable':>10}  notes")
    lines = [head, "-" * len(head)]
    for r in rows[:limit]:
        score = f"{r['score']:.4f}" if isinstance(r["score"], float) else ""
        se = f"{r['se']:.4f}" if isinstance(r.get("se"), float) else ""
        epoch = r["best_epoch"] + 1 if isinstance(r["best_epoch"], int) else ""
        note = r["error"] or r["summary"]
        on = f"{str(r.get('backbone', '')):<{width}} " if several else ""
        lines.append(f"{r['trial']:>4}  {r['state']:<8} {on}{r['strategy'][:16]:<16} {r['head']:<8} "
                     f"{score:>9} {se:>7} {epoch:>5} {r['seconds']:>7} {r['trainable_params']:>10}  {note[:60]}")
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more in leaderboard.csv")
    return "\n".join(lines)


def write_report(rows: list[dict], info: dict | None, run_dir: Path, metric: str, decision: dict | None = None,
                 ranking: list[dict] | None = None, knowledge: dict | None = None,
                 profile: dict | None = None) -> str:
    """report.md: the winner and how it was chosen (finalists ± standard errors, the margin
    over the baseline recipe), the final model, the test score, score against cost."""
    done = [r for r in rows if r["state"] == "complete"]
    lines = ["# autotl report", ""]
    if not done or info is None:
        lines.append("No trial finished, so there is no best model yet.")
    else:
        win = next((r for r in done if r["trial"] == info.get("trial")), done[0])
        se = f" ± {win['se']:.4f}" if isinstance(win.get("se"), float) else ""
        on = f" on `{win['backbone']}`" if ranking else ""
        lines += [f"**Winner:** trial {win['trial']}, `{win['strategy']}`{on} with the `{win['head']}` head "
                  f"({win['summary']}): validation {metric} **{win['score']:.4f}**{se} "
                  f"at epoch {win['best_epoch'] + 1}, {win['trainable_params']:,} trainable parameters, "
                  f"{win['seconds']} s.", ""]
        lines += _decision_lines(decision, metric)
        lines += backbone_lines(ranking, done, metric)
        lines += knowledge_lines(knowledge)
        if info.get("soup"):
            soup = info["soup"]
            lines += [f"**Soup:** the weights of trials {', '.join(map(str, soup['members']))} (same head) are "
                      f"averaged (greedy soup, Wortsman et al. 2022): validation {metric} {soup['val']:.4f} "
                      f"against {soup['base_val']:.4f} for trial {win['trial']} alone.", ""]
        if info.get("refit"):
            r = info["refit"]
            lines += [f"`best/` holds this configuration retrained on all {r['rows']} labelled rows "
                      f"(train + validation) for the {r['epochs']} epoch(s) that won; the validation "
                      "score above is the trial's, measured before the refit.", ""]
        elif info.get("refit_skipped"):
            lines += [f"**No refit:** {info['refit_skipped']}.", ""]
        if info.get("second_look"):
            look = info["second_look"]
            lines += [f"**Second look:** the epoch kept ended mid-schedule, so the configuration was trained "
                      f"again for {look['epochs']} epoch(s) on a schedule ending there: validation {metric} "
                      f"{look['val']:.4f} against the trial's {look['trial_val']:.4f} (one paired SE "
                      f"{look['margin']:.4f}); `best/` holds "
                      + ("that schedule refit on all labelled rows." if look["refit"] else
                         "that model (trained on the training rows)."), ""]
        test = (info.get("scores") or {}).get("test")
        if test:
            lines += [f"**Test set** ({test['rows']} rows, scored once for this model): "
                      + ", ".join(f"{k} {v:.4f}" for k, v in test["metrics"].items()), ""]
        data = data_lines(profile, rows)
        if data:
            lines += ["**Data**", "", *data, ""]
        lines += _cost_table(rows, done, win, metric)
        lines.append("")
        if info["head"]["pipeline_compatible"]:
            lines.append("The winner uses the standard classification head: "
                         '`transformers.pipeline("text-classification", model="best")` loads it '
                         "directly and predicts what `autotl predict` predicts.")
        elif info["head"].get("pooling") == "standard":  # cut head+tail in training (export._head_info)
            lines.append("The winner uses the standard classification head but was trained on long texts cut "
                         "head+tail, which `transformers.pipeline` does not do: use `autotl predict` or "
                         "`autotl.load()`. Search with `--standard-head` for a model that the pipeline serves as "
                         "autotl does.")
        else:
            lines.append("The winner uses a mean-pooled head, which plain transformers cannot load: "
                         "use `autotl predict` or `autotl.load()`. Search with `--standard-head` "
                         "for a model that `transformers.pipeline` loads directly.")
    text = "\n".join(lines) + "\n"
    (run_dir / "report.md").write_text(text)
    return text


def backbone_lines(ranking: list[dict] | None, done: list[dict], metric: str) -> list[str]:
    """The backbones as ranked before training (LogME, probe) beside the best each reached,
    and how well each ranking score foretold it (Spearman over the backbones that trained)."""
    if not ranking:
        return []
    from .transfer import spearman

    best = {}
    for r in done:  # rows come best first
        best.setdefault(r["backbone"], r)
    lines = ["**Backbones**, ranked before any training on their frozen features (LogME, You et al. 2021; "
             f"a ridge probe's {metric} over 5 folds of the training rows), and the best validation {metric} "
             "each reached:", "",
             f"| rank | backbone | LogME | probe {metric} | forward pass s | best trained {metric} | trials |",
             "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(ranking, 1):
        won = best.get(r["backbone"])
        trained = f"{won['score']:.4f} (trial {won['trial']}, {won['strategy']})" if won else (
            "none: hopeless here" if r.get("hopeless") else "none")
        count = sum(d["backbone"] == r["backbone"] for d in done)
        lines.append(f"| {i} | {r['backbone']} | {r['logme']:.3f} | {r['probe']:.4f} ± {r['probe_se']:.4f} | "
                     f"{r.get('seconds', 0.0):.1f} | {trained} | {count} |")
    from .metrics import METRICS

    # every score oriented higher-is-better, so +1 always means the ranking foretold the order
    # (LogME is an evidence, higher-is-better; the probe and the trials share the metric's direction)
    sign = 1.0 if getattr(METRICS.get(metric), "maximize", True) else -1.0
    trained = [r for r in ranking if r["backbone"] in best]
    finals = [sign * best[r["backbone"]]["score"] for r in trained]
    if len(trained) >= 2:
        oriented = "" if sign > 0 else f" ({metric} is better lower: +1 means the lower {metric} was foretold)"
        lines += ["", f"Rank correlation with the best trained score over {len(trained)} backbones (Spearman"
                      f"{oriented}): LogME {_fmt(spearman([r['logme'] for r in trained], finals))}, "
                      f"probe {_fmt(spearman([sign * r['probe'] for r in trained], finals))}."]
    return lines + [""]


def data_lines(profile: dict | None, rows: list[dict] | None = None) -> list[str]:
    """Markdown bullets: the class balance, the text pair (if one), the training texts' token
    lengths and the unlabeled rows (if any)."""
    from .balance import IMBALANCE_RATIO, describe, is_imbalanced
    from .lengths import describe as lengths

    lines = []
    balance = (profile or {}).get("class_balance")
    if balance:
        note = (f"; the rarest class has under {IMBALANCE_RATIO:.0%} of the largest's rows, so a class-weighted "
                "loss was searched" if is_imbalanced(balance) else "")
        lines.append(f"- class balance (train + validation rows): {describe(balance, limit=12)}{note}")
    pair = (profile or {}).get("text_pair")
    if pair:
        lines.append(f"- text pair `{pair[0]}` + `{pair[1]}`: each row's two texts encoded together (the tokenizer's "
                     "pair encoding), cut from the longer one's end when too long; lengths below count both")
    found = (profile or {}).get("lengths")
    if found:
        lines.append(f"- text length in tokens (training rows): {lengths(found)}; 90th percentile {found.get('p90')}, "
                     f"99th {found.get('p99')}; the model takes at most {found.get('model_limit')}")
    note = unlabeled_note(profile, rows)
    if note:
        lines.append(f"- unlabeled rows (texts without a label): {note}")
    return lines


def unlabeled_note(profile: dict | None, rows: list[dict] | None = None) -> str | None:
    """How many unlabeled rows were found and kept, and how many trials (`rows`: the
    leaderboard) of which strategies read them; None when there were none."""
    unlabeled = (profile or {}).get("unlabeled")
    if not unlabeled:
        return None
    kept = unlabeled.get("kept", unlabeled.get("used"))  # "used": what profiles recorded before "kept"
    capped = " (a random sample: at most that many are kept)" if kept < unlabeled["found"] else ""
    note = f"{unlabeled['found']} found, {kept} kept{capped}"
    readers = unlabeled.get("readers")
    if readers is None or rows is None:  # an older profile, or no trials to count
        return note
    if not readers:
        return note + "; not used: no strategy searched reads them"
    ran = [r["strategy"] for r in rows if r["strategy"] in readers and r["state"] in ("complete", "pruned")]
    if not ran:
        return note + f"; not used: no trial of {', '.join(readers)} ran"
    counts = ", ".join(f"{name} {ran.count(name)}" for name in readers if name in ran)
    return note + f"; read by {len(ran)} trial(s) ({counts})"


def knowledge_lines(knowledge: dict | None) -> list[str]:
    """Which past searches the first trials were learned from, and how similar they were."""
    if not knowledge:
        return []
    past = knowledge.get("learned_from") or []
    if not past:
        return ["**Warm start:** no similar past search in the knowledge base; the first trials are the "
                "learned portfolio's.", ""]
    names = ", ".join(f"`{p['id']}` ({p.get('name')}, {p.get('rows')} rows, similarity {p['similarity']:.2f})"
                      for p in past)
    first = len(knowledge.get("first") or [])
    if not first:
        return [f"**Warm start:** the most similar past searches, {names}, had no best configuration this search "
                "can run (other strategies or heads); the first trials are the learned portfolio's.", ""]
    return [f"**Warm start:** the first {first} configuration{'s were' if first > 1 else ' was'} learned from "
            f"past searches: {names}.", ""]


def _fmt(x: float) -> str:
    return "undefined (ties)" if x != x else f"{x:+.2f}"


def _decision_lines(decision: dict | None, metric: str) -> list[str]:
    """How the winner was chosen: the finalists' pooled scores, paired differences, the rule."""
    if not decision:
        return []
    rounds = decision.get("rounds", 0)
    evidence = (f"the validation split and {rounds} re-scoring fold(s) of cross-validation" if rounds
                else "the validation split")
    lines = ["## How the winner was chosen", "",
             f"Finalists: the best trial and those within two standard errors of it on {evidence}; "
             "each score is pooled over every row it was scored on, and each difference is paired "
             "(the same rows for both). Among ties within one standard error the cheaper configuration "
             "wins (one-standard-error rule).", "",
             f"| trial | configuration | {metric} ± se | rows | minus the best ± se | seconds | tied |",
             "|---|---|---|---|---|---|---|"]
    for f in decision["finalists"]:
        chosen = " **(chosen)**" if f["trial"] == decision["chosen"] else ""
        lines.append(f"| {f['trial']}{chosen} | {f['label']} | {f['score']:.4f} ± {f['se']:.4f} | {f['rows']} | "
                     f"{f['diff']:+.4f} ± {f['diff_se']:.4f} | {f['cost']:.0f} | {'yes' if f['tied'] else 'no'} |")
    lines += ["", f"**Why:** {decision['reason']}.", ""]
    from .decide import baseline_caveat

    base = decision.get("baseline")
    if base:
        lines += [f"**Margin over the baseline recipe** (trial {base['trial']}, the hand recipe: the model's own "
                  f"head, lr 5e-5, 3 epochs, batch 32): {base['margin']:+.4f} ± {base['se']:.4f} {metric}, "
                  f"paired on {base['rows']} validation rows{baseline_caveat(base)}.", ""]
    else:
        lines += ["The baseline recipe did not run in this search (excluded, or the budget ended first), so "
                  "there is no margin over it.", ""]
    return lines


def _cost_table(rows: list[dict], done: list[dict], win: dict, metric: str) -> list[str]:
    """Per strategy: the best score against what the search spent on it (accuracy vs cost)."""
    lines = ["## Score against cost, per strategy", "",
             "Seconds spent counts every trial of the strategy (pruned and failed too); seconds per "
             "epoch is the median over its trials, validation included.", "",
             f"| strategy | best {metric} | margin to winner | trials (complete/pruned/failed) | "
             "seconds spent | seconds per epoch |", "|---|---|---|---|---|---|"]
    for strategy in dict.fromkeys(r["strategy"] for r in rows if r["strategy"]):
        mine = [r for r in rows if r["strategy"] == strategy]
        best = next((r for r in done if r["strategy"] == strategy), None)
        count = "/".join(str(sum(r["state"] == s for r in mine)) for s in ("complete", "pruned", "fail"))
        spent = sum(r["seconds"] for r in mine if isinstance(r["seconds"], float))
        per_epoch = sorted(r["seconds"] / r["epochs"] for r in mine
                           if isinstance(r["seconds"], float) and r.get("epochs"))
        median = f"{per_epoch[len(per_epoch) // 2]:.1f}" if per_epoch else "-"
        score = f"{best['score']:.4f} | {best['score'] - win['score']:+.4f}" if best else "- | -"
        lines.append(f"| {strategy} | {score} | {count} | {spent:.0f} | {median} |")
    return lines
