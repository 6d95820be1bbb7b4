"""The Optuna study: its record (config, identity), sampler, pruners, resume, dead trials."""

from __future__ import annotations

import logging
import warnings

import optuna
from optuna.trial import TrialState

from .errors import UsageError
from .objective import DUPLICATE_OF, POOLING, SKIPPED, STRATEGY
from .portfolio import BASELINE

log = logging.getLogger("autotl")
# Optuna's own handler writes to the sys.stderr of the moment optuna was first imported,
# which may be a capture closed since (a test's, a notebook cell's): a later record then
# prints "--- Logging error ---" with a traceback. Its records go through Python logging
# instead, where autotl's own lines go.
optuna.logging.disable_default_handler()
optuna.logging.enable_propagation()
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
REQUEUED_FROM = "requeued_from"  # user attr of a trial queued again: the trial whose worker died
# user attr of a first trial: its rank in the prior the first trials come from (0 first): the
# order knowledge and the learned portfolio put them in, the baseline recipe last (study.prior_ranks)
PRIOR_RANK = "prior_rank"
DATA_PROFILE = "data_profile"  # study user attr: class balance and token lengths (api.prepare), for the reports
VAL_TARGETS = "val_targets"  # study user attr: the validation rows' targets, for standard errors


def save_config(study, config) -> None:
    """Record the search's RunConfig, for every worker (the latest search wins)."""
    from .config import RUN_ATTR

    study.set_user_attr(RUN_ATTR, config.recorded())


def load_config(study):
    """The RunConfig the search recorded in `study`."""
    from .config import RUN_ATTR, RunConfig

    raw = study.user_attrs.get(RUN_ATTR)
    if raw is None:
        raise UsageError(f"study '{study.study_name}' was not started by `autotl search`; start it with "
                         "`autotl search DATA.csv --storage URL --study-name NAME` first")
    return RunConfig.from_recorded(raw)


def load_study(storage, study_name: str) -> optuna.Study:
    """An existing study, or one error naming the studies the storage does hold."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UsageError(f"no study '{study_name}' in this storage; studies there: "
                         f"{', '.join(names) or 'none'}") from None


IDENTITY_ATTR = "autotl"  # study user attribute: the identity a joining worker must match


TRANSFERABILITY = "transferability"  # study user attr: the backbones ranked (sources.py), best first


def offered_backbones(study, setup) -> tuple[str, ...]:
    """The backbones the sampler draws from: the recorded ranking's, hopeless ones left out;
    else every backbone loaded."""
    names = setup.backbone_names()
    ranking = study.user_attrs.get(TRANSFERABILITY) or []
    offered = tuple(r["backbone"] for r in ranking if not r.get("hopeless") and r["backbone"] in names)
    return offered or names


def check_identity(study, identity: dict, *, joining: bool) -> None:
    """`identity` (config.identity) must be the study's: one error naming the first
    difference and the fix — for a worker joining (`joining`), or a search resuming."""
    recorded = study.user_attrs.get(IDENTITY_ATTR) or {}
    for key, value in identity.items():
        if recorded.get(key) == value:
            continue
        what = "dataset (content hash of its training and validation rows)" if key == "data" else key
        if joining:
            raise UsageError(f"this worker's {what} differs from study '{study.study_name}''s: {value!r} here, "
                             f"{recorded.get(key)!r} in the study; pass --data with the study's dataset and "
                             "install the same plugins and backbone")
        raise UsageError(f"study '{study.study_name}' was started with {key}={recorded.get(key)!r} but this "
                         f"run has {key}={value!r}; pass a new --out or --study-name to start a fresh study, "
                         "or repeat the original settings to resume it")


def _family(trial) -> tuple:
    return trial.params.get(STRATEGY), trial.params.get(POOLING)


def _peer_values(study, trial, step: int) -> list[float]:
    """Scores after epoch `step` of the other trials of `trial`'s (strategy, head) family."""
    family = _family(trial)
    return [t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.RUNNING))
            if t.number != trial.number and _family(t) == family and step in t.intermediate_values]


class FamilyHalvingPruner(optuna.pruners.BasePruner):
    """Asynchronous successive halving over epochs, within each (strategy, head) family.

    Rungs are after epochs ``min_epochs * reduction_factor**k`` (2, 6, 18, ...). At a rung a
    trial goes on only if its score is among the top 1/reduction_factor of its family's
    scores after that epoch (the best one always goes on); elsewhere it is never pruned.
    A trial is compared only with its own family: a probe's epoch 2 is nothing like a
    fine-tune's, and full fine-tunes, slow starters, would lose every early comparison with
    cheap heads. The first rung is after epoch 2, not 1: a fine-tune's first epoch is mostly
    warmup, and its curve has not turned yet. (The caller never prunes a trial's last epoch.)
    """

    def __init__(self, min_epochs: int = 2, reduction_factor: int = 3):
        self.min_epochs = min_epochs
        self.reduction_factor = reduction_factor

    def _is_rung(self, epochs: int) -> bool:
        rung = self.min_epochs
        while rung < epochs:
            rung *= self.reduction_factor
        return rung == epochs

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None or not self._is_rung(step + 1):
            return False
        peers = _peer_values(study, trial, step)
        if not peers:
            return False
        value = trial.intermediate_values[step]
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        ranked = sorted([*peers, value], reverse=maximize)
        bar = ranked[max(1, len(ranked) // self.reduction_factor) - 1]
        return value < bar if maximize else value > bar


class FamilyMedianPruner(optuna.pruners.BasePruner):
    """Median pruning within each (strategy, head) family, after every epoch from
    `warmup_epochs` + 1 on, once `min_trials` of the family reported that epoch."""

    def __init__(self, min_trials: int = 2, warmup_epochs: int = 1):
        self.min_trials = min_trials
        self.warmup_epochs = warmup_epochs

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup_epochs:
            return False
        peers = _peer_values(study, trial, step)
        if len(peers) < self.min_trials:
            return False
        value = trial.intermediate_values[step]
        median = sorted(peers)[len(peers) // 2]
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        return value < median if maximize else value > median


PRUNERS = {"halving": FamilyHalvingPruner, "median": FamilyMedianPruner, "none": optuna.pruners.NopPruner}
DEFAULT_PRUNER = "halving"


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise UsageError(f"unknown pruner '{name}'; use one of: {', '.join(PRUNERS)}")
    return PRUNERS[name]()


def make_sampler(seed: int | None, first_trials: int) -> optuna.samplers.TPESampler:
    """TPE over the conditional space: multivariate and grouped (each strategy's parameters
    modelled together), starting to model only after the enqueued first trials."""
    with warnings.catch_warnings():  # `group` is "experimental" but is what conditional spaces need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=max(5, first_trials))


def join_study(storage, study_name: str) -> tuple[optuna.Study, "RunConfig"]:
    """A study started by `autotl search`, for a worker: with the sampler and pruner the
    search recorded, and its RunConfig. (optuna.load_study alone gives Optuna's defaults:
    a MedianPruner comparing every family's epochs with each other's, whatever --pruner
    said, and TPE neither multivariate nor grouped; seen in CI as a trial pruned under
    `--pruner none --trials-per-device 2`.)

    The sampler is not seeded with the search's seed: workers drawing from one history
    with one seed would propose the same configuration at the same time."""
    study = load_study(storage, study_name)
    config = load_config(study)
    study.sampler = make_sampler(None, _first_trial_count(study))
    study.pruner = make_pruner(config.pruner)
    return study, config


def _first_trial_count(study) -> int:
    """How many first trials the search enqueued (its portfolio), re-queued ones left out."""
    return sum(PRIOR_RANK in t.user_attrs and REQUEUED_FROM not in t.user_attrs
               for t in study.get_trials(deepcopy=False))


def create_or_resume(*, storage, study_name: str, identity: dict, maximize: bool, seed: int,
                     portfolio, pruner: str = DEFAULT_PRUNER,
                     costs: dict[str, float] | None = None) -> optuna.Study:
    """Create the study (recording its settings, enqueueing the portfolio) or resume it.
    `portfolio` is the first trials' params, or a function computing them (called only when
    the study is new: resuming pays nothing for it). `costs` (portfolio.relative_costs) go
    with the enqueued trials, so a trial's time can be estimated before it runs."""
    from .objective import RELATIVE_COST
    from .portfolio import cost_key

    if callable(portfolio):
        existing = set(optuna.get_all_study_names(storage))
        portfolio = portfolio() if study_name not in existing else []

    study = optuna.create_study(storage=storage, study_name=study_name,
                                sampler=make_sampler(seed, first_trials=len(portfolio)),
                                pruner=make_pruner(pruner),
                                direction="maximize" if maximize else "minimize",
                                load_if_exists=True)
    if study.user_attrs.get(IDENTITY_ATTR) is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
        for params, rank in zip(portfolio, prior_ranks(portfolio)):
            cost = (costs or {}).get(cost_key(params))
            attrs = {PRIOR_RANK: rank} | ({RELATIVE_COST: cost} if cost is not None else {})
            study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
        return study
    check_identity(study, identity, joining=False)
    # resumed: the sampler waits out the same first trials as when the study was new
    study.sampler = make_sampler(seed, first_trials=_first_trial_count(study))
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    log.info("resuming study '%s': %d finished trials", study_name, done)
    return study


def prior_ranks(portfolio: list[dict]) -> list[int]:
    """Each first trial's rank in the prior, for select.choose's ties: its place in the
    enqueued order (a warm start's picks, then the learned portfolio, then the literature
    defaults of strategies no evidence covers), except the baseline recipe, ranked last —
    the evidence has every learned configuration beating it on most datasets (README,
    "A first-trial portfolio learned from data")."""
    others = iter(range(len(portfolio)))
    last = sum(p.get(STRATEGY) != BASELINE for p in portfolio)
    return [last if p.get(STRATEGY) == BASELINE else next(others) for p in portfolio]


def recover_dead_trials(study: optuna.Study, exited: set | frozenset = frozenset()) -> int:
    """Fail (and queue again) RUNNING trials whose worker fell silent past the heartbeat
    grace, wherever it ran, or whose worker is known to have `exited` (ids); several live
    workers may find the same one: the first wins."""
    from . import heartbeat

    dead = heartbeat.dead_trials(study)
    known = {t.number for t in dead}
    dead += [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.user_attrs.get("worker") in exited and t.number not in known]
    revived = 0
    for t in dead:
        worker = t.user_attrs.get("worker", "?")
        silent = heartbeat.silent_for(t)
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", f"worker {worker} died mid-trial (no "
                                               f"heartbeat for {silent:.0f} s); re-queued")
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        carried = {k: t.user_attrs[k] for k in (PRIOR_RANK,) if k in t.user_attrs}  # its rank stays its own
        study.enqueue_trial(t.params, user_attrs={REQUEUED_FROM: t.number, **carried})
        revived += 1
    if revived:
        log.warning("%d trial(s) whose worker fell silent were marked failed and queued again", revived)
    return revived


def requeued_waiting(study: optuna.Study) -> int:
    """Re-queued configurations of trials cut short by a killed worker, not yet started:
    they run even when `n_trials` is reached (the killed trial did not count toward it)."""
    return sum(REQUEUED_FROM in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def did_not_run(trial) -> bool:
    """A trial that ended before training: a configuration already run, or one that would
    not have finished within the budget. It does not count toward n_trials."""
    return DUPLICATE_OF in trial.user_attrs or SKIPPED in trial.user_attrs


def finished_trials(study: optuna.Study) -> int:
    """Trials that ran to an end in the whole study (every worker's). Trials cut short by a
    killed worker do not count: their configuration runs again."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get(REQUEUED_FROM) for t in trials} - {None}
    return sum(1 for t in trials if t.state in FINISHED and not t.user_attrs.get("interrupted")
               and t.number not in requeued and not did_not_run(t))


def remaining_trials(study: optuna.Study, n_trials: int | None) -> int | None:
    """Trials still to run for a budget of `n_trials` finished trials in the whole study."""
    if n_trials is None:
        return None
    return max(0, n_trials - finished_trials(study))
