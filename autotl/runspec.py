"""What a search was asked to do, recorded in the study so any worker can join it.

`autotl search` writes a RunSpec into the study's user attributes (``autotl_run``); an
`autotl worker` on any machine reads it back and rebuilds the same trials from the same
data (its content hash must match the study's), strategies, metric and budget. The budget's
deadline is wall-clock time (Unix seconds), so every worker stops at the same moment.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

RUN_ATTR = "autotl_run"


@dataclass(frozen=True)
class RunSpec:
    data: str  # absolute path of the CSV on the machine that started the search
    text_col: str | None = None
    label_col: str | None = None
    val: str | None = None  # validation CSV, or None for a split of `data`
    val_frac: float = 0.2
    encoding: str = "utf-8"
    model: str = "all-MiniLM-L6-v2"
    strategies: list[str] | None = None  # None: every installed strategy
    disable_plugins: list[str] = field(default_factory=list)
    metric: str | None = None
    max_length: int = 128
    seed: int = 0
    standard_head: bool = False
    pruner: str = "halving"
    n_trials: int | None = None  # finished trials the study should have
    deadline: float | None = None  # Unix time after which no trial or epoch starts
    run_dir: str | None = None  # where the starting machine keeps best/
    artifacts: str | None = None  # the artifact store's directory
    portfolio: str | None = None  # first-trial portfolio file (None: the one shipped with autotl)
    rescore: int = 2  # most re-scoring rounds of the finalists before the choice (0: validation alone)
    soup: bool = True  # try a greedy soup of the top fine-tunes at the end
    ensemble: int = 0  # > 1: also save an averaged-prediction ensemble of the top `ensemble`

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> RunSpec:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()
