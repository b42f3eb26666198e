"""One run per batch at a time: the batch's lease in the ledger, and its heartbeat.

A run takes its batch's lease (``Ledger.acquire_lease``, holder: its run id) before its first
write (planning); a second run of the same batch is refused with ``BatchBusyError`` naming the
holder. Every later step renews the lease before it writes (a run that lost it stops with
``LeaseLostError``), and ``LeaseKeeper`` renews it in a background thread while a step works, so
that a live run's lease never expires. A run gives the lease back when it ends; a run that died
(a killed process) stops renewing, and its lease expires ``ttl_seconds`` after its last
heartbeat. Under Dagster, a holder whose run the instance knows has finished is taken over at
once.

The settings come from the environment, read when a run or step starts:
``BATCH_PIPELINE_LEASE_TTL_SECONDS`` (default 60) and ``BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS``
(default 10, and at most a third of the TTL).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from types import TracebackType

from batch_pipeline.core.common.errors import ConfigError, LeaseLostError
from batch_pipeline.core.ledger.store import Lease, Ledger

log = logging.getLogger(__name__)

TTL_ENV = "BATCH_PIPELINE_LEASE_TTL_SECONDS"
HEARTBEAT_ENV = "BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS"


@dataclass(frozen=True)
class LeaseSettings:
    """How long a lease lasts without a heartbeat, and how often a working step renews it."""

    ttl_seconds: float = 60.0
    heartbeat_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> LeaseSettings:
        """From ``BATCH_PIPELINE_LEASE_TTL_SECONDS`` and ``..._HEARTBEAT_SECONDS``; the
        heartbeat defaults to 10 s or a third of the TTL, whichever is shorter."""
        ttl = _seconds(TTL_ENV, cls.ttl_seconds)
        heartbeat = _seconds(HEARTBEAT_ENV, min(cls.heartbeat_seconds, ttl / 3))
        if heartbeat >= ttl:
            raise ConfigError(
                f"{HEARTBEAT_ENV}={heartbeat:g} must be shorter than {TTL_ENV}={ttl:g}: a lease "
                "would expire between two heartbeats"
            )
        return cls(ttl, heartbeat)


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ConfigError(f"{name}={value!r} must be a positive number of seconds")
    return seconds


class LeaseKeeper:
    """``with LeaseKeeper(...)``: renew the lease now (LeaseLostError when another run has
    it: the block never runs), then every ``heartbeat_seconds`` in a thread until the block
    ends. A renewal that finds the lease lost stops the heartbeat, and the block's end raises
    LeaseLostError (a caller may ``check()`` before it writes). A renewal that fails for
    another reason (the ledger briefly unreachable) is logged and tried again at the next beat.
    The in-memory ledger gets no thread: nothing else can see it."""

    def __init__(
        self, ledger: Ledger, batch_id: str, holder: str, settings: LeaseSettings | None = None
    ) -> None:
        self.ledger = ledger
        self.batch_id = batch_id
        self.holder = holder
        self.settings = settings or LeaseSettings.from_env()
        self.lost: LeaseLostError | None = None
        self.lease: Lease | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self.lease = self.ledger.renew_lease(self.batch_id, self.holder, self.settings.ttl_seconds)
        if not self.ledger.in_memory:
            self._thread = threading.Thread(
                target=self._beat, name=f"lease-{self.batch_id}", daemon=True
            )
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.lease = self.ledger.renew_lease(
                    self.batch_id, self.holder, self.settings.ttl_seconds
                )
            except LeaseLostError as exc:
                self.lost = exc
                return
            except Exception as exc:  # the next beat tries again; the TTL covers a few misses
                log.warning("could not renew the lease of batch %s: %s", self.batch_id, exc)

    def check(self) -> None:
        """Raise LeaseLostError if the heartbeat found the lease taken."""
        if self.lost is not None:
            raise self.lost

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None:
            self.check()
