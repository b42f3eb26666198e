"""plan_batch: chunk descriptors cut at record boundaries, fan-out bounded by max_chunks."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import SourceError
from batch_pipeline.core.common.models import (
    BatchSpec,
    Chunk,
    ChunkingSettings,
    DeliverySettings,
    Plan,
    SheetRange,
)
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.inputs.staging import PartSizes
from batch_pipeline.core.ledger import plan_hash
from batch_pipeline.core.planning import group_units, plan_batch, plan_or_reuse
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.core.helpers import (
    csv_text,
    jsonl_text,
    nasty_records,
    run,
    valid_rows,
)


def spec_for(
    storage: Storage, source: Path, out: Path, chunk_records: int, **chunking: Any
) -> BatchSpec:
    return prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=chunk_records, **chunking),
        output=str(out),
        delivery=DeliverySettings(target="none"),
    )


def plan_for(
    storage: Storage, source: Path, out: Path, chunk_records: int, **chunking: Any
) -> Plan:
    return plan_batch(storage, spec_for(storage, source, out, chunk_records, **chunking))


def csv_file(path: Path, n: int, newlines: bool = True, newline: str = "\n") -> Path:
    records = nasty_records(n, allow_newlines=newlines)
    rows = [list(r.values()) for r in records]
    path.write_bytes(csv_text(list(records[0]), rows, newline=newline).encode())
    return path


# Byte ranges -------------------------------------------------------------------------------------


def test_csv_chunks_are_contiguous_byte_ranges_cut_after_a_record(
    storage: Storage, tmp_path: Path
) -> None:
    source = csv_file(tmp_path / "a.csv", 1000)
    data = source.read_bytes()

    plan = plan_for(storage, source, tmp_path / "out", 90)

    chunks = plan.chunks
    assert len(chunks) == 12
    assert chunks[0].start == data.index(b"\n") + 1  # right after the header
    assert chunks[-1].end == len(data)
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
    assert all(data[c.end - 1 : c.end] == b"\n" for c in chunks)
    assert [c.records for c in chunks] == [90] * 11 + [10]
    assert (plan.total_records, plan.exact_records) == (1000, True)


def test_every_one_record_chunk_holds_exactly_one_whole_record(
    storage: Storage, tmp_path: Path
) -> None:
    data = b'id,t\r\n1,"a\r\n"\r\n2,"""\r\n"\r\n3,"\r\n\r\n"\r\n4,x\r\n'
    source = tmp_path / "q.csv"
    source.write_bytes(data)

    plan = plan_for(storage, source, tmp_path / "out", 1)

    slices = [data[c.start : c.end] for c in plan.chunks]
    assert slices == [b'1,"a\r\n"\r\n', b'2,"""\r\n"\r\n', b'3,"\r\n\r\n"\r\n', b"4,x\r\n"]


def test_chunks_know_the_line_their_first_record_starts_on(
    storage: Storage, tmp_path: Path
) -> None:
    # Lines: 1 header, 2-3 record 1, 4 record 2, 5-7 record 3, 8 record 4.
    source = tmp_path / "l.csv"
    source.write_bytes(b'id,t\n1,"a\nb"\n2,c\n3,"d\n\ne"\n4,f\n')

    plan = plan_for(storage, source, tmp_path / "out", 1)

    assert [c.first_line for c in plan.chunks] == [2, 4, 5, 8]


def test_max_chunks_grows_chunks_instead_of_fanning_out(storage: Storage, tmp_path: Path) -> None:
    source = csv_file(tmp_path / "a.csv", 1000)

    plan = plan_for(storage, source, tmp_path / "out", 1, max_chunks=7)

    assert len(plan.chunks) <= 7
    assert plan.chunk_records >= 1000 / 7
    assert sum(c.records or 0 for c in plan.chunks) == 1000
    assert "max_chunks=7" in plan.reason


def test_chunk_bytes_bounds_the_size_of_a_chunk(storage: Storage, tmp_path: Path) -> None:
    source = csv_file(tmp_path / "a.csv", 1000, newlines=False)

    plan = plan_for(storage, source, tmp_path / "out", 10**6, chunk_bytes=4096)

    sizes = [c.end - c.start for c in plan.chunks]
    assert len(plan.chunks) > 1
    assert max(sizes[:-1]) <= 4096 + 200  # a cut falls after the record that crosses the bound


def test_chunk_records_below_one_is_refused(storage: Storage, tmp_path: Path) -> None:
    source = csv_file(tmp_path / "a.csv", 3)
    spec = spec_for(storage, source, tmp_path / "out", 1)
    bad = BatchSpec(**{**spec.__dict__, "chunking": ChunkingSettings(chunk_records=0)})

    with pytest.raises(SourceError, match="at least 1"):
        plan_batch(storage, bad)


# Planning without a scan -------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize(("chunk_records", "max_chunks"), [(10**6, 200), (143, 200), (1, 7)])
def test_csv_planned_without_a_scan_gives_the_same_records(
    newline: str, chunk_records: int, max_chunks: int, storage: Storage, tmp_path: Path
) -> None:
    source = csv_file(tmp_path / "a.csv", 1000, newlines=False, newline=newline)
    kwargs = {"chunk_records": chunk_records, "max_chunks": max_chunks}

    scanned = run(storage, source, tmp_path / "scan", **kwargs)
    estimated = run(storage, source, tmp_path / "estimate", scan=False, **kwargs)

    assert valid_rows(storage, estimated) == valid_rows(storage, scanned)
    assert estimated.result.records_in == 1000
    assert estimated.result.chunks <= max_chunks
    assert (estimated.result.chunks > 1) == (chunk_records < 1000)


@pytest.mark.parametrize("newline", ["\n", "\r"])
@pytest.mark.parametrize(("chunk_records", "max_chunks"), [(10**6, 200), (143, 200), (1, 7)])
def test_jsonl_planned_without_a_scan_gives_the_same_records(
    newline: str, chunk_records: int, max_chunks: int, storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "a.jsonl"
    text = jsonl_text(nasty_records(1000)).replace("\n", newline)
    source.write_bytes(b"\xef\xbb\xbf" + text.encode())
    kwargs = {"chunk_records": chunk_records, "max_chunks": max_chunks}

    scanned = run(storage, source, tmp_path / "scan", **kwargs)
    estimated = run(storage, source, tmp_path / "estimate", scan=False, **kwargs)

    assert valid_rows(storage, estimated) == valid_rows(storage, scanned)
    assert len(valid_rows(storage, estimated)) == 1000


def test_an_estimated_plan_has_about_as_many_chunks_as_a_scanned_one(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "a.jsonl"
    source.write_bytes(jsonl_text([{"id": f"{i:06d}"} for i in range(1400)]).encode())

    scanned = plan_for(storage, source, tmp_path / "scan", 200)
    estimated = plan_for(storage, source, tmp_path / "estimate", 200, scan=False)

    assert len(scanned.chunks) == len(estimated.chunks) == 7
    assert estimated.exact_records is False
    assert all(c.first_line is None for c in estimated.chunks)


# Parquet, Excel, staged sources ------------------------------------------------------------------


def test_parquet_chunks_are_row_group_ranges_numbered_by_record(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "p.parquet"
    pq.write_table(pa.table({"n": list(range(95))}), source, row_group_size=10)

    plan = plan_for(storage, source, tmp_path / "out", 30)

    assert [(c.start, c.end) for c in plan.chunks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [c.first_line for c in plan.chunks] == [1, 31, 61, 91]
    assert [c.records for c in plan.chunks] == [30, 30, 30, 5]


def test_excel_chunks_split_big_sheets_pack_small_ones_and_skip_empty_ones(
    storage: Storage, tmp_path: Path
) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in {"big": 25, "empty": 0, "small": 3, "tiny": 2}.items():
        sheet = book.create_sheet(name)
        sheet.append(["id"])
        for i in range(rows):
            sheet.append([i])
    source = tmp_path / "b.xlsx"
    book.save(source)

    plan = plan_for(storage, source, tmp_path / "out", 10)

    assert [c.sheets for c in plan.chunks] == [
        (SheetRange("big", 1, 2, 11),),
        (SheetRange("big", 1, 12, 21),),
        (
            SheetRange("big", 1, 22, None),
            SheetRange("small", 1, 2, None),
            SheetRange("tiny", 1, 2, None),
        ),
    ]
    assert [c.records for c in plan.chunks] == [10, 10, 10]
    assert "empty sheets skipped: empty" in plan.reason


def test_group_units_puts_trailing_empty_units_in_the_last_chunk() -> None:
    groups, size, _ = group_units([5, 5, 5, 0, 0], 5, 10)

    assert (groups, size) == ([(0, 1), (1, 2), (2, 5)], 5)


def test_group_units_grows_the_target_to_respect_max_chunks() -> None:
    groups, size, reason = group_units([1] * 100, 1, 8)

    assert len(groups) <= 8
    assert size >= 13
    assert "max_chunks=8" in reason


def test_staged_chunks_point_at_parquet_parts(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "a.jsonl.gz"
    source.write_bytes(gzip.compress(jsonl_text([{"id": i} for i in range(10)]).encode()))

    plan = plan_for(storage, source, tmp_path / "out", 4)

    assert [c.kind for c in plan.chunks] == ["parts"] * 3
    assert [c.records for c in plan.chunks] == [4, 4, 2]
    assert [c.first_line for c in plan.chunks] == [1, 5, 9]
    assert all(Path(p).exists() for c in plan.chunks for p in c.parts)


def test_staging_is_reused_when_the_same_source_is_planned_again(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "a.json"
    source.write_bytes(json.dumps([{"id": i} for i in range(10)]).encode())
    spec = spec_for(storage, source, tmp_path / "out", 4)
    first = plan_batch(storage, spec)
    part = Path(first.chunks[0].parts[0])
    written = part.stat().st_mtime_ns

    second = plan_batch(storage, spec)

    assert second.chunks == first.chunks
    assert part.stat().st_mtime_ns == written


def test_small_chunk_records_on_a_staged_source_do_not_make_a_part_per_record(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "a.csv.gz"
    source.write_bytes(gzip.compress(b"id\n" + b"".join(b"%d\n" % i for i in range(5000))))

    plan = plan_for(storage, source, tmp_path / "out", 1, max_chunks=4)

    parts = [p for c in plan.chunks for p in c.parts]
    assert len(plan.chunks) <= 4
    assert len(parts) < 100
    assert sum(c.records or 0 for c in plan.chunks) == 5000


def test_part_sizes_double_after_every_grow_every_parts_up_to_the_cap() -> None:
    sizes = PartSizes(first=3, grow_every=2, cap=20)

    assert [sizes(i) for i in range(10)] == [3, 3, 6, 6, 12, 12, 20, 20, 20, 20]
    assert PartSizes(first=3)(1000) == 3


def test_an_s3_csv_planned_without_a_scan_gives_the_same_records(
    storage: Storage, s3_client, s3_bucket: str, tmp_path: Path
) -> None:
    source = csv_file(tmp_path / "a.csv", 500, newlines=False, newline="\r\n")
    s3_client.put_object(Bucket=s3_bucket, Key="in/a.csv", Body=source.read_bytes())
    uri = f"s3://{s3_bucket}/in/a.csv"

    scanned = run(storage, uri, f"s3://{s3_bucket}/scan", chunk_records=100)
    estimated = run(storage, uri, f"s3://{s3_bucket}/estimate", chunk_records=100, scan=False)

    assert estimated.result.chunks == scanned.result.chunks == 5
    assert valid_rows(storage, estimated) == valid_rows(storage, scanned)


# Chunk.chunks_in_plan, formerly Chunk.count -------------------------------------------------------


def test_plan_json_keeps_count_and_is_reused(storage: Storage, tmp_path: Path) -> None:
    """plan.json's descriptors say ``count`` (``Chunk.chunks_in_plan``'s key in the files other
    programs read, before and after the rename) and load back."""
    spec = spec_for(storage, csv_file(tmp_path / "a.csv", 100), tmp_path / "out", 30)
    plan = plan_or_reuse(storage, spec)
    data = json.loads(storage.read_bytes(spec.plan_uri))
    assert all(d["count"] == 4 and "chunks_in_plan" not in d for d in data["descriptors"])

    reused = plan_or_reuse(storage, spec)

    assert reused.reason.endswith("(plan reused from plan.json)")
    assert reused.chunks == plan.chunks and plan.chunks[0].chunks_in_plan == 4


def test_the_ledger_digests_of_a_plan_did_not_change_with_the_name() -> None:
    """``plan_hash`` (and ``chunk_fingerprint``) hash ``count`` as before the rename: a batch
    planned before it resumes without being planned and processed again."""
    chunks = (
        Chunk(0, 2, "bytes", "s3://b/k.csv", 10, 500, first_line=2, records=49),
        Chunk(1, 2, "sheets", "s3://b/k.xlsx", records=3, sheets=(SheetRange("s", 1, 2, 4),)),
    )

    digest = plan_hash(Plan(chunks, 50, "why", 52, True))

    assert digest == "fcf780f60bd257144db59c1ca21459789abcc1c5acefe95ca5898e4141b655d8"
