"""The chunk ledger on SQLite and on PostgreSQL: registration, status transitions, progress,
delivery numbering, force-complete, and exact counts under concurrent workers (threads and
separate processes)."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batch_pipeline.core.common.errors import (
    BatchBusyError,
    ConfigError,
    LeaseLostError,
    LedgerError,
    classify,
)
from batch_pipeline.core.common.models import (
    BatchSpec,
    Chunk,
    ChunkingSettings,
    ChunkSummary,
    DeliverySettings,
    ObjectInfo,
    Plan,
    SourceSpec,
)
from batch_pipeline.core.ledger import (
    DEAD_LETTERED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Ledger,
    Progress,
    chunk_fingerprint,
    open_ledger,
    plan_hash,
)
from batch_pipeline.settings import default_ledger_url

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
SPAWN = multiprocessing.get_context("spawn")


# Backends --------------------------------------------------------------------------------------


def _pg_admin() -> Any:
    """An autocommit connection to the server's ``postgres`` database; skips when the server
    cannot be reached."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is needed for the Postgres ledger")
    try:
        conn = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    conn.autocommit = True
    return conn


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of this test's own on the local server (plain ``postgresql://`` URL, as a
    user would write it), dropped afterwards."""
    admin = _pg_admin()
    name = f"test_ledger_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger(ledger_url)
    yield opened
    opened.dispose()


# Specs and plans without a source on disk (the ledger never reads one) -------------------------


def make_spec(
    batch_id: str = "batch-1",
    *,
    etag: str = "etag-1",
    processor: str = "passthrough",
    options: dict[str, Any] | None = None,
    target: str = "none",
    output: str = "s3://bucket/output",
    redeliver: bool = False,
) -> BatchSpec:
    uri = "s3://bucket/incoming/leads.csv"
    source = SourceSpec(
        uri=uri, format="csv", compression=None, info=ObjectInfo(uri, 1000, etag=etag)
    )
    return BatchSpec(
        batch_id=batch_id,
        source=source,
        processor=processor,
        processor_options=dict(options or {}),
        chunking=ChunkingSettings(chunk_records=10),
        output_root=output,
        delivery=DeliverySettings(target=target),
        config={"source": uri},
        redeliver=redeliver,
    )


def make_plan(chunks: int, step: int = 100) -> Plan:
    uri = "s3://bucket/incoming/leads.csv"
    descriptors = tuple(
        Chunk(i, chunks, "bytes", uri, start=i * step, end=(i + 1) * step, first_line=2 + 10 * i)
        for i in range(chunks)
    )
    return Plan(descriptors, 10, "test plan", 10 * chunks, True)


def summary_for(index: int, count: int, records: int | None = None, rejected: int = 0) -> Any:
    records_in = index + 1 if records is None else records
    return ChunkSummary(
        index=index,
        key=f"chunk_{index:05d}",
        count=count,
        records_in=records_in,
        records_out=records_in - rejected,
        records_rejected=rejected,
        bytes_read=100,
        seconds=0.5,
        peak_rss_bytes=1 << 20,
        valid_uri=f"s3://bucket/output/batch-1/valid/chunk-{index:05d}.parquet",
        rejected_uri=None,
        rejection_reasons={"bad email": rejected} if rejected else {},
    )


# Registration ---------------------------------------------------------------------------------


def test_register_records_the_batch_and_pending_chunks(ledger: Ledger) -> None:
    spec, plan = make_spec(), make_plan(3)
    states = ledger.register_batch(spec, plan, run_id="run-1")
    assert [(s.chunk, s.status, s.attempts, s.messages_sent) for s in states] == [
        (0, PENDING, 0, 0),
        (1, PENDING, 0, 0),
        (2, PENDING, 0, 0),
    ]
    assert [s.chunk_descriptor() for s in states] == list(plan.chunks)
    batch = ledger.batch(spec.batch_id)
    assert batch is not None
    assert (batch.source_uri, batch.fingerprint, batch.chunks, batch.run_id) == (
        spec.source.uri,
        "etag-1",
        3,
        "run-1",
    )
    assert batch.plan_hash == plan_hash(plan)
    assert batch.config_dict() == spec.config
    assert ledger.batch("another") is None
    assert ledger.chunk_states("another") == []
    assert ledger.chunk_state(spec.batch_id, 7) is None


def test_register_same_plan_keeps_rows(ledger: Ledger) -> None:
    spec, plan = make_spec(), make_plan(3)
    ledger.register_batch(spec, plan)
    ledger.mark_running(spec.batch_id, 1)
    ledger.mark_succeeded(spec.batch_id, summary_for(1, 3), "fp-1")
    ledger.mark_running(spec.batch_id, 2)
    ledger.mark_failed(spec.batch_id, 2, "connection", "reset")
    again = ledger.register_batch(spec, plan, run_id="run-2")
    assert [(s.status, s.attempts) for s in again] == [
        (PENDING, 0),
        (SUCCEEDED, 1),
        (FAILED, 1),
    ]
    assert again[1].fingerprint == "fp-1"
    batch = ledger.batch(spec.batch_id)
    assert batch is not None and batch.run_id == "run-2"


def test_register_another_plan_replaces_rows(ledger: Ledger) -> None:
    spec = make_spec()
    ledger.register_batch(spec, make_plan(3))
    ledger.mark_running(spec.batch_id, 0)
    ledger.mark_succeeded(spec.batch_id, summary_for(0, 3), "fp")
    ledger.assign_messages(spec.batch_id, {0: 2})  # numbered, but nothing sent yet
    replanned = make_plan(2, step=150)
    states = ledger.register_batch(spec, replanned)
    assert [(s.chunk, s.status, s.attempts, s.first_message) for s in states] == [
        (0, PENDING, 0, None),
        (1, PENDING, 0, None),
    ]
    assert [s.chunk_descriptor() for s in states] == list(replanned.chunks)
    batch = ledger.batch(spec.batch_id)
    assert batch is not None and batch.chunks == 2 and batch.plan_hash == plan_hash(replanned)


QUEUE = "sqs://leads-queue"


def delivered(ledger: Ledger, spec: BatchSpec, plan: Plan, sent: int = 1) -> None:
    """Register ``spec``, then chunk 0 succeeds and the sink takes ``sent`` of its 4 messages."""
    ledger.register_batch(spec, plan)
    ledger.mark_running(spec.batch_id, 0)
    ledger.mark_succeeded(spec.batch_id, summary_for(0, len(plan.chunks)), "fp")
    ledger.assign_messages(spec.batch_id, {0: 4})
    ledger.mark_sent(spec.batch_id, 0, sent)


def sent_messages(ledger: Ledger, batch_id: str) -> list[int]:
    return [s.messages_sent for s in ledger.chunk_states(batch_id)]


def test_another_plan_after_delivery_to_the_same_queue_is_refused(ledger: Ledger) -> None:
    """Issue 11, item 13: only a change that could deliver records twice to the same external
    sink is refused, naming the setting and what to do."""
    spec, plan = make_spec(target=QUEUE), make_plan(3)
    delivered(ledger, spec, plan)
    with pytest.raises(ConfigError) as refused:
        ledger.register_batch(spec, make_plan(4))
    message = str(refused.value)
    assert "delivered 1 message(s) to sqs://leads-queue" in message
    assert "the chunk plan (3 chunks before, 4 now)" in message
    assert "--redeliver" in message and "--batch-id" in message
    states = ledger.chunk_states(spec.batch_id)  # nothing changed
    assert len(states) == 3 and states[0].status == SUCCEEDED and states[0].messages_sent == 1
    batch = ledger.batch(spec.batch_id)
    assert batch is not None and batch.plan_hash == plan_hash(plan)

    # The queue URL names the same queue as sqs://NAME.
    url = make_spec(target="https://sqs.us-east-1.amazonaws.com/123456789012/leads-queue")
    with pytest.raises(ConfigError, match="the chunk plan"):
        ledger.register_batch(url, make_plan(4))

    # Other processor options to the same queue: refused, naming them.
    other = make_spec(target=QUEUE, options={"columns": {}}, processor="validate")
    with pytest.raises(ConfigError, match="the processor or its options changed since"):
        ledger.register_batch(other, plan)

    # With redeliver, it goes ahead: new rows, delivery from the start.
    again = ledger.register_batch(make_spec(target=QUEUE, redeliver=True), make_plan(4))
    assert [(s.status, s.messages_sent, s.first_message) for s in again] == [(PENDING, 0, None)] * 4


def test_a_new_destination_starts_delivery_again(ledger: Ledger) -> None:
    """Another plan with delivery none, to the local outbox, or to another queue proceeds."""
    for target in ("none", "local", "sqs://other-queue"):
        spec = make_spec(batch_id=f"b-{target[:4]}", target=QUEUE)
        delivered(ledger, spec, make_plan(3), sent=4)
        states = ledger.register_batch(replace(spec, delivery=DeliverySettings(target)),
                                       make_plan(4))  # fmt: skip
        assert [(s.chunk, s.first_message, s.messages_sent) for s in states] == [
            (i, None, 0) for i in range(4)
        ], target


def test_the_same_queue_after_another_destination_is_refused(ledger: Ledger) -> None:
    """Delivered to a queue, then run elsewhere (the delivery progress started again), then to
    the queue again: the ledger no longer knows which records the queue has."""
    spec, plan = make_spec(target=QUEUE), make_plan(3)
    delivered(ledger, spec, plan, sent=3)
    for target in ("none", "sqs://other-queue"):
        moved = make_spec(target=target)
        ledger.register_batch(moved, plan)
        assert sent_messages(ledger, spec.batch_id) == [0, 0, 0]
        with pytest.raises(ConfigError) as refused:
            ledger.register_batch(spec, plan)
        assert "delivered 3 message(s) to sqs://leads-queue before" in str(refused.value)
        assert f"then went to {moved.delivery.target}" in str(refused.value)
    back = ledger.register_batch(replace(spec, redeliver=True), plan)
    assert [s.messages_sent for s in back] == [0, 0, 0]
    destinations = {d.target: d for d in ledger.destinations(spec.batch_id)}
    assert destinations[QUEUE].current and destinations[QUEUE].messages == 3


def test_the_same_queue_keeps_its_progress(ledger: Ledger) -> None:
    """Nothing that changes the messages changed (only the output folder, or nothing): the
    delivery progress stays, so nothing is sent twice."""
    spec, plan = make_spec(target=QUEUE), make_plan(3)
    delivered(ledger, spec, plan, sent=2)
    ledger.register_batch(spec, plan)
    moved = make_spec(target=QUEUE, output="s3://bucket/elsewhere")
    states = ledger.register_batch(moved, plan)
    assert (states[0].first_message, states[0].messages_sent) == (1, 2)
    # Changes before anything was sent: the numbering starts again, nothing is refused.
    fresh = make_spec(batch_id="fresh", target=QUEUE)
    ledger.register_batch(fresh, plan)
    ledger.assign_messages("fresh", {0: 4})
    states = ledger.register_batch(replace(fresh, processor="validate"), plan)
    assert states[0].first_message is None


def test_a_local_outbox_starts_again_when_what_is_sent_changes(ledger: Ledger) -> None:
    spec, plan = make_spec(target="local"), make_plan(3)
    delivered(ledger, spec, plan, sent=4)
    assert ledger.register_batch(spec, plan)[0].messages_sent == 4  # unchanged: kept
    other = make_spec(target="local", options={"columns": {}}, processor="validate")
    assert ledger.register_batch(other, plan)[0].first_message is None


def test_a_ledger_from_before_the_deliveries_table(ledger: Ledger) -> None:
    """A batch registered before bp_deliveries existed: its stored config names its target."""
    spec, plan = make_spec(target=QUEUE), make_plan(3)
    spec = replace(spec, config={"source": "x", "delivery": {"target": QUEUE}})
    delivered(ledger, spec, plan)
    with ledger.engine.begin() as conn:
        conn.execute(sa.delete(ledger.deliveries))
    with pytest.raises(ConfigError, match="the chunk plan"):
        ledger.register_batch(spec, make_plan(4))
    states = ledger.register_batch(replace(spec, delivery=DeliverySettings("none")), plan)
    assert states[0].messages_sent == 0
    with pytest.raises(ConfigError, match="delivered 1 message"):
        ledger.register_batch(spec, plan)


# Leases (issue 11, item 5) -----------------------------------------------------------------------


def test_a_lease_is_held_by_one_run_at_a_time(ledger: Ledger) -> None:
    first = ledger.acquire_lease("b", "run-1", ttl=60)
    assert (first.holder, first.batch_id) == ("run-1", "b")
    assert first.expires_at == pytest.approx(first.heartbeat_at + 60)
    with pytest.raises(BatchBusyError) as busy:
        ledger.acquire_lease("b", "run-2", ttl=60)
    message = str(busy.value)
    assert "batch b is being processed by another run: run run-1" in message
    assert "last seen" in message and "expires at" in message and ledger.safe_url in message
    again = ledger.acquire_lease("b", "run-1", ttl=60)  # ours already: renewed
    assert again.acquired_at == first.acquired_at and again.expires_at >= first.expires_at
    assert ledger.acquire_lease("other", "run-2", ttl=60).holder == "run-2"  # per batch
    lease = ledger.lease("b")
    assert lease is not None and lease.holder == "run-1"


def test_an_expired_lease_is_taken_over_and_its_holder_stops(ledger: Ledger) -> None:
    ledger.acquire_lease("b", "run-1", ttl=0)  # expires at once: its holder died
    taken = ledger.acquire_lease("b", "run-2", ttl=60)
    assert taken.holder == "run-2"
    with pytest.raises(LeaseLostError) as lost:
        ledger.renew_lease("b", "run-1", ttl=60)
    assert "this run (run-1) no longer holds the batch's lease: run run-2" in str(lost.value)
    assert "stopped before writing" in str(lost.value)
    renewed = ledger.renew_lease("b", "run-2", ttl=60)
    assert renewed.holder == "run-2" and renewed.acquired_at == taken.acquired_at


def test_a_finished_holder_is_taken_over_at_once(ledger: Ledger) -> None:
    ledger.acquire_lease("b", "run-1", ttl=60)
    asked: list[str] = []

    def finished(holder: str) -> bool:
        asked.append(holder)
        return holder == "run-1"

    assert ledger.acquire_lease("b", "run-2", ttl=60, holder_finished=finished).holder == "run-2"
    assert asked == ["run-1"]
    with pytest.raises(BatchBusyError, match="run run-2"):
        ledger.acquire_lease("b", "run-3", ttl=60, holder_finished=finished)


def test_release_gives_back_only_our_own_lease(ledger: Ledger) -> None:
    ledger.acquire_lease("b", "run-1", ttl=60)
    assert not ledger.release_lease("b", "run-2")
    assert ledger.lease("b") is not None
    assert ledger.release_lease("b", "run-1")
    assert ledger.lease("b") is None
    with pytest.raises(LeaseLostError, match="nobody holds it"):
        ledger.renew_lease("b", "run-1", ttl=60)
    ledger.acquire_lease("b", "run-3", ttl=60)
    ledger.acquire_lease("c", "run-3", ttl=60)
    ledger.acquire_lease("d", "run-4", ttl=60)
    assert sorted(ledger.release_leases("run-3")) == ["b", "c"]
    assert ledger.lease("b") is None and ledger.lease("d") is not None


def test_threads_racing_for_a_lease_one_wins(ledger: Ledger) -> None:
    barrier = threading.Barrier(8)

    def race(i: int) -> str:
        barrier.wait()
        try:
            return ledger.acquire_lease("b", f"run-{i}", ttl=60).holder
        except BatchBusyError:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(race, range(8)))
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1 and outcomes.count("refused") == 7
    lease = ledger.lease("b")
    assert lease is not None and lease.holder == winners[0]


def test_a_ledger_made_before_leases_gets_the_table(ledger_url: str) -> None:
    old = Ledger(ledger_url)
    with old.engine.begin() as conn:
        old.leases.drop(conn)
        old.deliveries.drop(conn)
    old.dispose()
    reopened = Ledger(ledger_url)
    try:
        assert reopened.acquire_lease("b", "run-1", ttl=60).holder == "run-1"
    finally:
        reopened.dispose()


# A damaged ledger (issue 11, item 7) -------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_a_clear_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a ledger\n" * 500)
    with pytest.raises(LedgerError) as opened:
        Ledger(f"sqlite:///{path}")
    message = str(opened.value)
    assert f"the ledger at sqlite:///{path} is unusable: file is not a database" in message
    assert "Restore it from a backup, or move it away" in message
    info = classify(opened.value)
    assert not info.transient


def test_a_ledger_overwritten_while_open_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    ledger.register_batch(make_spec(), make_plan(2))
    ledger.engine.dispose()  # connections closed, as between two steps' processes
    for leftover in tmp_path.glob("ledger.db-*"):  # the WAL and its index
        leftover.unlink()
    path.write_bytes(os.urandom(8192))
    with pytest.raises(LedgerError, match="is unusable: file is not a database"):
        ledger.progress("batch-1")
    ledger.dispose()


# Status transitions ---------------------------------------------------------------------------


def test_status_transitions(ledger: Ledger) -> None:
    spec = make_spec()
    batch_id = spec.batch_id
    ledger.register_batch(spec, make_plan(4))
    ledger.mark_running(batch_id, 0)
    state = ledger.chunk_state(batch_id, 0)
    assert state is not None and state.status == RUNNING and state.attempts == 1
    assert state.started_at is not None

    ledger.mark_failed(batch_id, 0, "throttled", "SlowDown " * 1000)
    ledger.mark_running(batch_id, 0)
    ledger.mark_failed(batch_id, 0, "connection", "reset by peer")
    state = ledger.chunk_state(batch_id, 0)
    assert state is not None
    assert (state.status, state.attempts, state.error_category, state.error_message) == (
        FAILED,
        2,
        "connection",
        "reset by peer",
    )
    ledger.mark_running(batch_id, 1)
    ledger.mark_failed(batch_id, 1, "throttled", "x" * 10_000)
    state = ledger.chunk_state(batch_id, 1)
    assert state is not None and state.error_message == "x" * 4000

    ledger.mark_running(batch_id, 0)
    summary = summary_for(0, 4, records=10, rejected=3)
    ledger.mark_succeeded(batch_id, summary, "fp-0")
    state = ledger.chunk_state(batch_id, 0)
    assert state is not None
    assert (state.status, state.attempts, state.error_category, state.error_message) == (
        SUCCEEDED,
        3,
        None,
        None,
    )
    assert (state.records_in, state.records_out, state.records_rejected) == (10, 7, 3)
    assert state.fingerprint == "fp-0" and state.finished_at is not None
    assert state.chunk_summary() == summary

    ledger.mark_running(batch_id, 2)
    ledger.mark_dead_lettered(batch_id, 2, "bad_data", "line 7: bad quote", "s3://dl/2.json")
    [dead] = ledger.dead_letters(batch_id)
    assert (dead.chunk, dead.status, dead.attempts, dead.error_category, dead.dead_letter) == (
        2,
        DEAD_LETTERED,
        1,
        "bad_data",
        "s3://dl/2.json",
    )

    # Back to pending for a redrive: attempts and delivery progress are kept.
    ledger.assign_messages(batch_id, {0: 3})
    ledger.mark_sent(batch_id, 0, 3)
    ledger.reset(batch_id, [0, 2])
    ledger.reset(batch_id, [])
    states = {s.chunk: s for s in ledger.chunk_states(batch_id)}
    assert (states[0].status, states[0].attempts, states[0].messages_sent) == (PENDING, 3, 3)
    assert (states[2].status, states[2].attempts) == (PENDING, 1)
    assert states[3].status == PENDING and states[3].attempts == 0


def test_progress_counts_rows_and_sums_records_of_succeeded_chunks(ledger: Ledger) -> None:
    spec = make_spec()
    batch_id = spec.batch_id
    ledger.register_batch(spec, make_plan(6))
    first = ledger.progress(batch_id)
    assert counters(first) == counters(Progress(batch_id, 6, 6, 0, 0, 0, 0, 0, 0, 0))
    assert first.status == RUNNING and first.first_started_at is None
    assert first.records_per_second() == 0.0 and not first.finished
    for index in range(6):
        ledger.mark_running(batch_id, index)
    ledger.mark_succeeded(batch_id, summary_for(0, 6, records=100, rejected=5), "fp")
    ledger.mark_succeeded(batch_id, summary_for(1, 6, records=50, rejected=0), "fp")
    ledger.mark_failed(batch_id, 2, "connection", "reset")
    ledger.mark_dead_lettered(batch_id, 3, "processor", "boom", "dl")
    ledger.reset(batch_id, [4])
    progress = ledger.progress(batch_id)
    assert counters(progress) == counters(Progress(
        batch_id,
        total=6,
        pending=1,
        running=1,
        succeeded=2,
        failed=1,
        dead_lettered=1,
        records_in=150,
        records_out=145,
        records_rejected=5,
    ))  # fmt: skip
    assert progress.done == 4 and progress.percent == pytest.approx(33.33)
    assert progress.records_since == 150 and not progress.finished
    assert progress.first_started_at is not None and progress.last_finished_at is not None
    assert progress.records_per_second(progress.last_finished_at - 10, progress.last_finished_at) \
        == 15.0  # fmt: skip
    # Only chunks that finished since a time count towards a run's own rate.
    assert ledger.progress(batch_id, since=progress.last_finished_at + 1).records_since == 0
    unknown = ledger.progress("unknown")
    assert counters(unknown) == counters(Progress("unknown", 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert unknown.percent == 100.0 and unknown.status is None and unknown.finished


def counters(progress: Progress) -> tuple[int, ...]:
    p = progress
    return (p.total, p.pending, p.running, p.succeeded, p.failed, p.dead_lettered,
            p.records_in, p.records_out, p.records_rejected)  # fmt: skip


def test_progress_counts_delivered_messages(ledger: Ledger) -> None:
    spec = make_spec()
    ledger.register_batch(spec, make_plan(3))
    ledger.assign_messages(spec.batch_id, {0: 4, 1: 2})
    ledger.mark_sent(spec.batch_id, 0, 4)
    ledger.mark_sent(spec.batch_id, 1, 1, accepted={5})
    progress = ledger.progress(spec.batch_id)
    assert (progress.messages, progress.messages_sent) == (6, 5)


def test_batch_statuses_and_dead_letters_since(ledger: Ledger) -> None:
    specs = [make_spec(batch_id=f"b{i}") for i in range(3)]
    for spec in specs:
        ledger.register_batch(spec, make_plan(2))
    ledger.set_batch_status("b1", "succeeded")
    ids = ["b0", "b1", "missing"] + [f"x{i}" for i in range(1200)]
    assert ledger.batch_statuses(ids) == {"b0": RUNNING, "b1": "succeeded"}
    assert ledger.dead_letters_since() == []
    ledger.mark_dead_lettered("b2", 1, "processor", "boom", "dl1")
    ledger.mark_dead_lettered("b0", 0, "processor", "bang", "dl0")
    seen = ledger.dead_letters_since()
    assert [(s.batch_id, s.chunk) for s in seen] == [("b2", 1), ("b0", 0)]
    cursor = (seen[0].updated_at, seen[0].batch_id, seen[0].chunk)
    assert [(s.batch_id, s.chunk) for s in ledger.dead_letters_since(cursor)] == [("b0", 0)]
    last = (seen[1].updated_at, seen[1].batch_id, seen[1].chunk)
    assert ledger.dead_letters_since(last) == []


# Delivery numbering ---------------------------------------------------------------------------


def test_assign_messages_numbers_once_and_continues(ledger: Ledger) -> None:
    spec = make_spec()
    batch_id = spec.batch_id
    ledger.register_batch(spec, make_plan(5))
    ledger.assign_messages(batch_id, {3: 2, 0: 3, 1: 0})
    numbered = {
        s.chunk: (s.first_message, s.messages, s.total_messages)
        for s in ledger.chunk_states(batch_id)
    }
    assert numbered == {
        0: (1, 3, 5),
        1: (4, 0, 5),
        2: (None, None, None),
        3: (4, 2, 5),
        4: (None, None, None),
    }
    # Numbering again changes nothing; new chunks continue after the highest number.
    ledger.assign_messages(batch_id, {0: 99, 3: 99})
    ledger.assign_messages(batch_id, {4: 1, 2: 4})
    numbered = {
        s.chunk: (s.first_message, s.messages, s.total_messages)
        for s in ledger.chunk_states(batch_id)
    }
    assert numbered == {0: (1, 3, 5), 1: (4, 0, 5), 2: (6, 4, 10), 3: (4, 2, 5), 4: (10, 1, 10)}
    ledger.assign_messages(batch_id, {})
    state = ledger.chunk_state(batch_id, 2)
    assert state is not None and not state.delivered
    ledger.mark_sent(batch_id, 2, 3)
    state = ledger.chunk_state(batch_id, 2)
    assert state is not None and state.messages_sent == 3 and not state.delivered
    ledger.mark_sent(batch_id, 2, 4)
    empty = ledger.chunk_state(batch_id, 1)
    state = ledger.chunk_state(batch_id, 2)
    assert state is not None and state.delivered
    assert empty is not None and empty.delivered  # a chunk with no messages has nothing to send


# Batch status and force-complete ---------------------------------------------------------------


def test_force_complete_needs_a_reason_and_a_known_batch(ledger: Ledger) -> None:
    spec = make_spec()
    ledger.register_batch(spec, make_plan(2))
    ledger.set_batch_status(spec.batch_id, "failed", reason="1 of 2 chunk(s) failed")
    with pytest.raises(ConfigError, match="reason"):
        ledger.force_complete(spec.batch_id, "   ")
    with pytest.raises(ConfigError, match="nope is not in the ledger"):
        ledger.force_complete("nope", "ops ticket 42")
    state = ledger.force_complete(spec.batch_id, "ops ticket 42: chunk 1 is known junk")
    assert (state.status, state.reason) == (
        "completed_forced",
        "ops ticket 42: chunk 1 is known junk",
    )
    assert ledger.chunk_states(spec.batch_id)[1].status == PENDING  # the chunks are left alone


def test_force_complete_is_refused_while_a_run_holds_the_batch(ledger: Ledger) -> None:
    """A run processing the batch finished every chunk and ended ``completed_forced``: while
    its lease is live, nobody may complete the batch under it."""
    spec = make_spec()
    ledger.register_batch(spec, make_plan(2))
    lease = ledger.acquire_lease(spec.batch_id, "run-busy", ttl=600)
    with pytest.raises(BatchBusyError) as refused:
        ledger.force_complete(spec.batch_id, "ops ticket 42")
    message = str(refused.value)
    assert "run-busy" in message and "wait for it, or stop it first" in message
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lease.expires_at))
    assert f"its lease expires at {expires}" in message
    assert ledger.batch(spec.batch_id).status != "completed_forced"

    ledger.release_lease(spec.batch_id, "run-busy")  # the run ended
    assert ledger.force_complete(spec.batch_id, "ops ticket 42").status == "completed_forced"


def test_an_expired_lease_does_not_stop_force_complete(ledger: Ledger) -> None:
    spec = make_spec()
    ledger.register_batch(spec, make_plan(2))
    ledger.acquire_lease(spec.batch_id, "run-dead", ttl=0)  # its holder died
    assert ledger.force_complete(spec.batch_id, "the run died").status == "completed_forced"


def test_batches_are_independent(ledger: Ledger) -> None:
    first, second = make_spec("first"), make_spec("second")
    ledger.register_batch(first, make_plan(2))
    ledger.register_batch(second, make_plan(3))
    ledger.mark_running("first", 0)
    ledger.mark_succeeded("first", summary_for(0, 2), "fp")
    assert ledger.progress("first").succeeded == 1
    assert ledger.progress("second").succeeded == 0 and ledger.progress("second").total == 3


# Fingerprints ---------------------------------------------------------------------------------


def test_fingerprints_change_with_what_changes_the_output() -> None:
    spec, plan = make_spec(), make_plan(2)
    chunk = plan.chunks[0]
    base = chunk_fingerprint(spec, chunk)
    assert base == chunk_fingerprint(make_spec(), make_plan(2).chunks[0])  # deterministic
    changed = {
        "source content": chunk_fingerprint(make_spec(etag="etag-2"), chunk),
        "slice": chunk_fingerprint(spec, replace(chunk, end=chunk.end + 1)),
        "processor": chunk_fingerprint(make_spec(processor="validate"), chunk),
        "options": chunk_fingerprint(make_spec(options={"a": 1}), chunk),
        "other chunk": chunk_fingerprint(spec, plan.chunks[1]),
    }
    assert all(fp != base for fp in changed.values()), changed
    assert len(set(changed.values())) == len(changed)
    assert chunk_fingerprint(spec, chunk) == chunk_fingerprint(
        replace(spec, batch_id="other", mode="force"), chunk
    )
    assert plan_hash(plan) == plan_hash(make_plan(2))
    assert plan_hash(plan) != plan_hash(make_plan(2, step=101))
    assert plan_hash(plan) != plan_hash(make_plan(3))


# Opening ---------------------------------------------------------------------------------------


def test_open_ledger_caches_one_per_url_and_schema(tmp_path: Path, own_ledger: str) -> None:
    default = open_ledger(default_ledger_url())
    assert default is open_ledger(own_ledger) and default.url == own_ledger
    other_url = f"sqlite:///{tmp_path / 'nested' / 'other.db'}"
    other = open_ledger(other_url)
    assert other is open_ledger(other_url) and other is not default
    assert (tmp_path / "nested" / "other.db").exists()


def test_safe_url_hides_the_password(ledger: Ledger) -> None:
    remote = Ledger.__new__(Ledger)  # no connection needed to render the URL
    remote.url = "postgresql://user:secret@db.example:5432/dagster"
    assert remote.safe_url == "postgresql://user:***@db.example:5432/dagster"
    assert ledger.safe_url == ledger.url  # no password to hide


def test_in_memory_ledger() -> None:
    memory = Ledger("sqlite://")
    spec = make_spec()
    memory.register_batch(spec, make_plan(2))
    memory.mark_running(spec.batch_id, 1)
    assert memory.progress(spec.batch_id).running == 1
    memory.dispose()


def test_postgres_schema_keeps_ledgers_apart(postgres_url: str) -> None:
    first = open_ledger(postgres_url, "batch_ledger")
    second = open_ledger(postgres_url, "other_ledger")
    public = open_ledger(postgres_url)
    assert first is open_ledger(postgres_url, "batch_ledger")
    assert len({id(first), id(second), id(public)}) == 3
    inspector = sa.inspect(first.engine)
    assert {"batch_ledger", "other_ledger"} <= set(inspector.get_schema_names())
    assert set(inspector.get_table_names(schema="batch_ledger")) == {
        "bp_batches",
        "bp_chunks",
        "bp_members",
        "bp_leases",
        "bp_deliveries",
        "bp_buckets",
    }
    assert set(inspector.get_table_names(schema="public")) == {
        "bp_batches",
        "bp_chunks",
        "bp_members",
        "bp_leases",
        "bp_deliveries",
        "bp_buckets",
    }

    spec = make_spec()
    first.register_batch(spec, make_plan(3))
    first.mark_running(spec.batch_id, 0)
    first.mark_succeeded(spec.batch_id, summary_for(0, 3), "fp")
    assert first.progress(spec.batch_id).succeeded == 1
    assert second.progress(spec.batch_id).total == 0
    assert public.progress(spec.batch_id).total == 0
    with first.engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM batch_ledger.bp_chunks")).scalar_one()
    assert count == 3
    # Opening the same schema again (another process, a restart) finds the tables in place.
    again = Ledger(postgres_url, "batch_ledger")
    assert again.progress(spec.batch_id).succeeded == 1
    again.dispose()


# Concurrency ----------------------------------------------------------------------------------

WORKERS = 8
CHUNKS = 40


def _complete_every_chunk(ledger: Ledger, batch_id: str, seed: int) -> None:
    """What a worker does: every chunk, in an order of its own, running then succeeded."""
    order = list(range(CHUNKS))
    random.Random(seed).shuffle(order)
    for index in order:
        ledger.mark_running(batch_id, index)
        ledger.mark_succeeded(batch_id, summary_for(index, CHUNKS, rejected=index % 3), "fp")


def _process_worker(url: str, batch_id: str, seed: int, barrier: Any, errors: Any) -> None:
    try:
        ledger = Ledger(url)
        barrier.wait(timeout=120)
        _complete_every_chunk(ledger, batch_id, seed)
        ledger.dispose()
    except BaseException:
        errors.put(traceback.format_exc())
        raise


class ProgressWatcher:
    """Reads progress while the workers write; every reading must add up."""

    def __init__(self, ledger: Ledger, batch_id: str) -> None:
        self.ledger, self.batch_id = ledger, batch_id
        self.stop = threading.Event()
        self.readings: list[Progress] = []
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stop.is_set():
            self.readings.append(self.ledger.progress(self.batch_id))
            self.stop.wait(0.005)

    def __enter__(self) -> ProgressWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _check_complete(ledger: Ledger, batch_id: str, watcher: ProgressWatcher) -> None:
    expected_in = sum(i + 1 for i in range(CHUNKS))
    expected_rejected = sum(i % 3 for i in range(CHUNKS))
    progress = ledger.progress(batch_id)
    assert counters(progress) == counters(Progress(
        batch_id,
        total=CHUNKS,
        pending=0,
        running=0,
        succeeded=CHUNKS,
        failed=0,
        dead_lettered=0,
        records_in=expected_in,
        records_out=expected_in - expected_rejected,
        records_rejected=expected_rejected,
    ))  # fmt: skip
    assert progress.percent == 100.0
    states = ledger.chunk_states(batch_id)
    assert [s.attempts for s in states] == [WORKERS] * CHUNKS  # no increment lost
    assert all(s.status == SUCCEEDED and s.fingerprint == "fp" for s in states)
    assert watcher.readings, "progress was never read while the workers ran"
    for reading in watcher.readings:
        assert reading.total == CHUNKS
        assert reading.pending + reading.running + reading.succeeded == CHUNKS
        assert reading.failed == reading.dead_lettered == 0
        assert reading.records_in <= expected_in


def test_concurrent_threads_complete_exactly(ledger: Ledger) -> None:
    spec = make_spec("threads")
    ledger.register_batch(spec, make_plan(CHUNKS))
    barrier = threading.Barrier(WORKERS)

    def work(seed: int) -> None:
        barrier.wait(timeout=60)
        _complete_every_chunk(ledger, spec.batch_id, seed)

    with ProgressWatcher(ledger, spec.batch_id) as watcher, ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(work, seed) for seed in range(WORKERS)]:
            future.result()
    _check_complete(ledger, spec.batch_id, watcher)


def _run_processes(target: Any, args_for: Any, count: int) -> None:
    """Start ``count`` spawned processes at once (behind a barrier); fail with their
    tracebacks if any failed."""
    barrier, errors = SPAWN.Barrier(count), SPAWN.Queue()
    processes = [
        SPAWN.Process(target=target, args=(*args_for(n), barrier, errors)) for n in range(count)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
            failures.append(f"process {process.pid} did not finish")
    assert not failures, "\n".join(failures)
    assert [p.exitcode for p in processes] == [0] * count


@pytest.mark.slow
def test_concurrent_processes_complete_exactly(ledger: Ledger) -> None:
    spec = make_spec("processes")
    ledger.register_batch(spec, make_plan(CHUNKS))
    with ProgressWatcher(ledger, spec.batch_id) as watcher:
        _run_processes(_process_worker, lambda n: (ledger.url, spec.batch_id, 1000 + n), WORKERS)
    _check_complete(ledger, spec.batch_id, watcher)


def _open_fresh(url: str, schema: str | None, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait(timeout=120)
        ledger = Ledger(url, schema)
        ledger.progress("any")
        ledger.dispose()
    except BaseException:
        errors.put(traceback.format_exc())
        raise


@pytest.mark.slow
def test_processes_opening_a_new_ledger_at_once(ledger_url: str) -> None:
    """Several steps starting at once on a database where the ledger does not exist yet all
    get a working ledger (the tables are created once, by whoever comes first)."""
    schema = None if ledger_url.startswith("sqlite") else "fresh_schema"
    _run_processes(_open_fresh, lambda n: (ledger_url, schema), WORKERS)
    opened = Ledger(ledger_url, schema)
    assert set(sa.inspect(opened.engine).get_table_names(schema=schema)) == {
        "bp_batches",
        "bp_chunks",
        "bp_members",
        "bp_leases",
        "bp_deliveries",
        "bp_buckets",
    }
    opened.dispose()


def _register_and_number(url: str, seed: int, barrier: Any, errors: Any) -> None:
    """Register the batch (same plan) and number a few chunks' messages, all at once."""
    try:
        ledger = Ledger(url)
        spec, plan = make_spec("shared"), make_plan(CHUNKS)
        barrier.wait(timeout=120)
        ledger.register_batch(spec, plan)
        mine = range(seed, CHUNKS, WORKERS)
        ledger.assign_messages(spec.batch_id, {index: 1 + index % 4 for index in mine})
        ledger.dispose()
    except BaseException:
        errors.put(traceback.format_exc())
        raise


@pytest.mark.slow
@pytest.mark.parametrize("registered", [False, True], ids=["new-batch", "registered-batch"])
def test_concurrent_registration_and_numbering(ledger: Ledger, registered: bool) -> None:
    """Steps that register the same batch and number their chunks' messages at the same time
    give every message exactly one number."""
    if registered:
        ledger.register_batch(make_spec("shared"), make_plan(CHUNKS))
    _run_processes(_register_and_number, lambda n: (ledger.url, n), WORKERS)
    states = ledger.chunk_states("shared")
    assert len(states) == CHUNKS
    numbers = [
        number
        for s in states
        if s.first_message is not None and s.messages is not None
        for number in range(s.first_message, s.first_message + s.messages)
    ]
    total = sum(1 + i % 4 for i in range(CHUNKS))
    assert sorted(numbers) == list(range(1, total + 1))
    assert max(s.total_messages or 0 for s in states) == total
    batch = ledger.batch("shared")
    assert batch is not None and batch.chunks == CHUNKS


def test_set_members_take_long_uris_and_follow_a_reused_batch_id(ledger: Ledger) -> None:
    """A set's files are kept whatever the length of their URI (S3 keys reach 1,024 bytes), and
    another set run under the same batch id replaces them."""
    long_key = "s3://bucket/drop/" + "k" * 1_100 + ".csv"
    first = (ObjectInfo(long_key, 10, etag="a"), ObjectInfo("s3://bucket/drop/b.csv", 10, etag="b"))
    spec = make_spec("nightly-set")
    spec = replace(spec, source=replace(spec.source, members=first))
    ledger.register_batch(spec, make_plan(2))
    ledger.set_batch_status("nightly-set", SUCCEEDED)
    uris = [long_key, "s3://bucket/drop/b.csv", "s3://bucket/drop/c.csv"]
    assert ledger.processed_members(uris, frozenset({SUCCEEDED})) == {
        long_key: {"a"},
        "s3://bucket/drop/b.csv": {"b"},
    }
    later = replace(spec, source=replace(spec.source, members=(first[1], ObjectInfo(uris[2], 5))))
    ledger.register_batch(later, make_plan(3))  # another plan: the rows are replaced
    ledger.set_batch_status("nightly-set", SUCCEEDED)
    found = ledger.processed_members(uris, frozenset({SUCCEEDED}))
    assert set(found) == {"s3://bucket/drop/b.csv", "s3://bucket/drop/c.csv"}


class _LockedThenFine:
    """A SQLite cursor whose first ``locked`` executions fail as SQLite's deadlock answer does
    (at once, "database is locked"), then succeed; ``other`` errors are raised as they are."""

    def __init__(self, locked: int, other: Exception | None = None) -> None:
        self.locked, self.other, self.calls = locked, other, 0

    def execute(self, sql: str) -> None:
        import sqlite3

        self.calls += 1
        if self.other is not None:
            raise self.other
        if self.calls <= self.locked:
            raise sqlite3.OperationalError("database is locked")


def test_switching_a_new_ledger_to_wal_waits_out_another_process_doing_the_same() -> None:
    """Two processes opening a new ledger file at once (two CLI runs) both switch it to WAL;
    SQLite answers one "database is locked" without its busy timeout. That one tries again
    instead of failing the run ("the ledger cannot be opened")."""
    import sqlite3

    from batch_pipeline.core.ledger.engine import set_wal

    cursor = _LockedThenFine(locked=3)
    set_wal(cursor, pause=0.001)
    assert cursor.calls == 4
    stuck = _LockedThenFine(locked=10**6)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        set_wal(stuck, wait_seconds=0.05, pause=0.001)  # a lock that lasts is still an error
    damaged = _LockedThenFine(0, sqlite3.OperationalError("file is not a database"))
    with pytest.raises(sqlite3.OperationalError, match="not a database"):
        set_wal(damaged)
    assert damaged.calls == 1  # anything else at once
