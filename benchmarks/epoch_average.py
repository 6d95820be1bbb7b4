"""Which epoch of a trial to keep, and would an average of its epochs do better? Kept runnable.

    python benchmarks/epoch_average.py ../shared/data/ag_news --rows 1000 --seeds 0 --out FILE.json
    python benchmarks/epoch_average.py --merge A.json B.json --out FILE.json   # table only

Why: at 1x the recipe's time a search runs one trial; on AG News (1,000 rows) the first
portfolio configuration (lr 1e-4, 6 epochs) validated 0.90 after epoch 1, then 0.84-0.87,
the epoch-1 snapshot was kept and scored 1.4 points under the recipe. Was the early peak
real, or noise on 200 validation rows? And would averaging the weights along the run
(Izmailov et al. 2018, SWA; Wortsman et al. 2022's soups, within one trajectory) do better?

Per dataset folder, --rows (the rows compare.py trains on: rows.subsample, seed S) and
seed: autotl's own split (80/20, seed S) and the leave-one-dataset-out portfolio's first
configuration for the rows (or --config NAME from it), trained with every epoch's weights
kept, without a deadline. Each candidate model — every epoch, and the uniform average of
the last k epochs for every k — is scored on the validation rows and on --dev rows of
train.csv outside the subsample (rows.dev_rows): evidence, never test.csv. The JSON keeps
every candidate's validation predictions and paired standard errors, so any epoch rule can
be scored offline; the table compares the rule before 93e424c (the best epoch, or a later one
within one paired SE) with the rule since (the schedule's last epoch unless the best beats it
significantly, `train.schedule_end_margin`), and shows the average of all epochs. The
"old rule" column is the epoch the training code itself kept: run this from a checkout
before 93e424c (as benchmarks/results/epoch_average.json was) for that comparison; from a
later one both columns show the new rule.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rows import dev_rows, subsample  # noqa: E402  (benchmarks/rows.py)

LOO = HERE / "results" / "portfolio_loo"


def first_config(dataset: str, rows: int, name: str | None) -> dict:
    from autotl.portfolio import bucket_for, load

    order = bucket_for(load(LOO / f"{dataset}.json"), rows)["order"]
    entry = next(e for e in order if name is None or e["name"] == name)
    return {"name": entry["name"], "params": entry["params"]}


def averaged(states: list[list]) -> list:
    import torch

    return [torch.stack([s[i].float() for s in states]).mean(0).to(states[0][i].dtype) for i in range(len(states[0]))]


def one_cell(folder: Path, rows: int, seed: int, args) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    import autotl.objective as objective
    from autotl.api import prepare
    from autotl.batching import encode
    from autotl.config import RunConfig
    from autotl.select import epoch_tie_margin
    from autotl.train import infer, judge

    frame = pd.read_csv(folder / "train.csv")[["text", "label"]].dropna()
    train = subsample(frame, rows, seed=seed)
    dev = dev_rows(frame, set(train.index), args.dev)
    work = Path(tempfile.mkdtemp(prefix="autotl-avg-"))
    train.to_csv(work / "train.csv", index=False)
    config = RunConfig.build(str(work / "train.csv"), seed=seed, out=str(work / "run"), max_length=args.max_length,
                             use_knowledge=False)
    prepared = prepare(config, device="cpu", budget=None, progress=False)
    setup, target = prepared.setup, prepared.target
    labels = list(target.label_names)
    dev = dev[dev["label"].astype(str).isin(labels)]
    dev_encoded = encode(prepared.tokenizer, dev["text"].astype(str).tolist(),
                         np.array([labels.index(str(v)) for v in dev["label"]]), args.max_length, key=f"dev:{seed}")
    chosen = first_config(folder.name, rows, args.config)
    built = {}
    original = objective.build_model

    def keeping_build(*a, **k):
        built["model"] = original(*a, **k)
        return built["model"]

    states = []

    def on_epoch(epoch, score, left):
        states.append([p.detach().to("cpu", copy=True) for p in built["model"].parameters()])

    objective.build_model = keeping_build
    try:
        outcome = objective.run_params(setup, dict(chosen["params"]), on_epoch=on_epoch)
    finally:
        objective.build_model = original
    model, result = outcome.model, outcome.result
    pad = prepared.tokenizer.pad_token_id or 0

    predictions = {}

    def scores(name, state) -> dict:
        with torch.no_grad():
            for p, s in zip(model.parameters(), state):
                p.copy_(s)
        judged = judge(infer(model, setup.val, pad_id=pad, device="cpu"), setup.val.targets, setup.fit)
        predictions[name] = judged.predictions
        return {"val": float(judged.score),
                "dev": float(judge(infer(model, dev_encoded, pad_id=pad, device="cpu"), dev_encoded.targets,
                                   setup.fit).score)}

    candidates = {f"epoch {i + 1}": scores(f"epoch {i + 1}", s) for i, s in enumerate(states)}
    for k in range(2, len(states) + 1):
        candidates[f"mean of last {k}"] = scores(f"mean of last {k}", averaged(states[-k:]))
    kept = f"epoch {result.best_epoch + 1}"
    last = f"epoch {len(states)}"
    for name, scored in candidates.items():  # one paired standard error of its difference from the kept epoch
        scored["se_vs_kept"] = float(epoch_tie_margin(setup.fit.metric, setup.val.targets, predictions[name],
                                                      predictions[kept]))
        scored["se_vs_last"] = float(epoch_tie_margin(setup.fit.metric, setup.val.targets, predictions[name],
                                                      predictions[last]))
        scored["val_predictions"] = np.asarray(predictions[name]).tolist()  # any other rule, offline
    return {"dataset": folder.name, "rows": rows, "seed": seed, "config": chosen["name"], "metric": setup.fit.metric.name,
            "val_rows": len(setup.val), "dev_rows": len(dev_encoded), "kept": kept, "candidates": candidates,
            "val_targets": np.asarray(setup.val.targets).tolist(), "spans": list(result.spans or ()),
            "kept_at_schedule_end": result.kept_at_schedule_end}


def new_rule(r: dict) -> str | None:
    """The candidate train._Best keeps since 93e424c: the schedule's last epoch, unless the best
    epoch beats it by more than schedule_end_margin paired SEs; None without the SEs (a run of
    this script before they were recorded) where the old rule kept another epoch."""
    from autotl.train import schedule_end_margin

    c = r["candidates"]
    epochs = [k for k in c if k.startswith("epoch")]
    last = epochs[-1]
    if r["kept"] == last:
        return last  # kept by the old rule too: the new one only ever moves the choice later
    top = max(epochs, key=lambda k: c[k]["val"])  # the first of equal scores, as train._Best
    if "se_vs_last" not in c[top]:
        return None
    beaten = c[top]["val"] - c[last]["val"] > schedule_end_margin(len(epochs)) * c[top]["se_vs_last"]
    return r["kept"] if beaten else last


def table(results: list[dict]) -> str:
    lines = ["# Which epoch to keep: the old rule, the schedule's end, averages (dev rows of train.csv, never test.csv)",
             "", "Generated by `benchmarks/epoch_average.py`: the leave-one-dataset-out portfolio's first "
             "configuration for the rows, trained once with every epoch's weights kept; each candidate scored on "
             "the validation rows (val) and on held-out train.csv rows (dev). Old rule: the best epoch, or a later "
             "one within one paired SE (before 93e424c). New rule: the schedule's last epoch unless the best beats "
             "it by more than `train.schedule_end_margin` paired SEs. Mean of all: the uniform average of every "
             "epoch's weights.", "",
             "| dataset | rows | seed | config | metric | epochs val | old rule keeps (val / dev) | new rule keeps "
             "(val / dev) | Δ dev (new − old) | last epoch dev | mean of all (val / dev) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    deltas = []
    for r in results:
        c = r["candidates"]
        epochs = [k for k in c if k.startswith("epoch")]
        full = f"mean of last {len(epochs)}"
        new = new_rule(r)
        kept = r["kept"]
        if new is not None:
            deltas.append(c[new]["dev"] - c[kept]["dev"])
        new_cell = f"{new} ({c[new]['val']:.3f} / {c[new]['dev']:.3f})" if new else "- (no SEs recorded)"
        delta = f"{c[new]['dev'] - c[kept]['dev']:+.3f}" if new else "-"
        lines.append(f"| {r['dataset']} | {r['rows']} | {r['seed']} | {r['config']} | {r['metric']} | "
                     f"{' '.join(format(c[k]['val'], '.3f') for k in epochs)} | "
                     f"{kept} ({c[kept]['val']:.3f} / {c[kept]['dev']:.3f}) | {new_cell} | {delta} | "
                     f"{c[epochs[-1]]['dev']:.3f} | {c[full]['val']:.3f} / {c[full]['dev']:.3f} |")
    if deltas:
        moved = sum(d != 0 for d in deltas)
        lines += ["", f"New rule against the old on dev rows: mean {sum(deltas) / len(deltas):+.4f} over "
                      f"{len(deltas)} cells; the choice moved in {sum(new_rule(r) not in (None, r['kept']) for r in results)} "
                      f"({moved} with a different dev score)."]
    return "\n".join(lines) + "\n"


def _merged(files) -> list[dict]:
    """Every result of `files`; for a (dataset, rows, seed) in several, the last file's."""
    merged = {}
    for f in files:
        for r in json.loads(Path(f).read_text())["results"]:
            merged[(r["dataset"], r["rows"], r["seed"])] = r
    return sorted(merged.values(), key=lambda r: (r["rows"], r["dataset"], r["seed"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="*", type=Path)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--seeds", default="0")
    p.add_argument("--dev", type=int, default=1000, help="held-out train.csv rows to score on")
    p.add_argument("--config", default=None, help="a configuration name of the LOO portfolio (default: its first)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", type=Path, default=HERE / "results" / "epoch_average.json")
    p.add_argument("--merge", nargs="*", type=Path, default=(),
                   help="only merge these result files into --out (a later file's cell replaces an earlier one's)")
    args = p.parse_args(argv)
    results = _merged(args.merge) if args.merge else (
        json.loads(args.out.read_text())["results"] if args.out.exists() else [])
    for folder in args.folders:
        for seed in (int(s) for s in args.seeds.split(",")):
            if any((r["dataset"], r["rows"], r["seed"]) == (folder.name, args.rows, seed) for r in results):
                continue
            results.append(one_cell(folder, args.rows, seed, args))
            args.out.write_text(json.dumps({"results": results}, indent=1))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    args.out.write_text(json.dumps({"results": results}, indent=1))
    args.out.with_suffix(".md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
