"""The check after every chunk: when the plan knows how many records a chunk holds, reading it
must give exactly that many (parsed + rejected by the parser), and a run planned exactly must
read the plan's total; otherwise the chunk, or the run, fails loudly and nothing of the chunk is
written."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import ConservationError, classify
from batch_pipeline.core.common.models import Chunk, ChunkingSettings, DeliverySettings, SheetRange
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.inputs.readers import ChunkData
from batch_pipeline.core.ledger import DEAD_LETTERED, Ledger
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.core.planning import plan_or_reuse
from batch_pipeline.core.processing import run as processing
from batch_pipeline.core.processing.run import run_chunk
from batch_pipeline.core.stores.storage import Storage


def spec_for(storage: Storage, source: Path, tmp_path: Path, chunk_records: int = 4, **chunking):
    return prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=chunk_records, **chunking),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(10)))
    return path


def test_chunks_know_their_records_exactly_only_when_the_plan_counted_them() -> None:
    def chunk(kind: str, **fields) -> Chunk:
        return Chunk(0, 1, kind, "/in/x", **fields)  # type: ignore[arg-type]

    assert chunk("bytes", first_line=2, records=5).expected_records == 5  # scanned
    assert chunk("bytes", first_line=None, records=5).expected_records is None  # estimated
    assert chunk("row_groups", end=2, records=7).expected_records == 7
    assert chunk("parts", end=1, records=3).expected_records == 3
    assert chunk("empty", records=0).expected_records == 0
    sheets = (SheetRange("s", 1, 2, 9),)
    assert chunk("sheets", sheets=sheets, records=8).expected_records is None
    assert chunk("objects", members=("/in/a.csv",), records=8).expected_records is None
    assert chunk("bytes", first_line=2, records=None).expected_records is None


def test_a_chunk_that_reads_fewer_records_than_planned_fails_and_writes_nothing(
    storage: Storage, source: Path, tmp_path: Path
) -> None:
    spec = spec_for(storage, source, tmp_path)
    chunk = plan_or_reuse(storage, spec).chunks[1]
    wrong = replace(chunk, records=chunk.records + 1)  # type: ignore[operator]

    with pytest.raises(ConservationError) as info:
        run_chunk(storage, spec, wrong)

    message = str(info.value)
    assert chunk.describe() in message
    assert "read 4 records" in message and "the plan expected 5" in message
    assert "the reader and the planner disagree about where records end" in message
    assert "nothing of this chunk was written" in message
    assert not os.path.exists(spec.valid_uri(1)) and not os.path.exists(spec.rejected_uri(1))
    assert (classify(info.value).category, classify(info.value).transient) == (
        "conservation",
        False,
    )


@pytest.fixture
def reader_drops_a_record(monkeypatch: pytest.MonkeyPatch):
    """A reader that loses the last record of chunk 1, as a boundary bug would."""
    real = processing.read_chunk

    def read(storage, source, chunk, check=True) -> ChunkData:
        data = real(storage, source, chunk, check)
        if chunk.index == 1:
            data.table = data.table.slice(0, data.table.num_rows - 1)
        return data

    monkeypatch.setattr(processing, "read_chunk", read)


def test_a_run_whose_reader_loses_a_record_fails_loudly(
    storage: Storage, source: Path, tmp_path: Path, reader_drops_a_record
) -> None:
    spec = spec_for(storage, source, tmp_path)
    ledger = Ledger("sqlite://")

    result = run_batch(storage, spec, ledger).result

    assert result.status == "failed"
    assert result.records_in == 6  # chunks 0 and 2; chunk 1 wrote nothing
    (failed,) = result.failed_chunks
    assert (failed["chunk"], failed["category"]) == (1, "conservation")
    assert failed["status"] == DEAD_LETTERED
    assert failed["attempts"] == 1  # permanent: no retry
    assert "read 3 records" in failed["error"] and "the plan expected 4" in failed["error"]
    assert "chunk_00001" in (result.failure or "")
    assert not os.path.exists(spec.valid_uri(1))


@pytest.mark.parametrize("kind", ["parts", "row_groups"])
def test_staged_parts_and_row_groups_are_checked_too(
    kind: str, storage: Storage, tmp_path: Path, reader_drops_a_record
) -> None:
    if kind == "parts":
        source = tmp_path / "rows.jsonl.gz"
        source.write_bytes(gzip.compress(b"".join(b'{"id": %d}\n' % i for i in range(10))))
    else:
        source = tmp_path / "rows.parquet"
        pq.write_table(pa.table({"id": list(range(10))}), source, row_group_size=2)

    result = run_batch(storage, spec_for(storage, source, tmp_path)).result

    assert result.status == "failed"
    assert [(f["chunk"], f["category"]) for f in result.failed_chunks] == [(1, "conservation")]


def test_a_run_reading_another_total_than_its_exact_plan_fails(
    storage: Storage, source: Path, tmp_path: Path
) -> None:
    """Every chunk balanced, but the run's records in differ from the plan's exact total (here
    plan.json says one more): aggregate refuses to report success."""
    spec = spec_for(storage, source, tmp_path)
    ledger = Ledger("sqlite://")
    assert run_batch(storage, spec, ledger).result.status == "succeeded"
    plan = json.loads(Path(spec.plan_uri).read_text())
    assert (plan["total_records"], plan["exact_records"]) == (10, True)
    Path(spec.plan_uri).write_text(json.dumps({**plan, "total_records": 11}))

    with pytest.raises(ConservationError) as info:
        run_batch(storage, spec, ledger)  # resumes: every chunk done, aggregate again

    message = str(info.value)
    assert "10 records read" in message and "the plan counted 11" in message
    assert spec.batch_id in message


def test_an_estimated_plan_is_not_held_to_its_estimate(
    storage: Storage, source: Path, tmp_path: Path
) -> None:
    spec = spec_for(storage, source, tmp_path, chunk_records=3, scan=False)

    result = run_batch(storage, spec).result

    assert result.status == "succeeded" and result.records_in == 10
    assert json.loads(Path(spec.plan_uri).read_text())["exact_records"] is False


def test_jsonl_lines_of_whitespace_are_neither_planned_nor_read_as_records(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b'{"id": 1}\n  \n{"id": 2}\r\t\r\n{"id": 3}\n \n{"id": 4}\n')

    result = run_batch(storage, spec_for(storage, source, tmp_path, chunk_records=2))

    assert result.result.status == "succeeded"
    assert result.result.records_in == 4 == result.result.records_out
    plan = json.loads(Path(result.spec.plan_uri).read_text())
    assert [d["records"] for d in plan["descriptors"]] == [2, 2]


def test_records_without_any_field_fail_their_chunk_instead_of_vanishing(
    storage: Storage, tmp_path: Path
) -> None:
    """Parquet cannot hold rows without columns: a chunk whose records are all ``{}`` would
    write a file of 0 rows while counting them as kept. The chunk fails, saying why."""
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": 1}\n{}\n{}\n{"id": 4}\n')

    result = run_batch(storage, spec_for(storage, source, tmp_path, chunk_records=1)).result

    assert result.status == "failed"
    assert [(f["chunk"], f["category"]) for f in result.failed_chunks] == [
        (1, "conservation"),
        (2, "conservation"),
    ]
    assert "no field at all" in result.failed_chunks[0]["error"]
    kept = pa.concat_tables(pq.read_table(f) for f in result.valid_files)
    assert kept.num_rows == result.records_out == 2
