"""The circuit breaker (with a clock the test moves) and the retry backoff (bounds, cap, full
jitter)."""

from __future__ import annotations

import random
import threading
import uuid

import boto3
import pytest
from botocore.config import Config

from batch_pipeline.core.common.errors import DeliveryError, classify
from batch_pipeline.core.common.models import RetrySettings
from batch_pipeline.core.common.retries import backoff_delay
from batch_pipeline.core.delivery.breaker import CircuitBreaker, CircuitOpenError, breaker_for
from batch_pipeline.core.delivery.sinks import Message, SqsSink
from batch_pipeline_tests.conftest import DEAD_ENDPOINT


class Clock:
    """A clock that only moves when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, threshold: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker("sqs://leads", threshold, cooldown, clock=clock)


# Circuit breaker ------------------------------------------------------------------------------


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        b.before_call()
        b.record_failure()
    assert b.state == "closed"
    b.before_call()
    b.record_success()  # a success in between: the count starts again
    for _ in range(2):
        b.record_failure()
    assert b.state == "closed"
    b.before_call()
    b.record_failure()
    assert b.state == "open"
    clock.advance(10)
    with pytest.raises(CircuitOpenError) as caught:
        b.before_call()
    error = caught.value
    assert error.retry_in == pytest.approx(20.0)
    assert "circuit open for sqs://leads" in str(error)
    assert isinstance(error, DeliveryError) and not error.permanent
    assert (classify(error).category, classify(error).transient) == ("delivery", True)


def test_half_open_after_cooldown_then_a_successful_trial_closes() -> None:
    clock = Clock()
    b = breaker(clock, threshold=2, cooldown=5.0)
    b.record_failure()
    b.record_failure()
    clock.advance(4.999)
    assert b.state == "open"
    clock.advance(0.001)
    assert b.state == "half_open"
    b.before_call()  # the trial goes through
    b.record_success()
    assert b.state == "closed" and b.failures == 0
    b.record_failure()  # closed again: one failure is below the threshold
    assert b.state == "closed"


def test_a_failed_trial_opens_again_for_a_whole_cooldown() -> None:
    clock = Clock()
    b = breaker(clock, threshold=3, cooldown=10.0)
    for _ in range(3):
        b.record_failure()
    clock.advance(10)
    assert b.state == "half_open"
    b.before_call()
    b.record_failure()  # one failure is enough in half-open
    assert b.state == "open"
    clock.advance(9.5)
    with pytest.raises(CircuitOpenError) as caught:
        b.before_call()
    assert caught.value.retry_in == pytest.approx(0.5)
    clock.advance(0.5)
    assert b.state == "half_open"
    b.before_call()
    b.record_success()
    assert b.state == "closed"


def test_half_open_lets_one_trial_through() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=10.0)
    b.record_failure()
    clock.advance(10)
    b.before_call()  # the trial
    with pytest.raises(CircuitOpenError):
        b.before_call()  # others wait for its outcome
    b.record_success()
    b.before_call()
    b.before_call()  # closed: everything goes through


def test_a_trial_that_never_reports_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=10.0)
    b.record_failure()
    clock.advance(10)
    b.before_call()  # a trial whose caller died without recording its outcome
    clock.advance(5)
    with pytest.raises(CircuitOpenError):
        b.before_call()
    clock.advance(5)
    b.before_call()  # another trial after another cool-down
    b.record_failure()
    assert b.state == "open"


def test_threshold_is_at_least_one() -> None:
    clock = Clock()
    b = CircuitBreaker("t", failure_threshold=0, cooldown_seconds=1.0, clock=clock)
    assert b.failure_threshold == 1
    b.record_failure()
    assert b.state == "open"


def test_one_trial_among_threads() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=1.0)
    b.record_failure()
    clock.advance(1)
    barrier = threading.Barrier(16)
    passed: list[int] = []
    lock = threading.Lock()

    def call(n: int) -> None:
        barrier.wait(timeout=30)
        try:
            b.before_call()
        except CircuitOpenError:
            return
        with lock:
            passed.append(n)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == 1


def test_breaker_for_keeps_one_breaker_per_target() -> None:
    target = f"https://sqs.example/{uuid.uuid4().hex}"
    first = breaker_for(target, failure_threshold=2, cooldown_seconds=7.0)
    assert breaker_for(target) is first  # later settings do not replace it
    assert (first.failure_threshold, first.cooldown_seconds) == (2, 7.0)
    other = breaker_for(f"{target}-other")
    assert other is not first
    first.record_failure()
    first.record_failure()
    assert breaker_for(target).state == "open" and other.state == "closed"


def test_sqs_sink_stops_calling_an_unreachable_queue() -> None:
    """A real boto3 client against an endpoint that refuses connections: after the threshold
    the breaker answers instead of the network."""
    client = boto3.client(
        "sqs",
        endpoint_url=DEAD_ENDPOINT,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2),
    )
    clock = Clock()
    b = CircuitBreaker(DEAD_ENDPOINT, failure_threshold=3, cooldown_seconds=60.0, clock=clock)
    sleeps: list[float] = []
    sink = SqsSink(
        client, f"{DEAD_ENDPOINT}/123/q", max_attempts=10, sleep=sleeps.append, breaker=b
    )
    with pytest.raises(CircuitOpenError):
        sink.send(0, [Message("{}", "batch", 1)])
    assert sink.calls == 3 and b.state == "open"
    with pytest.raises(CircuitOpenError):  # the next send does not even try
        sink.send(0, [Message("{}", "batch", 1)])
    assert sink.calls == 3


# Backoff --------------------------------------------------------------------------------------


class Highest:
    """An rng that always draws the top of the range."""

    def uniform(self, low: float, high: float) -> float:
        return high


class Lowest:
    def uniform(self, low: float, high: float) -> float:
        return low


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    settings = RetrySettings(max_retries=10, base_delay_seconds=0.5, max_delay_seconds=6.0)
    ceilings = [backoff_delay(n, settings, Highest()) for n in range(8)]  # type: ignore[arg-type]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0, 6.0, 6.0]
    assert all(backoff_delay(n, settings, Lowest()) == 0.0 for n in range(8))  # type: ignore[arg-type]


@pytest.mark.parametrize("retry_number", [0, 1, 3, 7, 30, 1023, 1024, 5000, 10**6])
def test_backoff_stays_within_bounds(retry_number: int) -> None:
    settings = RetrySettings(max_retries=3, base_delay_seconds=2.0, max_delay_seconds=45.0)
    rng = random.Random(retry_number)
    ceiling = min(45.0, 2.0 * 2.0 ** min(retry_number, 64))
    for _ in range(200):
        delay = backoff_delay(retry_number, settings, rng)
        assert 0.0 <= delay <= ceiling
    top = backoff_delay(retry_number, settings, Highest())  # type: ignore[arg-type]
    assert top == ceiling


def test_backoff_is_full_jitter() -> None:
    """Spread over the whole range, so that chunks failing together retry apart."""
    settings = RetrySettings(base_delay_seconds=1.0, max_delay_seconds=30.0)
    rng = random.Random(42)
    delays = [backoff_delay(3, settings, rng) for _ in range(2000)]
    assert min(delays) < 0.5 and max(delays) > 7.5
    assert 3.5 < sum(delays) / len(delays) < 4.5  # uniform on [0, 8]
    assert len(set(delays)) > 1900


@pytest.mark.parametrize(
    ("base", "cap"),
    [(0.0, 30.0), (1.0, 0.0), (0.0, 0.0)],
)
def test_backoff_with_zero_settings_is_zero(base: float, cap: float) -> None:
    settings = RetrySettings(base_delay_seconds=base, max_delay_seconds=cap)
    assert [backoff_delay(n, settings) for n in range(5)] == [0.0] * 5


def test_backoff_default_rng() -> None:
    settings = RetrySettings(base_delay_seconds=1.0, max_delay_seconds=3.0)
    delays = [backoff_delay(n, settings) for n in range(50)]
    assert all(0.0 <= d <= 3.0 for d in delays)
