"""Heartbeats: a running trial says it is alive; a silent one is taken for dead.

Every running trial's worker writes the time into the trial (user attribute ``heartbeat``)
every `INTERVAL` seconds from a background thread, on any storage (the journal file as
well as a database). A RUNNING trial whose last beat is older than `GRACE` seconds is
failed and its configuration queued again, by whichever worker notices first.

Why not a process id: containers share host names and pid numbers (often pid 1), and a
pid equal to our own proves nothing, so "that pid is not running here" says nothing about
a worker elsewhere; only silence does. The grace is long enough for a paused process or a
short database outage: a failed beat is retried at the next tick, and the thread never
dies of a storage error. A worker whose trial was failed under it anyway (paused past the
grace) learns it when it reports, and goes on to its next trial (runner.work).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

log = logging.getLogger("autotl")
ATTR = "heartbeat"
INTERVAL = float(os.environ.get("AUTOTL_HEARTBEAT_SECONDS", "10"))
GRACE = float(os.environ.get("AUTOTL_HEARTBEAT_GRACE", "120"))


class Heartbeat:
    """Context manager: beats for trial `trial_id` of `study` until the block ends."""

    def __init__(self, study, trial_id: int, interval: float | None = None):
        self.storage, self.trial_id = study._storage, trial_id
        self.interval = INTERVAL if interval is None else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """One beat; False once the trial is finished (nothing left to keep alive)."""
        try:
            self.storage.set_trial_user_attr(self.trial_id, ATTR, time.time())
        except UpdateFinishedTrialError:
            return False
        except Exception as exc:  # a transient storage error: the next tick retries
            log.debug("heartbeat of trial id %d failed (%s); retrying", self.trial_id, exc)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.beat():
                return

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"autotl-heartbeat-{self.trial_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)


def silent_for(trial, now: float | None = None) -> float:
    """Seconds since `trial` last said it was alive (its start, before its first beat)."""
    now = time.time() if now is None else now
    last = trial.user_attrs.get(ATTR)
    if last is None:
        last = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - float(last)


def dead_trials(study, grace: float | None = None) -> list:
    """RUNNING trials silent for longer than the grace."""
    grace = GRACE if grace is None else grace
    now = time.time()
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if silent_for(t, now) > grace]
