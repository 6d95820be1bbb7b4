"""Choosing the source model: one search over two backbones against each searched alone.

    python benchmarks/sources.py ../shared/data/{sst2,trec6,ag_news,tweeteval_emotion} --rows 300 --seeds 0

For each dataset, rows and seed (the same stratified sample as benchmarks/compare.py), three
`autotl search` runs at the same --timeout (default: 3x the recipe's wall seconds from
benchmarks/results/compare_matrix*.json, the matrix's 3x budget): all-MiniLM-L6-v2 alone,
all-mpnet-base-v2 alone, and both in one search (`--model all-MiniLM-L6-v2,all-mpnet-base-v2`).
Each scores the test set once. All runs use --no-knowledge (no warm start from other runs)
and the leave-one-dataset-out portfolio when benchmarks/results/portfolio_loo holds one.
Resumable; results in benchmarks/results/sources.json and a table beside it: the joint
search against the better single-backbone search (target: within 0.5 point), and whether
the ranking before training (LogME, probe) named the backbone whose search scored better.
Pin it to a core for fair timings: `taskset -c 1 env OMP_NUM_THREADS=1 python ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rows import subsample  # noqa: E402
from compare import git_state  # noqa: E402
from searches import autotl_search, int_list, recipe_seconds  # noqa: E402

OUT = HERE / "results" / "sources.json"
MINILM, MPNET = "all-MiniLM-L6-v2", "all-mpnet-base-v2"
ARMS = {"minilm": MINILM, "mpnet": MPNET, "both": f"{MINILM},{MPNET}"}


def run(train: Path, test: Path, model: str, seconds: float, seed: int, run_dir: Path, portfolio: Path | None) -> dict:
    done = autotl_search(train, test, seconds, seed, run_dir, ["--model", model, "--no-knowledge"], portfolio)
    if "error" in done:
        return done
    info, board = done["info"], done["board"]
    out = {"score": info["scores"]["test"]["metrics"][info["metric"]], "metric": info["metric"],
           "winner_backbone": info.get("backbone"), "winner": info["strategy"], "val": info["scores"]["val"],
           "wall_seconds": done["wall_seconds"], "trials": len(board),
           "trials_per_backbone": {b: sum(r["backbone"] == b for r in board) for b in {r["backbone"] for r in board}}}
    if "," in model:
        import optuna

        from autotl.storage import open_storage

        study = optuna.load_study(study_name="autotl", storage=open_storage(None, run_dir))
        out["ranking"] = study.user_attrs.get("transferability")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--rows", type=int_list, default=[300])
    parser.add_argument("--seeds", type=int_list, default=[0])
    parser.add_argument("--budget-x", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import pandas as pd

    results = json.loads(args.out.read_text()) if args.out.exists() else {"results": []}
    done = {(r["dataset"], r["rows"], r["seed"], r["arm"]) for r in results["results"] if "error" not in r}
    for folder in args.datasets:
        for rows in args.rows:
            for seed in args.seeds:
                recipe = recipe_seconds(folder.name, rows, seed)
                if recipe is None:
                    print(f"{folder.name} rows={rows} seed={seed}: no recipe time in compare_matrix.json; skipped")
                    continue
                seconds = args.budget_x * recipe
                loo = HERE / "results" / "portfolio_loo" / f"{folder.name}.json"
                with tempfile.TemporaryDirectory(prefix="autotl-sources-") as tmp:
                    tmp = Path(tmp)
                    full = pd.read_csv(folder / "train.csv")[["text", "label"]].dropna().reset_index(drop=True)
                    subsample(full, rows, seed=seed).to_csv(tmp / "train.csv", index=False)
                    for arm, model in ARMS.items():
                        if (folder.name, rows, seed, arm) in done:
                            continue
                        r = run(tmp / "train.csv", folder / "test.csv", model, seconds, seed, tmp / arm,
                                loo if loo.is_file() else None)
                        r.update(dataset=folder.name, rows=rows, seed=seed, arm=arm, budget_seconds=round(seconds, 1),
                                 **git_state())
                        results["results"] = [x for x in results["results"] if (x["dataset"], x["rows"], x["seed"],
                                                                                  x["arm"]) != (folder.name, rows, seed, arm)]
                        results["results"].append(r)
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        args.out.write_text(json.dumps(results, indent=1) + "\n")
                        print(f"{folder.name} rows={rows} seed={seed} {arm}: {r.get('score', r.get('error'))} "
                              f"({r['wall_seconds']} s)", flush=True)
    text = table(results)
    args.out.with_suffix(".md").write_text(text)
    print(text, end="")
    return 0


def table(results: dict) -> str:
    cells: dict[tuple, dict] = {}
    for r in results["results"]:
        cells.setdefault((r["dataset"], r["rows"], r["seed"]), {})[r["arm"]] = r
    lines = ["# One search over two backbones vs each backbone searched alone (same budget)", "",
             "Test scores; `ranking` is the backbone the joint search ranked first before training (probe, then "
             "LogME), `better` the one whose own search scored higher on test.", "",
             "| dataset | rows | seed | budget s | MiniLM alone | mpnet alone | both | both − better | ranking | better "
             "| named? | joint winner's backbone | trials per backbone (joint) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gaps, named = [], []
    for (dataset, rows, seed), arms in sorted(cells.items()):
        if not all(a in arms and "score" in arms[a] for a in ARMS):
            continue
        mini, mp, both = arms["minilm"]["score"], arms["mpnet"]["score"], arms["both"]["score"]
        better = MINILM if mini >= mp else MPNET
        first = (arms["both"].get("ranking") or [{}])[0].get("backbone", "?")
        gaps.append(both - max(mini, mp))
        named.append(first == better)
        lines.append(f"| {dataset} | {rows} | {seed} | {arms['both']['budget_seconds']:.0f} | {mini:.3f} | {mp:.3f} | "
                     f"{both:.3f} | {both - max(mini, mp):+.3f} | {first} | {better} | {'yes' if first == better else 'no'} "
                     f"| {arms['both'].get('winner_backbone')} | {arms['both'].get('trials_per_backbone')} |")
    commits = sorted({(r.get("commit") or "not recorded")[:12] + ("+dirty" if r.get("dirty") else "") for r in results["results"]})
    lines += ["", f"Code: {', '.join(commits)}" + (" (**more than one version**)" if len(commits) > 1 else "") + "."]
    if gaps:
        lines += ["", f"Joint search within 0.5 point of the better single-backbone search: "
                      f"{sum(g >= -0.005 for g in gaps)} of {len(gaps)} cells (worst {min(gaps):+.3f}); the ranking named "
                      f"the better backbone in {sum(named)} of {len(named)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
