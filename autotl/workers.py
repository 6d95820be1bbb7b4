"""Worker processes: one per slot (device x --trials-per-device), all pulling from one study.

Each worker is `autotl worker` in its own process, told its study and device and, through
CUDA_VISIBLE_DEVICES, shown only its own GPU. The storage URL goes through the environment
(AUTOTL_STORAGE), never the command line, where `ps` would show a database password.
Workers run with ``python -P`` (an ``autotl/`` folder in the current directory cannot
shadow the installed package) and die with their parent (no orphans when the search is
killed). A worker that cannot join the study (other data, plugins, backbone...) exits 2;
the search then stops the others and fails with that worker's error line — it never
carries on in one process. Ctrl-C reaches every worker (one process group); each re-queues
its cut trial, and the search waits for them all.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from .devices import Slot
from .errors import UsageError

log = logging.getLogger("autotl")
STORAGE_ENV = "AUTOTL_STORAGE"  # how a worker process is told its storage URL
TOKEN_ENV = "AUTOTL_WORKER_TOKEN"  # the random part of its worker id (objective.WORKER_ID)
CANNOT_JOIN = 2  # a worker's exit status when it refuses the study (AutotlError)


def worker_command(slot: Slot, *, study_name: str) -> list[str]:
    return [sys.executable, "-P", "-m", "autotl.cli", "worker", "--study-name", study_name,
            "--device", slot.local_device, "--threads", str(slot.threads)]


def worker_env(slot: Slot, storage: str, token: str = "") -> dict:
    # Only its own GPU; none at all for a CPU worker, which must not grab one.
    return {**os.environ, "CUDA_VISIBLE_DEVICES": slot.visible or "", STORAGE_ENV: storage, TOKEN_ENV: token}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the kernel sends the worker SIGTERM when the search process dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass  # not Linux: workers still end when their study's budget or trials run out


class _Worker:
    """A running worker and the last line it wrote to stderr (forwarded as it comes)."""

    def __init__(self, slot: Slot, *, storage: str, study_name: str):
        import secrets
        import socket

        self.slot = slot
        token = secrets.token_hex(4)
        self.proc = subprocess.Popen(worker_command(slot, study_name=study_name), env=worker_env(slot, storage, token),
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.id = f"{socket.gethostname()}:{self.proc.pid}:{token}"  # as it records its trials
        self.last_line = ""
        self.reader = threading.Thread(target=self._forward, daemon=True)
        self.reader.start()

    def _forward(self) -> None:
        from .redact import mask

        for line in self.proc.stderr:
            line = mask(line)
            sys.stderr.write(line)
            if line.strip():
                self.last_line = line.strip()


def run_workers(slots: list[Slot], *, storage: str, study_name: str, exited: set | None = None) -> bool:
    """Start one worker per slot and wait for all; True if Ctrl-C stopped them. A worker
    that cannot join raises UsageError (after the others are stopped). `exited` receives
    the worker ids of them all once they have ended: a trial still RUNNING under one of
    them is dead, with no heartbeat grace to wait out."""
    log.info("starting %d worker processes: %s", len(slots),
             ", ".join(f"{s.device} ({s.threads} threads)" for s in slots))
    workers = [_Worker(slot, storage=storage, study_name=study_name) for slot in slots]
    try:
        while any(w.proc.poll() is None for w in workers):
            refused = next((w for w in workers if w.proc.poll() == CANNOT_JOIN), None)
            if refused is not None:
                _stop(workers, signal.SIGTERM)
                refused.reader.join(timeout=5)
                reason = refused.last_line.removeprefix("error: ") or "see its output above"
                raise UsageError(f"a worker on {refused.slot.device} could not join study '{study_name}': {reason}")
            time.sleep(0.2)
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the whole foreground group, workers included; make sure.
        _stop(workers, signal.SIGINT)
        return True
    for w in workers:
        w.reader.join(timeout=5)
    if exited is not None:
        exited.update(w.id for w in workers)
    codes = [w.proc.returncode for w in workers]
    refused = next((w for w in workers if w.proc.returncode == CANNOT_JOIN), None)
    if refused is not None:
        raise UsageError(f"a worker on {refused.slot.device} could not join study '{study_name}': "
                         f"{refused.last_line.removeprefix('error: ') or 'see its output above'}")
    for w, code in zip(workers, codes):
        if code not in (0, 130):
            log.warning("a worker on %s exited with status %d; its trials are in the study", w.slot.device, code)
    return any(code == 130 for code in codes)


def _stop(workers: list[_Worker], sig: int) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(sig)
    for w in workers:
        w.proc.wait()
