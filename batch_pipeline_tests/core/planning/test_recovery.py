"""Failure handling end to end, without Dagster: one attempt at a chunk (retry or dead letter),
which chunks a run takes (resume, redrive, force), the tolerated failures and the manifest."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.core.aggregation import aggregate, tolerance_failure
from batch_pipeline.core.common.errors import ConfigError, ProcessorError, RetryableChunkError
from batch_pipeline.core.common.models import (
    BatchSpec,
    ChunkingSettings,
    DeliverySettings,
    FailureSettings,
    Plan,
    RetrySettings,
)
from batch_pipeline.core.initialize import prepare_batch, prepare_redrive
from batch_pipeline.core.ledger import (
    DEAD_LETTERED,
    FAILED,
    PENDING,
    SUCCEEDED,
    ChunkState,
    Ledger,
    chunk_fingerprint,
)
from batch_pipeline.core.pipeline import LocalRun, run_batch
from batch_pipeline.core.planning import plan_or_reuse, select_chunks
from batch_pipeline.core.processing.attempts import attempt_chunk
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.conftest import drain_queue
from batch_pipeline_tests.core.helpers import valid_rows

FAULTS = ("batch_pipeline_tests.fault_processors",)
RECORDS = 20
PER_CHUNK = 4  # 5 chunks: ids 0-3, 4-7, 8-11, 12-15, 16-19
BAD_ID = "13"  # in chunk 3
BAD_CHUNK = 3
NO_RETRY_DELAY = RetrySettings(max_retries=2, base_delay_seconds=0.0, max_delay_seconds=0.0)


def records() -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"lead {i}", "region": ["north", "south"][i % 2]} for i in range(RECORDS)
    ]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    lines = ["id,name,region"] + [f"{r['id']},{r['name']},{r['region']}" for r in records()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """While this file exists, the record with id 13 makes its chunk fail."""
    path = tmp_path / "broken"
    path.write_text("the record with id 13 is broken")
    return path


def make_spec(
    storage: Storage,
    source: Path,
    marker: Path | None,
    *,
    kind: str = "permanent",
    retry: RetrySettings = NO_RETRY_DELAY,
    failures: FailureSettings | None = None,
    delivery: DeliverySettings | None = None,
    force: bool = False,
    value: str = BAD_ID,
    remove_marker: bool = False,
) -> BatchSpec:
    options: dict[str, Any] = {"column": "id", "value": value, "kind": kind}
    if marker is not None:
        options.update(marker=str(marker), remove_marker=remove_marker)
    return prepare_batch(
        storage,
        str(source),
        processor="fault_fail_when",
        processor_options=options,
        processor_modules=FAULTS,
        chunking=ChunkingSettings(chunk_records=PER_CHUNK),
        output=str(source.parent / "out"),
        delivery=delivery or DeliverySettings(target="none"),
        retry=retry,
        failures=failures or FailureSettings(),
        batch_id="leads",
        force=force,
    )


def planned(storage: Storage, ledger: Ledger, spec: BatchSpec) -> Plan:
    plan = plan_or_reuse(storage, spec)
    assert len(plan.chunks) == RECORDS // PER_CHUNK
    select_chunks(ledger, storage, spec, plan)
    return plan


def states(ledger: Ledger) -> dict[int, ChunkState]:
    return {s.chunk: s for s in ledger.chunk_states("leads")}


def attempts(ledger: Ledger) -> list[int]:
    return [s.attempts for s in ledger.chunk_states("leads")]


def stamps(spec: BatchSpec) -> dict[int, tuple[int, int] | None]:
    """Each chunk's valid file: (inode, mtime) — a rewrite gives another inode — or None."""
    found: dict[int, tuple[int, int] | None] = {}
    for index in range(RECORDS // PER_CHUNK):
        path = spec.valid_uri(index)
        found[index] = (
            (os.stat(path).st_ino, os.stat(path).st_mtime_ns) if os.path.exists(path) else None
        )
    return found


def read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


# attempt_chunk --------------------------------------------------------------------------------


def test_transient_failure_is_retried_then_dead_lettered(
    storage: Storage, ledger: Ledger, source: Path, marker: Path
) -> None:
    retry = RetrySettings(max_retries=2, base_delay_seconds=0.5, max_delay_seconds=0.75)
    spec = make_spec(storage, source, marker, kind="transient", retry=retry)
    plan = planned(storage, ledger, spec)
    chunk = plan.chunks[BAD_CHUNK]

    for retry_number in range(2):
        with pytest.raises(RetryableChunkError) as caught:
            attempt_chunk(storage, ledger, spec, chunk, retry_number)
        error = caught.value
        assert error.category == "connection" and not error.permanent
        assert 0.0 <= error.delay <= min(0.75, 0.5 * 2**retry_number)
        assert f"retry {retry_number + 1} of 2" in str(error)
        assert chunk.describe() in str(error)
        assert isinstance(error.__cause__, ProcessorError)
        state = states(ledger)[BAD_CHUNK]
        assert (state.status, state.attempts, state.error_category) == (
            FAILED,
            retry_number + 1,
            "connection",
        )
        assert "injected transient fault" in (state.error_message or "")
        assert state.dead_letter is None
        assert not os.path.exists(spec.dead_letter_uri(BAD_CHUNK))

    summary = attempt_chunk(storage, ledger, spec, chunk, retry_number=2)  # the last attempt
    assert summary.status == DEAD_LETTERED
    assert summary.dead_letter == spec.dead_letter_uri(BAD_CHUNK)
    assert summary.error is not None and summary.error.startswith("connection: ")
    assert (summary.records_in, summary.valid_uri) == (0, None)
    state = states(ledger)[BAD_CHUNK]
    assert (state.status, state.attempts, state.error_category, state.dead_letter) == (
        DEAD_LETTERED,
        3,
        "connection",
        spec.dead_letter_uri(BAD_CHUNK),
    )
    assert [s.chunk for s in ledger.dead_letters("leads")] == [BAD_CHUNK]
    assert not os.path.exists(spec.valid_uri(BAD_CHUNK))

    letter = read_json(spec.dead_letter_uri(BAD_CHUNK))
    assert letter["batch_id"] == "leads" and letter["chunk"] == BAD_CHUNK
    assert letter["source"] == str(source)
    assert letter["descriptor"] == json.loads(json.dumps(chunk.to_dict()))
    assert letter["slice"] == chunk.describe()
    assert (letter["category"], letter["transient"], letter["attempts"]) == ("connection", True, 3)
    assert "injected transient fault" in letter["error"] and chunk.describe() in letter["error"]
    assert "ConnectionResetError" in letter["traceback"]
    assert "ProcessorError" in letter["traceback"]
    assert letter["redrive"] == "batch-pipeline redrive leads"

    # The other chunks are not affected.
    good = plan.chunks[0]
    done = attempt_chunk(storage, ledger, spec, good)
    assert done.status == SUCCEEDED and done.records_in == PER_CHUNK
    state = states(ledger)[0]
    assert (state.status, state.attempts, state.fingerprint) == (
        SUCCEEDED,
        1,
        chunk_fingerprint(spec, good),
    )
    assert state.chunk_summary() == done


@pytest.mark.parametrize(
    ("kind", "category"),
    [("permanent", "processor"), ("memory", "out_of_memory")],
)
def test_permanent_failure_dead_letters_on_the_first_attempt(
    storage: Storage, ledger: Ledger, source: Path, marker: Path, kind: str, category: str
) -> None:
    retry = RetrySettings(max_retries=5, base_delay_seconds=10.0, max_delay_seconds=10.0)
    spec = make_spec(storage, source, marker, kind=kind, retry=retry)
    plan = planned(storage, ledger, spec)
    summary = attempt_chunk(storage, ledger, spec, plan.chunks[BAD_CHUNK])
    assert summary.status == DEAD_LETTERED
    state = states(ledger)[BAD_CHUNK]
    assert (state.status, state.attempts, state.error_category) == (DEAD_LETTERED, 1, category)
    letter = read_json(spec.dead_letter_uri(BAD_CHUNK))
    assert (letter["category"], letter["transient"], letter["attempts"]) == (category, False, 1)
    expected = {"permanent": "ValueError", "memory": "MemoryError"}[kind]
    assert expected in letter["traceback"]


def test_timeout_is_retried(storage: Storage, ledger: Ledger, source: Path, marker: Path) -> None:
    spec = make_spec(storage, source, marker, kind="timeout")
    plan = planned(storage, ledger, spec)
    with pytest.raises(RetryableChunkError) as caught:
        attempt_chunk(storage, ledger, spec, plan.chunks[BAD_CHUNK])
    assert caught.value.category == "timeout"
    assert states(ledger)[BAD_CHUNK].error_category == "timeout"


def test_no_retries_configured_dead_letters_a_transient_failure(
    storage: Storage, ledger: Ledger, source: Path, marker: Path
) -> None:
    spec = make_spec(storage, source, marker, kind="transient", retry=RetrySettings(max_retries=0))
    plan = planned(storage, ledger, spec)
    summary = attempt_chunk(storage, ledger, spec, plan.chunks[BAD_CHUNK])
    assert summary.status == DEAD_LETTERED
    assert read_json(spec.dead_letter_uri(BAD_CHUNK))["attempts"] == 1


def test_a_source_gone_after_planning_is_dead_lettered_as_missing(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    spec = make_spec(storage, source, None, value="nothing matches")
    plan = planned(storage, ledger, spec)
    source.unlink()
    summary = attempt_chunk(storage, ledger, spec, plan.chunks[1])
    assert summary.status == DEAD_LETTERED
    state = states(ledger)[1]
    assert (state.error_category, state.attempts) == ("missing_object", 1)
    assert str(source) in (state.error_message or "")


def test_dead_letter_goes_to_the_queue_too(
    storage: Storage,
    ledger: Ledger,
    source: Path,
    marker: Path,
    sqs_client: Any,
    sqs_queue: str,
) -> None:
    queue_name = sqs_queue.rsplit("/", 1)[1]
    failures = FailureSettings(tolerated_failure_count=1, dead_letter_queue=f"sqs://{queue_name}")
    spec = make_spec(storage, source, marker, kind="transient", failures=failures)
    plan = planned(storage, ledger, spec)
    with pytest.raises(RetryableChunkError):  # a retry is not a dead letter
        attempt_chunk(storage, ledger, spec, plan.chunks[BAD_CHUNK], 0, lambda: sqs_client)
    assert drain_queue(sqs_client, sqs_queue) == []

    attempt_chunk(storage, ledger, spec, plan.chunks[BAD_CHUNK], 2, lambda: sqs_client)
    [body] = drain_queue(sqs_client, sqs_queue)
    sent = json.loads(body)
    assert sent == read_json(spec.dead_letter_uri(BAD_CHUNK))
    assert (sent["chunk"], sent["category"], sent["attempts"]) == (BAD_CHUNK, "connection", 3)

    # The whole batch, in process, with a queue URL: one dead letter, the batch tolerates it.
    queued = replace(spec, failures=replace(failures, dead_letter_queue=sqs_queue), mode="force")
    run = run_batch(storage, queued, ledger, sqs_client)
    assert run.result.status == "partial"
    [body] = drain_queue(sqs_client, sqs_queue)
    assert json.loads(body)["chunk"] == BAD_CHUNK


# select_chunks --------------------------------------------------------------------------------


def test_select_chunks_modes(storage: Storage, ledger: Ledger, source: Path) -> None:
    spec = make_spec(storage, source, None, value="nothing matches")
    plan = plan_or_reuse(storage, spec)
    todo, why = select_chunks(ledger, storage, spec, plan)
    assert [c.index for c in todo] == [0, 1, 2, 3, 4] and why == "5 chunk(s) to process"
    run_batch(storage, spec, ledger)

    todo, why = select_chunks(ledger, storage, spec, plan)
    assert todo == [] and why == "0 chunk(s) to process, 5 already done"
    todo, why = select_chunks(ledger, storage, replace(spec, mode="redrive"), plan)
    assert todo == [] and why.startswith("redrive: 0 failed")

    ledger.mark_running("leads", 1)
    ledger.mark_failed("leads", 1, "connection", "reset")
    ledger.mark_running("leads", 2)
    ledger.mark_dead_lettered("leads", 2, "processor", "boom", "dl")
    ledger.mark_running("leads", 4)  # a step that died while running
    todo, why = select_chunks(ledger, storage, replace(spec, mode="redrive"), plan)
    assert [c.index for c in todo] == [1, 2]
    assert why == (
        "redrive: 2 failed or dead-lettered chunk(s); 1 chunk(s) never finished: run the batch "
        "again to resume them"
    )
    assert [s.status for s in ledger.chunk_states("leads")] == [
        SUCCEEDED,
        PENDING,
        PENDING,
        SUCCEEDED,
        "running",
    ]
    todo, why = select_chunks(ledger, storage, spec, plan)
    assert [c.index for c in todo] == [1, 2, 4] and why == "3 chunk(s) to process, 2 already done"

    todo, why = select_chunks(ledger, storage, replace(spec, mode="force"), plan)
    assert [c.index for c in todo] == [0, 1, 2, 3, 4] and why == "force: all 5 chunk(s)"
    assert {s.status for s in ledger.chunk_states("leads")} == {PENDING}


def test_select_chunks_checks_outputs_and_fingerprints(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    spec = make_spec(storage, source, None, value="nothing matches")
    run_batch(storage, spec, ledger)
    plan = plan_or_reuse(storage, spec)
    os.remove(spec.valid_uri(2))
    todo, _ = select_chunks(ledger, storage, spec, plan)
    assert [c.index for c in todo] == [2]
    other = make_spec(storage, source, None, value="something else")
    todo, _ = select_chunks(ledger, storage, other, plan)
    assert [c.index for c in todo] == [0, 1, 2, 3, 4]


# run_batch: resume, redrive, force ------------------------------------------------------------


def test_resume_reprocesses_only_the_dead_lettered_chunk(
    storage: Storage, ledger: Ledger, source: Path, marker: Path
) -> None:
    spec = make_spec(storage, source, marker, failures=FailureSettings(tolerated_failure_count=1))
    first = run_batch(storage, spec, ledger)
    assert first.result.status == "partial"
    assert (first.result.chunks_succeeded, first.result.chunks_failed) == (4, 1)
    assert attempts(ledger) == [1, 1, 1, 1, 1]
    assert states(ledger)[BAD_CHUNK].status == DEAD_LETTERED
    before = stamps(spec)
    assert before[BAD_CHUNK] is None and all(before[i] for i in (0, 1, 2, 4))

    # Still broken: only that chunk is tried again.
    again = run_batch(storage, spec, ledger)
    assert again.result.status == "partial"
    assert attempts(ledger) == [1, 1, 1, 2, 1]
    assert stamps(spec) == before

    # Fixed: only that chunk is processed, and the batch is whole.
    marker.unlink()
    fixed = run_batch(storage, spec, ledger)
    assert fixed.result.status == "succeeded" and fixed.result.failure is None
    assert attempts(ledger) == [1, 1, 1, 3, 1]
    after = stamps(spec)
    assert {i: after[i] for i in (0, 1, 2, 4)} == {i: before[i] for i in (0, 1, 2, 4)}
    assert after[BAD_CHUNK] is not None
    assert states(ledger)[BAD_CHUNK].dead_letter is None
    assert (fixed.result.records_in, fixed.result.records_out) == (RECORDS, RECORDS)
    assert [r["id"] for r in valid_rows(storage, fixed)] == [str(i) for i in range(RECORDS)]

    # Done: a run does nothing again.
    done = run_batch(storage, spec, ledger)
    assert done.result.status == "succeeded" and attempts(ledger) == [1, 1, 1, 3, 1]
    assert stamps(spec) == after
    progress = ledger.progress("leads")
    assert (progress.succeeded, progress.total, progress.records_in) == (5, 5, RECORDS)


def test_force_reprocesses_everything(storage: Storage, ledger: Ledger, source: Path) -> None:
    spec = make_spec(storage, source, None, value="nothing matches")
    run_batch(storage, spec, ledger)
    before = stamps(spec)
    forced = make_spec(storage, source, None, value="nothing matches", force=True)
    assert forced.mode == "force"
    run = run_batch(storage, forced, ledger)
    assert run.result.status == "succeeded"
    assert attempts(ledger) == [2, 2, 2, 2, 2]
    after = stamps(spec)
    assert all(after[i] is not None and after[i] != before[i] for i in range(5))


def test_changed_processor_options_reprocess_every_chunk(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    spec = make_spec(storage, source, None, value="nothing matches")
    run_batch(storage, spec, ledger)
    run_batch(storage, spec, ledger)
    assert attempts(ledger) == [1, 1, 1, 1, 1]
    changed = make_spec(storage, source, None, value="nothing matches either")
    run_batch(storage, changed, ledger)
    assert attempts(ledger) == [2, 2, 2, 2, 2]
    fingerprints = {s.fingerprint for s in ledger.chunk_states("leads")}
    plan = plan_or_reuse(storage, changed)
    assert fingerprints == {chunk_fingerprint(changed, c) for c in plan.chunks}


def test_a_deleted_output_is_made_again(storage: Storage, ledger: Ledger, source: Path) -> None:
    spec = make_spec(storage, source, None, value="nothing matches")
    run_batch(storage, spec, ledger)
    before = stamps(spec)
    os.remove(spec.valid_uri(2))
    run = run_batch(storage, spec, ledger)
    assert run.result.status == "succeeded"
    assert attempts(ledger) == [1, 1, 2, 1, 1]
    after = stamps(spec)
    assert after[2] is not None
    assert {i: after[i] for i in (0, 1, 3, 4)} == {i: before[i] for i in (0, 1, 3, 4)}


def test_redrive_takes_only_failed_chunks(
    storage: Storage, ledger: Ledger, source: Path, marker: Path
) -> None:
    spec = make_spec(storage, source, marker, failures=FailureSettings(tolerated_failure_count=1))
    run_batch(storage, spec, ledger)
    marker.unlink()
    before = stamps(spec)
    os.remove(spec.valid_uri(0))  # a redrive does not look at succeeded chunks at all

    redrive = prepare_redrive(storage, ledger, "leads", lambda config: spec)
    assert redrive.mode == "redrive" and redrive.batch_id == "leads"
    run = run_batch(storage, redrive, ledger)
    assert attempts(ledger) == [1, 1, 1, 2, 1]
    assert run.result.status == "succeeded"
    after = stamps(spec)
    assert after[0] is None and after[BAD_CHUNK] is not None
    assert {i: after[i] for i in (1, 2, 4)} == {i: before[i] for i in (1, 2, 4)}

    # Nothing left to redrive.
    run_batch(storage, redrive, ledger)
    assert attempts(ledger) == [1, 1, 1, 2, 1]
    # A plain run sees the missing output and makes it again.
    run_batch(storage, spec, ledger)
    assert attempts(ledger) == [2, 1, 1, 2, 1]


def test_redrive_refuses_a_changed_source(
    storage: Storage, ledger: Ledger, source: Path, marker: Path
) -> None:
    spec = make_spec(storage, source, marker, failures=FailureSettings(tolerated_failure_count=1))
    run_batch(storage, spec, ledger)
    source.write_text(source.read_text() + "20,lead 20,north\n")
    with pytest.raises(ConfigError, match="changed since it was planned"):
        prepare_redrive(storage, ledger, "leads", lambda config: make_spec(storage, source, marker))
    with pytest.raises(ConfigError, match="not in the ledger"):
        prepare_redrive(storage, ledger, "nope", lambda config: spec)


def test_retries_happen_in_place(storage: Storage, ledger: Ledger, source: Path) -> None:
    """A transient failure that goes away costs an attempt, not the chunk."""
    once = source.parent / "fails-once"
    once.write_text("x")
    spec = make_spec(storage, source, once, kind="transient", remove_marker=True)
    run = run_batch(storage, spec, ledger)
    assert run.result.status == "succeeded"
    assert attempts(ledger) == [1, 1, 1, 2, 1]
    assert not os.path.exists(spec.dead_letter_uri(BAD_CHUNK))


def test_a_transient_failure_that_persists_is_dead_lettered_after_the_retries(
    storage: Storage, ledger: Ledger, source: Path, marker: Path
) -> None:
    spec = make_spec(
        storage,
        source,
        marker,
        kind="transient",
        failures=FailureSettings(tolerated_failure_count=1),
    )
    run = run_batch(storage, spec, ledger)
    assert run.result.status == "partial"
    assert attempts(ledger) == [1, 1, 1, 3, 1]  # max_retries=2: three attempts
    state = states(ledger)[BAD_CHUNK]
    assert (state.status, state.error_category) == (DEAD_LETTERED, "connection")
    assert read_json(spec.dead_letter_uri(BAD_CHUNK))["attempts"] == 3


# Tolerance ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed", "total", "count", "percentage", "fails"),
    [
        (0, 5, None, None, False),
        (1, 5, None, None, True),  # default: any failure fails
        (1, 5, 0, None, True),
        (1, 5, 1, None, False),
        (2, 5, 1, None, True),
        (1, 5, None, 20.0, False),  # 20% is not above 20%
        (1, 5, None, 19.9, True),
        (1, 5, None, 0.0, True),
        (5, 5, None, 100.0, False),
        (1, 5, 5, 10.0, True),  # either threshold exceeded fails
        (1, 5, 0, 50.0, True),
        (1, 5, 1, 20.0, False),
        (1, 3, None, 33.3, True),
        (1, 3, None, 33.34, False),
        (0, 0, None, None, False),
    ],
)
def test_tolerance(
    failed: int, total: int, count: int | None, percentage: float | None, fails: bool
) -> None:
    settings = FailureSettings(
        tolerated_failure_count=count, tolerated_failure_percentage=percentage
    )
    why = tolerance_failure(failed, total, settings)
    assert (why is not None) == fails, why
    if why:
        assert f"{failed} of {total} chunk(s) failed" in why


def run_with_tolerance(
    storage: Storage, ledger: Ledger, source: Path, marker: Path, failures: FailureSettings
) -> LocalRun:
    spec = make_spec(
        storage, source, marker, failures=failures, delivery=DeliverySettings(target="local")
    )
    return run_batch(storage, spec, ledger)


def check_manifest(run: LocalRun) -> dict[str, Any]:
    """The manifest lists every succeeded chunk with its files and the failed one with its
    dead letter, whatever the batch's status."""
    spec = run.spec
    manifest = read_json(spec.manifest_uri)
    assert manifest["status"] == run.result.status
    assert manifest["failure"] == run.result.failure
    results = manifest["results"]
    assert [e["chunk"] for e in results["succeeded"]] == [0, 1, 2, 4]
    for entry in results["succeeded"]:
        assert entry["valid"] == spec.valid_uri(entry["chunk"]) and os.path.exists(entry["valid"])
        assert entry["records_in"] == entry["records_out"] == PER_CHUNK
    [failed] = results["failed"]
    assert failed == {
        "chunk": BAD_CHUNK,
        "status": DEAD_LETTERED,
        "attempts": 1,
        "category": "processor",
        "error": failed["error"],
        "dead_letter": spec.dead_letter_uri(BAD_CHUNK),
    }
    assert "injected permanent fault" in failed["error"]
    assert os.path.exists(failed["dead_letter"])
    assert results["pending"] == []
    assert manifest["files"]["valid"] == [spec.valid_uri(i) for i in (0, 1, 2, 4)]
    totals = manifest["totals"]
    assert (totals["chunks"], totals["chunks_succeeded"], totals["chunks_failed"]) == (5, 4, 1)
    assert totals["records_in"] == RECORDS - PER_CHUNK
    return manifest


@pytest.mark.parametrize(
    "failures",
    [
        FailureSettings(),
        FailureSettings(tolerated_failure_count=0),
        FailureSettings(tolerated_failure_percentage=19.9),
        FailureSettings(tolerated_failure_count=3, tolerated_failure_percentage=10.0),
    ],
    ids=["unset", "count-0", "percent-19.9", "count-ok-percent-not"],
)
def test_failure_beyond_tolerance_fails_the_batch(
    storage: Storage,
    ledger: Ledger,
    source: Path,
    marker: Path,
    failures: FailureSettings,
) -> None:
    run = run_with_tolerance(storage, ledger, source, marker, failures)
    assert run.result.status == "failed"
    assert run.result.failure is not None
    assert "1 of 5 chunk(s) failed (20.0%)" in run.result.failure
    assert f"dead letters under {run.spec.output}/dead_letters/" in run.result.failure
    assert run.delivery is None and not os.path.exists(run.spec.outbox)  # nothing delivered
    batch = ledger.batch("leads")
    assert batch is not None and (batch.status, batch.reason) == ("failed", run.result.failure)
    check_manifest(run)


@pytest.mark.parametrize(
    "failures",
    [
        FailureSettings(tolerated_failure_count=1),
        FailureSettings(tolerated_failure_percentage=20.0),
        FailureSettings(tolerated_failure_count=1, tolerated_failure_percentage=50.0),
    ],
    ids=["count-1", "percent-20", "both"],
)
def test_failure_within_tolerance_is_partial(
    storage: Storage,
    ledger: Ledger,
    source: Path,
    marker: Path,
    failures: FailureSettings,
) -> None:
    run = run_with_tolerance(storage, ledger, source, marker, failures)
    assert run.result.status == "partial" and run.result.failure is None
    assert run.delivery is not None and run.delivery.chunks == 4
    assert sorted(os.listdir(run.spec.outbox)) == [f"chunk-{i:05d}.jsonl" for i in (0, 1, 2, 4)]
    batch = ledger.batch("leads")
    assert batch is not None and batch.status == "partial"
    check_manifest(run)


def test_chunks_that_never_finished_count_as_failures(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    spec = make_spec(
        storage,
        source,
        None,
        value="nothing matches",
        failures=FailureSettings(tolerated_failure_count=1),
    )
    run_batch(storage, spec, ledger)
    ledger.mark_running("leads", 4)  # its step died
    tolerated = aggregate(storage, spec, ledger.chunk_states("leads"))
    assert (tolerated.status, tolerated.chunks_pending, tolerated.failure) == ("partial", 1, None)
    manifest = read_json(spec.manifest_uri)
    assert manifest["results"]["pending"] == [{"chunk": 4, "status": "running", "attempts": 2}]
    assert [e["chunk"] for e in manifest["results"]["succeeded"]] == [0, 1, 2, 3]

    ledger.reset("leads", [3])
    strict = aggregate(
        storage, replace(spec, failures=FailureSettings()), ledger.chunk_states("leads")
    )
    assert strict.status == "failed" and strict.failure is not None
    assert "2 chunk(s) never finished: run again to resume" in strict.failure
    assert [e["chunk"] for e in read_json(spec.manifest_uri)["results"]["pending"]] == [3, 4]


# settings that changed, force-complete, an unreachable dead-letter queue -----------------------


def test_other_parse_settings_reprocess_every_chunk(
    storage: Storage, ledger: Ledger, tmp_path: Path
) -> None:
    """A file run once with the wrong CSV options, then with the right ones: the second run
    must not take the first run's chunks as done."""
    path = tmp_path / "noheader.csv"
    path.write_text("".join(f"{i},lead {i}\n" for i in range(9)))

    def spec(**csv: Any) -> BatchSpec:
        from batch_pipeline.core.common.models import CsvOptions

        return prepare_batch(
            storage, str(path), csv=CsvOptions(**csv), output=str(tmp_path / "out"),
            chunking=ChunkingSettings(chunk_records=4), delivery=DeliverySettings(target="none"),
        )  # fmt: skip

    first = run_batch(storage, spec(), ledger)
    assert first.result.records_in == 8  # the first line was taken for a header
    fixed = run_batch(storage, spec(has_header=False, column_names=("id", "name")), ledger)
    assert fixed.spec.batch_id == first.spec.batch_id
    assert fixed.result.records_in == 9
    assert [r["id"] for r in valid_rows(storage, fixed)] == [str(i) for i in range(9)]


def test_another_output_after_delivery_to_the_outbox_is_a_new_destination(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    """Issue 11, item 13: the local outbox lives under the output, so another output is a new
    destination, not a double delivery: the run reprocesses into it and delivers there."""
    outbox = DeliverySettings(target="local")
    run_batch(storage, make_spec(storage, source, None, delivery=outbox, value="none"), ledger)
    moved = replace(
        make_spec(storage, source, None, delivery=outbox, value="none"),
        output_root=str(source.parent / "elsewhere"),
    )
    run = run_batch(storage, moved, ledger)
    assert run.result.records_out == RECORDS and run.delivery is not None
    assert run.delivery.records == RECORDS
    assert all(f.startswith(str(source.parent / "elsewhere")) for f in run.result.valid_files)
    outbox_dir = source.parent / "elsewhere" / "leads" / "outbox"
    lines = [line for p in sorted(outbox_dir.iterdir()) for line in p.read_text().splitlines()]
    assert sum(len(json.loads(line)["batch_data"]) for line in lines) == RECORDS


def test_another_output_before_any_delivery_reprocesses(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    spec = make_spec(storage, source, None, value="none")
    run_batch(storage, spec, ledger)
    moved = replace(spec, output_root=str(source.parent / "elsewhere"))
    run = run_batch(storage, moved, ledger)
    assert run.result.records_out == RECORDS
    assert all(f.startswith(str(source.parent / "elsewhere")) for f in run.result.valid_files)
    assert attempts(ledger) == [2] * (RECORDS // PER_CHUNK)


def test_a_force_completed_batch_is_left_alone_until_forced(
    storage: Storage, ledger: Ledger, source: Path, marker: Path
) -> None:
    failed = run_batch(storage, make_spec(storage, source, marker), ledger)
    assert failed.result.status == "failed"
    ledger.force_complete("leads", "record 13 is withdrawn")

    again = run_batch(storage, make_spec(storage, source, marker), ledger)
    assert again.result.status == "completed_forced" and again.result.failure is None
    assert attempts(ledger)[BAD_CHUNK] == 1  # not tried again
    manifest = read_json(again.result.manifest_uri)
    assert manifest["status"] == "completed_forced"
    assert manifest["forced_reason"] == "record 13 is withdrawn"
    assert [f["chunk"] for f in manifest["results"]["failed"]] == [BAD_CHUNK]
    batch = ledger.batch("leads")
    assert batch is not None and batch.status == "completed_forced"

    marker.unlink()
    forced = run_batch(storage, make_spec(storage, source, marker, force=True), ledger)
    assert forced.result.status == "succeeded"
    assert forced.result.records_out == RECORDS


def test_an_unreachable_dead_letter_queue_does_not_stop_the_batch(
    storage: Storage, ledger: Ledger, source: Path, marker: Path, sqs_client: Any
) -> None:
    """The dead letter is stored and recorded; the queue is a copy, so the batch carries on
    and its tolerance applies."""
    failures = FailureSettings(tolerated_failure_count=1, dead_letter_queue="sqs://no-such-queue")
    run = run_batch(storage, make_spec(storage, source, marker, failures=failures), ledger,
                    sqs_client)  # fmt: skip
    assert run.result.status == "partial"
    assert states(ledger)[BAD_CHUNK].status == DEAD_LETTERED
    assert Path(spec_dead_letter(run, BAD_CHUNK)).exists()
    chunk = plan_or_reuse(storage, run.spec).chunks[BAD_CHUNK]
    summary = attempt_chunk(storage, ledger, run.spec, chunk, 2, lambda: sqs_client)
    assert summary.error is not None and "copy to sqs://no-such-queue failed" in summary.error


def spec_dead_letter(run: LocalRun, index: int) -> str:
    return run.spec.dead_letter_uri(index)
