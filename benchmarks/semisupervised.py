"""Unlabeled rows: `autotl search` given them against the labelled rows alone, at the same budget.

For each dataset (a folder of ../shared/data with train.csv and test.csv), each --labels N and
each --seeds S: N rows of train.csv drawn stratified with seed S (benchmarks/rows.py) are the
labelled rows; the rest of train.csv, at most --unlabeled-cap of them (a random sample, seed
S), lose their labels. Two contenders, each `autotl search` in a subprocess with the same
--timeout, seed and labelled rows, scored once on the whole test.csv by the search itself
(best/autotl.json):

- with_unlabeled: the unlabeled rows passed as --unlabeled U.csv, so tapt, self_training and
  probe_self_training are offered beside every other strategy;
- labelled_only: the same search without them (those three are not offered).

Both start cold (--no-knowledge) and search every installed strategy unless --strategies
names some. Each finished cell is saved at once to --out (rewritten atomically) with the
git commit, and the markdown table is rewritten beside it (.md); a rerun skips the cells
already saved (one that failed is tried again; --redo runs them all again), so Ctrl-C
keeps what finished. `--table` rewrites the table from the JSON alone. `--recount WORK [WORK
...]` recounts each saved row's semi-supervised trials from the leaderboards in working
folders kept with --keep (for rows saved by a version of this script that knew fewer such
strategies) and rewrites the table.

    python benchmarks/semisupervised.py [--datasets trec6,sst2,ag_news] [--labels 100,300] [--seeds 0]
        [--timeout 900] [--unlabeled-cap 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rows import UsageError, subsample  # noqa: E402  (benchmarks/rows.py)
from searches import RESULTS, autotl_search, int_list  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
CONTENDERS = ("labelled_only", "with_unlabeled")
SEMISUPERVISED = ("tapt", "self_training", "probe_self_training")  # offered only with unlabeled rows
DEFAULT_OUT = RESULTS / "semisupervised.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="trec6,sst2,ag_news", help="comma-separated folders of --data")
    p.add_argument("--data", type=Path, default=DATA, help=f"where the dataset folders are (default {DATA})")
    p.add_argument("--labels", default="100,300", help="comma-separated labelled rows per cell (default 100,300)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the rows and the searches (default 0)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per search, the same for both (default 900)")
    p.add_argument("--unlabeled-cap", type=int, default=2000, help="unlabeled rows at most (default 2000: "
                   "self-training pseudo-labels every one of them in each of its trials)")
    p.add_argument("--strategies", help="comma-separated strategies for both searches (default: every installed "
                   "one; tapt, self_training and probe_self_training are left out of the labelled-only search)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON, read to resume; the table goes "
                   "beside it (.md)")
    p.add_argument("--redo", action="store_true", help="run cells already saved again")
    p.add_argument("--table", action="store_true", help="only rewrite the table from --out")
    p.add_argument("--keep", action="store_true", help="keep the working folder (data, run directories)")
    p.add_argument("--recount", type=Path, nargs="+", metavar="WORK", help="only recount the saved rows' "
                   "semi-supervised trials from these kept working folders' leaderboards")
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.labels, args.seeds = int_list(args.labels), int_list(args.seeds)
    if args.strategies and not set(args.strategies.split(",")) - set(SEMISUPERVISED):
        raise UsageError("--strategies must name a strategy besides those that need unlabeled rows: the labelled-only "
                         "search needs one")
    for name in args.datasets:
        for file in ("train.csv", "test.csv"):
            if not (args.data / name / file).is_file():
                raise UsageError(f"{args.data / name / file} not found; pass --data DIR or other --datasets")
    return args


def cell_data(folder: Path, labels: int, seed: int, cap: int, work: Path) -> dict:
    """The cell's labelled rows (train.csv) and unlabeled texts (unlabeled.csv) in `work`."""
    import pandas as pd

    frame = pd.read_csv(folder / "train.csv", keep_default_na=False)
    labelled = subsample(frame, labels, seed)
    rest = frame.drop(index=labelled.index)
    unlabeled = rest.sample(n=min(cap, len(rest)), random_state=seed)[["text"]]
    work.mkdir(parents=True, exist_ok=True)
    labelled.to_csv(work / "train.csv", index=False)
    unlabeled.to_csv(work / "unlabeled.csv", index=False)
    return {"train": work / "train.csv", "unlabeled": work / "unlabeled.csv", "test": folder / "test.csv",
            "unlabeled_rows": len(unlabeled)}


def contender_flags(contender: str, data: dict, strategies: list[str] | None) -> list[str]:
    flags = ["--no-knowledge"]
    if contender == "with_unlabeled":
        flags += ["--unlabeled", str(data["unlabeled"])]
    if strategies is not None:
        named = strategies if contender == "with_unlabeled" else [s for s in strategies if s not in SEMISUPERVISED]
        flags += ["--strategies", ",".join(named)]
    return flags


def result_of(key: dict, found: dict, unlabeled_rows: int) -> dict:
    row = {**key, "unlabeled_rows": unlabeled_rows if key["contender"] == "with_unlabeled" else 0,
           "wall_seconds": found["wall_seconds"], "commit": git_commit(), "machine": platform.node(),
           "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if "error" in found:
        return {**row, "error": found["error"]}
    info, board = found["info"], found["board"]
    return {**row, "test": info["scores"]["test"]["metrics"], "test_rows": info["scores"]["test"]["rows"],
            "val": info["scores"]["val"], "chosen": f"{info['strategy']}/{info['head']['pooling']}",
            **trial_counts(board)}


def trial_counts(board: list[dict]) -> dict:
    """A leaderboard's finished trials, and those of strategies that learn from unlabeled rows."""
    done = [r for r in board if r["state"] == "complete"]
    semi = [r for r in done if r["strategy"] in SEMISUPERVISED]
    return {"trials": len(done), "semisupervised_trials": len(semi),
            "best_semisupervised_val": max((r["score"] for r in semi), default=None)}


def recount(results: list[dict], works: list[Path]) -> list[dict]:
    """`results` with each row's trial counts read again from the first kept working folder
    holding its run's leaderboard (rows without one are kept as they are)."""
    out = []
    for r in results:
        board = next((b for w in works if (b := w / f"{r['dataset']}-{r['labels']}-{r['seed']}" / r["contender"]
                                           / "leaderboard.json").is_file()), None)
        out.append(r if board is None or "error" in r else {**r, **trial_counts(json.loads(board.read_text()))})
    return out


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "autotl"], cwd=HERE, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "?"
    return f"{commit}{'+uncommitted' if dirty else ''}"


# -- results ---------------------------------------------------------------------------------------

KEY = ("dataset", "labels", "seed", "contender", "timeout")


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"--out {path}: not a results file of this script ({exc})") from None


def save(path: Path, results: list[dict], data: Path = DATA) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"results": results}, indent=2) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".md").write_text(table(results, data))


def table(results: list[dict], data: Path = DATA) -> str:
    """Test accuracy with the unlabeled rows against without, per cell, and the issue's two
    target lines per labelled-row count."""
    cells: dict[tuple, dict] = {}
    for r in results:
        cells.setdefault((r["dataset"], r["labels"], r["seed"], r["timeout"]), {})[r["contender"]] = r
    lines = ["# Unlabeled rows: autotl with them against the labelled rows alone", "",
             "Generated by `benchmarks/semisupervised.py`; test accuracy (macro-F1), the same `--timeout` for both; "
             "SE: the standard error of the difference of two test accuracies on the cell's test rows, as if "
             "independent (a paired SE is smaller).",
             "", "| dataset | labels | unlabeled | seed | timeout s | labelled only | with unlabeled | Δ accuracy ± SE "
             "| chosen with unlabeled | semi-supervised trials (best val) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    deltas: dict[int, list[tuple[float, float]]] = {}
    for (dataset, labels, seed, timeout), pair in sorted(cells.items()):
        alone, given = pair.get("labelled_only"), pair.get("with_unlabeled")
        delta = ""
        if _ok(alone) and _ok(given):
            d, se = difference(alone, given, data / dataset / "test.csv")
            deltas.setdefault(labels, []).append((d, se))
            delta = f"{d:+.4f} ± {se:.4f}"
        semi = ""
        if _ok(given):
            best = given["best_semisupervised_val"]
            semi = f"{given['semisupervised_trials']}" + (f" ({best:.4f})" if best is not None else "")
        lines.append(f"| {dataset} | {labels} | {given['unlabeled_rows'] if given else ''} | {seed} | {timeout:.0f} "
                     f"| {_score(alone)} | {_score(given)} | {delta} | {given.get('chosen', '') if given else ''} "
                     f"| {semi} |")
    lines.append("")
    for labels, found in sorted(deltas.items()):
        mean = sum(d for d, _ in found) / len(found)
        below = [f"{d:+.4f} ± {se:.4f}" for d, se in found if d < -se]
        target = f" (target at 100 labels: +0.03, {'met' if mean >= 0.03 else 'missed'})" if labels == 100 else ""
        lines.append(f"- {labels} labels, {len(found)} cells: mean Δ accuracy **{mean:+.4f}**{target}; cells below "
                     f"the labelled-only search by more than one SE: {len(below)}"
                     + (f" ({', '.join(below)})" if below else "") + ".")
    return "\n".join(lines) + "\n"


def difference(alone: dict, given: dict, test_csv: Path) -> tuple[float, float]:
    """(with − without test accuracy, its standard error as for two independent binomials)."""
    a, b = alone["test"]["accuracy"], given["test"]["accuracy"]
    n = given.get("test_rows") or _rows(test_csv)
    return b - a, math.sqrt((a * (1 - a) + b * (1 - b)) / n)


def _rows(csv_path: Path) -> int:
    """Rows of a test.csv (results saved before `test_rows` was kept)."""
    import pandas as pd

    return len(pd.read_csv(csv_path, keep_default_na=False))


def _ok(r: dict | None) -> bool:
    return r is not None and "error" not in r


def _score(r: dict | None) -> str:
    if r is None:
        return ""
    if "error" in r:
        return f"error: {r['error'][:60]}"
    return f"{r['test']['accuracy']:.4f} ({r['test']['f1_macro']:.4f})"


# -- the runs ----------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = load(args.out)
    if args.recount:
        results = recount(results, args.recount)
        save(args.out, results, args.data)
        print(table(results, args.data))
        return 0
    if args.table:
        text = table(results, args.data)
        args.out.with_suffix(".md").write_text(text)
        print(text)
        return 0
    strategies = [s.strip() for s in args.strategies.split(",")] if args.strategies else None
    work = Path(tempfile.mkdtemp(prefix="autotl-semisupervised-"))
    try:
        for dataset in args.datasets:
            for labels in args.labels:
                for seed in args.seeds:
                    data = None
                    for contender in CONTENDERS:
                        key = {"dataset": dataset, "labels": labels, "seed": seed, "contender": contender,
                               "timeout": args.timeout}
                        saved = next((r for r in results if all(r[k] == key[k] for k in KEY)), None)
                        if saved is not None and "error" not in saved and not args.redo:
                            continue
                        if data is None:
                            data = cell_data(args.data / dataset, labels, seed, args.unlabeled_cap,
                                             work / f"{dataset}-{labels}-{seed}")
                        run_dir = work / f"{dataset}-{labels}-{seed}" / contender
                        shutil.rmtree(run_dir, ignore_errors=True)
                        found = autotl_search(data["train"], data["test"], args.timeout, seed, run_dir,
                                              contender_flags(contender, data, strategies))
                        row = result_of(key, found, data["unlabeled_rows"])
                        results = [r for r in load(args.out) if any(r[k] != key[k] for k in KEY)] + [row]
                        save(args.out, results, args.data)
                        print(f"{dataset} {labels} labels seed {seed} {contender}: {_score(row)} "
                              f"[{row.get('chosen', '')}, {row['wall_seconds']:.0f} s]", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results, args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
