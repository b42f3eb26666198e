"""Issue 11, item 6: a batch re-run with a smaller plan (bigger chunks) under the same batch id
leaves exactly the current plan's files (valid, rejected, dead letters, outbox, staged parts),
locally and on S3; files a user put there stay, and temp files of interrupted writes go."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from batch_pipeline.core.common.models import (
    ChunkingSettings,
    DeliverySettings,
    FailureSettings,
    RetrySettings,
)
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline.settings import s3_settings
from batch_pipeline_tests.fault_helpers import FAULTS_MODULE, csv_input

RECORDS = 2_500
MALFORMED = (5, 1_234, 2_401)  # rejected by the reader: rejected files in three chunks
FAILING_ID = "2050"  # in chunk 20 of 25 at first


def names(storage: Storage, prefix: str) -> list[str]:
    """The files under ``prefix``, relative to it (listed with pyarrow, not Storage.list)."""
    filesystem, path = storage.filesystem(prefix)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path[len(path) + 1 :] for i in infos if i.type == pafs.FileType.File)


def chunk_files(folder: str, count: int, suffix: str) -> list[str]:
    return [f"{folder}/chunk-{i:05d}{suffix}" for i in range(count)]


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.services), "gzip"])
def test_a_smaller_plan_leaves_exactly_its_files(
    where: str, tmp_path: Path, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    data, valid_ids = csv_input(RECORDS, MALFORMED)
    marker = tmp_path / "fail-once"
    marker.write_text("armed")
    if where == "s3":
        s3_client: Any = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("s3_bucket")
        s3_client.put_object(Bucket=bucket, Key="in/leads.csv", Body=data)
        source, output = f"s3://{bucket}/in/leads.csv", f"s3://{bucket}/out"
    else:
        path = tmp_path / ("leads.csv.gz" if where == "gzip" else "leads.csv")
        path.write_bytes(gzip.compress(data) if where == "gzip" else data)
        source, output = str(path), str(tmp_path / "out")
    storage = Storage(s3_settings)  # the environment's S3 (the endpoint of the moto server)
    target = "none" if where == "local" else "local"  # the outbox, under the output

    def spec(chunk_records: int) -> Any:
        return prepare_batch(
            storage, source, processor="fault_fail_when",
            processor_options={"column": "id", "value": FAILING_ID, "marker": str(marker)},
            processor_modules=(FAULTS_MODULE,), chunking=ChunkingSettings(chunk_records),
            output=output, delivery=DeliverySettings(target=target, records_per_message=50),
            retry=RetrySettings(max_retries=0), failures=FailureSettings(tolerated_failure_count=1),
            batch_id="shrink",
        )  # fmt: skip

    first = run_batch(storage, spec(100), ledger)
    assert first.result.status == "partial" and first.result.chunks == 25
    batch = f"{output}/shrink"
    before = names(storage, batch)
    assert "dead_letters/chunk-00020.json" in before
    assert len([n for n in before if n.startswith("valid/")]) == 24
    assert len([n for n in before if n.startswith("outbox/")]) == (24 if target == "local" else 0)
    # What a user put there, and a temp file of a local write that was interrupted.
    storage.write_bytes(f"{batch}/valid/README.txt", b"mine")
    storage.write_bytes(f"{batch}/notes/chunk-00007.parquet", b"mine too")
    if where != "s3":
        Path(batch, "valid", "chunk-00009.parquet.tmp-0a1b2c3d").write_bytes(b"half")

    marker.unlink()  # the failing record is fixed
    second = run_batch(storage, spec(1000), ledger)
    assert second.result.status == "succeeded" and second.result.chunks == 3
    after = names(storage, batch)
    rejected = [n for n in after if n.startswith("rejected/")]
    assert [n for n in after if n.startswith("valid/")] == [
        "valid/README.txt",
        *chunk_files("valid", 3, ".parquet"),
    ]
    assert rejected == ["rejected/chunk-00000.parquet", "rejected/chunk-00001.parquet",
                        "rejected/chunk-00002.parquet"]  # fmt: skip
    assert not [n for n in after if n.startswith("dead_letters/")]
    assert "notes/chunk-00007.parquet" in after
    assert not [n for n in after if ".tmp-" in n]
    if where == "gzip":
        parts = sorted({c for chunk in json.loads(Path(batch, "plan.json").read_text())[
            "descriptors"] for c in chunk["parts"]})  # fmt: skip
        staged = [n for n in after if n.startswith("_staging/part-")]
        assert len(parts) == 3 and staged == sorted(
            [p[len(batch) + 1 :] for p in parts]
            + [p[len(batch) + 1 :].replace(".parquet", ".rejects.parquet") for p in parts]
        )

    # The folder read as a dataset holds exactly the file's valid records, once each.
    filesystem, path = storage.filesystem(f"{batch}/valid")
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet",
                         exclude_invalid_files=True)  # fmt: skip
    assert sorted(dataset.to_table().column("id").to_pylist(), key=int) == valid_ids
    if target == "none":
        return
    assert [n for n in after if n.startswith("outbox/")] == chunk_files("outbox", 3, ".jsonl")
    delivered = [
        record["id"]
        for name in chunk_files("outbox", 3, ".jsonl")
        for line in storage.read_bytes(f"{batch}/{name}").decode().splitlines()
        for record in json.loads(line)["batch_data"]
    ]
    assert delivered == valid_ids


def test_prune_leaves_a_batch_without_outputs_alone(tmp_path: Path, ledger: Ledger) -> None:
    source = tmp_path / "leads.csv"
    source.write_bytes(csv_input(10)[0])
    storage = Storage()
    spec = prepare_batch(storage, str(source), output=str(tmp_path / "out"))
    assert storage.list(spec.output) == []  # not there at all
    from batch_pipeline.core.planning import plan_or_reuse, prune_outputs

    plan = plan_or_reuse(storage, spec)
    assert prune_outputs(storage, spec, plan, ledger.register_batch(spec, plan)) == []
