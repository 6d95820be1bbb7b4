"""The knowledge base: what finished searches learned, so the next search starts warm.

A *record* is data, not code: the dataset's meta-features (rows, classes, imbalance,
token-length percentiles, each backbone's probe score and LogME), every finished trial's
configuration, score and cost, and the choice. Records live in an Optuna storage, one study
per record (``autotl-knowledge:<id>``, the record in its user attributes): a journal file
under autotl's cache directory by default (`bundled.cache_dir()`), or the team's own
database (``--knowledge postgresql://...``, where its studies already live).

A new search computes its meta-features, finds the most similar records (Euclidean
distance on normalised meta-features, similarity exp(-distance)) and starts from their best
configurations in place of the static portfolio (`warm_start`). Records shipped with autotl
(`knowledge_starter.json`, written by ``python benchmarks/knowledge.py``) are read too,
never written. An unreadable or corrupt knowledge base is one warning: the search goes on
cold and records nothing there.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import first_line

log = logging.getLogger("autotl")

PREFIX = "autotl-knowledge:"
KNOWLEDGE_ATTR = "knowledge"  # study user attr: the meta-features, what the warm start learned from
RECORD_ATTR = "record"
STARTER_FILE = Path(__file__).with_name("knowledge_starter.json")
NEIGHBOURS = 3  # past searches a warm start learns from
# Past searches less similar than this teach nothing: the learned portfolio (built from
# every benchmark dataset) is a better start. Replayed on held-out dev scores, leave one
# dataset out (`python benchmarks/knowledge.py simulate`, 20 tasks, no test set): with no
# floor the warm start's first configuration scored 0.85 points below the portfolio's
# (best of the first 2: -0.8; of 3: +2.1); with 0.1, +0.1 / +0.2 / +0.1, never worse on
# average. Between the shared datasets similarities are 0.1-0.2; the same or a refreshed
# dataset is near 1.
MIN_SIMILARITY = 0.1
MAX_CONFIGS = 3  # best configurations taken from each
VERSION = 1  # of the record format
# Meta-feature -> its scale: a difference of one scale counts as one unit of distance.
SCALES = {
    "log10_rows": 0.5,  # 300 vs 1,000 rows: about one unit
    "log2_classes": 1.5,  # 2 vs 6 classes: about one unit (regression: 0)
    "regression": 0.5,
    "imbalance": 0.5,  # rarest class / largest class
    "log2_tokens_p50": 1.0,
    "log2_tokens_p95": 1.0,
    "probe": 0.1,  # the default backbone's probe score: 0.1 of the metric is one unit
    "logme": 0.5,
}


@dataclass(frozen=True)
class Neighbour:
    record: dict
    similarity: float


def default_location() -> str:
    from .bundled import cache_dir

    return str(cache_dir() / "knowledge.journal")


def open_knowledge(location: str | None):
    """The knowledge base's Optuna storage (`location`: a URL or a .journal path; None: the
    default file), created on first use."""
    from .storage import open_storage

    import os

    target = location or default_location()
    if "://" not in target and not Path(target).exists():
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        try:  # owner-only: it holds what the user's data looked like
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            log.info("created the knowledge base %s", target)
        except FileExistsError:
            pass  # another process created it meanwhile
    return open_storage(target, None)


# -- meta-features ---------------------------------------------------------------------------

def meta_features(target, setup, transferability: dict | None = None) -> dict:
    """The dataset's meta-features: from its rows as tokenized for the first backbone and,
    when given, the backbones' transferability (name -> Transferability.as_dict())."""
    targets = np.asarray(target.train.targets)
    regression = target.task.value == "regression"
    lengths = np.array([len(ids) for ids in setup.train.ids] or [0])
    features = {
        "rows": int(len(setup.train) + len(setup.val)),
        "log10_rows": math.log10(max(1, len(setup.train) + len(setup.val))),
        "regression": float(regression),
        "log2_classes": 0.0 if regression else math.log2(max(2, len(target.label_names))),
        "imbalance": 1.0 if regression else _imbalance(targets),
        **({"multilabel": 1.0} if target.task.value == "multilabel" else {}),  # absent: as records before it
        # Recorded, not compared (not in SCALES): no past pair searches yet to tell whether
        # their best configurations differ from single texts' of the same size and lengths.
        **({"text_pair": 1.0} if getattr(target, "text_pair", None) else {}),
        "log2_tokens_p50": math.log2(max(1.0, float(np.percentile(lengths, 50)))),
        "log2_tokens_p95": math.log2(max(1.0, float(np.percentile(lengths, 95)))),
    }
    if transferability:
        first = transferability.get(setup.backbone) or next(iter(transferability.values()))
        features["probe"], features["logme"] = float(first["probe"]), float(first["logme"])
        # each backbone's own: a probe score is only comparable with the same backbone's
        features["probes"] = _probes(transferability.items())
    return features


def _imbalance(targets: np.ndarray) -> float:
    if targets.ndim == 2:  # label sets: the rarest label's rows over the most frequent's
        counts = targets.sum(axis=0)
        return float(counts.min() / counts.max()) if counts.max() else 1.0
    counts = np.bincount(targets.astype(int)) if len(targets) else np.array([1])
    counts = counts[counts > 0]
    return float(counts.min() / counts.max())


TRANSFER_KEYS = ("probe", "logme")  # measured with a backbone: compared only backbone to backbone


def distance(a: dict, b: dict) -> float:
    """Euclidean distance over the meta-features both have, each divided by its scale. The
    probe score and LogME are a backbone's: they are compared for a backbone both measured
    (`a`'s first such), and left out when they share none (MiniLM's probe at 0.69 and
    mpnet's at 0.86 on the same rows say nothing about the data). Metas without per-backbone
    values (records before them) compare their headline ones."""
    a, b = _transfer_of_a_shared_backbone(a, b)
    shared = [k for k in SCALES if k in a and k in b]
    return math.sqrt(sum(((a[k] - b[k]) / SCALES[k]) ** 2 for k in shared)) if shared else math.inf


def _transfer_of_a_shared_backbone(a: dict, b: dict) -> tuple[dict, dict]:
    mine, theirs = a.get("probes"), b.get("probes")
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return a, b
    # a record is data from a file: keep only well-formed per-backbone entries
    mine, theirs = ({name: {k: v[k] for k in TRANSFER_KEYS if isinstance(v.get(k), (int, float))}
                     for name, v in side.items() if isinstance(v, dict)} for side in (mine, theirs))
    both = next((name for name in mine if name in theirs), None)
    if both is None:
        return ({k: v for k, v in a.items() if k not in TRANSFER_KEYS},
                {k: v for k, v in b.items() if k not in TRANSFER_KEYS})
    return {**a, **mine[both]}, {**b, **theirs[both]}


def _meta_of(record: dict) -> dict:
    """A record's meta-features, with per-backbone transfer scores taken from its ranking
    when it predates them in the meta (the ranking is in every record)."""
    meta = record.get("meta") or {}
    ranking = record.get("transferability") or []
    if "probes" in meta or not ranking:
        return meta
    probes = _probes((t["backbone"], t) for t in ranking
                     if isinstance(t, dict) and {"backbone", *TRANSFER_KEYS} <= set(t))
    return {**meta, "probes": probes} if probes else meta


def _probes(pairs) -> dict:
    """(backbone, its transferability) pairs -> backbone -> its probe score and LogME."""
    return {name: {k: float(t[k]) for k in TRANSFER_KEYS} for name, t in pairs}


def nearest(records: list[dict], meta: dict, *, k: int = NEIGHBOURS, exclude_data: str | None = None,
            min_similarity: float = MIN_SIMILARITY) -> list[Neighbour]:
    """The `k` records most similar to `meta` (at least `min_similarity`) of the same task
    type (regression, multi-label or single-label classification) holding at least one
    finished trial; `exclude_data` leaves out records of that dataset."""
    scored = []
    for r in records:
        other = _meta_of(r)
        same_task = (other.get("regression") == meta.get("regression")
                     and other.get("multilabel", 0.0) == meta.get("multilabel", 0.0))
        if not same_task or not r.get("trials"):
            continue
        if exclude_data is not None and (r.get("data") or {}).get("name") == exclude_data:
            continue
        similarity = math.exp(-distance(meta, other))
        if similarity >= min_similarity:
            scored.append(Neighbour(r, similarity))
    scored.sort(key=lambda n: (-n.similarity, n.record.get("id", "")))
    return scored[:k]


# -- warm start --------------------------------------------------------------------------------

def warm_start(neighbours: list[Neighbour], strategies: dict, poolings: tuple[str, ...], *, limit: int,
               backbones: tuple[str, ...] | None = None) -> list[dict]:
    """First trials learned from `neighbours`: each one's best configurations (scores
    normalised within its own search, so datasets of different difficulty weigh alike),
    weighted by similarity, best first; only configurations this search can run (its
    strategies and heads); at most `limit`. With several `backbones`, a configuration from a
    past several-backbone search keeps its backbone when it is one of ours (that search's
    choice); any other carries none (sources.first_trials spreads it over our backbones)."""
    from .objective import BACKBONE, POOLING, STRATEGY

    votes: dict[str, float] = {}
    params_of: dict[str, dict] = {}
    total = sum(n.similarity for n in neighbours) or 1.0
    for n in neighbours:
        trials = [t for t in n.record["trials"] if t.get("state") == "complete" and t.get("value") is not None]
        if not trials:
            continue
        sign = 1.0 if n.record.get("maximize", True) else -1.0
        values = [sign * t["value"] for t in trials]
        low, high = min(values), max(values)
        ranked = sorted(trials, key=lambda t: -sign * t["value"])
        for t in ranked[:MAX_CONFIGS]:
            params = dict(t["params"])
            if params.get(STRATEGY) not in strategies:
                continue
            if getattr(strategies[params[STRATEGY]].strategy, "head", None):
                params.pop(POOLING, None)
            elif params.get(POOLING) not in poolings:
                continue
            if backbones is None or len(backbones) == 1:
                params.pop(BACKBONE, None)  # a configuration learned on any backbone, run on ours
            elif params.get(BACKBONE) not in backbones:
                params.pop(BACKBONE, None)  # no choice among ours: the configuration goes to each one
            # (A past search that compared backbones keeps its choice when this search has that
            # backbone; one that had a single backbone, or another, chose none among ours, and its
            # configuration goes to every backbone in contention.)
            key = json.dumps(params, sort_keys=True, default=str)
            score = 1.0 if high == low else (sign * t["value"] - low) / (high - low)
            votes[key] = votes.get(key, 0.0) + n.similarity / total * score
            params_of[key] = params
    order = sorted(votes, key=lambda key: (-votes[key], key))
    return [params_of[key] for key in order[:limit]]


def describe(neighbours: list[Neighbour]) -> str:
    return ", ".join(f"{_name(n.record)} (similarity {n.similarity:.2f})" for n in neighbours)


def _name(record: dict) -> str:
    data = record.get("data") or {}
    return f"{record.get('id', '?')} [{data.get('name', '?')}, {(record.get('meta') or {}).get('rows', '?')} rows]"


LEARNED = 6  # at most this many warm-start configurations lead the first trials


def learn(config, target, setup, ranking) -> tuple[list[dict], dict]:
    """A new search's warm start: (its first configurations, learned from the most similar
    past searches; what it learned from, for the study and the report)."""
    meta = meta_features(target, setup, {r.backbone: r.as_dict() for r in ranking})
    past, readable = [], True
    try:
        past = records(open_knowledge(config.knowledge))
    except Exception as exc:  # unreadable, corrupt, unreachable: never the search's end
        from .redact import mask

        readable = False  # and not written to at the end: one warning, the file left as found
        log.warning("knowledge base %s is unreadable (%s); this search starts without the past ones and is "
                    "not recorded there", mask(config.knowledge or default_location()), mask(first_line(exc)))
    neighbours = nearest(past + starter_records(), meta)
    several = setup.backbone_names() if len(setup.backbone_names()) > 1 else None
    learned = warm_start(neighbours, setup.strategies, setup.poolings, limit=LEARNED, backbones=several)
    if learned:
        log.info("warm start: %d first configurations learned from %s", len(learned), describe(neighbours))
    elif neighbours:
        log.info("warm start: the most similar past searches (%s) had no best configuration this search can run; "
                 "the learned portfolio comes first", describe(neighbours))
    else:
        log.info("warm start: no similar past search in the knowledge base; the learned portfolio comes first")
    return learned, {"meta": meta, "first": learned, "unreadable": not readable,
                     "learned_from": [{"id": n.record.get("id"), "name": (n.record.get("data") or {}).get("name"),
                                       "rows": (n.record.get("meta") or {}).get("rows"),
                                       "similarity": round(n.similarity, 4)} for n in neighbours]}


def record_search(config, study, target, setup, *, chosen: int | None) -> str | None:
    """Write the finished search to the knowledge base; its id (None when that failed)."""
    from .study import TRANSFERABILITY

    attrs = study.user_attrs.get(KNOWLEDGE_ATTR) or {}
    if attrs.get("recorded"):
        return attrs["recorded"]  # a resumed search that was recorded already
    if attrs.get("unreadable"):
        return None  # its warning was given when the search began
    ranking = study.user_attrs.get(TRANSFERABILITY) or []
    meta = attrs.get("meta") or meta_features(target, setup, {r["backbone"]: r for r in ranking})
    record = make_record(study, name=Path(config.data).stem, meta=meta, transferability=ranking,
                         metric=setup.fit.metric.name, maximize=setup.fit.metric.maximize, chosen=chosen,
                         learned_from=[n["id"] for n in attrs.get("learned_from", [])])
    try:
        rid = save(open_knowledge(config.knowledge), record)
    except Exception as exc:
        from .redact import mask

        log.warning("this search could not be recorded in the knowledge base (%s)", mask(first_line(exc)))
        return None
    study.set_user_attr(KNOWLEDGE_ATTR, {**attrs, "recorded": rid})
    log.info("recorded in the knowledge base as %s (`autotl knowledge show %s`)", rid, rid)
    return rid


# -- records ------------------------------------------------------------------------------------

def make_record(study, *, name: str, meta: dict, transferability: list | None, metric: str, maximize: bool,
                chosen: int | None, learned_from: list[str] | None = None) -> dict:
    """A finished search as a knowledge record."""
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.user_attrs.get("duplicate_of") is not None or t.user_attrs.get("skipped"):
            continue
        trials.append({"number": t.number, "params": dict(t.params), "state": t.state.name.lower(),
                       "value": t.value if t.state is TrialState.COMPLETE else None,
                       "seconds": t.user_attrs.get("seconds"), "best_epoch": t.user_attrs.get("best_epoch")})
    return {"version": VERSION, "id": f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": {"name": name},
            "meta": meta, "transferability": transferability or [], "metric": metric, "maximize": maximize,
            "trials": trials, "chosen": chosen, "learned_from": learned_from or [], "source": "search"}


def save(storage, record: dict) -> str:
    import optuna

    study = optuna.create_study(storage=storage, study_name=PREFIX + record["id"])
    study.set_user_attr(RECORD_ATTR, record)
    return record["id"]


def records(storage) -> list[dict]:
    """Every record in `storage`, oldest first."""
    import optuna

    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name.startswith(PREFIX):
            record = summary.user_attrs.get(RECORD_ATTR)
            if isinstance(record, dict):
                out.append(record)
    return sorted(out, key=lambda r: (r.get("created", ""), r.get("id", "")))


def forget(storage, record_id: str) -> bool:
    import optuna

    try:
        optuna.delete_study(study_name=PREFIX + record_id, storage=storage)
        return True
    except KeyError:
        return False


def starter_records() -> list[dict]:
    """The records shipped with autotl (benchmark runs on the shared datasets); none when
    AUTOTL_STARTER_KNOWLEDGE=0 (a leave-one-out benchmark brings its own)."""
    import os

    if os.environ.get("AUTOTL_STARTER_KNOWLEDGE", "1").strip().lower() in ("0", "false", "no"):
        return []
    try:
        content = json.loads(STARTER_FILE.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("the starter knowledge file %s is unreadable (%s); it is ignored", STARTER_FILE, exc)
        return []
    return [dict(r, source="starter") for r in content.get("records", []) if isinstance(r, dict)]
