"""The keyed stage end to end, in one process (``run_batch`` with a state store): records
conserved across the shuffle, each key whole in one bucket and in input order, outputs equal
to one in-memory computation, exactly-once states across re-runs, crashes, failures and
redrives, and states continued from one batch to the next."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import ConfigError, ConservationError
from batch_pipeline.core.common.models import DeliverySettings, FailureSettings
from batch_pipeline.core.ledger import DEAD_LETTERED, SUCCEEDED, BatchStatus, Ledger
from batch_pipeline.core.planning import bucket_of
from batch_pipeline.core.shuffle import Bucket, attempt_bucket, run_bucket
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.core.shuffle.keyed_helpers import (
    Crash,
    MemoryStore,
    RunningSum,
    as_tuples,
    keyed_spec,
    read_rows,
    records,
    reference,
    run_keyed,
    write_jsonl,
)

ROWS = records(3000, keys=60)


@pytest.fixture(autouse=True)
def clean_processor() -> Iterator[None]:
    RunningSum.failing, RunningSum.crash_at, RunningSum.calls = set(), None, []
    yield
    RunningSum.failing, RunningSum.crash_at, RunningSum.calls = set(), None, []


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", ROWS, broken=(10, 1500))


def outputs(storage: Storage, run) -> list[tuple]:
    return as_tuples(read_rows(storage, run.result.valid_files))


def test_records_are_conserved_across_the_shuffle(tmp_path: Path, source: Path) -> None:
    storage, store = Storage(), MemoryStore()
    run = run_keyed(storage, keyed_spec(storage, source, tmp_path / "out", max_buckets=8), store)
    result = run.result
    assert result.status == BatchStatus.SUCCEEDED
    assert (result.chunks, result.buckets, result.buckets_succeeded) == (31, 8, 8)
    assert result.records_in == len(ROWS) + 2
    assert result.records_in == result.records_out + result.records_rejected
    rejected = read_rows(storage, result.rejected_files)
    assert len(rejected) == result.records_rejected and all(r["_reason"] for r in rejected)
    assert sum(1 for r in rejected if r["_raw"] is not None) == 2  # the lines that did not parse
    kept = {r["n"] for r in read_rows(storage, result.valid_files)}
    dropped = {r["n"] for r in rejected if r["n"] is not None}
    assert kept.isdisjoint(dropped) and kept | dropped == {r["n"] for r in ROWS}
    # A bucket's rejects name their chunk, record and line as a chunk's do.
    bucket_reject = next(r for r in rejected if r["_reason"] == "negative value")
    line = bucket_reject["_line"]
    assert json.loads(source.read_text().splitlines()[line - 1])["n"] == bucket_reject["n"]
    manifest = json.loads(storage.read_bytes(run.spec.manifest_uri))
    assert (
        manifest["totals"]["buckets"] == 8 and len(manifest["results"]["buckets"]["succeeded"]) == 8
    )
    assert all(uri.rsplit("/", 1)[-1].startswith("bucket-") for uri in result.valid_files)


def test_a_key_is_whole_in_one_bucket_and_in_input_order(tmp_path: Path, source: Path) -> None:
    storage = Storage()
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=8)
    run_keyed(storage, spec, MemoryStore())
    seen: dict[str, int] = {}
    for call, table in enumerate(RunningSum.calls):
        numbers = table.column("n").to_pylist()
        assert numbers == sorted(numbers)  # input order: chunk by chunk, row by row
        for device in set(table.column("device").to_pylist()) - {None}:
            assert seen.setdefault(device, call) == call  # no key in two buckets
    assert len(RunningSum.calls) == 8 and len(seen) == 60
    # Each part holds exactly the keys that hash to its bucket.
    for uri in storage.list(f"{spec.output}/shuffle"):
        bucket = int(uri.split("bucket-")[1][:5])
        with storage.open_input_file(uri) as f:
            part = pq.read_table(f)
        assert set(bucket_of(part.column("device"), 8).tolist()) == {bucket}


def test_outputs_equal_one_in_memory_computation(tmp_path: Path, source: Path) -> None:
    storage, store = Storage(), MemoryStore()
    run = run_keyed(storage, keyed_spec(storage, source, tmp_path / "out"), store)
    expected, states = reference(ROWS)
    assert outputs(storage, run) == expected
    assert store.states() == states
    # One bulk load and at most one bulk save per bucket with keys: each key loaded once.
    assert len(store.loads) <= run.result.buckets and len(store.saves) <= len(store.loads)
    assert sum(store.loads) == sum(store.saves) == 60 and min(store.loads) > 0
    for uri in run.result.valid_files:  # each key's records in its own (seq) order
        rows = read_rows(storage, [uri])
        for device in {r["device"] for r in rows}:
            seqs = [r["seq"] for r in rows if r["device"] == device]
            assert seqs == sorted(seqs)


def test_processing_a_bucket_again_changes_nothing(tmp_path: Path, source: Path) -> None:
    storage, store, ledger = Storage(), MemoryStore(), Ledger("sqlite://")
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=4)
    run = run_keyed(storage, spec, store, ledger)
    before, states = outputs(storage, run), store.states()
    row = ledger.buckets.chunk_states(spec.batch_id)[2]
    assert row.descriptor is not None
    bucket = Bucket.from_dict(json.loads(row.descriptor))
    assert Bucket.from_dict(bucket.to_dict()) == bucket
    again = run_bucket(storage, spec, bucket, RunningSum(RunningSum.Options()), store)
    assert again.records_in == bucket.total_records == row.records_in
    summary = attempt_bucket(storage, ledger, spec, bucket, store)
    assert (
        summary.status == SUCCEEDED and ledger.buckets.chunk_state(spec.batch_id, 2).attempts == 2
    )
    assert outputs(storage, run) == before and store.states() == states
    forced = run_keyed(storage, replace(spec, mode="force"), store, ledger)
    assert outputs(storage, forced) == before and store.states() == states


@pytest.mark.parametrize("crash", ["processor", "after_save"])
def test_a_batch_resumed_after_a_crash_equals_a_clean_run(
    tmp_path: Path, source: Path, crash: str
) -> None:
    storage = Storage()
    clean_store = MemoryStore()
    clean_spec = keyed_spec(storage, source, tmp_path / "clean", max_buckets=8)
    clean = run_keyed(storage, clean_spec, clean_store)
    RunningSum.calls = []
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=8)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    if crash == "processor":  # dies in the 6th bucket: 5 done, their states saved
        RunningSum.crash_at, store = 6, MemoryStore()
    else:  # dies after the 6th bucket saved its states, before the ledger knew it succeeded
        store = MemoryStore(crash_after_save=6)
    with pytest.raises(Crash):
        run_keyed(storage, spec, store, ledger)
    rows = ledger.buckets.chunk_states(spec.batch_id)
    assert sum(r.status == SUCCEEDED for r in rows) == 5
    RunningSum.crash_at, RunningSum.calls = None, []
    resumed = run_keyed(storage, spec, store, ledger)
    assert resumed.result.status == BatchStatus.SUCCEEDED
    assert len(RunningSum.calls) == clean.result.buckets - 5  # done buckets are not redone
    assert outputs(storage, resumed) == outputs(storage, clean)
    assert store.states() == clean_store.states() == reference(ROWS)[1]


def test_a_failing_key_fails_only_its_bucket_and_a_redrive_completes(
    tmp_path: Path, source: Path
) -> None:
    storage, store, ledger = Storage(), MemoryStore(), Ledger("sqlite://")
    failures = FailureSettings(tolerated_failure_count=1)
    spec = keyed_spec(storage, source, tmp_path / "out", failures=failures)
    RunningSum.failing = {"d7"}
    run = run_keyed(storage, spec, store, ledger)
    assert run.result.status == BatchStatus.PARTIAL
    assert (run.result.buckets_failed, run.result.chunks_failed) == (1, 0)
    dead = ledger.buckets.dead_letters(spec.batch_id)
    assert len(dead) == 1 and dead[0].status == DEAD_LETTERED
    assert dead[0].error_category == "processor" and "injected fault on key d7" in (
        dead[0].error_message or ""
    )
    letter = json.loads(storage.read_bytes(dead[0].dead_letter or ""))
    assert letter["bucket"] == dead[0].chunk and "bucket_" in letter["slice"]
    assert dead[0].dead_letter.endswith(f"dead_letters/bucket-{dead[0].chunk:05d}.json")
    assert "d7" not in store.states()  # a failed bucket saves no state
    assert run.result.records_in == run.result.records_out + run.result.records_rejected + (
        sum(1 for r in ROWS if bucket_of_device(r["device"], run.result.buckets) == dead[0].chunk)
    )
    RunningSum.failing, RunningSum.calls = set(), []
    redriven = run_keyed(storage, replace(spec, mode="redrive"), store, ledger)
    assert redriven.result.status == BatchStatus.SUCCEEDED and len(RunningSum.calls) == 1
    assert outputs(storage, redriven) == reference(ROWS)[0]
    assert store.states() == reference(ROWS)[1]
    assert not storage.exists(dead[0].dead_letter or "")


def bucket_of_device(device: str | None, count: int) -> int:
    import pyarrow as pa

    return int(bucket_of(pa.array([device], pa.string()), count)[0])


def test_without_tolerance_a_failed_bucket_fails_the_batch(tmp_path: Path, source: Path) -> None:
    storage = Storage()
    RunningSum.failing = {"d3"}
    run = run_keyed(storage, keyed_spec(storage, source, tmp_path / "out"), MemoryStore())
    assert run.result.status == BatchStatus.FAILED
    assert "1 of 31 bucket(s) failed" in (run.result.failure or "")
    assert "first failure: bucket_" in (run.result.failure or "")
    assert run.delivery is None


def test_two_batches_continue_each_key_like_one(tmp_path: Path) -> None:
    first, second = records(1200, keys=30, seed=1), records(900, keys=30, seed=2, start=1200)
    storage, store = Storage(), MemoryStore()
    one = write_jsonl(tmp_path / "one.jsonl", first)
    two = write_jsonl(tmp_path / "two.jsonl", second)
    run_one = run_keyed(storage, keyed_spec(storage, one, tmp_path / "out"), store)
    run_two = run_keyed(
        storage, keyed_spec(storage, two, tmp_path / "out", chunk_records=70), store
    )
    expected, states = reference(first + second)
    assert outputs(storage, run_one) + outputs(storage, run_two) == expected
    assert store.states() == states


def test_a_keyed_batch_needs_a_state_store(tmp_path: Path, source: Path) -> None:
    storage = Storage()
    with pytest.raises(ConfigError, match="needs a state store"):
        run_keyed(storage, keyed_spec(storage, source, tmp_path / "out"), None)  # type: ignore[arg-type]


def test_a_lost_part_or_a_lost_record_fails_the_bucket_loudly(tmp_path: Path, source: Path) -> None:
    storage, store, ledger = Storage(), MemoryStore(), Ledger("sqlite://")
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=4)
    run_keyed(storage, spec, store, ledger)
    bucket = Bucket.from_dict(json.loads(ledger.buckets.chunk_states(spec.batch_id)[1].descriptor))
    short = replace(bucket, records=(bucket.records[0] + 1, *bucket.records[1:]))
    with pytest.raises(ConservationError, match=r"bucket_00001 of 4.*its chunk wrote"):
        run_bucket(storage, spec, short, RunningSum(RunningSum.Options()), store)

    class Dropping(RunningSum):
        def process_keys(self, table, states):  # type: ignore[no-untyped-def]
            result = super().process_keys(table, states)
            result.valid = result.valid.slice(1)
            return result

    with pytest.raises(Exception, match="lost or invented records on bucket_00001"):
        run_bucket(storage, spec, bucket, Dropping(RunningSum.Options()), store)
    storage.delete(bucket.parts[0])
    with pytest.raises(ConservationError, match=r"shuffle part .* is gone"):
        run_bucket(storage, spec, bucket, RunningSum(RunningSum.Options()), store)


def test_a_keyed_batch_delivers_its_buckets(tmp_path: Path, source: Path) -> None:
    storage = Storage()
    spec = keyed_spec(
        storage,
        source,
        tmp_path / "out",
        max_buckets=5,
        delivery=DeliverySettings(target="local", records_per_message=50),
    )
    store, ledger = MemoryStore(), Ledger("sqlite://")
    run = run_keyed(storage, spec, store, ledger)
    assert run.delivery is not None and run.delivery.records == run.result.records_out
    files = storage.list(spec.outbox)
    assert [f.rsplit("/", 1)[-1] for f in files] == [f"bucket-{i:05d}.jsonl" for i in range(5)]
    sent = [json.loads(line) for f in files for line in storage.read_bytes(f).splitlines()]
    assert sum(len(m["batch_data"]) for m in sent) == run.result.records_out
    assert [m["batch_number"] for m in sent] == list(range(1, len(sent) + 1))
    again = run_keyed(storage, spec, store, ledger)  # resumed: nothing again
    assert again.delivery is not None and again.delivery.messages == 0
    assert storage.list(spec.outbox) == files
