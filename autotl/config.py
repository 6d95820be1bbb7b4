"""RunConfig: every setting of a search, in one frozen object.

Built once — by `autotl.search(data, **settings)` or by the CLI, which passes its flags
through the same call — and validated there, before any data is read. The search records
it in the study (user attribute ``autotl_run``); every local worker process and every
`autotl worker` on another machine reads it back, so they all run the same trials with the
same settings. What a worker must match to join — the study's *identity* — derives from it
and from the data's fingerprint (`identity`), and is checked in one place
(`study.check_identity`).

Never recorded: the storage URL (it may hold a password: workers get it from their
environment) and the test set (scored once, by the search process; workers never see it).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .backbone import DEFAULT_MODEL
from .errors import UsageError, one_of

RUN_ATTR = "autotl_run"  # study user attribute holding the recorded RunConfig
DEFAULT_TRIALS = 20  # when neither n_trials nor timeout is given


@dataclass(frozen=True)
class RunConfig:
    """What a search was asked to do. Field names are `autotl.search`'s keyword arguments."""

    data: str  # the CSV's absolute path (a DataFrame is first saved as RUN_DIR/data.csv)
    text_col: str | None = None  # None: inferred
    label_col: str | None = None  # None: inferred; "a,b,c": several 0/1 columns (multi-label)
    # multi-label: the separator of the label sets in one label column; None: "|" when more
    # than half its rows hold one, else a single-label column
    label_sep: str | None = None
    val: str | None = None  # validation CSV's absolute path; None: a stratified split of `data`
    val_frac: float = 0.2  # share of `data` held out for validation when `val` is None
    test: str | None = None  # test CSV, scored once for the final model (never recorded)
    # CSV of texts without labels (the training data's text column; any label ignored), for the
    # strategies that learn from them; rows of `data` with an empty label are unlabeled too
    unlabeled: str | None = None
    encoding: str = "utf-8"
    # backbone(s): bundled names, local directories or hub ids, comma-separated; "auto": every
    # bundled backbone installed (expanded when built, so workers load the same list)
    model: str = DEFAULT_MODEL
    strategies: tuple[str, ...] | None = None  # None: every installed strategy
    disable_plugins: tuple[str, ...] = ()
    metric: str | None = None  # None: the task's default (accuracy, r2)
    max_length: int | str = 128  # tokens per text; "auto": the training texts' 95th percentile (lengths.py)
    seed: int = 0  # split, sampler, training
    standard_head: bool = False  # search only the pipeline-loadable head
    pruner: str = "halving"
    n_trials: int | None = None  # finished trials the study should have
    timeout: float | None = None  # seconds for the whole search, refit included
    deadline: float | None = None  # Unix time the budget ends (start + timeout), shared by every worker
    refit: bool = True  # retrain the choice on train + validation rows
    rescore: int = 2  # at most this many cross-validation rounds re-score the finalists
    soup: bool = True  # try a greedy weight soup at the end
    ensemble: int = 0  # > 1: also save an ensemble of the top `ensemble` configurations
    portfolio: str | None = None  # first-trial portfolio file; None: the one shipped with autotl
    knowledge: str | None = None  # knowledge base: a storage URL or .journal path; None: the user's cache
    use_knowledge: bool = True  # warm-start from past searches and record this one (False: neither)
    out: str | None = None  # the run directory (absolute once built)
    storage: str | None = None  # Optuna storage URL or journal path; None: RUN_DIR/study.journal
    study_name: str = "autotl"
    artifacts: str | None = None  # artifact store directory (absolute once built)
    device: str = "auto"  # auto, cpu, or cuda:0,1,...
    trials_per_device: int = 1  # worker processes per device
    progress: bool = True  # progress bars on a terminal

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(cls, data, **settings) -> RunConfig:
        """A validated RunConfig from `autotl.search`'s arguments: unknown names and bad
        values are one UsageError each; the run directory is created (owner-only: it will
        hold a copy of the data); DataFrames (data, val, test) are saved into it as CSVs so
        workers can read them; paths become absolute; the deadline is fixed now."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"data", "deadline"}
        for name in settings:
            if name not in fields:
                raise UsageError(one_of("setting", name, sorted(fields)))
        frames = {name: value for name, value in [("data", data), *settings.items()] if _is_frame(value)}
        if not isinstance(data, (str, os.PathLike)) and "data" not in frames:
            raise UsageError(f"data must be a CSV path or a pandas DataFrame, got {type(data).__name__}")
        if isinstance(settings.get("model"), (list, tuple)):  # model=["a", "b"] from Python
            settings = {**settings, "model": ",".join(map(str, settings["model"]))}
        config = cls(data=str(data) if "data" not in frames else "", **{k: v for k, v in settings.items()
                                                                         if k not in frames})
        config.check()
        run_dir = (Path(config.out) if config.out else Path("autotl-runs") / _stem(data)).resolve()
        make_private_dir(run_dir)
        saved = {}
        for name, frame in frames.items():  # workers read files, not this process's memory
            path = run_dir / f"{name}.csv"
            frame.to_csv(path, index=False)
            saved[name] = str(path)
        config = dataclasses.replace(config, **saved)
        absolute = {
            "data": str(Path(config.data).resolve()),
            "out": str(run_dir),
            "val": None if config.val is None else str(Path(config.val).resolve()),
            "test": None if config.test is None else str(Path(config.test).resolve()),
            "unlabeled": None if config.unlabeled is None else str(Path(config.unlabeled).resolve()),
            "portfolio": None if config.portfolio is None else str(Path(config.portfolio).resolve()),
            "artifacts": str(Path(config.artifacts).resolve() if config.artifacts else run_dir / "artifacts"),
            "strategies": None if config.strategies is None else tuple(config.strategies),
            "disable_plugins": tuple(config.disable_plugins),
            "n_trials": DEFAULT_TRIALS if config.n_trials is None and config.timeout is None else config.n_trials,
            "deadline": None if config.timeout is None else time.time() + config.timeout,
            "model": ",".join(config.models()),
        }
        return dataclasses.replace(config, **absolute)

    def models(self) -> tuple[str, ...]:
        """The backbones to search, in the order given ("auto": the bundled ones installed)."""
        from .bundled import BUNDLED, bundled_name, installed

        if not isinstance(self.model, str):
            raise UsageError(f"model must be a name, a comma-separated list or 'auto', got {type(self.model).__name__}")
        names = [m.strip() for m in self.model.split(",")]
        if any(not m for m in names):
            raise UsageError(f"model '{self.model}' has an empty name; pass names separated by single commas")
        if "auto" in (m.lower() for m in names):
            if len(names) > 1:
                raise UsageError("model 'auto' takes every bundled backbone; pass it alone")
            found = installed()
            if not found:
                raise UsageError("model 'auto' found no bundled backbone installed; "
                                 + "; ".join(b.install for b in BUNDLED.values()))
            return tuple(found)
        seen = [bundled_name(m) or m for m in names]
        twice = sorted({m for m in seen if seen.count(m) > 1})
        if twice:
            raise UsageError(f"model names {', '.join(twice)} more than once; name each backbone once")
        return tuple(names)

    def check(self) -> None:
        """Every value's rule, before any data is read."""
        from .decide import FOLDS
        from .study import PRUNERS

        self.models()
        if self.n_trials is not None and self.n_trials < 1:
            raise UsageError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.max_length != "auto" and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
                                          or not 8 <= self.max_length <= 8192):
            raise UsageError(f"max_length must satisfy 8 <= max_length <= 8192 or be 'auto', got {self.max_length}")
        if not 0 <= self.seed < 2 ** 32:
            raise UsageError(f"seed must satisfy 0 <= seed < 2**32, got {self.seed}")
        if not 0 < self.val_frac < 1:
            raise UsageError(f"val_frac must satisfy 0 < val_frac < 1, got {self.val_frac}")
        if not 0 <= self.rescore <= FOLDS - 1:
            raise UsageError(f"rescore must satisfy 0 <= rescore <= {FOLDS - 1} (re-scoring rounds), "
                             f"got {self.rescore}")
        if self.ensemble == 1 or self.ensemble < 0:
            raise UsageError(f"ensemble must be 0 (none) or at least 2 members, got {self.ensemble}")
        if self.trials_per_device < 1:
            raise UsageError(f"trials_per_device must be >= 1, got {self.trials_per_device}")
        if self.pruner not in PRUNERS:
            raise UsageError(one_of("pruner", self.pruner, PRUNERS))
        for name in ("val", "test", "unlabeled"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise UsageError(f"{name} must be a CSV path or a pandas DataFrame, got {type(value).__name__}")
        if self.portfolio is not None:
            from .portfolio import load

            load(self.portfolio)  # a bad file fails before any data is read
        if self.storage:
            from .storage import storage_arg

            storage_arg(self.storage, None)  # `--storage x.db` fails before any data is read

    # -- the study's record --------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return Path(self.out)

    def recorded(self) -> dict:
        """What the study keeps: everything a worker needs, nothing secret or test."""
        raw = asdict(self)
        for private in ("storage", "test", "progress", "knowledge"):  # a URL may hold a password
            raw.pop(private)
        return raw

    @classmethod
    def from_recorded(cls, raw: dict, **overrides) -> RunConfig:
        known = {k: v for k, v in raw.items() if k in {f.name for f in dataclasses.fields(cls)}}
        for name in ("strategies", "disable_plugins"):
            if known.get(name) is not None:
                known[name] = tuple(known[name])
        return dataclasses.replace(cls(**known), **overrides)

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()


def identity(config: RunConfig, *, fingerprint: str, model: str, metric: str, strategies, heads) -> dict:
    """What a worker must match to join the study: the rows trials train and validate on
    (their fingerprint; test rows excluded), the backbone, the metric, the strategies, the
    heads, the max length and the seed."""
    return {"data": fingerprint, "model": model, "metric": metric, "strategies": sorted(strategies),
            "heads": list(heads), "max_length": config.max_length, "seed": config.seed}


def _stem(data) -> str:
    return Path(data).stem if isinstance(data, (str, os.PathLike)) else "dataframe"


def _is_frame(value) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_csv")


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) readable by its owner only: a run directory holds a copy
    of the user's data and the study. An existing directory keeps its mode."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
