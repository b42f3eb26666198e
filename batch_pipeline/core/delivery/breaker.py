"""A circuit breaker for sinks: stop hammering a sink that keeps failing.

Closed: calls go through. After ``failure_threshold`` consecutive failed calls it opens: calls
fail at once with CircuitOpenError (a transient DeliveryError, so the step retries later) until
``cooldown_seconds`` have passed. Then it is half-open: one trial call goes through (the others
keep failing at once); success closes the breaker, failure opens it for another cool-down. A
trial whose outcome is never recorded (its caller failed otherwise) makes way for another trial
after a cool-down. Breakers live per sink target in this process (``breaker_for``), so their
state outlasts a step's retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from batch_pipeline.core.common.errors import DeliveryError
from batch_pipeline.core.common.settings import Delivery


class CircuitOpenError(DeliveryError):
    def __init__(self, target: str, retry_in: float) -> None:
        super().__init__(
            f"circuit open for {target}: too many consecutive failures; retry in {retry_in:.1f}s",
            permanent=False,
        )
        self.retry_in = retry_in


class CircuitBreaker:
    def __init__(
        self,
        target: str,
        failure_threshold: int = Delivery.breaker_failures.default,
        cooldown_seconds: float = Delivery.breaker_cooldown_seconds.default,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.failure_threshold = max(failure_threshold, 1)
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_started_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.cooldown_seconds:
            return "half_open"
        return "open"

    def before_call(self) -> None:
        """Raise CircuitOpenError while open; let a call through when closed, and one trial
        call when half-open."""
        with self._lock:
            state = self.state
            if state == "closed":
                return
            now = self.clock()
            assert self.opened_at is not None
            if state == "open":
                raise CircuitOpenError(self.target, self.cooldown_seconds - (now - self.opened_at))
            trial = self.trial_started_at
            if trial is not None and now - trial < self.cooldown_seconds:
                raise CircuitOpenError(self.target, self.cooldown_seconds - (now - trial))
            self.trial_started_at = now  # this call is the trial

    def record_success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self.trial_started_at = None

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.opened_at is not None or self.failures >= self.failure_threshold:
                self.opened_at = self.clock()  # half-open trial failed, or threshold reached
                self.trial_started_at = None


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(
    target: str,
    failure_threshold: int = Delivery.breaker_failures.default,
    cooldown_seconds: float = Delivery.breaker_cooldown_seconds.default,
) -> CircuitBreaker:
    """The process's breaker for ``target`` (created with these settings on first use)."""
    with _BREAKERS_LOCK:
        if target not in _BREAKERS:
            _BREAKERS[target] = CircuitBreaker(target, failure_threshold, cooldown_seconds)
        return _BREAKERS[target]
