"""Run the study: trials until the budget is spent, best/ kept current, then the outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import TrialState

from . import candidates
from . import study as studies
from .storage import open_storage, storage_arg
from .decide import CHOICE
from .errors import AutotlError, UsageError
from .progress import SearchProgress
from .export import clean_leftovers, restore_best, save_best, write_card_safely
from .final import final_model, final_seconds, holds, info_for, read_info, score_test
from .knowledge import KNOWLEDGE_ATTR, learn, record_search
from .objective import POOLING, SKIPPED, STRATEGY, UPLOAD_ERROR, Objective, compact, tokenizer_of
from .report import leaderboard, unlabeled_note, write_leaderboard, write_report
from .result import SearchResult
from .train import release_memory

log = logging.getLogger("autotl")
FINALIZING = "finalizing"  # study user attr: the search is choosing and writing the final model
MAX_SKIPPED = 5  # consecutive trials that did not run (repeats, too long for the budget) end the search


def run_study(config, prepared, *, budget, slots=None) -> SearchResult:
    """The whole search: open the study, run trials (here, or in one worker process per slot),
    then the choice, the final model, its test score, the leaderboard and the report."""
    from .artifacts import open_artifacts
    from .portfolio import first_trials, relative_costs

    setup, target, run_dir = prepared.setup, prepared.target, config.run_dir
    _claim(run_dir, config.study_name, prepared.identity["data"])
    restore_best(run_dir)
    clean_leftovers(run_dir)  # temporary directories of writers that crashed
    rows = len(setup.train) + len(setup.val)
    ranking = []  # the backbones ranked before the first trials (only for a new study)
    learned: dict = {}  # what the warm start learned from (knowledge.py)

    def portfolio() -> list[dict]:
        from . import sources

        several = len(setup.backbone_names()) > 1
        if several or config.use_knowledge:  # the meta-features hold the probe score and LogME
            ranking.extend(sources.assess_backbones(setup))
        prefer = []
        if config.use_knowledge:
            prefer, about = learn(config, target, setup, ranking)
            learned.update(about)
        trials = first_trials(setup.strategies, setup.poolings, rows, config.portfolio,
                              each_strategy=config.strategies is not None, prefer=prefer)
        return sources.first_trials(ranking, trials, maximize=setup.fit.metric.maximize) if several else trials

    study = studies.create_or_resume(
        storage=open_storage(config.storage, run_dir), study_name=config.study_name,
        identity=prepared.identity, maximize=setup.fit.metric.maximize, seed=config.seed,
        portfolio=portfolio, pruner=config.pruner, costs=relative_costs(rows, config.portfolio))
    if ranking:
        study.set_user_attr(studies.TRANSFERABILITY, [r.as_dict() for r in ranking])
    if learned:
        study.set_user_attr(KNOWLEDGE_ATTR, learned)
    studies.save_config(study, config)
    study.set_user_attr(FINALIZING, False)  # trials (again): best/ follows the best so far until the end
    if prepared.profile is not None:
        study.set_user_attr(studies.DATA_PROFILE, prepared.profile)
    if studies.VAL_TARGETS not in study.user_attrs:  # what every trial's validation predictions are scored against
        study.set_user_attr(studies.VAL_TARGETS, compact(setup.val.targets))
    store = open_artifacts(config.artifacts)
    clean_leftovers(store.root)  # uploads cut short by a crash
    info_base = {"backbone": prepared.backbone.name, "metric": setup.fit.metric.name, "data": target.schema(),
                 "study": config.study_name}
    if (study.user_attrs.get(KNOWLEDGE_ATTR) or {}).get("learned_from"):
        info_base["knowledge"] = {"learned_from": study.user_attrs[KNOWLEDGE_ATTR]["learned_from"]}
    run = dict(tokenizer=prepared.tokenizer, run_dir=run_dir, store=store, budget=budget, n_trials=config.n_trials,
               refit=config.refit, info_base=info_base, max_length=config.max_length,
               keep=max(candidates.KEEP, config.ensemble), rescore=config.rescore, progress=config.progress)
    if _done(study, config.n_trials):
        interrupted = False
        log.info("the study already has %d finished trials; raise --n-trials to run more", config.n_trials)
    elif slots is not None and len(slots) > 1:
        from .workers import run_workers

        # A worker that cannot join fails the search (WorkerError); it never falls back to one process.
        exited: set[str] = set()
        interrupted = run_workers(slots, storage=storage_arg(config.storage, run_dir),
                                  study_name=config.study_name, exited=exited)
        # A worker killed mid-trial left it RUNNING: fail and re-queue it now (they have all
        # exited: no heartbeat grace to wait out), and run what is left of the budget here.
        studies.recover_dead_trials(study, exited)
        if not interrupted and not _done(study, config.n_trials) and not budget.passed(within=budget.shortest_epoch):
            interrupted = work(study, setup, **run)
    else:
        interrupted = work(study, setup, **run)

    best = _best_trial(study)
    info = None
    if best is not None and not interrupted:
        info = _finish(study, best, setup, target, config, **run)
    elif best is not None:
        info = read_info(run_dir)
    if best is not None and not interrupted and config.use_knowledge:
        record_search(config, study, target, setup, chosen=(info or {}).get("trial"))
    rows = leaderboard(study)
    write_leaderboard(rows, run_dir)
    if info is not None and (run_dir / "best").is_dir():
        write_card_safely(run_dir / "best", info, rows)  # now with the leaderboard and the test score
    decision = study.user_attrs.get(CHOICE)
    write_report(rows, info, run_dir, setup.fit.metric.name, decision=decision,
                 ranking=study.user_attrs.get(studies.TRANSFERABILITY),
                 knowledge=study.user_attrs.get(KNOWLEDGE_ATTR), profile=study.user_attrs.get(studies.DATA_PROFILE))
    try:  # the page is documentation: one that cannot be drawn costs a warning, never the search's results
        from .html_report import write_html_report

        write_html_report(study, rows, info, run_dir, setup.fit.metric.name)
    except Exception as exc:
        log.warning("report.html was not written (%s: %s); `autotl report %s` writes it again",
                    type(exc).__name__, exc, run_dir)
    if best is None and not interrupted:
        failed = [r for r in rows if r["error"]]
        hint = f"; first error: {failed[0]['error']}" if failed else ""
        raise AutotlError(f"no trial finished in {run_dir} ({len(rows)} tried){hint}")
    chosen = study.trials[info["trial"]] if info and info.get("trial") is not None else best
    return SearchResult(run_dir=run_dir, best_model=run_dir / "best" if best is not None else None,
                        best_params=dict(chosen.params) if chosen else {},
                        best_score=chosen.value if chosen else None, metric=setup.fit.metric.name,
                        test_scores=((info or {}).get("scores") or {}).get("test"),
                        leaderboard=rows, interrupted=interrupted, chosen=chosen.number if chosen else None,
                        decision=decision, final=info,
                        unlabeled=unlabeled_note(study.user_attrs.get(studies.DATA_PROFILE), rows))


OWNER = "autotl-study.json"  # which study (and data) a run directory's outputs belong to


def _claim(run_dir: Path, study_name: str, fingerprint: str) -> None:
    """A run directory holds one study's outputs (best/, leaderboard, report): another
    study or other data must not overwrite them."""
    import json

    marker = run_dir / OWNER
    mine = {"study": study_name, "data": fingerprint}
    if marker.is_file():
        try:
            owner = json.loads(marker.read_text())
        except (OSError, ValueError):
            owner = None
        if isinstance(owner, dict) and (owner.get("study"), owner.get("data")) != (study_name, fingerprint):
            what = (f"study '{owner.get('study')}'" if owner.get("study") != study_name
                    else f"study '{study_name}' on other data")
            raise UsageError(f"{run_dir} holds the results of {what}; pass another --out (a run directory "
                              "holds one study)")
    else:
        marker.write_text(json.dumps(mine) + "\n")


def _finish(study, best, setup, target, config, *, store, tokenizer, run_dir, budget, refit, info_base, max_length,
            keep, rescore, **_) -> dict:
    """The choice among the trials, the final model (soup, refit), the ensemble, the test score."""
    from .decide import decide

    study.set_user_attr(FINALIZING, True)  # workers still running elsewhere stop swapping best/
    decision = decide(study, setup, budget=budget, max_rounds=rescore,
                      refit_seconds=final_seconds(best, setup) if refit else 0.0)
    chosen = study.trials[decision.chosen] if decision is not None else best
    if store is not None and chosen.number == best.number and not holds(run_dir, best, study.study_name):
        from .artifacts import export_best

        export_best(study, store, run_dir)  # trained by another process
    soup = None
    if config.soup:
        from .soup import greedy_soup

        soup = greedy_soup(setup, run_dir, chosen.number)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    info = final_model(chosen, setup, tokenizer, run_dir, max_length=max_length, info_base=info_base, refit=refit,
                       budget=budget, soup=soup, trials=trials)
    if config.ensemble > 1:
        from .final import final_ensemble

        final_ensemble(study, chosen, setup, tokenizer, run_dir, size=config.ensemble, max_length=max_length,
                       info_base=info_base, refit=refit, budget=budget)
    if target.test is not None:
        info = score_test(run_dir, target, setup, trial=chosen.number, study=study.study_name)
        if (run_dir / "ensemble").is_dir():
            score_test(run_dir / "ensemble", target, setup)
    return info


def work(study, setup, *, tokenizer, run_dir: Path | None, store, budget, n_trials, refit: bool,
         info_base: dict, max_length: int, keep: int = candidates.KEEP, rescore: int = 0,
         progress: bool = False) -> bool:
    """Run trials of `study` in this process until `n_trials` finished trials exist in the
    whole study (every worker counts) or the budget is spent. A trial that beats the best so
    far uploads its model to `store` and (with a `run_dir`) is exported as best/ under a lock.
    Returns whether Ctrl-C stopped it."""
    # Our own line reports each failed trial; Optuna's warning would repeat it with a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies.recover_dead_trials(study)
    sign = 1 if setup.fit.metric.maximize else -1

    def tokenizer_for(trial):  # best/ and uploads carry the trial's own backbone's tokenizer
        own = setup.for_params(trial.params)
        return tokenizer if own is setup else tokenizer_of(own)

    def keep_and_upload(trial, outcome) -> None:
        if run_dir is not None:  # for the soup and the ensemble at the end
            try:
                candidates.keep_model(run_dir, trial.number, outcome.model, score=outcome.result.best_score,
                                      head=outcome.model.pooling.value, params=dict(trial.params),
                                      maximize=setup.fit.metric.maximize, keep=keep)
            except OSError as exc:  # a full disk loses the soup, never the trial
                log.warning("trial %d's model could not be kept for the soup/ensemble: %s", trial.number, exc)
        best = _best_trial(study)
        if store is not None and (best is None or sign * outcome.result.best_score > sign * best.value):
            from .artifacts import upload_model

            try:
                upload_model(trial, outcome.model, tokenizer_for(trial),
                             info_for(info_base, trial, outcome.summary, outcome),
                             max_length=max_length, store=store)
            except Exception as exc:  # a full disk or a missing store: the score stands, the copy is lost
                from .redact import mask

                reason = f"{type(exc).__name__}: {mask(str(exc))}"
                trial.set_user_attr(UPLOAD_ERROR, reason)
                log.warning("trial %d's model could not be uploaded to the artifact store (%s); its score "
                            "stands, but `autotl export` cannot fetch it", trial.number, reason)

    objective = Objective(setup, on_complete=keep_and_upload, backbones=studies.offered_backbones(study, setup))

    skipped = []  # consecutive trials skipped for lack of time

    def on_trial(study, trial) -> None:
        if studies.did_not_run(trial):
            skipped.append(trial.number)
            if SKIPPED in trial.user_attrs:
                log.info("trial %d %s: skipped, %s", trial.number, trial.params.get(STRATEGY, "?"),
                         trial.user_attrs[SKIPPED])
            if len(skipped) >= MAX_SKIPPED:
                study.stop()  # nothing the sampler proposes fits what is left of the budget
            return
        skipped.clear()
        outcome = objective.pending.pop(trial.number, None)
        best = _best_trial(study)
        is_best = trial.state is TrialState.COMPLETE and best is not None and best.number == trial.number
        if is_best and outcome is not None and run_dir is not None:
            def still_best():
                # Once the search has chosen its final model, best/ is the search's alone.
                now = _best_trial(study)
                return now is not None and now.number == trial.number and not study.user_attrs.get(FINALIZING)

            try:
                save_best(outcome.model, tokenizer_for(trial), run_dir, info_for(info_base, trial, outcome.summary),
                          max_length=max_length, still_best=still_best)
            except OSError as exc:  # a full disk: the trial stands, the previous best/ is intact
                log.warning("best/ could not take trial %d's model (%s); the previous best/ is kept and "
                            "the search goes on", trial.number, exc)
        if best is not None and trial.state is TrialState.COMPLETE:
            budget.reserve = _reserve(study, best, setup, budget, refit=refit, rescore=rescore)
        log.info("%s", _trial_line(trial, setup.fit.metric.name, is_best, best))
        bar.trial_done(studies.finished_trials(study), None if best is None else best.value, setup.fit.metric.name)
        del outcome
        release_memory(setup.fit.device)
        if budget.passed(within=budget.shortest_epoch):
            study.stop()  # not even the cheapest epoch seen fits before the deadline (and refit)
        else:
            studies.recover_dead_trials(study)  # a killed worker's trial is re-queued by us
            if _done(study, n_trials):
                study.stop()  # this worker's and the others' trials reached n_trials

    bar = SearchProgress(timeout=budget.timeout, n_trials=n_trials, elapsed=budget.elapsed, enabled=progress)
    try:
        with bar.logging_through():
            return _optimize(study, objective, on_trial, budget, n_trials, run_dir, setup)
    finally:
        bar.close()


def _optimize(study, objective, on_trial, budget, n_trials, run_dir, setup) -> bool:
    """`work`'s loop: Optuna's optimize until done; True when Ctrl-C stopped it."""
    while not _done(study, n_trials) and not budget.passed(within=budget.shortest_epoch):
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
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            # This worker fell silent past the heartbeat grace (paused, or the storage was
            # away) and another took its trial for dead: drop the result, go on. (Optuna
            # says so with UpdateFinishedTrialError, or ValueError "Cannot tell a FAIL trial.")
            if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
                raise
            log.warning("a trial was failed under this worker while it ran (%s); its result is dropped "
                        "and the worker goes on", exc)
            objective.pending.clear()
            release_memory(setup.fit.device)
            continue
        break
    return False


def _done(study, n_trials: int | None) -> bool:
    """n_trials finished trials exist and no killed worker's trial waits to run again
    (without n_trials only the budget ends the search)."""
    return (n_trials is not None and studies.remaining_trials(study, n_trials) <= 0
            and studies.requeued_waiting(study) == 0)


def _reserve(study, best, setup, budget, *, refit: bool, rescore: int) -> float:
    """Seconds to keep back from the trials: the refit of the best configuration, and one
    re-scoring round of the current finalists (when validation cannot tell them apart).
    Only what can fit at all is kept back; otherwise the budget goes to more trials. A best
    trial kept mid-schedule needs its second look before the refit (final.final_seconds)."""
    from .decide import rescore_seconds

    needed = final_seconds(best, setup) if refit else 0.0
    if not budget.fits(needed):
        return 0.0
    round_cost = rescore_seconds(study, setup) if rescore > 0 else 0.0
    return needed + round_cost if budget.fits(needed + round_cost) else needed


def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _trial_line(trial, metric: str, is_best: bool, best) -> str:
    head = trial.params.get(POOLING) or trial.user_attrs.get("head", "?")
    name = f"trial {trial.number} {trial.params.get(STRATEGY, '?')}/{head}"
    secs = f"{trial.duration.total_seconds():.0f}s" if trial.duration else ""
    if trial.state is TrialState.COMPLETE:
        tag = "  (best so far)" if is_best else f"  (best: {best.value:.4f}, trial {best.number})"
        return f"{name}: {metric} {trial.value:.4f} in {secs}{tag}"
    if trial.state is TrialState.PRUNED:
        return f"{name}: pruned after epoch {(trial.last_step or 0) + 1} in {secs}"
    return f"{name}: failed: {trial.user_attrs.get('error', 'see the log')}"
