"""Best model out (a Hugging Face model directory + autotl.json), and back in for predict.

Only writers change ``best/``, and only under `best_lock`: the new model is written to a
temporary directory, every file of it fsynced (a power cut must not leave a renamed but
empty file), then swapped in by two renames, best -> best.old and tmp -> best. A crash
between them leaves ``best.old`` alone, which the next writer restores. Readers (predict,
load) never rename or delete anything: one racing a writer's swap could undo it; they read
``best.old`` in place while ``best/`` is missing. A half-written ``best/`` never exists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import ModelError
from .model import MeanPoolHead, Pooling, TransferModel

log = logging.getLogger("autotl")
INFO = "autotl.json"
HEAD_WEIGHTS = "autotl_head.safetensors"  # the mean-pooled head (not a transformers module)
MULTITASK_HEAD_KEY = "heads.0.weight"  # in HEAD_WEIGHTS: a multi-task head (multitask.py), one linear per task
FILES = "files"  # autotl.json's manifest: file name -> size in bytes, as written
# What crashed writers leave in RUN_DIR: save_best's, artifacts.export_best's, save_ensemble's
# temporary directories of save_best, export, the ensemble, and artifact uploads (in the store)
LEFTOVERS = (".best-tmp-*", ".export-*", ".ensemble-tmp-*", ".upload-*")
LEFTOVER_AGE = 10 * 60  # seconds untouched; a live writer touches its files every few seconds
REWRITE = "rewrite it by running the same `autotl search` command again (it resumes) or with `autotl export`"


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
    """Write `model` as RUN_DIR/best, atomically; returns the path, or None when
    `still_best` (a callable, asked under the lock) says no: another worker may have
    exported a better model meanwhile. (The final phase needs no such check: once it
    starts, the study's FINALIZING flag keeps every worker's hands off best/.)"""
    run_dir = Path(run_dir)
    tmp = run_dir / f".best-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_model(model, tokenizer, tmp, max_length=max_length)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        info = {**info, "head": _head_info(model, info),
                "max_length": max_length, "versions": versions(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), FILES: files}
        (tmp / INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
        write_card_safely(tmp, info)  # after the manifest: the card is not part of the model
        fsync_tree(tmp)  # before the lock: the slow part, and nobody waits on it
        with best_lock(run_dir) if lock else contextlib.nullcontext():
            _restore(run_dir)  # a crashed swap may have left best/ as best.old
            if still_best is not None and not still_best():
                return None
            return swap_in(run_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone once swapped in; a refused or failed write's


def _head_info(model: TransferModel, info: dict) -> dict:
    """autotl.json's "head": its pooling, and whether `transformers.pipeline` serves the model
    as autotl does — the standard head, trained on texts cut at their head: a pipeline never
    cuts head+tail, so on long texts it would feed such a model other tokens than it learned."""
    from .batching import truncation_of
    from .lengths import HEAD_TAIL

    head_tail = truncation_of(info) == HEAD_TAIL
    out = {"pooling": model.pooling.value, "pipeline_compatible": model.pooling is Pooling.STANDARD and not head_tail}
    if model.pooling is Pooling.STANDARD and head_tail:
        out["note"] = ("trained on long texts cut head+tail (their beginning and end); transformers.pipeline cuts "
                       "them at the head, so predict with autotl.load or autotl predict")
    return out | _multitask_note(model)


def _multitask_note(model: TransferModel) -> dict:
    """What autotl.json says of a multi-task head (nothing for any other head)."""
    if model.pooling is not Pooling.MEAN or not hasattr(model.head_, "log_vars"):
        return {}
    return {"multitask": True, "note": "one linear head per task on mean-pooled features "
            "(autotl_head.safetensors); load with autotl.load or autotl predict, not a transformers pipeline"}


def write_card_safely(folder: Path, info: dict, leaderboard: list[dict] | None = None) -> None:
    """best/README.md (autotl/model_card.py); a card that cannot be written costs a warning,
    never the model."""
    from .model_card import write_card

    try:
        write_card(folder, info, leaderboard)
    except Exception as exc:  # documentation only: the model is saved either way
        log.warning("the model card (README.md) was not written: %s", exc)


def swap_in(run_dir: Path, folder: Path) -> Path:
    """Make the complete model directory `folder` RUN_DIR/best by two renames (under
    `best_lock` when other processes may export); returns the path. Durable on return:
    `folder`'s files and the renames are fsynced."""
    return swap_dir(run_dir, folder, "best")


def swap_dir(run_dir: Path, folder: Path, name: str) -> Path:
    """Make `folder` RUN_DIR/`name` by two renames (the old one to `name`.old, the new one
    in, the old one removed), never leaving RUN_DIR without one of them; durable on return."""
    run_dir = Path(run_dir)
    target, old = run_dir / name, run_dir / f"{name}.old"
    fsync_tree(folder)  # a no-op for save_best's (synced already); artifacts.export_best's need it
    restore_dir(run_dir, name)
    if target.exists():
        os.replace(target, old)
    os.replace(folder, target)
    fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return target


def update_info(run_dir: Path, trial: int, study: str, changes: dict) -> bool:
    """Merge `changes` into best/autotl.json, atomically, if best/ still holds `trial` of
    `study` (checked under the lock: another process may swap in another model); returns
    whether it did. Dict values merge key by key ({"scores": {"test": ...}} keeps the
    other scores); other values replace."""
    run_dir = Path(run_dir)
    with best_lock(run_dir):
        _restore(run_dir)
        if not _holds(run_dir, trial, study):
            return False
        file = run_dir / "best" / INFO
        tmp = file.with_name(f".{INFO}.tmp-{os.getpid()}")
        with open(tmp, "w") as handle:
            json.dump(_merged(json.loads(file.read_text()), changes), handle, indent=2, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, file)
        fsync_dir(file.parent)
        return True


def _merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _holds(run_dir: Path, trial: int, study: str) -> bool:
    """Whether RUN_DIR/best (not best.old: writers call this after `_restore`) holds `trial` of `study`."""
    try:
        info = json.loads((Path(run_dir) / "best" / INFO).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("trial") == trial and info.get("study") == study


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every directory, deepest first: what a rename
    then publishes is on disk, not only in the page cache."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(path: Path) -> None:
    """fsync a directory, making the renames and new entries in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_leftovers(run_dir: Path, older_than: float = LEFTOVER_AGE) -> list[Path]:
    """Remove what crashed writers left in RUN_DIR (their temporary directories) when
    nothing in it changed for `older_than` seconds; returns what was removed. A live
    writer's are younger: it writes into them continuously."""
    run_dir, removed = Path(run_dir), []
    if not run_dir.is_dir():
        return removed
    now = time.time()
    for pattern in LEFTOVERS:
        for path in run_dir.glob(pattern):
            if path.is_dir() and now - _last_change(path) > older_than:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        log.info("removed %d leftover(s) of interrupted writes: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def _last_change(folder: Path) -> float:
    """The newest modification time in `folder` (itself included)."""
    newest = folder.stat().st_mtime
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            with contextlib.suppress(OSError):  # a live writer may rename it meanwhile
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest


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
    # pipeline(..., truncation=True) then cuts where we do. The tokenizer is shared (cached per
    # backbone): its own limit is given back, or the next search in this process would read
    # this one's max_length as the model's limit.
    limit, tokenizer.model_max_length = tokenizer.model_max_length, max_length
    try:
        tokenizer.save_pretrained(path)
    finally:
        tokenizer.model_max_length = limit


def restore_best(run_dir: Path) -> None:
    """Undo a swap interrupted between its two renames (a writer's job: takes the lock)."""
    if Path(run_dir).is_dir():
        with best_lock(run_dir):
            _restore(run_dir)


def _restore(run_dir: Path) -> None:
    """`restore_best` for a caller that holds the lock."""
    restore_dir(run_dir, "best")


def restore_dir(run_dir: Path, name: str) -> None:
    """Undo a `swap_dir` of RUN_DIR/`name` interrupted between its two renames (writers only)."""
    target, old = Path(run_dir) / name, Path(run_dir) / f"{name}.old"
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)
            fsync_dir(Path(run_dir))


def find_best(path) -> Path:
    """RUN_DIR or RUN_DIR/best -> the model directory, checked: a readable autotl.json and
    every file it lists, whole.

    Reads only: while best/ lacks autotl.json (missing: a writer is between its two
    renames, or crashed there) it is best.old, read in place."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path} does not exist; pass the --out directory of a finished `autotl search`")
    for folder in (path, path / "best", path / "best.old"):
        if (folder / INFO).is_file():
            # A damaged model fails here, with its fix; the search's own check of what best/
            # holds (final.read_info) then sees none, and writes it again.
            _check_files(folder, _read_info_file(folder))
            return folder
    if (path / "best").is_dir():
        raise ModelError(f"{path / 'best'} has no {INFO}: it is incomplete; {REWRITE}")
    raise ModelError(f"{path} holds no autotl model (no best/{INFO}); pass the --out directory of "
                     "an `autotl search` that finished at least one trial")


def read_info(path) -> dict:
    """autotl.json of RUN_DIR/best (or of the model directory `path`), checked."""
    return _read_info_file(find_best(path))


def _read_info_file(folder: Path) -> dict:
    """The autotl.json in `folder`; ModelError naming the file and the fix when it is
    unreadable or lacks what loading needs."""
    file = Path(folder) / INFO
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read {file}: {exc.strerror}; check its permissions") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        what = "is empty" if file.stat().st_size == 0 else f"is corrupt ({exc})"
        raise ModelError(f"{file} {what}; {REWRITE}") from None
    pooling = (info.get("head") or {}).get("pooling") if isinstance(info, dict) else None
    if pooling not in {p.value for p in Pooling} or not isinstance(info.get("max_length"), int):
        raise ModelError(f"{file} lacks the model's head or max_length (not written by autotl, or edited); "
                         f"{REWRITE}")
    return info


def _check_files(folder: Path, info: dict) -> None:
    """Every file loading needs is in `folder`, whole: the sizes autotl.json recorded when
    it was written (older runs, without them: config, weights and tokenizer config)."""
    folder = Path(folder)
    written = info.get(FILES)
    if written is None:
        head = [HEAD_WEIGHTS] if info["head"]["pooling"] == Pooling.MEAN.value else []
        written = dict.fromkeys(["config.json", "tokenizer_config.json", *head])
        weights = [p for p in folder.glob("*.safetensors") if p.name != HEAD_WEIGHTS]
        if not weights and not (folder / "pytorch_model.bin").is_file():
            raise ModelError(f"{folder} has no model weights (*.safetensors); {REWRITE}")
    for name, size in written.items():
        file = folder / name
        if not file.is_file():
            raise ModelError(f"{folder} is missing {name}; {REWRITE}")
        if size is not None and file.stat().st_size != size:
            raise ModelError(f"{file} is damaged: {file.stat().st_size:,} bytes where {size:,} were written; "
                             f"{REWRITE}")


def load_model(path, device: str = "cpu") -> tuple[TransferModel, object, dict]:
    """(model, tokenizer, info) from a run directory, its best/ or its ensemble/ directory.

    A run directory serves its ensemble when the search saved one (an `EnsembleModel`,
    called like a TransferModel), else best/; best/ itself is always the single model."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from .backbone import quiet_transformers, refuse_remote_code

    quiet_transformers()
    ensemble = _ensemble_at(path)
    if ensemble is not None:
        from .ensemble import load_ensemble

        return load_ensemble(ensemble, device)
    best = find_best(path)
    info = _read_info_file(best)
    refuse_remote_code(best)
    tokenizer = AutoTokenizer.from_pretrained(best, trust_remote_code=False)
    if info["head"]["pooling"] == Pooling.STANDARD.value:
        model = TransferModel(Pooling.STANDARD, net=AutoModelForSequenceClassification.from_pretrained(
            best, trust_remote_code=False))
    else:
        encoder = AutoModel.from_pretrained(best, trust_remote_code=False)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # not saved (mean pooling never used it): freshly initialized
        state = load_file(str(best / HEAD_WEIGHTS))
        if MULTITASK_HEAD_KEY in state:  # one head per task (multitask.py)
            from .multitask import head_from_state

            head = head_from_state(state)
        else:
            head = MeanPoolHead(state["classifier.weight"].shape[1], state["classifier.weight"].shape[0], 0.0)
            head.load_state_dict(state)
        model = TransferModel(Pooling.MEAN, encoder=encoder, head=head)
    return model.to(device).eval(), tokenizer, info


def _ensemble_at(path) -> Path | None:
    """RUN_DIR/ensemble or the ensemble directory `path` is, if it holds an ensemble."""
    from .ensemble import find_ensemble

    return find_ensemble(path) if Path(path).exists() else None
