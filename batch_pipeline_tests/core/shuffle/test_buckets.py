"""How a keyed batch is cut into buckets: a hash that is the same in every process and
version, a bucket count bounded by ``max_buckets`` and kept in ``plan.json``, bucket rows in the
ledger (also one made before they existed), a stage 1 that must finish before any bucket runs,
and batches of one stage left as they were."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.aggregation import aggregate
from batch_pipeline.core.common.errors import ConfigError, ConservationError
from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings, RetrySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import BatchStatus, Ledger, output_digest, plan_hash
from batch_pipeline.core.planning import HASH_SCHEME, bucket_of, hash_text, plan_or_reuse
from batch_pipeline.core.shuffle import partition
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.core.shuffle.keyed_helpers import (
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
KEYS = ["", "a", "device-17", "é漢🚀", "x" * 300, "0", "null"]


def fnv1a_fmix(data: bytes) -> int:
    """The scheme written out in plain Python, byte by byte."""
    mask = 2**64 - 1
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & mask
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & mask
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & mask
    return h ^ (h >> 33)


@pytest.fixture(autouse=True)
def clean_processor() -> Iterator[None]:
    RunningSum.failing, RunningSum.crash_at, RunningSum.calls = set(), None, []
    yield
    RunningSum.failing, RunningSum.crash_at, RunningSum.calls = set(), None, []


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", ROWS)


def test_the_hash_is_the_scheme_it_names() -> None:
    assert HASH_SCHEME == "fnv1a64-fmix64-utf8"
    array = pa.array(KEYS)
    assert hash_text(array).tolist() == [fnv1a_fmix(k.encode()) for k in KEYS]
    assert hash_text(array.slice(2, 3)).tolist() == [fnv1a_fmix(k.encode()) for k in KEYS[2:5]]
    assert hash_text(pa.array(KEYS, pa.large_string())).tolist() == hash_text(array).tolist()
    # Fixed values: a change to the scheme (even mirrored above) would move keys.
    assert hash_text(pa.array(["a", "device-17", ""])).tolist() == [
        0x82A2A958A9BECE5B,
        0xD17A8458A8C95DE9,
        0xEFD01F60BA992926,
    ]
    assert bucket_of(pa.array(["a", "device-17", "é漢🚀"]), 1000).tolist() == [
        fnv1a_fmix(b"a") % 1000,
        fnv1a_fmix(b"device-17") % 1000,
        fnv1a_fmix("é漢🚀".encode()) % 1000,
    ]


def test_keys_of_any_type_hash_as_their_text_and_nulls_go_to_bucket_0() -> None:
    ints = bucket_of(pa.array([17, None, 3]), 11).tolist()
    assert ints == bucket_of(pa.array(["17", None, "3"]), 11).tolist()
    assert ints[1] == 0
    encoded = pa.array(["b", "a", "b", None]).dictionary_encode()
    assert bucket_of(encoded, 5).tolist() == bucket_of(pa.array(["b", "a", "b", None]), 5).tolist()
    chunked = pa.chunked_array([["a", "b"], ["c"]])
    assert bucket_of(chunked, 5).tolist() == bucket_of(pa.array(["a", "b", "c"]), 5).tolist()


def test_the_hash_is_the_same_in_every_process() -> None:
    code = (
        "import pyarrow as pa; from batch_pipeline.core.planning import bucket_of; "
        f"print(bucket_of(pa.array({KEYS!r} + [str(i) for i in range(500)]), 97).tolist())"
    )
    seen = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)  # fmt: skip
        seen.add(out.stdout)
    assert len(seen) == 1


def test_the_bucket_count_is_bounded_and_kept_in_the_plan(tmp_path: Path, source: Path) -> None:
    storage, ledger = Storage(), Ledger("sqlite://")
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=8)  # 30 chunks
    plan = plan_or_reuse(storage, spec)
    assert (len(plan.chunks), plan.buckets and plan.buckets.count) == (30, 8)
    stored = json.loads(storage.read_bytes(spec.plan_uri))["buckets"]
    assert stored == {"count": 8, "key_column": "device", "scheme": HASH_SCHEME,
                      "reason": "8 bucket(s) by 'device': max_buckets=8 for 30 chunks"}  # fmt: skip
    assert plan_or_reuse(storage, spec).buckets == plan.buckets  # a resume: the same buckets
    run_keyed(storage, spec, MemoryStore(), ledger)
    assert len(ledger.buckets.chunk_states(spec.batch_id)) == 8
    wider = replace(spec, chunking=replace(spec.chunking, max_buckets=100))
    assert output_digest(wider) == output_digest(spec)  # only the plan knows the count
    run = run_keyed(storage, wider, MemoryStore(), ledger)
    assert json.loads(storage.read_bytes(spec.plan_uri))["buckets"]["count"] == 30
    assert run.result.buckets == 30 and len(ledger.buckets.chunk_states(spec.batch_id)) == 30
    assert as_tuples(read_rows(storage, run.result.valid_files)) == reference(ROWS)[0]
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"device": pa.array([], pa.string())}), empty)
    nothing = run_keyed(storage, keyed_spec(storage, empty, tmp_path / "out"), MemoryStore())
    assert (nothing.result.buckets, nothing.result.records_in) == (1, 0)
    assert nothing.result.status == BatchStatus.SUCCEEDED


def test_a_plan_cut_with_another_hash_is_refused_unless_forced(
    tmp_path: Path, source: Path
) -> None:
    storage = Storage()
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=8)
    plan_or_reuse(storage, spec)
    data = json.loads(storage.read_bytes(spec.plan_uri))
    data["buckets"]["scheme"] = "polars-hash-1.9"
    storage.write_bytes(spec.plan_uri, json.dumps(data).encode())
    with pytest.raises(ConfigError, match=r"hash scheme 'polars-hash-1.9'.*force"):
        plan_or_reuse(storage, spec)
    forced = plan_or_reuse(storage, replace(spec, mode="force"))
    assert forced.buckets is not None and forced.buckets.scheme == HASH_SCHEME
    assert json.loads(storage.read_bytes(spec.plan_uri))["buckets"]["scheme"] == HASH_SCHEME


def test_no_bucket_runs_before_every_chunk_is_shuffled(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, store, ledger = Storage(), MemoryStore(), Ledger("sqlite://")
    no_retry = RetrySettings(max_retries=0)
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=8, retry=no_retry)
    calls = []
    real = partition.bucket_of

    def failing_third(column, count):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("injected fault in the shuffle")
        return real(column, count)

    monkeypatch.setattr(partition, "bucket_of", failing_third)
    run = run_keyed(storage, spec, store, ledger)
    assert run.result.status == BatchStatus.FAILED and RunningSum.calls == []
    assert "1 of 30 chunk(s) were not shuffled" in (run.result.failure or "")
    assert store.operations == 0
    assert [s.chunk for s in ledger.dead_letters(spec.batch_id)] == [2]
    monkeypatch.setattr(partition, "bucket_of", real)
    redriven = run_keyed(storage, replace(spec, mode="redrive"), store, ledger)
    assert redriven.result.status == BatchStatus.SUCCEEDED and len(RunningSum.calls) == 8
    assert as_tuples(read_rows(storage, redriven.result.valid_files)) == reference(ROWS)[0]


def test_a_keyed_batch_is_not_aggregated_without_its_buckets(tmp_path: Path, source: Path) -> None:
    storage, ledger = Storage(), Ledger("sqlite://")
    spec = keyed_spec(storage, source, tmp_path / "out")
    run_keyed(storage, spec, MemoryStore(), ledger)
    with pytest.raises(ConservationError, match="without them"):
        aggregate(storage, spec, ledger.chunk_states(spec.batch_id))


def test_a_batch_of_one_stage_is_unchanged(tmp_path: Path, source: Path) -> None:
    storage, ledger = Storage(), Ledger("sqlite://")
    spec = prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=100),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )
    from batch_pipeline.core.pipeline import run_batch

    run = run_batch(storage, spec, ledger=ledger)
    plan = plan_or_reuse(storage, spec)
    assert plan.buckets is None and "buckets" not in json.loads(storage.read_bytes(spec.plan_uri))
    assert plan_hash(plan) == plan_hash(replace(plan, buckets=None))
    assert ledger.buckets.chunk_states(spec.batch_id) == []
    assert run.result.buckets == 0 and run.result.records_out == len(ROWS)
    assert not storage.list(f"{spec.output}/shuffle")
    manifest = json.loads(storage.read_bytes(spec.manifest_uri))
    assert "buckets" not in manifest["results"] and "buckets" not in manifest["totals"]
    assert "max_buckets" not in manifest["plan"]["chunking"]


def test_a_ledger_made_before_buckets_gets_their_table(tmp_path: Path, source: Path) -> None:
    path = tmp_path / "old.db"
    Ledger(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE bp_buckets")
    storage = Storage()
    ledger = Ledger(f"sqlite:///{path}")
    spec = keyed_spec(storage, source, tmp_path / "out", max_buckets=4)
    run = run_keyed(storage, spec, MemoryStore(), ledger)
    assert run.result.status == BatchStatus.SUCCEEDED
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT bucket, status FROM bp_buckets ORDER BY bucket").fetchall()
    assert rows == [(i, "succeeded") for i in range(4)]
    ledger.dispose()
