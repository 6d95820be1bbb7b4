"""The end of a search: the finalists re-scored on more evidence, then the choice.

With a few hundred validation rows one standard error of accuracy is 2-3 points, and the
maximum of many noisy scores is an optimistic pick. So before choosing:

1. The evidence: every complete trial's predictions on the validation split (evaluation 0).
2. The finalists: the best trial and those the validation rows cannot tell from it
   (within two standard errors of the paired difference), at most three.
3. Re-scoring (cross-validation folds): the labelled rows are cut into five stratified
   folds, fold 0 being the search's own validation split; each round trains every
   finalist on the other folds and scores it on the next fold, so the finalists' scores
   pool more rows (and stay paired: all are scored on the same rows). Rounds run while
   two or more finalists remain and the budget holds them (refit kept back); a finalist
   clearly behind after a round is dropped.
4. The choice: `select.choose`'s one-standard-error rule (among the ties, the one the prior
   — the first trials' order — ranks first).

Fold predictions are kept in the study (user attributes ``rescore:<fold>:<trial>``), so a
resumed search does not redo them. The test set is never involved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from .batching import Encoded, concat
from .objective import PLANNED_EPOCHS, POOLING, STRATEGY, VAL_PREDICTIONS, compact, run_params
from .select import Choice, Estimate, Evidence, choose, compare, estimate, finalists
from .study import PRIOR_RANK

log = logging.getLogger("autotl")
FOLDS = 5  # fold 0 is the search's validation split; rounds use folds 1..4
RESCORE = "rescore"  # study user-attribute prefix
CHOICE = "choice"  # study user attribute: the decision, for the report
MAX_FINALISTS = 3
SMALL_SE = 0.005  # below this standard error of the best score, validation alone decides


@dataclass(frozen=True)
class Decision:
    chosen: int  # trial number of the chosen configuration
    choice: Choice
    rounds: int  # re-scoring rounds run (0: validation split alone)
    record: dict  # what the report shows (also stored in the study)


def _label(trial) -> str:
    head = trial.params.get(POOLING) or trial.user_attrs.get("head", "?")
    return f"trial {trial.number} {trial.params.get(STRATEGY, '?')}/{head}"


def gather(study, val_targets: np.ndarray) -> tuple[dict[int, np.ndarray], list[Evidence], dict]:
    """(targets per evaluation, evidence per complete trial, trials by number)."""
    from optuna.trial import TrialState

    attrs = study.user_attrs
    targets = {0: np.asarray(val_targets)}
    for key, value in attrs.items():
        parts = key.split(":")
        if len(parts) == 3 and parts[0] == RESCORE and parts[2] == "targets":
            targets[int(parts[1])] = np.asarray(value)
    trials, evidence = {}, []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        predicted = t.user_attrs.get(VAL_PREDICTIONS)
        if predicted is None or len(predicted) != len(targets[0]):
            continue
        preds = {0: np.asarray(predicted)}
        for fold in targets:
            stored = attrs.get(f"{RESCORE}:{fold}:{t.number}")
            if fold and stored is not None:
                preds[fold] = np.asarray(stored)
        trials[t.number] = t
        evidence.append(Evidence(t.number, _label(t), float(t.user_attrs.get("seconds", 0.0)), preds,
                                 int(t.user_attrs.get("trainable_params") or 0), t.user_attrs.get(PRIOR_RANK)))
    return targets, evidence, trials


def fold_rows(train: Encoded, val: Encoded, fold: int, seed: int, regression: bool,
              tasks: tuple = ()) -> tuple[Encoded, Encoded]:
    """(train, validation) rows of re-scoring fold `fold` (1..FOLDS-1): the search's
    training rows are cut into FOLDS-1 stratified parts; fold f validates on part f and
    trains on everything else, the search's validation rows included. Multi-task (`tasks`,
    rows x tasks targets): stratified by the first classification task, as the validation
    split is (multitask.load); by none when every task is a regression."""
    from .multilabel import strata

    rng = np.random.default_rng(seed + 7919)
    parts = np.zeros(len(train), dtype=int)
    first = next((j for j, t in enumerate(tasks) if t.kind == "classification"), None)
    if tasks and first is not None:
        column = train.targets[:, first].astype(np.int64)
        groups = [np.flatnonzero(column == c) for c in np.unique(column)]
    elif regression or tasks:
        groups = [np.arange(len(train))]
    elif train.targets.ndim == 2:  # label sets: each row with its rarest label
        groups = strata(train.targets)
    else:
        groups = [np.flatnonzero(train.targets == c) for c in np.unique(train.targets)]
    offset = 0
    for rows in groups:  # deal each class round-robin over the parts: stratified, balanced sizes
        parts[rng.permutation(rows)] = (np.arange(len(rows)) + offset) % (FOLDS - 1) + 1
        offset += len(rows)
    held = np.flatnonzero(parts == fold)
    rest = np.flatnonzero(parts != fold)
    return (concat(_take(train, rest, f"fold{fold}-train"), val), _take(train, held, f"fold{fold}-val"))


def _take(data: Encoded, index: np.ndarray, tag: str) -> Encoded:
    return data.take(index, f"{data.key}:{tag}")


def decide(study, setup, *, budget=None, max_rounds: int = 2, refit_seconds: float = 0.0) -> Decision | None:
    """Re-score the finalists as the budget allows, choose, and record the decision."""
    metric = setup.fit.metric
    targets, evidence, trials = gather(study, setup.val.targets)
    if not evidence:
        return None
    chosen_few = finalists(metric, evidence, targets, limit=MAX_FINALISTS)
    rounds = _rounds_done(targets)
    for fold in range(1, min(max_rounds, FOLDS - 1) + 1):
        if len(chosen_few) < 2 or estimate(metric, chosen_few[0], targets).se < SMALL_SE:
            break
        if fold not in targets:
            cost = sum(f.cost for f in chosen_few if fold not in f.predictions)
            if budget is not None and not budget.fits(cost + refit_seconds):
                log.info("re-scoring: no time for fold %d of the %d finalists (about %.0f s); choosing on "
                         "the evidence so far", fold, len(chosen_few), cost)
                break
        _rescore(study, setup, [trials[f.key] for f in chosen_few], fold)
        targets, evidence, trials = gather(study, setup.val.targets)
        kept = {f.key for f in chosen_few}
        chosen_few = finalists(metric, [e for e in evidence if e.key in kept], targets, limit=MAX_FINALISTS)
        rounds = _rounds_done(targets)
    choice = choose(metric, chosen_few, targets)
    record = _record(metric, choice, chosen_few, evidence, targets, rounds, trials)
    study.set_user_attr(CHOICE, record)
    log.info("choice: %s", choice.reason)
    return Decision(choice.chosen.key, choice, rounds, record)


def rescore_seconds(study, setup) -> float:
    """What one re-scoring round of the current finalists would cost (0 when validation
    already tells them apart): the search keeps it back from the trials."""
    metric = setup.fit.metric
    targets, evidence, _ = gather(study, setup.val.targets)
    chosen_few = finalists(metric, evidence, targets, limit=MAX_FINALISTS)
    if len(chosen_few) < 2 or estimate(metric, chosen_few[0], targets).se < SMALL_SE:
        return 0.0
    return sum(f.cost for f in chosen_few)


def _rounds_done(targets: dict) -> int:
    return len([f for f in targets if f > 0])


def _rescore(study, setup, trials, fold: int) -> None:
    """Train each trial's configuration on fold `fold` and keep its predictions there."""
    regression = setup.fit.regression
    train, val = fold_rows(setup.train, setup.val, fold, setup.fit.seed, regression, setup.fit.tasks)
    key = f"{RESCORE}:{fold}:targets"
    if key not in study.user_attrs:
        study.set_user_attr(key, compact(val.targets))
    for trial in trials:
        attr = f"{RESCORE}:{fold}:{trial.number}"
        if attr in study.user_attrs:
            continue
        # The same rows for every backbone (the split depends on the targets and the seed
        # alone), tokenized by the trial's own backbone.
        own = setup.for_params(trial.params)
        train, val = fold_rows(own.train, own.val, fold, own.fit.seed, regression, own.fit.tasks)
        fold_setup = replace(own, train=train, val=val, fit=replace(own.fit, deadline=None))
        log.info("re-scoring %s on fold %d (%d training rows, %d validation rows)", _label(trial), fold,
                 len(train), len(val))
        outcome = run_params(fold_setup, dict(trial.params), desc=f"re-score trial {trial.number} fold {fold}")
        study.set_user_attr(attr, compact(outcome.result.val_predictions))
        del outcome


def _record(metric, choice: Choice, chosen_few, evidence, targets, rounds: int, trials) -> dict:
    """The decision as the report shows it: every finalist's pooled score ± SE, its paired
    difference to the best, its cost; and the baseline recipe's margin."""
    rows = []
    for f in chosen_few:
        e, d = choice.estimates[f.key], choice.differences[f.key]
        rows.append({"trial": f.key, "label": f.label, "score": e.score, "se": e.se, "rows": e.rows,
                     "diff": d.score, "diff_se": d.se, "cost": f.cost, "tied": f.key in choice.tied,
                     "prior": f.prior})
    record = {"chosen": choice.chosen.key, "best": choice.best.key, "reason": choice.reason, "rounds": rounds,
              "metric": metric.name, "finalists": rows, "baseline": None}
    baseline = next((e for e in evidence if trials[e.key].params.get(STRATEGY) == "baseline"), None)
    if baseline is not None:
        margin: Estimate = compare(metric, choice.chosen, baseline, targets)
        sign = 1 if metric.maximize else -1  # the margin is how much better, whatever the direction
        record["baseline"] = {"trial": baseline.key, "margin": sign * margin.score, "se": margin.se,
                              "rows": margin.rows, "cut": cut_short(trials[baseline.key])}
    return record


def cut_short(trial) -> str | None:
    """'N of its M epochs' for a trial the --timeout cut short, else None: a baseline trial
    cut short is less than the hand recipe, and the margin over it must say so."""
    planned = trial.user_attrs.get(PLANNED_EPOCHS)
    return f"{len(trial.intermediate_values)} of its {planned} epochs" if planned else None


def baseline_caveat(base: dict) -> str:
    """What follows a margin over the baseline trial `base` (decision record) when it was cut."""
    cut = base.get("cut")
    return f" (the baseline ran {cut}: the --timeout cut it short of the full recipe)" if cut else ""
