"""After the trials: the choice, the final model (soup, refit), the ensemble, the test score.

In order (each step logs what it did and why):
1. `decide`: the finalists re-scored on more evidence, then the one-standard-error rule.
2. A greedy soup (`soup.py`) starting from the chosen trial's model: the stored models of
   the same head averaged in, best first, while validation does not get worse; kept only if
   it validates strictly better than the chosen model alone.
3. The refit: the chosen configuration (every soup ingredient, for a soup) retrained on
   train + validation rows for the epochs that won — where the epoch kept ended its
   schedule (`refit_allowed`). A single model kept mid-schedule gets a second look first
   (`second_look`): its configuration trained for the kept epochs on a schedule that ends
   there, on the training rows, validated; if that ties or beats the trial (one paired
   standard error), the refit trains that schedule on all labelled rows (or, when the
   refit does not fit, the second look's model is exported); otherwise the trial's own
   model is exported as validated. Soup and ensemble members kept mid-schedule are not
   refit. A refit
   that would end past the timeout by one of its epochs or more is skipped (less is
   allowed: the budget's promise for trials): a soup falls back to its chosen configuration
   alone (or, when that does not fit either, is kept as trained), a single model keeps the
   trial's own weights (from the stored candidates, else rebuilt). autotl.json's
   `refit_skipped` says why a refit was skipped.
4. With ``--ensemble K``: the chosen and the next best K-1 configurations, each refit as
   the budget allows, saved as RUN_DIR/ensemble (served by `autotl predict RUN_DIR`).
5. The test set, scored once for what was exported (best/, and the ensemble).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from . import candidates
from .batching import concat
from .errors import AutotlError
from .export import save_best
from .multitask import TASK_SCORES
from .objective import (BACKBONE, HORIZON, MID_SCHEDULE, SPANS, STRATEGY, THRESHOLD, VAL_PREDICTIONS, head_of,
                        run_params)

log = logging.getLogger("autotl")


def info_for(base: dict, trial, summary: str, outcome=None) -> dict:
    """autotl.json's content for `trial`; from `outcome` while the trial is still running."""
    if outcome is not None:
        result = outcome.result
        value, attrs = result.best_score, {"best_epoch": result.best_epoch, "epoch_scores": list(result.scores),
                                           "trainable_params": result.trainable_params, THRESHOLD: result.threshold}
    else:
        value, attrs = trial.value, trial.user_attrs
    backbone = trial.params.get(BACKBONE) or base.get("backbone")  # which backbone won, with several
    info = {**base, "backbone": backbone, "refit": None, "soup": None, "trial": trial.number,
            "strategy": trial.params[STRATEGY],
            "params": dict(trial.params), "summary": summary,
            "scores": {"val": value, "best_epoch": attrs.get("best_epoch"),
                       "epoch_scores": attrs.get("epoch_scores"), "test": None},
            "trainable_params": attrs.get("trainable_params")}
    if attrs.get(THRESHOLD) is not None:  # multi-label: predict decides label sets with it (a refit keeps it)
        info[THRESHOLD] = attrs[THRESHOLD]
    tasks = trial.user_attrs.get(TASK_SCORES)  # multi-task: each task's validation score
    if tasks is not None:
        info["scores"]["tasks"] = tasks
    return info


def read_info(run_dir: Path) -> dict | None:
    """best/autotl.json, or None when there is no readable one."""
    from .export import read_info as read_checked

    try:
        return read_checked(run_dir)
    except AutotlError:
        return None


def holds(run_dir: Path, trial, study_name: str, info: dict | None = None, soup=None) -> bool:
    """Whether RUN_DIR/best holds `trial` of this study (as the soup `soup`, if given)."""
    info = read_info(run_dir) if info is None else info
    return (info is not None and info.get("trial") == trial.number and info.get("study") == study_name
            and (info.get("soup") or {}).get("members") == (list(soup.members) if soup else None))


def refit_seconds(trial, setup) -> float:
    """Estimated refit time of `trial`'s configuration: its seconds per epoch, for the
    epochs that won, scaled to train + validation rows."""
    scale = (len(setup.train) + len(setup.val)) / max(1, len(setup.train))
    return look_seconds(trial, setup) * scale


def refit_allowed(trial) -> bool:
    """Whether a refit would reproduce what `trial` validated: the epoch it kept ended its
    stage's schedule, the learning rate decayed to zero. An epoch kept mid-schedule is a
    snapshot at a high rate, picked as the best of several by validation; retraining to the
    same epoch on more rows gives another such snapshot that nothing validated, and a noisy
    one (measured: AG News, 1,000 rows, 1x the recipe's time, epoch 1 of 6 kept: the
    trial's own model scored 0.865 and 0.859 test on two seeds, its one-epoch refits 0.845
    and 0.792; the recipe 0.872 and 0.880). Such a trial's own model is exported instead."""
    return not trial.user_attrs.get(MID_SCHEDULE)


@dataclass(frozen=True)
class SecondLook:
    """`trial`'s configuration trained for its kept epochs on a schedule ending there, validated."""

    outcome: object  # objective.TrialOutcome (its model, FitResult, summary)
    horizon: tuple[int, ...]  # the schedule: epochs per stage, the last stage ending at the kept epoch
    score: float  # its validation score
    margin: float  # one paired standard error of its difference from the trial's kept model
    accepted: bool  # ties or beats the trial's kept model (within `margin`) at its own last epoch


def schedule_to_kept_epoch(trial) -> tuple[int, ...] | None:
    """Epochs per stage of a schedule ending at `trial`'s kept epoch: the stages before it as
    they ran, its own stage cut there; None when the trial did not record its spans."""
    spans = trial.user_attrs.get(SPANS)
    kept = int(trial.user_attrs.get("best_epoch", 0)) + 1
    done = 0
    for index, span in enumerate(spans or ()):
        if kept <= done + span:
            return tuple(spans[:index]) + (kept - done,)
        done += span
    return None


def second_look(trial, setup) -> SecondLook | None:
    """Train `trial`'s configuration on the training rows for its kept epochs, on a schedule
    that ends at the last of them (the learning rate decays to zero there), and validate it.
    Accepted when its last epoch is the one it keeps and it validates no worse than the
    trial's own kept model by more than one paired standard error (the rule `train._Best`
    applies between epochs): then a refit of that schedule reproduces a validated procedure.
    None when the trial recorded no spans."""
    import numpy as np

    from .select import epoch_tie_margin

    horizon = schedule_to_kept_epoch(trial)
    if horizon is None:
        return None
    setup = setup.for_params(trial.params)
    epochs = sum(horizon)
    log.info("second look at trial %d: its configuration for %d epoch(s) on a schedule ending there",
             trial.number, epochs)
    look = replace(setup, fit=replace(setup.fit, deadline=None, max_epochs=epochs, horizon=horizon))
    outcome = run_params(look, dict(trial.params), desc=f"second look, trial {trial.number}")
    result, metric = outcome.result, setup.fit.metric
    own = trial.user_attrs.get(VAL_PREDICTIONS)
    margin = 0.0
    if own is not None and result.val_predictions is not None and not setup.fit.tasks:
        margin = epoch_tie_margin(metric, setup.val.targets, np.asarray(result.val_predictions), np.asarray(own))
    sign = 1 if metric.maximize else -1
    accepted = result.best_epoch == epochs - 1 and sign * (trial.value - result.best_score) <= margin
    return SecondLook(outcome, horizon, result.best_score, margin, accepted)


def look_seconds(trial, setup) -> float:
    """Estimated time of `trial`'s second look: its seconds per epoch, for the epochs it kept,
    on the training rows (refit_seconds scales this to train + validation rows)."""
    epochs_run = max(1, len(trial.user_attrs.get("epoch_scores") or ()))
    per_epoch = float(trial.user_attrs.get("seconds", 0.0)) / epochs_run
    return per_epoch * (int(trial.user_attrs.get("best_epoch", 0)) + 1)


def final_seconds(trial, setup) -> float:
    """What the end costs for `trial` chosen: its refit, and its second look first when it
    was kept mid-schedule (the budget keeps this back from the trials)."""
    if refit_allowed(trial):
        return refit_seconds(trial, setup)
    return look_seconds(trial, setup) + refit_seconds(trial, setup)


def _epochs_note(trial) -> str:
    scores = trial.user_attrs.get("epoch_scores") or ()
    return f"epoch {int(trial.user_attrs.get('best_epoch', 0)) + 1} of {len(scores)} run"


def refit_fits(budget, trials, setup) -> bool:
    """Whether refitting `trials` (one model each) started now ends before the timeout, or
    past it by less than one of their epochs: the same promise the budget makes for trials.
    (Measured: SST-2, 20 minutes, a refit missed the timeout by 2 s of a 59 s epoch, and
    352 s of the budget went unused.)"""
    if budget is None:
        return True
    needed = sum(refit_seconds(t, setup) for t in trials)
    one_epoch = max(refit_seconds(t, setup) / (int(t.user_attrs.get("best_epoch", 0)) + 1) for t in trials)
    return budget.fits(needed - 0.99 * one_epoch)


def final_model(trial, setup, tokenizer, run_dir: Path, *, max_length: int, info_base: dict, refit: bool,
                budget=None, soup=None, trials: dict | None = None) -> dict:
    """best/ holds `trial`'s configuration (or the soup `soup` started from it), refit on
    all labelled rows when `refit` and the budget allows; returns its autotl.json."""
    trials = trials or {trial.number: trial}
    own = setup.for_params(trial.params)
    if own is not setup:  # the chosen trial's own backbone, and its tokenizer for best/
        from .objective import tokenizer_of

        setup, tokenizer = own, tokenizer_of(own)
    info = read_info(run_dir)
    skipped = None  # why no refit, for autotl.json and the report
    look = None  # a single model kept mid-schedule: its second look, when accepted
    if refit and soup is None and not refit_allowed(trial):
        look, skipped = _look_or_why(trial, setup, budget)
        if look is None:
            log.info("no refit: trial %d's %s", trial.number, skipped)
            refit = False
    elif refit and soup is not None and not all(refit_allowed(trials[m]) for m in soup.members):
        mid = [m for m in soup.members if not refit_allowed(trials[m])]
        skipped = (f"trial(s) {', '.join(map(str, mid))} of the soup kept an epoch mid-schedule, at a "
                   "learning rate a refit would not validate: the soup is kept as trained")
        log.info("no refit: %s", skipped)
        refit = False
    if soup is not None and refit and budget is not None:
        needed = sum(refit_seconds(trials[m], setup) for m in soup.members)
        if not refit_fits(budget, [trials[m] for m in soup.members], setup):
            if refit_fits(budget, [trial], setup):
                log.info("no time to refit the soup's %d models (about %.0f s); the chosen configuration "
                         "alone is refit", len(soup.members), needed)
                soup = None
            else:
                # Neither refit fits: the soup as trained validated better than the chosen model
                # as trained, so it is the one kept (measured: SST-2, 20 minutes, the soup was
                # dropped for trial 0's own model when its refit missed the budget by 2 s).
                log.info("no time to refit the soup's %d models or the chosen configuration alone; the "
                         "soup is kept as trained", len(soup.members))
                skipped = "no time left to refit the soup: it is kept as trained"
                refit = False
    current = holds(run_dir, trial, info_base["study"], info, soup)
    if refit and not (current and info.get("refit")) and not refit_fits(budget, [trial], setup):
        log.info("no time left for the refit (about %.0f s needed, %.0f s left): keeping trial %d's %s",
                 refit_seconds(trial, setup), max(0.0, budget.end - budget.clock()), trial.number,
                 "second look" if look else "own model")
        skipped = ("no time left for it before the --timeout: the second look's model (trained on the "
                   "training rows) is kept" if look else
                   "no time left for it before the --timeout: the trial's own model is kept")
        refit = False
    if current and look is None and (not refit or info.get("refit")):
        if skipped and info.get("refit_skipped") != skipped:
            from .export import update_info

            update_info(run_dir, trial.number, info_base["study"], {"refit_skipped": skipped})
            info = read_info(run_dir)
        return info
    members = [trials[m] for m in soup.members] if soup else [trial]
    if refit:
        outcomes = [_refit(member, setup, horizon=look.horizon if look else None) for member in members]
        models = [o.model for o in outcomes]
        summary = outcomes[0].summary if len(members) == 1 else trial.user_attrs.get("summary", "")
        meta = {"rows": len(setup.train) + len(setup.val), "epochs": int(trial.user_attrs.get("best_epoch", 0)) + 1,
                "seconds": round(sum(o.result.seconds for o in outcomes), 1)}
    elif look is not None:  # the second look's model, validated, instead of the mid-schedule snapshot
        models, summary, meta = [look.outcome.model], look.outcome.summary, None
    else:
        models = [_trained_model(member, setup, run_dir) for member in members]
        summary, meta = trial.user_attrs.get("summary", ""), None
    model = models[0]
    if soup is not None:
        from .soup import soup_model

        model = soup_model(setup, head_of(trial.params, setup.strategies[trial.params[STRATEGY]].strategy),
                           [m.state_dict() for m in models])
    extra = {"refit": meta, "refit_skipped": skipped}
    if look is not None:
        extra["second_look"] = _look_info(look, trial, refit=refit)
    if soup is not None:
        extra["soup"] = {"members": list(soup.members), "val": soup.score, "base_val": soup.base_score}
        if soup.threshold is not None:  # the averaged model's own, tuned on validation
            extra[THRESHOLD] = soup.threshold
    save_best(model, tokenizer, run_dir, {**info_for(info_base, trial, summary), **extra}, max_length=max_length)
    return read_info(run_dir)


def _look_or_why(trial, setup, budget) -> tuple[SecondLook | None, str | None]:
    """(the accepted second look, None), or (None, why there is no refit) for a single model
    kept mid-schedule."""
    note = _epochs_note(trial)
    if budget is not None and not budget.fits(look_seconds(trial, setup)):
        return None, (f"the epoch kept ({note}) ended mid-schedule and there is no time for a second look "
                      "at a schedule ending there: the trial's own model is kept")
    look = second_look(trial, setup)
    if look is None:
        return None, (f"the epoch kept ({note}) ended mid-schedule, at a learning rate a refit would not "
                      "validate: the trial's own model is kept")
    metric = setup.fit.metric.name
    if not look.accepted:
        return None, (f"the epoch kept ({note}) ended mid-schedule; trained on a schedule ending there it "
                      f"validated {metric} {look.score:.4f} against the trial's {trial.value:.4f} (one paired "
                      f"SE {look.margin:.4f}): the trial's own model is kept")
    log.info("second look at trial %d accepted: validation %s %.4f on a schedule ending at epoch %d (the trial "
             "%.4f, one paired SE %.4f)", trial.number, metric, look.score, sum(look.horizon), trial.value,
             look.margin)
    return look, None


def _look_info(look: SecondLook, trial, *, refit: bool) -> dict:
    return {"epochs": sum(look.horizon), "horizon": list(look.horizon), "val": look.score,
            "trial_val": trial.value, "margin": look.margin, "refit": refit}


def _refit(trial, setup, horizon: tuple[int, ...] | None = None):
    """`trial`'s configuration trained on train + validation rows for the epochs that won
    (on the schedule `horizon` when given: a second look's, ending at them)."""
    setup = setup.for_params(trial.params)
    rows = concat(setup.train, setup.val)
    epochs = int(trial.user_attrs.get("best_epoch", 0)) + 1
    log.info("refitting trial %d's configuration on all %d labelled rows for %d epoch(s)%s",
             trial.number, len(rows), epochs, " on a schedule ending there" if horizon else "")
    if horizon is None and (shrunk := trial.user_attrs.get(HORIZON)):
        horizon = tuple(shrunk)
    # No deadline: the budget kept time back for this, and a final model must train in full.
    final = replace(setup, train=rows, val=None,
                    fit=replace(setup.fit, deadline=None, max_epochs=epochs,
                                finalize_choice=trial.user_attrs.get("finalized"), horizon=horizon))
    return run_params(final, dict(trial.params), desc=f"refit trial {trial.number}")


def final_ensemble(study, chosen, setup, tokenizer, run_dir: Path, *, size: int, max_length: int,
                   info_base: dict, refit: bool, budget=None) -> Path | None:
    """RUN_DIR/ensemble: the chosen configuration and the next best `size` - 1 (distinct
    configurations, by validation score), averaged predictions; each member refit when
    `refit` and the budget allows all of them, else the trials' own models. With several
    backbones, members come from the chosen one's (the ensemble shares one tokenizer)."""
    from optuna.trial import TrialState

    from .ensemble import ensemble_judged, save_ensemble
    from .objective import BACKBONE, tokenizer_of

    own = setup.for_params(chosen.params)
    if own is not setup:
        setup, tokenizer = own, tokenizer_of(own)
    sign = 1 if setup.fit.metric.maximize else -1
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: (-sign * t.value, t.number))
    members = [chosen]
    for t in ranked:
        if (len(members) < size and all(t.params != m.params for m in members)
                and t.params.get(BACKBONE) == chosen.params.get(BACKBONE)):
            members.append(t)
    if len(members) < 2:
        log.info("ensemble: only one configuration finished; no ensemble written")
        return None
    trial_models = [_trained_model(m, setup, run_dir) for m in members]
    judged = ensemble_judged(setup, trial_models)
    val_score = judged.score
    log.info("ensemble of trials %s: validation %s %.4f (the chosen trial alone: %.4f)",
             ", ".join(str(m.number) for m in members), setup.fit.metric.name, val_score, chosen.value)
    models, refit_meta = trial_models, None
    if refit:
        needed = sum(refit_seconds(m, setup) for m in members)
        if refit_fits(budget, members, setup):
            # a member kept mid-schedule keeps its own model (refit_allowed); the others are refit
            models = [_refit(m, setup).model if refit_allowed(m) else own for m, own in zip(members, trial_models)]
            del trial_models
            refit_meta = {"rows": len(setup.train) + len(setup.val),
                          "members": [m.number for m in members if refit_allowed(m)]}
        else:
            log.info("no time to refit the ensemble's %d members (about %.0f s); it keeps the trials' own "
                     "models", len(members), needed)
    if refit_meta is not None and not refit_meta["members"]:
        refit_meta = None
    member_infos = [{**info_for(info_base, m, m.user_attrs.get("summary", "")),
                     "refit": refit_meta if refit_meta and m.number in refit_meta["members"] else None}
                    for m in members]
    info = {**info_base, "trials": [m.number for m in members], "refit": refit_meta,
            "scores": {"val": val_score, "chosen_val": chosen.value, "test": None}}
    if judged.threshold is not None:  # the averaged probabilities' own threshold, over the members'
        info[THRESHOLD] = judged.threshold
    return save_ensemble(models, tokenizer, run_dir, member_infos, info, max_length=max_length)


def _trained_model(trial, setup, run_dir: Path):
    """`trial`'s trained model: from the stored candidates when kept, else trained again."""
    from .model import build_model

    setup = setup.for_params(trial.params)
    stored = next((c for c in candidates.listing(run_dir) if c["trial"] == trial.number), None)
    if stored is not None:
        strategy = setup.strategies[trial.params[STRATEGY]].strategy
        model = build_model(setup.backbone_path, head_of(trial.params, strategy), num_outputs=setup.num_outputs,
                            label_names=setup.label_names, regression=setup.fit.regression,
                            target_mean=setup.target_mean, multi_label=setup.fit.multilabel, tasks=setup.fit.tasks)
        model.load_state_dict(candidates.load_state(stored["path"]))
        return model.eval()
    log.info("rebuilding trial %d's model from its parameters", trial.number)
    fit = replace(setup.fit, deadline=None)
    return run_params(replace(setup, fit=fit), dict(trial.params), desc=f"rebuild trial {trial.number}").model


def score_test(path: Path, target, setup, *, trial: int | None = None, study: str | None = None) -> dict:
    """Score the exported model at `path` (RUN_DIR for best/, or the ensemble directory) on
    --test once, with every metric of the task, and store the scores in its autotl.json
    (ensemble.json). For best/ the write happens under the swap's lock and only if best/
    still holds `trial` of `study`."""
    from .batching import encode, truncation_of
    from .export import load_model, update_info
    from .metrics import METRICS
    from .multilabel import DEFAULT_THRESHOLD
    from .train import infer, predictions

    path = Path(path)
    model, tokenizer, info = load_model(path if trial is None else path / "best", setup.fit.device)
    encoded = encode(tokenizer, target.test.texts, target.test.targets, info["max_length"], key="test",
                     truncation=truncation_of(info))
    outputs = infer(model, encoded, pad_id=tokenizer.pad_token_id or 0, device=setup.fit.device)
    # multi-label: the threshold tuned on validation, never on the test rows
    threshold = info.get(THRESHOLD, DEFAULT_THRESHOLD) if setup.fit.multilabel else None
    if setup.fit.tasks:  # every task's metrics, "task:metric", and the mean objective
        from .multitask import decide, held_out_metrics

        predicted = decide(outputs, setup.fit.tasks)
        metrics = held_out_metrics(target.test.targets, predicted, setup.fit.tasks)
    else:
        predicted = predictions(outputs, setup.fit.regression, threshold)
        metrics = {name: m(target.test.targets, predicted) for name, m in METRICS.items()
                   if m.fits(target.task.value)}
    scores = {"rows": len(encoded), "metrics": metrics}
    if trial is not None:
        if update_info(path, trial, study, {"scores": {"test": scores}}):
            if not setup.fit.tasks:  # report.html's per-task charts are not drawn for multi-task yet
                from .html_report import save_test_predictions

                save_test_predictions(path, target, predicted)  # report.html's confusion matrix or residuals
        else:
            log.warning("best/ no longer holds trial %d: its test score is not recorded there", trial)
        return {**info, "scores": {**(info.get("scores") or {}), "test": scores}}
    file = path / "ensemble.json"
    stored = json.loads(file.read_text())
    stored.setdefault("scores", {})["test"] = scores
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored, indent=2, default=str) + "\n")
    os.replace(tmp, file)
    return stored


