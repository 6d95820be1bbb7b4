"""Trained trial models kept on disk, so the end of a search can use every good model.

A greedy soup averages the weights of the top fine-tunes that share a head; an ensemble
averages the predictions of the top configurations. Both need the trials' models after
the trials are over, in whichever worker process trained them. Each finished trial's model
(its best epoch, finalized) goes to ``RUN_DIR/candidates/trial-<n>.safetensors`` with a
small JSON beside it, when it is among the best `keep` of its head; the rest are removed,
so the folder holds at most `keep` models per head. Writes are atomic (a crash leaves no
half file) and serialized by a lock on the folder (several workers may write).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

FOLDER = "candidates"
KEEP = 3  # models kept per head by default


@contextlib.contextmanager
def _locked(folder: Path):
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def listing(run_dir) -> list[dict]:
    """What is kept: one dict per model (trial, score, head, params, path), best first
    within the order they were written (callers sort as they need)."""
    folder = Path(run_dir) / FOLDER
    out = []
    for meta in sorted(folder.glob("trial-*.json")) if folder.is_dir() else ():
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        weights = meta.with_suffix(".safetensors")
        if weights.is_file():
            out.append({**info, "path": str(weights)})
    return out


def keep_model(run_dir, trial_number: int, model, *, score: float, head: str, params: dict,
               maximize: bool, keep: int = KEEP) -> bool:
    """Store `model` if it is among the best `keep` of its head (and backbone, with several);
    drop those it displaces. Returns whether it was stored."""
    from safetensors.torch import save_file

    folder = Path(run_dir) / FOLDER
    sign = 1 if maximize else -1
    with _locked(folder):
        backbone = params.get("backbone")  # objective.BACKBONE (this module stays import-light)
        same_head = [c for c in listing(run_dir)
                     if c["head"] == head and (c.get("params") or {}).get("backbone") == backbone]
        ranked = sorted(same_head + [{"trial": trial_number, "score": score}],
                        key=lambda c: (-sign * c["score"], c["trial"]))
        kept = {c["trial"] for c in ranked[:keep]}
        if trial_number not in kept:
            return False
        base = folder / f"trial-{trial_number}"
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        tmp = base.with_suffix(".safetensors.tmp")
        save_file(state, str(tmp))
        _fsync(tmp)
        os.replace(tmp, base.with_suffix(".safetensors"))
        meta = {"trial": trial_number, "score": score, "head": head, "params": params}
        tmp = base.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta) + "\n")
        os.replace(tmp, base.with_suffix(".json"))
        for c in same_head:
            if c["trial"] not in kept:
                _remove(folder / f"trial-{c['trial']}")
    return True


def load_state(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _remove(base: Path) -> None:
    for suffix in (".json", ".safetensors"):
        with contextlib.suppress(FileNotFoundError):
            base.with_suffix(suffix).unlink()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
