"""Choosing the source model: several backbones in one search.

Before any trial, each backbone's frozen, mean-pooled features of the training rows are
computed once (the probe's feature cache: its linear-probe trials later reuse them) and
scored for transferability (`transfer.py`: LogME and the ridge probe's K-fold score). The
ranking, recorded in the study, spreads the budget:

- the first trials are each backbone's learned portfolio, interleaved among the backbones
  that are *in contention* (probe score within `CONTENTION_SE` standard errors of the best
  one's), the cheapest first (its forward pass was the fastest: tied on the evidence, the
  one that returns a trained model sooner goes first — measured: TREC-6, 300 rows, a
  74 s budget on one core, mpnet first left its 6-epoch trial cut after a few epochs at
  validation 0.52, where MiniLM alone reached 0.92); the other backbones' portfolios follow;
- a *hopeless* backbone (`transfer.rank`) gets no trials: its probe score is its evidence;
- the sampler then draws the backbone as the first parameter of the conditional space,
  among those not hopeless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from .objective import BACKBONE
from .transfer import Transferability, assess, rank

log = logging.getLogger("autotl")
CONTENTION_SE = 2.0
# Rows each backbone's ranking reads at most: past a thousand rows the probe's standard
# error (about 1.5 points) no longer decides much, and the forward pass grows with the rows
# (all-mpnet-base-v2 on one CPU core: about 19 s for 240 rows). Up to this many, every
# training row is read, and the features serve the probe trials later (the cache).
RANKING_ROWS = 1000


def ranking_rows(data, seed: int):
    """`data`, or RANKING_ROWS of its rows drawn at random (the same for every backbone)."""
    import numpy as np

    if len(data) <= RANKING_ROWS:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(len(data), RANKING_ROWS, replace=False))
    return data.take(keep, f"{data.key}:ranking{RANKING_ROWS}")


def assess_backbones(setup) -> list[Transferability]:
    """Every loaded backbone's transferability on the training rows, ranked best first."""
    from .features import CACHE
    from .model import Pooling, build_model
    from .train import autocast_for, release_memory

    scores = []
    for name in setup.backbone_names():
        own = setup.for_params({BACKBONE: name})
        started = time.monotonic()
        model = build_model(own.backbone_path, Pooling.MEAN, num_outputs=own.num_outputs,
                            label_names=own.label_names, regression=own.fit.regression,
                            target_mean=own.target_mean).to(own.fit.device)
        forward = time.monotonic()
        rows = ranking_rows(own.train, own.fit.seed)
        features = CACHE.features(model, rows, pad_id=own.fit.pad_id, device=own.fit.device,
                                  autocast=autocast_for(own.fit.device))
        forward = time.monotonic() - forward
        del model
        release_memory(own.fit.device)  # one backbone's weights at a time
        # seconds: what a forward pass over all the training rows costs (the trials' scale)
        score = replace(assess(name, features.numpy(), rows.targets, own.fit.metric,
                               regression=own.fit.regression, seed=own.fit.seed),
                        seconds=round(forward * len(own.train) / len(rows), 2))
        log.info("backbone %s: LogME %.3f, probe %s %.4f ± %.4f (%d training rows; forward pass %.1f s, %.0f s "
                 "in all)", name, score.logme, own.fit.metric.name, score.probe, score.probe_se, len(rows),
                 forward, time.monotonic() - started)
        scores.append(score)
    ranked = rank(scores, maximize=setup.fit.metric.maximize)
    for s in ranked:
        if s.hopeless:
            log.info("backbone %s is hopeless here (probe far below %s's, LogME lower too): no trials", s.backbone,
                     ranked[0].backbone)
    return ranked


def in_contention(ranked: list[Transferability], *, maximize: bool = True) -> list[str]:
    """The backbones whose probe score is within CONTENTION_SE standard errors of the best's."""
    best = ranked[0]
    sign = 1.0 if maximize else -1.0
    out = []
    for s in ranked:
        se = max(s.probe_se or 0.0, best.probe_se or 0.0, 1e-12)
        if not s.hopeless and sign * (best.probe - s.probe) <= CONTENTION_SE * se:
            out.append(s.backbone)
    return out


def first_trials(ranked: list[Transferability], portfolio: list[dict], *, maximize: bool = True) -> list[dict]:
    """The first trials of a several-backbone search: `portfolio` (one backbone's learned
    first trials) for each backbone not hopeless, round-robin among those in contention
    (cheapest forward pass first), then the rest's in rank order. A portfolio entry that
    names its backbone already (a warm start's choice, learned from a past several-backbone
    search) keeps it, at its own place in the order, unless that backbone is hopeless here."""
    contending = in_contention(ranked, maximize=maximize)
    seconds = {s.backbone: s.seconds for s in ranked}
    contending.sort(key=lambda name: seconds[name])  # stable: equal costs keep the rank order
    runnable = {s.backbone for s in ranked if not s.hopeless}
    trials = []
    for params in portfolio:  # in the portfolio's order (votes, the baseline's place, named strategies first)
        if BACKBONE in params:
            trials += [dict(params)] if params[BACKBONE] in runnable else []
        else:
            trials += [{BACKBONE: name, **params} for name in contending]
    spread = [p for p in portfolio if BACKBONE not in p]
    for s in ranked:
        if not s.hopeless and s.backbone not in contending:
            trials += [{BACKBONE: s.backbone, **params} for params in spread]
    unique = []
    for t in trials:  # a learned choice also in the spread portfolio runs once, at its first place
        if t not in unique:
            unique.append(t)
    return unique
