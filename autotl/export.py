"""Best model out (a Hugging Face model directory + autotl.json), and back in for predict.

``best/`` is replaced atomically: the new model is written to a temporary directory and
swapped in by two renames; a crash between them leaves ``best.old``, which `find_best`
and the next search restore. A half-written ``best/`` never exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .errors import ModelError
from .model import MeanPoolHead, Pooling, TransferModel

INFO = "autotl.json"
HEAD_WEIGHTS = "autotl_head.safetensors"  # the mean-pooled head (not a transformers module)


def versions() -> dict:
    import optuna
    import torch
    import transformers

    from . import __version__

    return {"autotl": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "optuna": optuna.__version__, "python": platform.python_version()}


@contextlib.contextmanager
def best_lock(run_dir: Path):
    """Exclusive lock on RUN_DIR's best/ swap: several worker processes may export."""
    import fcntl

    with open(Path(run_dir) / ".best.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_best(model: TransferModel, tokenizer, run_dir: Path, info: dict, *, max_length: int,
              lock: bool = True, still_best=None) -> Path | None:
    """Write `model` as RUN_DIR/best, atomically; returns the path. With `still_best` (a
    callable), the swap happens only if it still says True under the lock (another worker
    may have exported a better model meanwhile); None when it did not."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".best-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(model, tokenizer, tmp, max_length=max_length)
    info = {**info, "head": {"pooling": model.pooling.value,
                             "pipeline_compatible": model.pooling is Pooling.STANDARD},
            "max_length": max_length, "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (tmp / INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
    with best_lock(run_dir) if lock else contextlib.nullcontext():
        if still_best is not None and not still_best():
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        return swap_in(run_dir, tmp)


def swap_in(run_dir: Path, folder: Path) -> Path:
    """Make the complete model directory `folder` RUN_DIR/best by two renames (under
    `best_lock` when other processes may export); returns the path."""
    best, old = Path(run_dir) / "best", Path(run_dir) / "best.old"
    restore_best(run_dir)
    if best.exists():
        os.replace(best, old)
    os.replace(folder, best)
    shutil.rmtree(old, ignore_errors=True)
    return best


def write_model(model: TransferModel, tokenizer, path: Path, *, max_length: int) -> None:
    """The model's weights, config (with label names) and tokenizer as an HF directory."""
    from safetensors.torch import save_file

    from .backbone import quiet_transformers

    quiet_transformers()  # no "Writing model shards" bar for each export
    model = model.to("cpu")
    if model.pooling is Pooling.STANDARD:
        model.net.save_pretrained(path)
    else:
        model.encoder.save_pretrained(path)
        state = {k: v.contiguous() for k, v in model.head_.state_dict().items()}
        save_file(state, str(path / HEAD_WEIGHTS))
    tokenizer.model_max_length = max_length  # pipeline(..., truncation=True) then cuts where we do
    tokenizer.save_pretrained(path)


def restore_best(run_dir: Path) -> None:
    """Undo a swap interrupted between its two renames."""
    best, old = Path(run_dir) / "best", Path(run_dir) / "best.old"
    if old.exists():
        if best.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, best)


def find_best(path) -> Path:
    """RUN_DIR or RUN_DIR/best -> the model directory holding autotl.json."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path} does not exist; pass the --out directory of a finished `autotl search`")
    if (path / INFO).is_file():
        return path
    restore_best(path)
    if (path / "best" / INFO).is_file():
        return path / "best"
    raise ModelError(f"{path} holds no autotl model (no best/{INFO}); pass the --out directory of "
                     "an `autotl search` that finished at least one trial")


def read_info(path) -> dict:
    return json.loads((find_best(path) / INFO).read_text())


def load_model(path, device: str = "cpu") -> tuple[TransferModel, object, dict]:
    """(model, tokenizer, info) from a run directory, its best/ or its ensemble/ directory.

    A run directory serves its ensemble when the search saved one (an `EnsembleModel`,
    called like a TransferModel), else best/; best/ itself is always the single model."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from .backbone import quiet_transformers

    quiet_transformers()
    ensemble = _ensemble_at(path)
    if ensemble is not None:
        from .ensemble import load_ensemble

        return load_ensemble(ensemble, device)
    best = find_best(path)
    info = json.loads((best / INFO).read_text())
    tokenizer = AutoTokenizer.from_pretrained(best)
    if info["head"]["pooling"] == Pooling.STANDARD.value:
        model = TransferModel(Pooling.STANDARD, net=AutoModelForSequenceClassification.from_pretrained(best))
    else:
        encoder = AutoModel.from_pretrained(best)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # not saved (mean pooling never used it): freshly initialized
        state = load_file(str(best / HEAD_WEIGHTS))
        head = MeanPoolHead(state["classifier.weight"].shape[1], state["classifier.weight"].shape[0], 0.0)
        head.load_state_dict(state)
        model = TransferModel(Pooling.MEAN, encoder=encoder, head=head)
    return model.to(device).eval(), tokenizer, info


def _ensemble_at(path) -> Path | None:
    """RUN_DIR/ensemble or the ensemble directory `path` is, if it holds an ensemble."""
    from .ensemble import find_ensemble

    return find_ensemble(path) if Path(path).exists() else None
