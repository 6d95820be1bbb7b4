"""Where a study lives: an Optuna storage URL, or a journal file (one per run directory by
default; several local processes can share one). Paths, permissions, torn records."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from .errors import UsageError

log = logging.getLogger("autotl")

JOURNAL_SUFFIXES = (".journal", ".log")  # what a storage path without a scheme must end in
JOURNAL_START = b'{"op_code"'  # how every record of an Optuna journal begins


def storage_arg(url: str | None, run_dir: Path | None) -> str:
    """The storage as a worker process is told it: a URL, or the journal file's path.
    A path must end in .journal or .log: `x.db` meant as SQLite must not silently become
    a journal file named x.db."""
    from .redact import mask

    if url and "://" in url:
        return url
    if not url:
        if run_dir is None:
            raise UsageError("no storage given; pass --storage with a URL or a .journal file")
        return str(Path(run_dir) / "study.journal")
    if Path(url).suffix.lower() not in JOURNAL_SUFFIXES:
        raise UsageError(f"storage '{mask(url)}' is neither a URL nor a journal file; pass sqlite:///{mask(url)} "
                         "for SQLite, or a path ending in .journal for a journal file")
    return url


def open_storage(url: str | None, run_dir: Path | None):
    """A journal file in the run directory by default (safe for several local processes);
    a ``*.journal``/``*.log`` path as a journal file; a URL (``scheme://...``) as Optuna's
    storage for it. Errors never show a password. Dead workers are found by their trials'
    heartbeats on every storage (heartbeat.py)."""
    from .redact import mask

    target = storage_arg(url, run_dir)
    if "://" not in target:
        return _open_journal(Path(target))
    try:
        return optuna.storages.get_storage(target)
    except Exception as exc:  # bad URL, missing driver, unreachable server
        # The driver's text may repeat the URL, password included; its first line is enough.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(mask(f"cannot open storage '{target}': {type(exc).__name__}: {first}")) from None


def _open_journal(path: Path):
    """A JournalStorage on `path`, created owner-only when missing, its torn tail cut off."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        _create_journal(path)
        _check_journal(path)
        _drop_torn_tail(path)
    except OSError as exc:
        raise UsageError(f"cannot use study journal {path}: {exc.strerror or exc}; pass a writable "
                         ".journal path") from None
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except ValueError as exc:  # a record cut off mid-file (json.JSONDecodeError is a ValueError)
        line = _first_bad_line(path)
        raise UsageError(f"study journal {path} is damaged at line {line} (not a complete record: {exc}); "
                         f"keep the trials before it with `head -n {line - 1} {path} > fixed.journal` "
                         "and pass --storage fixed.journal") from None


def _create_journal(path: Path) -> None:
    """Create a missing journal owner-only (it holds the user's study), saying so: a new
    journal where the user meant to resume an old one is a typo in the path."""
    import os

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return  # another worker created it meanwhile
    log.info("created study journal %s (a new study: nothing to resume there)", path)


def _check_journal(path: Path) -> None:
    """Refuse a file that is not an Optuna journal before Optuna appends to it."""
    with open(path, "rb") as f:
        start = f.read(len(JOURNAL_START))
    if not JOURNAL_START.startswith(start):  # b"" (empty) and a torn first record pass
        raise UsageError(f"{path} is not an Optuna journal file (it does not start with a journal record); "
                         "pass a new .journal path or the study's own journal")


def _drop_torn_tail(path: Path) -> None:
    """Cut off a last line without its newline: a record whose write a crash or a full disk
    cut short. Optuna skips such a line when reading, but appends its next record to it,
    and the merged line makes every later read of the study fail. The cut is made under
    the journal's own lock, so no other process is mid-write."""
    import os

    from optuna.storages.journal import JournalFileSymlinkLock

    if _complete_size(path) == path.stat().st_size:
        return
    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's writers take
    lock.acquire()
    try:
        size, keep = path.stat().st_size, _complete_size(path)
        if keep < size:
            os.truncate(path, keep)
    finally:
        lock.release()
    if keep < size:
        log.warning("study journal %s ended in an incomplete record (a write cut short by a crash or a full disk): "
                    "removed its last %d bytes; the trials recorded before it are kept", path, size - keep)


def _complete_size(path: Path, chunk: int = 1 << 16) -> int:
    """Bytes up to and including the file's last newline (0 when it has none)."""
    with open(path, "rb") as f:
        end = f.seek(0, 2)
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


def _first_bad_line(path: Path) -> int:
    """The 1-based number of the journal's first line that is not a complete JSON record."""
    import json

    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                json.loads(line)
            except ValueError:
                return number
    return 1
