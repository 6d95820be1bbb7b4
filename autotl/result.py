"""What a search returns (kept import-light: `import autotl` must not import torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SearchResult:
    """What a search produced (the engine logs; the CLI prints this)."""

    run_dir: Path  # everything: study storage, leaderboard, report, best/
    best_model: Path | None  # RUN_DIR/best (a Hugging Face model directory), None if no trial finished
    best_params: dict  # the chosen configuration: strategy, head and the strategy's namespaced params
    best_score: float | None  # validation score of the chosen trial
    metric: str  # the validation metric's name
    test_scores: dict | None  # every metric of the task on --test, for the final model only
    leaderboard: list[dict] = field(repr=False)  # one row per trial, best first
    interrupted: bool = False  # stopped by Ctrl-C; finished trials and best/ are kept
    chosen: int | None = None  # trial number of the chosen configuration
    decision: dict | None = field(default=None, repr=False)  # how it was chosen (finalists, rule, baseline margin)
    final: dict | None = field(default=None, repr=False)  # best/autotl.json (soup, refit, scores)
    unlabeled: str | None = None  # the unlabeled rows found, kept and read by trials (report.unlabeled_note)
