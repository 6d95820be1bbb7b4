"""Worker processes: one per slot (device x --trials-per-device), all pulling from one study.

Each worker is `autotl worker` in its own process, told its storage and study and, through
CUDA_VISIBLE_DEVICES, shown only its own GPU. Workers share nothing but the storage (and
the run directory's best/ and artifact store, both written under locks or by unique id), so
the same command joins a study from another machine. Ctrl-C reaches every worker (one
process group); each re-queues its cut trial, and the search waits for them all.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from .devices import Slot

log = logging.getLogger("autotl")


def worker_command(slot: Slot, *, storage: str, study_name: str) -> list[str]:
    return [sys.executable, "-m", "autotl.cli", "worker", "--storage", storage, "--study-name", study_name,
            "--device", slot.local_device, "--threads", str(slot.threads)]


def worker_env(slot: Slot) -> dict:
    # Only its own GPU; none at all for a CPU worker, which must not grab one.
    return {**os.environ, "CUDA_VISIBLE_DEVICES": slot.visible or ""}


def run_workers(slots: list[Slot], *, storage: str, study_name: str) -> bool:
    """Start one worker per slot and wait for all; True if Ctrl-C stopped them."""
    log.info("starting %d worker processes: %s", len(slots),
             ", ".join(f"{s.device} ({s.threads} threads)" for s in slots))
    procs = [subprocess.Popen(worker_command(slot, storage=storage, study_name=study_name), env=worker_env(slot))
             for slot in slots]
    interrupted = False
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the whole foreground group, workers included; make sure.
        interrupted = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = [p.wait() for p in procs]
    failed = [(slot.device, code) for slot, code in zip(slots, codes) if code not in (0, 130)]
    for device, code in failed:
        log.warning("a worker on %s exited with status %d; its trials are in the study", device, code)
    return interrupted or any(code == 130 for code in codes)
