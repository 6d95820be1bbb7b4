"""Run the study: trials until the budget is spent, best/ kept current, then the outputs."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from . import study as studies
from .batching import concat
from .errors import AutotlError
from .export import INFO, find_best, load_model, restore_best, save_best
from .objective import POOLING, STRATEGY, Objective, run_params
from .report import format_table, leaderboard, write_leaderboard, write_report
from .train import release_memory

log = logging.getLogger("autotl")


def run_study(*, setup, target, tokenizer, run_dir: Path, storage, study_name, seed, n_trials,
              budget, refit: bool, max_length, backbone, record, pruner: str = studies.DEFAULT_PRUNER,
              spec=None, slots=None):
    """The whole search: open the study, run trials (here, or in one worker process per slot),
    then the final model, its test score, the leaderboard and the report."""
    from .api import SearchResult
    from .artifacts import open_artifacts

    restore_best(run_dir)
    study = studies.create_or_resume(
        storage=studies.open_storage(storage, run_dir), study_name=study_name, record=record,
        maximize=setup.fit.metric.maximize, seed=seed,
        portfolio=studies.portfolio(setup.strategies, setup.poolings), pruner=pruner)
    if spec is not None:
        studies.save_spec(study, spec)
    store = open_artifacts(spec.artifacts) if spec is not None and spec.artifacts else None
    info_base = {"backbone": backbone.name, "metric": setup.fit.metric.name, "data": target.schema(),
                 "study": study_name}
    if _done(study, n_trials):
        interrupted = False
        log.info("the study already has %d finished trials; raise --n-trials to run more", n_trials)
    elif slots is not None and len(slots) > 1:
        from .workers import run_workers

        interrupted = run_workers(slots, storage=studies.storage_arg(storage, run_dir), study_name=study_name)
        # A worker killed mid-trial left it RUNNING: fail and re-queue it, and run what is
        # left of the budget here (the survivors may have stopped before it was re-queued).
        studies.recover_dead_trials(study)
        if not interrupted and not _done(study, n_trials) and not budget.passed(within=budget.shortest_epoch):
            interrupted = work(study, setup, tokenizer=tokenizer, run_dir=run_dir, store=store, budget=budget,
                               n_trials=n_trials, refit=refit, info_base=info_base, max_length=max_length)
    else:
        interrupted = work(study, setup, tokenizer=tokenizer, run_dir=run_dir, store=store, budget=budget,
                           n_trials=n_trials, refit=refit, info_base=info_base, max_length=max_length)

    best = _best_trial(study)
    info = None
    if best is not None and not interrupted:
        if store is not None and not _holds(run_dir, best, study_name):
            from .artifacts import export_best

            export_best(study, store, run_dir)  # trained by another process
        info = _final_model(best, setup, tokenizer, run_dir, max_length, info_base, refit, budget)
        if target.test is not None:
            info = _score_test(run_dir, target, setup)
    elif best is not None:
        info = _read_info(run_dir)
    rows = leaderboard(study)
    write_leaderboard(rows, run_dir)
    write_report(rows, info, run_dir, setup.fit.metric.name)
    if best is None and not interrupted:
        failed = [r for r in rows if r["error"]]
        hint = f"; first error: {failed[0]['error']}" if failed else ""
        raise AutotlError(f"no trial finished in {run_dir} ({len(rows)} tried){hint}")
    print(format_table(rows, setup.fit.metric.name))
    best_path = run_dir / "best" if best is not None else None
    if best_path is not None:
        print(f"\nbest: trial {best.number} {best.params[STRATEGY]}/{best.params[POOLING]} "
              f"{setup.fit.metric.name}={best.value:.4f} -> {best_path}")
        if info and (info.get("scores") or {}).get("test"):
            test = info["scores"]["test"]["metrics"]
            print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items()))
    return SearchResult(run_dir=run_dir, best_model=best_path,
                        best_params=dict(best.params) if best else {},
                        best_score=best.value if best else None, metric=setup.fit.metric.name,
                        test_scores=(info or {}).get("scores", {}).get("test") if info else None,
                        leaderboard=rows, interrupted=interrupted)


def work(study, setup, *, tokenizer, run_dir: Path | None, store, budget, n_trials, refit: bool,
         info_base: dict, max_length: int) -> bool:
    """Run trials of `study` in this process until `n_trials` finished trials exist in the
    whole study (every worker counts) or the budget is spent. A trial that beats the best so
    far uploads its model to `store` and (with a `run_dir`) is exported as best/ under a lock.
    Returns whether Ctrl-C stopped it."""
    # Our own line reports each failed trial; Optuna's warning would repeat it with a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies.recover_dead_trials(study)
    sign = 1 if setup.fit.metric.maximize else -1

    def upload_if_best(trial, outcome) -> None:
        best = _best_trial(study)
        if store is not None and (best is None or sign * outcome.result.best_score > sign * best.value):
            from .artifacts import upload_model

            upload_model(trial, outcome.model, tokenizer, _info(info_base, trial, outcome.summary, outcome),
                         max_length=max_length, store=store)

    objective = Objective(setup, on_complete=upload_if_best)

    def on_trial(study, trial) -> None:
        outcome = objective.pending.pop(trial.number, None)
        best = _best_trial(study)
        is_best = trial.state is TrialState.COMPLETE and best is not None and best.number == trial.number
        if is_best and outcome is not None and run_dir is not None:
            def still_best():
                now = _best_trial(study)
                return now is not None and now.number == trial.number

            save_best(outcome.model, tokenizer, run_dir, _info(info_base, trial, outcome.summary),
                      max_length=max_length, still_best=still_best)
        if is_best and refit:
            # Keep time back for the refit only if it can fit at all; otherwise the
            # trial's own model is final and the budget goes to more trials.
            needed = _refit_seconds(trial, setup)
            budget.reserve = needed if budget.fits(needed) else 0.0
        log.info("%s", _trial_line(trial, setup.fit.metric.name, is_best, best))
        del outcome
        release_memory(setup.fit.device)
        if budget.passed(within=budget.shortest_epoch):
            study.stop()  # not even the cheapest epoch seen fits before the deadline (and refit)
        else:
            studies.recover_dead_trials(study)  # a killed worker's trial is re-queued by us
            if _done(study, n_trials):
                study.stop()  # this worker's and the others' trials reached n_trials

    if _done(study, n_trials):
        return False
    try:
        # No per-process trial count: several workers share n_trials, and a re-queued trial
        # of a killed worker runs even past it; on_trial stops the loop.
        study.optimize(objective, n_trials=None, catch=(Exception,), callbacks=[on_trial])
    except KeyboardInterrupt:
        if objective.interrupted is not None:  # Optuna failed it; run it again next time
            study.enqueue_trial(objective.interrupted)
        log.warning("interrupted: finished trials and the best model so far are kept%s; "
                    "run the same command again to resume", f" in {run_dir}" if run_dir else "")
        return True
    return False


def _done(study, n_trials: int | None) -> bool:
    """n_trials finished trials exist and no killed worker's trial waits to run again
    (without n_trials only the budget ends the search)."""
    return (n_trials is not None and studies.remaining_trials(study, n_trials) <= 0
            and studies.requeued_waiting(study) == 0)


def _holds(run_dir: Path, trial, study_name: str, info: dict | None = None) -> bool:
    """Whether RUN_DIR/best holds `trial` of this study (`info`: its autotl.json, if read)."""
    info = _read_info(run_dir) if info is None else info
    return info is not None and info.get("trial") == trial.number and info.get("study") == study_name


def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _info(base: dict, trial, summary: str, outcome=None) -> dict:
    """autotl.json's content for `trial`; from `outcome` while the trial is still running."""
    if outcome is not None:
        result = outcome.result
        value, attrs = result.best_score, {"best_epoch": result.best_epoch, "epoch_scores": list(result.scores),
                                           "trainable_params": result.trainable_params}
    else:
        value, attrs = trial.value, trial.user_attrs
    return {**base, "refit": None, "trial": trial.number, "strategy": trial.params[STRATEGY],
            "params": dict(trial.params), "summary": summary,
            "scores": {"val": value, "best_epoch": attrs.get("best_epoch"),
                       "epoch_scores": attrs.get("epoch_scores"), "test": None},
            "trainable_params": attrs.get("trainable_params")}


def _read_info(run_dir: Path) -> dict | None:
    try:
        return json.loads((find_best(run_dir) / INFO).read_text())
    except AutotlError:
        return None


def _final_model(best, setup, tokenizer, run_dir, max_length, info_base, refit: bool, budget=None) -> dict:
    """best/ must hold the study's best trial, refit on all labelled rows when `refit`.

    The trial's own model is exported as soon as it wins; the refit retrains the same
    configuration on train + validation rows for the epochs that won (the validation rows
    are data the final model should learn from; they have done their job of choosing).
    When best/ holds another trial (it finished in another process, or the search died
    before exporting), the configuration is rebuilt from its params alone. A refit that
    would overrun the `budget` is skipped: the trial's own model is final.
    """
    info = _read_info(run_dir)
    current = _holds(run_dir, best, info_base["study"], info)
    if refit and current and not info.get("refit") and budget is not None:
        needed = _refit_seconds(best, setup)
        if not budget.fits(needed):
            log.info("no time left for the refit (about %.0f s needed, %.0f s left): keeping trial %d's "
                     "own model", needed, max(0.0, budget.end - budget.clock()), best.number)
            return info
    if current and (not refit or info.get("refit")):
        return info
    epochs = int(best.user_attrs.get("best_epoch", 0)) + 1
    # No deadline: the budget kept time back for this, and a final model must train in full.
    fit = replace(setup.fit, deadline=None)
    if refit:
        rows = concat(setup.train, setup.val)
        log.info("refitting trial %d's configuration on all %d labelled rows for %d epoch(s)",
                 best.number, len(rows), epochs)
        final = replace(setup, train=rows, val=None,
                        fit=replace(fit, max_epochs=epochs, finalize_choice=best.user_attrs.get("finalized")))
        outcome = run_params(final, dict(best.params), desc=f"refit trial {best.number}")
        meta = {"rows": len(rows), "epochs": epochs, "seconds": round(outcome.result.seconds, 1)}
    else:
        log.info("rebuilding the best model (trial %d) from its parameters", best.number)
        outcome = run_params(replace(setup, fit=fit), dict(best.params), desc=f"rebuild trial {best.number}")
        meta = None
    save_best(outcome.model, tokenizer, run_dir,
              {**_info(info_base, best, outcome.summary), "refit": meta}, max_length=max_length)
    return _read_info(run_dir)


def _refit_seconds(trial, setup) -> float:
    """Estimated refit time of `trial`'s configuration: its seconds per epoch, for the
    epochs that won, scaled to train + validation rows."""
    epochs_run = max(1, len(trial.user_attrs.get("epoch_scores") or ()))
    per_epoch = float(trial.user_attrs.get("seconds", 0.0)) / epochs_run
    scale = (len(setup.train) + len(setup.val)) / max(1, len(setup.train))
    return per_epoch * (int(trial.user_attrs.get("best_epoch", 0)) + 1) * scale


def _score_test(run_dir: Path, target, setup) -> dict:
    """Score the exported model on --test once, with every metric of the task."""
    from .batching import encode
    from .metrics import METRICS
    from .train import infer, predictions

    model, tokenizer, info = load_model(run_dir, setup.fit.device)
    encoded = encode(tokenizer, target.test.texts, target.test.targets, info["max_length"], key="test")
    outputs = infer(model, encoded, pad_id=tokenizer.pad_token_id or 0, device=setup.fit.device)
    predicted = predictions(outputs, setup.fit.regression)
    metrics = {name: m(target.test.targets, predicted) for name, m in METRICS.items()
               if m.task == target.task.value}
    info["scores"]["test"] = {"rows": len(encoded), "metrics": metrics}
    path = find_best(run_dir) / INFO
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return info


def _trial_line(trial, metric: str, is_best: bool, best) -> str:
    name = f"trial {trial.number} {trial.params.get(STRATEGY, '?')}/{trial.params.get(POOLING, '?')}"
    secs = f"{trial.duration.total_seconds():.0f}s" if trial.duration else ""
    if trial.state is TrialState.COMPLETE:
        tag = "  (best so far)" if is_best else f"  (best: {best.value:.4f}, trial {best.number})"
        return f"{name}: {metric} {trial.value:.4f} in {secs}{tag}"
    if trial.state is TrialState.PRUNED:
        return f"{name}: pruned after epoch {(trial.last_step or 0) + 1} in {secs}"
    return f"{name}: failed: {trial.user_attrs.get('error', 'see the log')}"
