"""`autotl search | worker | export | predict | report | strategies`: argparse front over the Python API.

AutotlError -> one line "error: ..." and exit 2. Any other exception is a bug and keeps
its traceback. `--help` and `strategies` import neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from .errors import AutotlError, UsageError
from .workers import STORAGE_ENV

KNOWLEDGE_ENV = "AUTOTL_KNOWLEDGE"  # the knowledge base's URL, kept out of `ps`

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """'90', '90s', '30m', '1.5h' -> seconds."""
    match = _DURATION.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration '{text}': use e.g. 600, 90s, 30m or 2h")
    return float(match.group(1)) * _UNIT[match.group(2)]


def _default(name: str):
    from .config import RunConfig

    return RunConfig.__dataclass_fields__[name].default


def _max_length(text: str):
    """'auto' or an integer (its range is RunConfig's to check)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid max length '{text}': use a number of tokens or auto") from None


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotl", description="Find the best way to transfer a pretrained model to your labelled text data.")
    parser.add_argument("--version", action="version", version=f"autotl {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (failed trials' tracebacks)")
    parser.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                        help="skip the plugin NAME (an 'autotl' entry point); repeatable")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Defaults live in RunConfig alone: a flag not given is not passed (SUPPRESS), so the
    # CLI and `autotl.search()` cannot drift apart; help texts read the same defaults.
    s = sub.add_parser("search", help="search strategies x hyperparameters; write the best model",
                       argument_default=argparse.SUPPRESS,
                       description="Search transfer strategies and their hyperparameters with Optuna; "
                                   "print a leaderboard and write RUN_DIR/best (a Hugging Face model directory).")
    s.add_argument("data", help="CSV with a text column and a label column")
    s.add_argument("--text-col", help="text column, or two comma-separated (a,b) encoded as a text pair "
                   "(default: inferred; a pair when exactly two columns hold free text)")
    s.add_argument("--label-col", help="label column (default: inferred); several 0/1 columns, comma-separated "
                   "(a,b,c), make it multi-label")
    s.add_argument("--label-sep", metavar="SEP", help="multi-label: the label column holds label sets joined by SEP "
                   "(default: '|' when more than half its rows hold one)")
    s.add_argument("--model", help="backbone(s), comma-separated: bundled names (all-MiniLM-L6-v2, "
                   "all-mpnet-base-v2), local HF model directories or hub ids; 'auto' takes every bundled backbone "
                   f"installed (default: {_default('model')})")
    s.add_argument("--strategies", type=_names, help="comma-separated strategy names (default: all; see `autotl strategies`)")
    s.add_argument("--n-trials", type=int, help="finished trials the study should have (default: 20 when no --timeout)")
    s.add_argument("--timeout", type=duration, help="wall-clock budget: 600, 90s, 30m, 2h")
    s.add_argument("--metric", help="validation metric: accuracy, f1_macro, f1_weighted (classification); "
                   "r2, pearson, mse, mae (regression); f1_micro, f1_macro, subset_accuracy (multi-label)")
    split = s.add_mutually_exclusive_group()
    split.add_argument("--val-frac", type=float, help=f"stratified validation fraction (default {_default('val_frac')})")
    split.add_argument("--val", metavar="V.csv", help="validation CSV instead of a split")
    s.add_argument("--test", metavar="T.csv", help="test CSV, scored once for the final model only")
    s.add_argument("--unlabeled", metavar="U.csv", help="CSV of texts without labels (the same text column; a label "
                   "column is ignored) for the strategies that learn from them (tapt, self_training); rows of DATA "
                   "with an empty label are unlabeled rows too")
    s.add_argument("--out", metavar="RUN_DIR", help="run directory (default autotl-runs/<csv name>); "
                   "re-running with the same one resumes")
    s.add_argument("--storage", metavar="URL", help="Optuna storage URL or journal file (default: the "
                   "AUTOTL_STORAGE environment variable, which keeps a password out of `ps`, else "
                   "RUN_DIR/study.journal)")
    s.add_argument("--study-name", help=f"study name in the storage (default {_default('study_name')})")
    s.add_argument("--seed", type=int, help=f"seed for the split, sampler and training (default {_default('seed')})")
    s.add_argument("--max-length", type=_max_length, help="max tokens per text, or 'auto': the 95th percentile "
                   f"of the training texts' lengths, up to the model's limit (default {_default('max_length')})")
    s.add_argument("--standard-head", action="store_true",
                   help="search only the standard classification head, loadable by transformers.pipeline")
    s.add_argument("--no-refit", action="store_true",
                   help="keep the winning trial's own model instead of retraining its configuration "
                        "on train + validation rows")
    s.add_argument("--pruner", help="stop weak trials early: halving (successive halving over epochs within each "
                   f"strategy's trials), median, none (default {_default('pruner')})")
    s.add_argument("--devices", "--device", dest="device",
                   help="auto (every visible GPU, else the CPU), cpu, or GPUs cuda:0,1,...; one worker "
                        f"process per device when there are several (default {_default('device')})")
    s.add_argument("--trials-per-device", type=int, metavar="N",
                   help=f"worker processes per device, when one trial cannot fill it (default "
                        f"{_default('trials_per_device')})")
    s.add_argument("--artifacts", metavar="DIR",
                   help="artifact store for the best models (default RUN_DIR/artifacts; a shared "
                        "directory when workers run on other machines)")
    s.add_argument("--portfolio", metavar="FILE", help="first-trial portfolio (default: the one shipped with "
                   "autotl, learned from benchmark runs; see benchmarks/portfolio.py)")
    s.add_argument("--rescore", type=int, metavar="N",
                   help="at most N rounds of cross-validation folds re-score the finalists when validation "
                        f"cannot tell them apart (default {_default('rescore')}; 0 chooses on the validation "
                        "split alone)")
    s.add_argument("--no-soup", action="store_true", help="do not try a greedy weight soup of the top fine-tunes")
    s.add_argument("--ensemble", type=int, metavar="K",
                   help="also save an averaged-prediction ensemble of the top K configurations in "
                        "RUN_DIR/ensemble (served by `autotl predict RUN_DIR`)")
    s.add_argument("--knowledge", metavar="URL", help="knowledge base of past searches: a storage URL (a team's "
                   "database) or a .journal file (default: the AUTOTL_KNOWLEDGE environment variable, else "
                   "knowledge.journal in autotl's cache directory)")
    s.add_argument("--no-knowledge", action="store_true",
                   help="start cold: no warm start from past searches, and this one is not recorded")
    s.add_argument("--encoding", help=f"CSV encoding (default {_default('encoding')})")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")

    w = sub.add_parser("worker", help="join a study started by `autotl search` and run its trials",
                       description="Run trials of an existing study until its budget is spent. The study "
                                   "records the data, strategies and settings; this machine needs the same "
                                   "data (content hash checked) and plugins.")
    w.add_argument("--storage", metavar="URL",
                   help="the search's storage: postgresql://... or its journal file (default: the "
                        "AUTOTL_STORAGE environment variable, which keeps a password out of `ps`)")
    w.add_argument("--study-name", default="autotl", help="study name in the storage (default autotl)")
    w.add_argument("--data", metavar="DATA.csv", help="this machine's copy of the dataset (default: the "
                                                      "path recorded by the search)")
    w.add_argument("--unlabeled", metavar="U.csv", help="this machine's copy of the search's --unlabeled file "
                                                        "(default: the path recorded by the search)")
    w.add_argument("--artifacts", metavar="DIR", help="the search's artifact store (default: as recorded)")
    w.add_argument("--out", metavar="RUN_DIR", help="also keep best/ here (default: the search's run "
                                                    "directory if it exists on this machine)")
    w.add_argument("--device", default="auto", help="one device: auto, cpu, cuda, cuda:N")
    w.add_argument("--threads", type=int, help="torch CPU threads")
    w.add_argument("--progress", action="store_true", help="a progress bar per trial")

    e = sub.add_parser("export", help="add model.onnx to RUN_DIR/best (--onnx), or write a study's best model "
                                      "(from its artifact store) as OUT/best",
                       description="`autotl export RUN_DIR --onnx` writes RUN_DIR/best/model.onnx for "
                                   "`autotl predict RUN_DIR DATA --onnx` and other ONNX runtimes. "
                                   "`autotl export --storage URL --out DIR` writes the study's best model as "
                                   "DIR/best (add --onnx for its model.onnx too).")
    e.add_argument("run", nargs="?", metavar="RUN_DIR", help="a finished search's --out directory (or its best/)")
    e.add_argument("--onnx", action="store_true", help="write best/model.onnx (needs: pip install \"autotl[onnx]\")")
    e.add_argument("--storage", metavar="URL", help="the search's storage (default: the AUTOTL_STORAGE "
                                                     "environment variable)")
    e.add_argument("--study-name", default="autotl", help="study name in the storage (default autotl)")
    e.add_argument("--artifacts", metavar="DIR", help="the search's artifact store (default: as recorded)")
    e.add_argument("--out", metavar="DIR", help="write the study's best model as DIR/best")

    p = sub.add_parser("predict", help="predict labels for new rows with a search's best model")
    p.add_argument("run", metavar="RUN_DIR", help="the --out directory of a search (or its best/)")
    p.add_argument("data", help="CSV or JSON lines (.jsonl) with a text column; - reads either from standard input")
    p.add_argument("-o", "--output", metavar="PREDS.csv", help="write here (default: standard output)")
    p.add_argument("--text-col", help="text column, or a text pair's two (a,b) (default: the one(s) used in training)")
    p.add_argument("--device", default="auto")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--onnx", action="store_true", help="run best/model.onnx with onnxruntime on the CPU "
                                                       "(write it with `autotl export RUN_DIR --onnx`)")

    r = sub.add_parser("report", help="write RUN_DIR/report.html and report.md again from the study",
                       description="Rebuild a search's report.html (charts, leaderboard, test results) and "
                                   "report.md from its study and RUN_DIR/best; works while the search still runs.")
    r.add_argument("run", metavar="RUN_DIR", help="the --out directory of a search")
    r.add_argument("--storage", metavar="URL", help="the search's storage, when it was not RUN_DIR/study.journal "
                                                     "(default: that journal, else the AUTOTL_STORAGE environment "
                                                     "variable)")
    r.add_argument("--study-name", help="study name in the storage (default: the run directory's study)")

    sub.add_parser("strategies", help="list installed strategies, their plugins and search spaces")

    k = sub.add_parser("knowledge", help="list, show or forget what past searches recorded",
                       description="The knowledge base warm-starts new searches from the most similar past "
                                   "ones. Records shipped with autotl (source 'starter') are listed too.")
    k.add_argument("action", choices=("list", "show", "forget"))
    k.add_argument("record", nargs="?", metavar="ID", help="the record to show or forget")
    k.add_argument("--knowledge", metavar="URL", help="the knowledge base (default: the AUTOTL_KNOWLEDGE "
                                                      "environment variable, else the one in autotl's cache)")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    from .redact import MaskingFormatter, mask

    for handler in logging.getLogger().handlers:  # no password reaches the terminal or a log file
        handler.setFormatter(MaskingFormatter("%(message)s"))
    logging.getLogger("autotl").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        commands = {"search": _search, "predict": _predict, "strategies": _strategies, "worker": _worker,
                    "export": _export, "knowledge": _knowledge, "report": _report}
        return commands[args.command](args)
    except AutotlError as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `autotl predict ... | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")
        return 0


def _search(args) -> int:
    from .api import search
    from .report import format_table

    settings = dict(vars(args))  # only the flags given (argparse.SUPPRESS): RunConfig has the defaults
    for name in ("command", "verbose", "disable_plugin", "data"):
        settings.pop(name, None)
    for flag, setting in (("no_refit", "refit"), ("no_soup", "soup"), ("no_progress", "progress"),
                          ("no_knowledge", "use_knowledge")):
        if settings.pop(flag, False):
            settings[setting] = False
    if args.disable_plugin:
        settings["disable_plugins"] = tuple(args.disable_plugin)
    if "knowledge" not in settings and os.environ.get(KNOWLEDGE_ENV):
        settings["knowledge"] = os.environ[KNOWLEDGE_ENV]
    if "storage" not in settings and os.environ.get(STORAGE_ENV):
        settings["storage"] = os.environ[STORAGE_ENV]  # a password in argv would show in `ps`
    result = search(args.data, **settings)
    print(format_table(result.leaderboard, result.metric))
    if result.best_model is not None:
        print(_summary(result))
    return 130 if result.interrupted else 0


def _summary(result) -> str:
    """The chosen model, why, its margin over the baseline recipe, its test score."""
    row = next((r for r in result.leaderboard if r["trial"] == result.chosen), None)
    soup = (result.final or {}).get("soup")
    made = f"a soup of trials {', '.join(map(str, soup['members']))} from " if soup else ""
    what = f"{row['strategy']}/{row['head']}" if row else "?"
    if row and len({r.get("backbone") for r in result.leaderboard}) > 1:
        what += f" on {row['backbone']}"  # several backbones searched: say which one won
    # A soup's own validation score, not its first ingredient's (which the leaderboard shows).
    score = soup["val"] if soup else result.best_score
    alone = f" (trial {result.chosen} alone: {result.best_score:.4f})" if soup else ""
    lines = [f"\nbest: {made}trial {result.chosen} {what} {result.metric}={score:.4f}{alone} "
             f"-> {result.best_model}"]
    if result.decision:
        lines.append(f"chosen: {result.decision['reason']}")
        base = result.decision.get("baseline")
        if base:
            from .decide import baseline_caveat

            lines.append(f"margin over the baseline recipe (trial {base['trial']}): {base['margin']:+.4f} ± "
                         f"{base['se']:.4f} ({result.metric}, paired on {base['rows']} validation rows)"
                         f"{baseline_caveat(base)}")
    if result.unlabeled:
        lines.append(f"unlabeled rows: {result.unlabeled}")
    if result.test_scores:
        lines.append("test: " + ", ".join(f"{k}={v:.4f}" for k, v in result.test_scores["metrics"].items()))
    return "\n".join(lines)


def _storage(args) -> str:
    storage = args.storage or os.environ.get(STORAGE_ENV)
    if not storage:
        raise UsageError(f"no storage given; pass --storage URL or set {STORAGE_ENV}")
    return storage


def _worker(args) -> int:
    from .api import work

    storage = _storage(args)
    done = work(storage=storage, study_name=args.study_name, data=args.data, device=args.device,
                artifacts=args.artifacts, out=args.out, threads=args.threads, progress=args.progress,
                unlabeled=args.unlabeled)
    logging.getLogger("autotl").info("worker done: %d trial(s) finished here", done)
    return 0


def _export(args) -> int:
    """`export RUN_DIR --onnx` (model.onnx beside a finished run's best model), or the study
    form `--storage URL --out DIR` (its best model from the artifact store), with --onnx too."""
    from_store = bool(args.storage or args.out or (os.environ.get(STORAGE_ENV) and not args.run))
    if not from_store and not (args.run and args.onnx):
        what = f"`autotl export {args.run}` writes only model.onnx: add --onnx" if args.run else "nothing to export"
        raise UsageError(f"{what}; pass RUN_DIR --onnx (a finished search's best model as ONNX) or --storage URL "
                         f"--out DIR (a study's best model from its artifact store; {STORAGE_ENV} may hold the URL)")
    if args.onnx:
        from .onnx_export import require_export

        require_export()  # before a long copy from the store
    run = args.run
    if from_store:
        from .api import export_best

        if args.run and args.out and args.run != args.out:
            raise UsageError(f"two output directories given ({args.run} and --out {args.out}); pass one")
        run = args.out or args.run
        if not run:
            raise UsageError("--storage needs the directory to write DIR/best in: pass --out DIR")
        info = export_best(storage=_storage(args), study_name=args.study_name, out=run, artifacts=args.artifacts)
        print(f"wrote trial {info['trial']} ({info['strategy']}, validation {info['metric']} "
              f"{info['scores']['val']:.4f}) to {run}/best")
    if args.onnx:
        from .onnx_export import OPSET, export_onnx

        done = export_onnx(run)
        print(f"wrote {done.path} (ONNX opset {OPSET}; inputs {', '.join(done.inputs)}; output logits; "
              f"onnxruntime within {done.max_diff:.1e} of PyTorch on {done.rows} check rows)")
    return 0


def _predict(args) -> int:
    from .api import predict

    frame = predict(args.run, args.data, text_col=args.text_col, encoding=args.encoding, device=args.device,
                    onnx=args.onnx)
    if args.output:
        frame.to_csv(args.output, index=False)
        print(f"wrote {len(frame)} predictions to {args.output}", file=sys.stderr)
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def _strategies(args) -> int:
    from .plugins import Registry
    from .space import describe_space

    registry = Registry(tuple(args.disable_plugin))
    for name, reg in registry.strategies().items():
        origin = f"{reg.plugin} ({reg.distribution})" if reg.distribution else reg.plugin
        print(f"{name}  [plugin {origin}]")
        print(f"    {getattr(reg.strategy, 'description', '')}")
        if getattr(reg.strategy, "opt_in", None):
            print(f"    searched only when named with --strategies: {reg.strategy.opt_in}")
        for param, dist in describe_space(reg.strategy).items():
            default = reg.strategy.defaults.get(param, "")
            print(f"    {param:<28} {dist}" + (f"   default {default}" if default != "" else ""))
    return 0


def _report(args) -> int:
    from pathlib import Path

    from .html_report import rebuild_reports
    from .storage import storage_arg

    storage = args.storage
    if storage is None and not Path(storage_arg(None, Path(args.run))).exists():
        storage = os.environ.get(STORAGE_ENV)  # a search that kept its study in a database
    path = rebuild_reports(args.run, storage=storage, study_name=args.study_name)
    print(f"wrote {path} and {path.with_name('report.md')}")
    return 0


def _knowledge(args) -> int:
    import json

    from . import knowledge

    location = args.knowledge or os.environ.get(KNOWLEDGE_ENV)
    storage = knowledge.open_knowledge(location)
    saved = knowledge.records(storage)
    starters = knowledge.starter_records()
    if args.action == "list":
        print(f"{'id':<32} {'source':<8} {'data':<20} {'rows':>6} {'metric':<9} {'best':>7} {'trials':>6}")
        for r in saved + starters:
            done = [t["value"] for t in r.get("trials", []) if t.get("value") is not None]
            best = (max(done) if r.get("maximize", True) else min(done)) if done else None
            print(f"{r['id']:<32} {r.get('source', 'search'):<8} {(r.get('data') or {}).get('name', '?')[:20]:<20} "
                  f"{(r.get('meta') or {}).get('rows', '?'):>6} {r.get('metric', '?'):<9} "
                  f"{'' if best is None else f'{best:.4f}':>7} {len(r.get('trials', [])):>6}")
        from .redact import mask

        print(f"{len(saved)} recorded in {mask(location or knowledge.default_location())}, {len(starters)} shipped "
              "with autotl")  # a team's URL may carry its password: AUTOTL_KNOWLEDGE is how it stays out of sight
        return 0
    if not args.record:
        raise UsageError(f"`autotl knowledge {args.action}` needs a record ID (see `autotl knowledge list`)")
    found = next((r for r in saved + starters if r.get("id") == args.record), None)
    if found is None:
        raise UsageError(f"no knowledge record '{args.record}'; see `autotl knowledge list`")
    if args.action == "show":
        print(json.dumps(found, indent=2, default=str))
        return 0
    if found.get("source") == "starter":
        raise UsageError(f"'{args.record}' ships with autotl and cannot be forgotten; set "
                         "AUTOTL_STARTER_KNOWLEDGE=0 to leave the shipped records out")
    knowledge.forget(storage, args.record)
    print(f"forgot {args.record}")
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
