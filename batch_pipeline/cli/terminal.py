"""What the command shows on the terminal: lines with user-given names escaped (``echo``), and
progress bars of chunks done / total drawn from the ledger: ``RunProgress`` while
``run``/``redrive`` execute (on the terminal the command started with), ``BatchFollower`` for
``status --watch``.
"""

import contextlib
import sys
import threading
import time
from typing import Any

from batch_pipeline.core.common.text import shown

WATCH_INTERVAL = 1.0  # seconds between polls of ``status --watch``


def echo(text: str = "", file: Any = None) -> None:
    """Print one line of output, user-given names in it escaped (``core.common.text.shown``): a file
    name's newline or ESC must not forge a line or recolour the terminal."""
    print(shown(text), file=file or sys.stdout, flush=file is not None)


def progress_bar(file: Any = None, enabled: bool | None = None) -> Any:
    """A tqdm bar of chunks on ``file`` (default stderr), drawn only when it is a terminal,
    unless ``enabled`` says otherwise."""
    from tqdm import tqdm

    disable = None if enabled is None else not enabled
    return tqdm(total=0, unit="chunk", desc="chunks", file=file or sys.stderr, disable=disable)


def _draw(bar: Any, progress: Any, buckets: Any = None) -> None:
    """Move ``bar`` to the ledger's chunks done / total; a keyed batch's buckets (``buckets``,
    their progress) count as steps too, so the bar reaches its end when the buckets are done,
    not when the shuffle is."""
    total, done = progress.total, progress.done
    if buckets is not None and buckets.total:
        total, done = total + buckets.total, done + buckets.done
        if bar.desc != "chunks+buckets":
            bar.set_description_str("chunks+buckets", refresh=False)
    if bar.total != total:
        bar.total = total
        bar.refresh()
    bar.update(done - bar.n)


def _progress(ledger: Any, batch_id: str) -> tuple[Any, Any]:
    """The batch's chunk progress and its buckets' (no rows: a batch of one stage)."""
    return ledger.progress(batch_id), ledger.buckets.progress(batch_id)


class RunProgress(threading.Thread):
    """Follows a batch in the ledger while its run executes, and draws chunks done / total on
    ``terminal``: a copy of the stderr the CLI started with, since Dagster's compute-log
    capture redirects fd 2 while a step runs (a bar drawn on stderr then lands in the step's
    log). The same figures as ``status --watch``, polled every ``interval`` seconds until
    ``done`` is set."""

    make_bar = staticmethod(progress_bar)

    def __init__(
        self,
        batch_id: str,
        ledger_url: str | None,
        terminal: Any,
        enabled: bool | None = None,
        interval: float = 0.5,
    ) -> None:
        super().__init__(daemon=True)
        self.batch_id = batch_id
        self.ledger_url = ledger_url
        self.terminal = terminal
        self.enabled = enabled
        self.interval = interval
        self.done = threading.Event()

    def run(self) -> None:
        from batch_pipeline.core.ledger import open_ledger
        from batch_pipeline.settings import default_ledger_url

        bar = self.make_bar(file=self.terminal, enabled=self.enabled)
        try:
            ledger = open_ledger(self.ledger_url or default_ledger_url())
            while True:
                stopping = self.done.is_set()
                with contextlib.suppress(Exception):  # not worth failing for: next poll
                    _draw(bar, *_progress(ledger, self.batch_id))
                if stopping:
                    return
                self.done.wait(self.interval)
        finally:
            bar.close()


class BatchFollower:
    """Polls a running batch's progress in the ledger and draws chunks done / total as a
    progress bar, until no chunk is pending or running or the batch stops running."""

    make_bar = staticmethod(progress_bar)

    def __init__(self, ledger: Any, batch_id: str, interval: float = WATCH_INTERVAL) -> None:
        self.ledger = ledger
        self.batch_id = batch_id
        self.interval = interval

    def follow(self) -> Any:
        """The batch's progress once it stopped running (KeyboardInterrupt passes through)."""
        from batch_pipeline.core.ledger import BatchStatus

        bar = self.make_bar()
        try:
            while True:
                progress, buckets = _progress(self.ledger, self.batch_id)
                _draw(bar, progress, buckets)
                finished = progress.finished and (not buckets.total or buckets.finished)
                if finished or progress.status != BatchStatus.RUNNING:
                    return progress
                time.sleep(self.interval)
        finally:
            bar.close()
