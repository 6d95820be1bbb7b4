"""One progress bar for the whole search (the per-trial bars are train.py's), on a terminal only.

With a --timeout the bar counts seconds of the budget, refreshed every second by a daemon
thread (a trial may run for minutes without a callback); with only --n-trials it counts
finished trials. Its postfix shows the finished trials and the best score so far. Log lines
go through tqdm while it is shown, so they do not tear the bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading

REFRESH = 1.0  # seconds between redraws of a time bar


class SearchProgress:
    def __init__(self, *, timeout: float | None, n_trials: int | None, elapsed, enabled: bool, file=None):
        from tqdm.auto import tqdm

        self.file = file if file is not None else sys.stderr
        self.elapsed = elapsed  # () -> seconds since the search started
        self.timed = timeout is not None
        on = enabled and _is_terminal(self.file)
        total = timeout if self.timed else n_trials
        self.bar = tqdm(total=total, desc="search", unit="s" if self.timed else "trial", file=self.file,
                        disable=not on, position=0, leave=True, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]"
                        if self.timed else None)
        self._stop = threading.Event()
        self._thread = None
        if on and self.timed:
            self._thread = threading.Thread(target=self._tick, name="autotl-progress", daemon=True)
            self._thread.start()

    @property
    def shown(self) -> bool:
        return not self.bar.disable

    def _tick(self) -> None:
        while not self._stop.wait(REFRESH):
            self._advance()

    def _advance(self) -> None:
        if self.timed:
            self.bar.n = min(self.elapsed(), self.bar.total)
            self.bar.refresh()

    def trial_done(self, finished: int, best: float | None, metric: str) -> None:
        """After each trial: the count of finished trials (every worker's) and the best score."""
        if not self.shown:
            return
        if not self.timed:
            self.bar.n = min(finished, self.bar.total or finished)
        self.bar.set_postfix_str(f"{finished} trials" + ("" if best is None else f", best {metric} {best:.4f}"),
                                 refresh=False)
        self._advance() if self.timed else self.bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.bar.close()

    @contextlib.contextmanager
    def logging_through(self):
        """Log lines printed above the bar instead of through it."""
        if not self.shown:
            yield
            return
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(loggers=[logging.getLogger()]):
            yield


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False
