"""Trained models in Optuna's artifact store, so any machine can export the study's best.

A trial that beats the study's best so far uploads its model (the ``best/`` directory it
would export, as one tar file) to the artifact store before it reports its score; the
trial records the artifact id (``model_artifact``), the tar's sha256 and the upload time.
`export_best` downloads the best trial's artifact, checks it against its checksum and
checks what it holds (files and directories under ``best/``, nothing else) before it
swaps it in as ``RUN_DIR/best`` — on any machine that can reach the storage and the
artifact store (a shared directory by default; anything Optuna's artifact stores support
otherwise). After each upload the study's superseded models are removed, all but the best
and the newest few: a worker may still be downloading one of those.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath

from optuna.artifacts import FileSystemArtifactStore

from .errors import ModelError, UsageError
from .export import INFO, best_lock, fsync_tree, save_best, swap_in

log = logging.getLogger("autotl")
ARTIFACT_ATTR = "model_artifact"  # trial user attr: the artifact id of its uploaded model
SHA256_ATTR = "model_artifact_sha256"  # trial user attr: the uploaded tar's sha256, checked by export_best
UPLOADED_ATTR = "model_artifact_uploaded"  # trial user attr: Unix time of the upload (which are newest)
KEEP_UPLOADS = 3  # newest uploads kept besides the best: a worker may be downloading one it just saw as best
FILE_OVERHEAD = 1.2  # model files on disk per parameter byte (config, tar headers, slack)
TOKENIZER_BYTES = 64 << 20  # room for tokenizer files (the largest common one, XLM-R's, is 17 MB)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


class ModelStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, knowing its directory: uploads are staged there,
    on the store's own disk, not in /tmp."""

    def __init__(self, root: Path):
        super().__init__(str(root))
        self.root = Path(root)


def open_artifacts(location: str | os.PathLike) -> ModelStore:
    """The artifact store at `location` (created if missing)."""
    from .config import make_private_dir

    path = Path(location)
    make_private_dir(path)  # it holds models trained on the user's data
    return ModelStore(path)


# -- upload ----------------------------------------------------------------------------------

def upload_model(trial, model, tokenizer, info: dict, *, max_length: int, store) -> str:
    """Upload `model` as the running `trial`'s artifact; return (and record) its id, then
    remove the study's superseded models. Not enough free space is an OSError."""
    from optuna.artifacts import upload_artifact

    staging = getattr(store, "root", None) or Path(tempfile.gettempdir())  # any other store: /tmp
    _check_space(staging, _upload_bytes(model), f"trial {trial.number}'s model")
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=staging) as tmp:
        folder = save_best(model, tokenizer, Path(tmp), info, max_length=max_length, lock=False)
        archive = Path(tmp) / f"trial-{trial.number}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(folder, arcname="best")
        shutil.rmtree(folder)  # the tar and the store's copy of it are all that coexist from here
        digest = _sha256(archive)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(archive), study_or_trial=trial)
    # The id last: a trial that names an artifact has its checksum recorded too.
    trial.set_user_attr(SHA256_ATTR, digest)
    trial.set_user_attr(UPLOADED_ATTR, time.time())
    trial.set_user_attr(ARTIFACT_ATTR, artifact_id)
    remove_superseded(trial.study, store)
    return artifact_id


def _upload_bytes(model) -> int:
    """Disk an upload takes at its peak: the model directory and its tar while the tar is
    written, then the tar and the store's copy — two copies of the model's files."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    files = sum(t.numel() * t.element_size() for t in tensors) * FILE_OVERHEAD + TOKENIZER_BYTES
    return int(2 * files)


def _check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"not enough free space to upload {what}: about {needed / 2**30:.1f} GiB "
                                    f"needed in {folder}, {free / 2**30:.1f} GiB free; free some space there or "
                                    "pass --artifacts on a larger disk")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_superseded(study, store) -> None:
    """Remove this study's uploaded models except the best trial's, the newest
    `KEEP_UPLOADS` and those of running trials (one may be about to become the best):
    nothing a worker can still be reading. Never fails: a model left behind only takes space."""
    from optuna.artifacts.exceptions import ArtifactNotFound
    from optuna.trial import TrialState

    try:
        uploaded = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ARTIFACT_ATTR)]
        newest = sorted(uploaded, key=lambda t: (t.user_attrs.get(UPLOADED_ATTR, 0.0), t.number))[-KEEP_UPLOADS:]
        keep = {t.number for t in newest} | {t.number for t in uploaded if t.state is TrialState.RUNNING}
        keep |= {_best_number(study)}
        for trial in uploaded:
            artifact_id = trial.user_attrs[ARTIFACT_ATTR]
            if trial.number in keep or not _is_artifact_id(artifact_id):
                continue
            try:
                store.remove(artifact_id)
            except ArtifactNotFound:
                pass  # removed before, by this worker or another
            except Exception as exc:
                log.debug("could not remove trial %d's superseded model (artifact %s): %s",
                          trial.number, artifact_id, exc)
    except Exception as exc:  # the storage is busy or away: try again after the next upload
        log.debug("superseded models were not removed: %s: %s", type(exc).__name__, exc)


def _best_number(study) -> int | None:
    try:
        return study.best_trial.number
    except (ValueError, RuntimeError):  # no complete trial yet
        return None


def _is_artifact_id(value) -> bool:
    """Only ids that upload_artifact makes (UUIDs): an edited attribute must not point the
    removal at any other file of the store."""
    try:
        return str(uuid.UUID(str(value))) == value
    except ValueError:
        return False


# -- export ----------------------------------------------------------------------------------

def export_best(study, store, run_dir: Path) -> dict:
    """Write the study's best trial's uploaded model as RUN_DIR/best; return its autotl.json.
    A damaged or unsafe archive is one ModelError, and best/ stays as it was."""
    from optuna.artifacts import download_artifact

    from .redact import mask

    try:
        best = study.best_trial
    except ValueError:
        raise UsageError(f"study '{study.study_name}' has no finished trial yet; nothing to export") from None
    artifact_id = best.user_attrs.get(ARTIFACT_ATTR)
    if artifact_id is None:
        from .objective import UPLOAD_ERROR

        why = best.user_attrs.get(UPLOAD_ERROR)
        raise UsageError(f"trial {best.number} (the best) uploaded no model"
                         + (f": its upload failed ({why})" if why else
                            "; it ran on an autotl without artifact support")
                         + "; re-run the search to train it again")
    what = f"trial {best.number}'s model (artifact {artifact_id})"
    run_dir = Path(run_dir)
    from .config import make_private_dir

    make_private_dir(run_dir)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=run_dir) as tmp:
        archive = Path(tmp) / "model.tar"
        try:
            download_artifact(artifact_store=store, file_path=str(archive), artifact_id=artifact_id)
        except Exception as exc:
            raise UsageError(mask(f"cannot read {what} from the artifact store: {type(exc).__name__}: {exc}; "
                                  "pass --artifacts with the directory the workers wrote to")) from None
        _verify_checksum(archive, best.user_attrs.get(SHA256_ATTR), what)
        folder = unpack(archive, Path(tmp), what)
        info = _read_info(folder, what)
        fsync_tree(folder)  # on disk before the lock: the swap under it stays short
        with best_lock(run_dir):
            swap_in(run_dir, folder)
    log.info("exported trial %d (%s) to %s", best.number, best.params.get("strategy"), run_dir / "best")
    return info


def _verify_checksum(archive: Path, expected: str | None, what: str) -> None:
    if expected is None:  # uploaded by an autotl that recorded no checksum
        log.warning("%s has no recorded checksum (uploaded by an older autotl); its contents are checked, "
                    "its integrity cannot be", what)
        return
    found = _sha256(archive)
    if found != expected:
        raise ModelError(f"{what} does not match the checksum recorded at upload (sha256 {expected[:12]}..., "
                         f"found {found[:12]}...): the file in the artifact store was changed or damaged; "
                         "nothing was exported")


def unpack(archive: Path, into: Path, what: str) -> Path:
    """Extract the model archive into `into` and return its best/ directory, after checking
    that it holds only regular files and directories under best/ (no links: they could
    point anywhere) and the files of a model autotl wrote."""
    try:
        with tarfile.open(archive, "r:") as tar:  # uncompressed only: what upload_model writes
            for member in tar.getmembers():
                problem = _member_problem(member)
                if problem:
                    raise ModelError(f"{what} is unsafe: member {member.name!r} {problem}; autotl archives hold "
                                     "only files and directories under best/; nothing was exported")
            tar.extractall(into, filter="data")
    except tarfile.TarError as exc:
        raise ModelError(f"{what} is not a readable tar archive ({exc}); nothing was exported") from None
    folder = into / "best"
    missing = _missing_files(folder)
    if missing:
        raise ModelError(f"{what} is incomplete: best/ lacks {', '.join(missing)}; nothing was exported")
    from .backbone import remote_code_reason

    reason = remote_code_reason(folder)
    if reason:
        raise ModelError(f"{what} asks for custom code ({reason}); autotl does not run code from model "
                         "directories; nothing was exported")
    return folder


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why an archive member is refused, or None."""
    if member.issym():
        return "is a symbolic link"
    if member.islnk():
        return "is a hard link"
    if not (member.isfile() or member.isdir()) or member.issparse():
        return "is not a regular file or directory"
    parts = PurePosixPath(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        return "has an absolute path or '..'"
    if not parts or parts[0] != "best":
        return "is outside best/"
    return None


def _missing_files(folder: Path) -> list[str]:
    """The files of a model directory autotl writes that `folder` lacks."""
    if not folder.is_dir():
        return ["everything (no best/ directory)"]
    missing = [name for name in (INFO, "config.json") if not (folder / name).is_file()]
    if not any(p.is_file() for p in folder.glob("*.safetensors")):
        missing.append("a *.safetensors weights file")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    return missing


def _read_info(folder: Path, what: str) -> dict:
    try:
        info = json.loads((folder / INFO).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{what} has an unreadable {INFO} ({exc}); nothing was exported") from None
    if not isinstance(info, dict):
        raise ModelError(f"{what} has an unreadable {INFO} (not a JSON object); nothing was exported")
    return info
