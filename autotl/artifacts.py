"""Trained models in Optuna's artifact store, so any machine can export the study's best.

A trial that beats the study's best so far uploads its model (the ``best/`` directory it
would export, as one tar file) to the artifact store before it reports its score; the
artifact id is in the trial's ``model_artifact`` user attribute. `export_best` downloads
the best trial's artifact and swaps it in as ``RUN_DIR/best`` — on any machine that can
reach the storage and the artifact store (a shared directory by default; anything Optuna's
artifact stores support otherwise). Superseded models stay in the store: a worker may be
reading one.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
from pathlib import Path

from .errors import UsageError
from .export import INFO, best_lock, save_best, swap_in

log = logging.getLogger("autotl")
ARTIFACT_ATTR = "model_artifact"


def open_artifacts(location: str | os.PathLike):
    """A FileSystemArtifactStore at `location` (created if missing)."""
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(location)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def upload_model(trial, model, tokenizer, info: dict, *, max_length: int, store) -> str:
    """Upload `model` as the running `trial`'s artifact; return (and record) its id."""
    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory(prefix="autotl-artifact-") as tmp:
        folder = save_best(model, tokenizer, Path(tmp), info, max_length=max_length, lock=False)
        archive = Path(tmp) / f"trial-{trial.number}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(folder, arcname="best")
        artifact_id = upload_artifact(artifact_store=store, file_path=str(archive), study_or_trial=trial)
    trial.set_user_attr(ARTIFACT_ATTR, artifact_id)
    return artifact_id


def export_best(study, store, run_dir: Path) -> dict:
    """Write the study's best trial's uploaded model as RUN_DIR/best; return its autotl.json."""
    from optuna.artifacts import download_artifact

    try:
        best = study.best_trial
    except ValueError:
        raise UsageError(f"study '{study.study_name}' has no finished trial yet; nothing to export") from None
    artifact_id = best.user_attrs.get(ARTIFACT_ATTR)
    if artifact_id is None:
        raise UsageError(f"trial {best.number} (the best) uploaded no model; it ran on an autotl "
                         "without artifact support; re-run the search to train it again")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=run_dir) as tmp:
        archive = Path(tmp) / "model.tar"
        try:
            download_artifact(artifact_store=store, file_path=str(archive), artifact_id=artifact_id)
        except Exception as exc:
            raise UsageError(f"cannot read trial {best.number}'s model (artifact {artifact_id}) from the "
                             f"artifact store: {type(exc).__name__}: {exc}; pass --artifacts with the "
                             "directory the workers wrote to") from None
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        with best_lock(run_dir):
            swap_in(run_dir, Path(tmp) / "best")
    log.info("exported trial %d (%s) to %s", best.number, best.params.get("strategy"), run_dir / "best")
    return json.loads((run_dir / "best" / INFO).read_text())
