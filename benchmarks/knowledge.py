"""The starter knowledge base, and the warm start measured against a cold search.

    python benchmarks/knowledge.py build
        autotl/knowledge_starter.json from the portfolio's evidence
        (benchmarks/results/portfolio_evidence.jsonl): one record per task (dataset, rows,
        seed) with its meta-features (recomputed from the same stratified sample: rows,
        classes, imbalance, token lengths, all-MiniLM-L6-v2's probe score and LogME) and
        every evaluated configuration's *validation* score and cost, as a search records it.

    python benchmarks/knowledge.py simulate [--min-similarity S]
        Validation-only replay, leave one dataset out: for each evidence task, the first k
        configurations the warm start would enqueue (from the starter records of the other
        datasets) against the first k of the leave-one-out portfolio; each scored by its
        held-out *dev* score in that task's evidence (rows of train.csv the search never saw;
        no test set). The best dev score among the first k, averaged over tasks.

    python benchmarks/knowledge.py compare ../shared/data/{sst2,trec6,...} --rows 300 --seeds 0
        Leave-one-dataset-out: for each dataset, `autotl search` cold (--no-knowledge) and
        warm (a knowledge base holding the starter records of the *other* datasets only),
        both with the portfolio learned without it (benchmarks/results/portfolio_loo), at
        the same --timeout (default: the recipe's wall seconds from
        benchmarks/results/compare_matrix*.json, i.e. the matrix's 1x budget); test scored
        once per run. Resumable; results in benchmarks/results/knowledge_loo.json and a
        table beside it: mean test score warm vs cold, and the seconds each took to reach
        the cold search's final validation score.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import portfolio  # noqa: E402  (benchmarks/portfolio.py: the evidence and its configurations)
from searches import autotl_search, int_list, recipe_seconds  # noqa: E402

STARTER = ROOT / "autotl" / "knowledge_starter.json"
LOO_OUT = HERE / "results" / "knowledge_loo.json"
DATA = ROOT.parent / "shared" / "data"


# -- build ---------------------------------------------------------------------------------------

def task_record(folder: Path, rows: int, seed: int, entries: list[dict]) -> dict:
    """A knowledge record of one evidence task, meta-features recomputed from its sample."""
    from autotl.backbone import load_backbone, load_tokenizer
    from autotl.data import load_data
    from autotl.knowledge import VERSION, meta_features
    from autotl.metrics import get_metric
    from autotl.model import Pooling
    from autotl.objective import trial_setup
    from autotl.plugins import Registry
    from autotl.sources import assess_backbones

    sample, _ = portfolio.task_data(folder, rows, seed)
    target = load_data(sample, seed=seed)
    metric = get_metric(None, target.task.value)
    backbone = load_backbone(portfolio.BACKBONE)
    setup = trial_setup(target, backbone, load_tokenizer(backbone.path), Registry().select(["linear_probe"]),
                        (Pooling.STANDARD.value, Pooling.MEAN.value), metric)
    transferability = [s.as_dict() for s in assess_backbones(setup)]
    meta = meta_features(target, setup, {t["backbone"]: t for t in transferability})
    configs = portfolio.candidates()
    trials = [{"number": i, "params": configs[e["config"]], "state": "complete", "value": e["val_score"],
               "seconds": e.get("seconds"), "best_epoch": e.get("best_epoch")}
              for i, e in enumerate(sorted(entries, key=lambda e: e["config"])) if e["config"] in configs]
    values = [t["value"] for t in trials]
    chosen = trials[max(range(len(values)), key=values.__getitem__) if metric.maximize
                    else min(range(len(values)), key=values.__getitem__)]["number"]
    return {"version": VERSION, "id": f"starter-{folder.name}-{rows}-{seed}", "created": "starter",
            "data": {"name": folder.name}, "meta": meta, "transferability": transferability, "metric": metric.name,
            "maximize": metric.maximize, "trials": trials, "chosen": chosen, "learned_from": [],
            "source": "starter"}


def cmd_build(args) -> int:
    evidence = portfolio.read_evidence()
    by_task = portfolio.tasks(evidence)
    records = []
    for (dataset, rows, seed), task in sorted(by_task.items()):
        started = time.monotonic()
        records.append(task_record(args.data / dataset, rows, seed, list(task.values())))
        print(f"{dataset} rows={rows} seed={seed}: {len(task)} configurations, meta-features in "
              f"{time.monotonic() - started:.0f} s", flush=True)
    content = {"generated_by": "python benchmarks/knowledge.py build",
               "evidence": str(portfolio.EVIDENCE.relative_to(ROOT)), "records": records}
    STARTER.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    print(f"{len(records)} records -> {STARTER.relative_to(ROOT)}")
    return 0


# -- compare: warm vs cold, leave one dataset out ---------------------------------------------------

def loo_knowledge(dataset: str, path: Path) -> None:
    """A knowledge journal at `path` with every starter record except `dataset`'s."""
    from autotl import knowledge

    storage = knowledge.open_knowledge(str(path))
    for record in json.loads(STARTER.read_text())["records"]:
        if record["data"]["name"] != dataset:
            knowledge.save(storage, dict(record, source="search"))


def run_search(train: Path, test: Path, seconds: float, seed: int, run_dir: Path, knowledge_args: list[str],
               portfolio_file: Path | None = None) -> dict:
    done = autotl_search(train, test, seconds, seed, run_dir, knowledge_args, portfolio_file,
                         env={"AUTOTL_STARTER_KNOWLEDGE": "0"})  # only what the leave-one-out journal holds
    if "error" in done:
        return done
    info, board = done["info"], done["board"]
    metric = info["metric"]
    return {"score": info["scores"]["test"]["metrics"][metric], "metric": metric, "val": info["scores"]["val"],
            "wall_seconds": done["wall_seconds"],
            "trials": [{"trial": r["trial"], "state": r["state"], "score": r["score"], "seconds": r["seconds"],
                        "strategy": r["strategy"]} for r in board],
            "learned_from": info.get("knowledge", {}).get("learned_from") if isinstance(info.get("knowledge"), dict)
            else None}


def seconds_to_reach(trials: list[dict], goal: float, maximize: bool = True) -> float | None:
    """Training seconds (trials in order) until a complete trial's validation score reached `goal`."""
    spent = 0.0
    for t in sorted(trials, key=lambda t: t["trial"]):
        spent += float(t["seconds"] or 0.0)
        if t["state"] == "complete" and isinstance(t["score"], (int, float)) and (
                t["score"] >= goal if maximize else t["score"] <= goal):
            return spent
    return None


def cmd_compare(args) -> int:
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"results": []}
    done = {(r["dataset"], r["rows"], r["seed"], r["arm"]) for r in results["results"]}
    for folder in args.datasets:
        for rows in args.rows:
            for seed in args.seeds:
                seconds = args.seconds or recipe_seconds(folder.name, rows, seed)
                if seconds is None:
                    print(f"{folder.name} rows={rows} seed={seed}: no recipe time in compare_matrix.json; "
                          "pass --seconds", flush=True)
                    continue
                with tempfile.TemporaryDirectory(prefix="autotl-knowledge-") as tmp:
                    tmp = Path(tmp)
                    sample, _ = portfolio.task_data(folder, rows, seed)
                    sample.to_csv(tmp / "train.csv", index=False)
                    journal = tmp / "loo.journal"
                    loo_knowledge(folder.name, journal)
                    arms = {"cold": ["--no-knowledge"], "warm": ["--knowledge", str(journal)]}
                    for arm, extra in arms.items():
                        if (folder.name, rows, seed, arm) in done:
                            continue
                        # Both arms: the portfolio learned without this dataset (the shipped one saw it).
                        loo = HERE / "results" / "portfolio_loo" / f"{folder.name}.json"
                        r = run_search(tmp / "train.csv", folder / "test.csv", seconds, seed, tmp / arm, extra,
                                       loo if loo.is_file() else None)
                        r.update(dataset=folder.name, rows=rows, seed=seed, arm=arm, budget_seconds=round(seconds, 1))
                        results["results"].append(r)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(json.dumps(results, indent=1) + "\n")
                        print(f"{folder.name} rows={rows} seed={seed} {arm}: "
                              f"{r.get('score', r.get('error'))} in {r['wall_seconds']} s", flush=True)
    print(table(results), end="")
    out.with_suffix(".md").write_text(table(results))
    return 0


def table(results: dict) -> str:
    by_key: dict[tuple, dict] = {}
    for r in results["results"]:
        by_key.setdefault((r["dataset"], r["rows"], r["seed"]), {})[r["arm"]] = r
    lines = ["# Warm start (leave-one-dataset-out knowledge) vs cold search, same budget", "",
             "| dataset | rows | seed | budget s | cold test | warm test | warm − cold | cold val | "
             "cold: s to its final val | warm: s to reach it |", "|---|---|---|---|---|---|---|---|---|---|"]
    diffs, ratios = [], []
    for (dataset, rows, seed), arms in sorted(by_key.items()):
        cold, warm = arms.get("cold"), arms.get("warm")
        if not cold or not warm or "score" not in cold or "score" not in warm:
            continue
        goal = cold["val"]
        t_cold = seconds_to_reach(cold["trials"], goal)
        t_warm = seconds_to_reach(warm["trials"], goal)
        diffs.append(warm["score"] - cold["score"])
        if t_cold and t_warm is not None:
            ratios.append(t_warm / t_cold)
        lines.append(f"| {dataset} | {rows} | {seed} | {cold['budget_seconds']:.0f} | {cold['score']:.3f} | "
                     f"{warm['score']:.3f} | {warm['score'] - cold['score']:+.3f} | {goal:.3f} | "
                     f"{t_cold if t_cold is not None else '-'} | {t_warm if t_warm is not None else 'never'} |")
    if diffs:
        lines += ["", f"Mean warm − cold test score over {len(diffs)} cells: {sum(diffs) / len(diffs):+.4f}; "
                      f"warm reached the cold search's final validation score in {len(ratios)} of {len(diffs)}, "
                      f"median time ratio warm/cold "
                      f"{sorted(ratios)[len(ratios) // 2]:.2f}." if ratios else ""]
    return "\n".join(lines) + "\n"


def cmd_simulate(args) -> int:
    from autotl import knowledge
    from autotl.plugins import Registry
    from autotl.portfolio import bucket_for

    strategies = Registry().strategies()
    records = json.loads(STARTER.read_text())["records"]
    by_task = portfolio.tasks(portfolio.read_evidence())
    names = {json.dumps(p, sort_keys=True): n for n, p in portfolio.candidates().items()}
    lines = ["| task | k | portfolio (LOO) best dev | warm start best dev | warm − portfolio | neighbours |",
             "|---|---|---|---|---|---|"]
    diffs = {k: [] for k in (1, 2, 3)}
    for record in records:
        dataset, rows, seed = record["data"]["name"], record["meta"]["rows"], int(record["id"].rsplit("-", 1)[1])
        task = by_task.get((dataset, int(record["id"].rsplit("-", 2)[1]), seed))
        if not task:
            continue
        others = [r for r in records if r["data"]["name"] != dataset]
        near = knowledge.nearest(others, record["meta"], min_similarity=args.min_similarity)
        learned = knowledge.warm_start(near, strategies, ("standard", "mean"), limit=knowledge.LEARNED)
        warm = [names.get(json.dumps(p, sort_keys=True)) for p in learned]
        loo = json.loads((HERE / "results" / "portfolio_loo" / f"{dataset}.json").read_text())
        order = [o["name"] for o in bucket_for(loo, rows)["order"]]
        warm = [n for n in warm if n] + [n for n in order if n not in warm]  # the portfolio follows
        sign = 1 if task[order[0]]["metric"] not in ("mse", "mae") else -1
        for k in (1, 2, 3):
            def best(first):
                scores = [task[n]["dev_score"] for n in first[:k] if n in task]
                return max(scores, key=lambda v: sign * v) if scores else None
            p, w = best(order), best(warm)
            if p is None or w is None:
                continue
            diffs[k].append(sign * (w - p))
            neighbours = ", ".join(f"{n.record['id']} {n.similarity:.2f}" for n in near)
            lines.append(f"| {record['id']} | {k} | {p:.3f} | {w:.3f} | {sign * (w - p):+.3f} | {neighbours} |")
    summary = [f"k={k}: warm − portfolio {sum(v) / len(v):+.4f} mean over {len(v)} tasks "
               f"({sum(x > 0 for x in v)} better, {sum(x < 0 for x in v)} worse)" for k, v in diffs.items() if v]
    text = (f"# Warm start vs the leave-one-out portfolio, replayed on dev scores (min similarity "
            f"{args.min_similarity})\n\n" + "\n".join(lines) + "\n\n" + "\n".join(summary) + "\n")
    print(text, end="")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--data", type=Path, default=DATA)
    m = sub.add_parser("simulate")
    m.add_argument("--min-similarity", type=float, default=0.0, help="default 0: the rule without a floor")
    c = sub.add_parser("compare")
    c.add_argument("datasets", nargs="+", type=Path)
    c.add_argument("--rows", type=int_list, default=[300])
    c.add_argument("--seeds", type=int_list, default=[0])
    c.add_argument("--seconds", type=float, default=None, help="budget per search (default: the recipe's)")
    c.add_argument("--out", default=str(LOO_OUT))
    args = parser.parse_args(argv)
    return {"build": cmd_build, "simulate": cmd_simulate, "compare": cmd_compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
