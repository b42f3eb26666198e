"""File sets: a folder or prefix of many small files is one batch whose chunks each read many
whole files (planning on synthetic sets; reading and conservation on real folders and on S3
over HTTP)."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core import columns
from batch_pipeline.core.common.errors import ChunkReadError, ConfigError, SourceError
from batch_pipeline.core.common.models import Chunk, ChunkingSettings, ObjectInfo, SourceSpec
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.inputs import filesets
from batch_pipeline.core.inputs.filesets import set_info
from batch_pipeline.core.ledger import RUNNING, SUCCEEDED, Ledger
from batch_pipeline.core.planning import plan_batch, plan_file_set
from batch_pipeline.core.planning.formats import MAX_FILES_PER_CHUNK
from batch_pipeline.core.processing.run import run_chunk
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline.core.tuning import estimate_total_records, workload_key
from batch_pipeline_tests.core.helpers import rejected_rows, run, valid_rows

SCHEMA = {"columns": {"id": {"type": "int64", "required": True}, "amount": {"type": "int64"}}}


def synthetic_set(sizes: list[int], record_bytes: float = 100.0) -> SourceSpec:
    members = tuple(
        ObjectInfo(f"/data/in/f{i:05d}.csv", size, mtime=1.0) for i, size in enumerate(sizes)
    )
    return SourceSpec(
        uri="/data/in/",
        format="csv",
        compression=None,
        info=set_info("/data/in/", members),
        layout={"record_bytes_estimate": record_bytes},
        members=members,
    )


def covered(chunks: tuple[Chunk, ...], source: SourceSpec) -> list[str]:
    """Every member exactly once, in key order, chunk after chunk."""
    found = [m for c in chunks for m in c.members]
    assert found == [m.uri for m in source.members]
    for chunk in chunks:
        assert chunk.kind == "objects"
        assert chunk.members == tuple(m.uri for m in source.members[chunk.start : chunk.end])
        assert chunk.fingerprints == tuple(
            m.fingerprint for m in source.members[chunk.start : chunk.end]
        )
    return found


# Planning ----------------------------------------------------------------------------------


def test_small_files_are_grouped_up_to_chunk_records() -> None:
    source = synthetic_set([1_000] * 300)  # 10 records each, by the estimate
    plan = plan_file_set(source, ChunkingSettings(chunk_records=500))
    covered(plan.chunks, source)
    assert [len(c.members) for c in plan.chunks] == [50] * 6
    assert [c.records for c in plan.chunks] == [500] * 6
    assert plan.total_records == 3_000 and not plan.exact_records
    assert "300 files grouped into 6 chunk(s)" in plan.reason


def test_max_chunks_wins_over_chunk_records() -> None:
    source = synthetic_set([1_000] * 300)
    plan = plan_file_set(source, ChunkingSettings(chunk_records=10, max_chunks=4))
    covered(plan.chunks, source)
    assert len(plan.chunks) == 4
    assert "max_chunks=4" in plan.reason


def test_chunk_bytes_caps_a_chunk_too() -> None:
    source = synthetic_set([1_000] * 100)
    plan = plan_file_set(source, ChunkingSettings(chunk_records=1_000_000, chunk_bytes=20_000))
    covered(plan.chunks, source)
    assert [len(c.members) for c in plan.chunks] == [20] * 5


def test_files_per_chunk_are_capped_unless_max_chunks_needs_more() -> None:
    tiny = synthetic_set([50] * 2_500)  # 1 record each: one chunk by records
    plan = plan_file_set(tiny, ChunkingSettings(chunk_records=1_000_000))
    covered(plan.chunks, tiny)
    assert [len(c.members) for c in plan.chunks] == [MAX_FILES_PER_CHUNK] * 2 + [500]
    few = plan_file_set(tiny, ChunkingSettings(chunk_records=1_000_000, max_chunks=2))
    covered(few.chunks, tiny)
    assert len(few.chunks) == 2  # 1,250 files each: max_chunks wins over the cap


def test_a_big_file_among_small_ones_gets_a_chunk_of_its_own() -> None:
    source = synthetic_set([1_000] * 10 + [100_000] + [1_000] * 10)
    plan = plan_file_set(source, ChunkingSettings(chunk_records=100))
    covered(plan.chunks, source)
    assert [len(c.members) for c in plan.chunks] == [10, 1, 10]


def test_objects_chunk_survives_plan_json_and_the_ledger() -> None:
    chunk = plan_file_set(synthetic_set([10] * 3), ChunkingSettings()).chunks[0]
    again = Chunk.from_dict(json.loads(json.dumps(asdict(chunk))))
    assert again == chunk
    assert chunk.describe() == (
        "chunk_00000 of 1 (3 file(s): f00000.csv, f00001.csv, f00002.csv of /data/in/)"
    )


# Reading whole files -----------------------------------------------------------------------


def write_csv_folder(folder: Path, files: int = 40) -> int:
    """``files`` small CSVs (every 7th with its columns in another order and an extra one;
    each with one bad amount), a file with a short row, an empty file, and a hidden one."""
    records = 0
    for i in range(files):
        rows = [(i * 100 + j, "oops" if j == 4 else j) for j in range(10)]
        if i % 7 == 0:
            text = "amount,extra,id\n" + "".join(f"{a},e,{r}\n" for r, a in rows)
        else:
            text = "id,amount\n" + "".join(f"{r},{a}\n" for r, a in rows)
        sub = folder / ("deep" if i % 2 else "") / f"f{i:03d}.csv"
        sub.parent.mkdir(parents=True, exist_ok=True)
        sub.write_text(text)
        records += len(rows)
    (folder / "short.csv").write_text("id,amount\n1,2\n2\n3,4\n")
    (folder / "empty.csv").write_text("")
    (folder / ".hidden.csv").write_text("id,amount\n9,9\n")
    return records + 3


def test_a_folder_of_small_csvs_is_one_batch_of_few_chunks(storage, tmp_path) -> None:
    folder = tmp_path / "in"
    expected = write_csv_folder(folder)
    result = run(
        storage, folder, tmp_path / "out", chunk_records=150, processor="validate",
        processor_options=SCHEMA,
    )  # fmt: skip
    batch = result.result
    assert batch.status == "succeeded"
    assert batch.records_in == expected == batch.records_out + batch.records_rejected
    assert 2 <= batch.chunks <= 5  # 42 files (the hidden one is not a record file)
    assert result.spec.source.layout["files"] == 42
    assert result.spec.source.layout["empty_files"] == 1
    valid = valid_rows(storage, result)
    ids = sorted(r["id"] for r in valid)
    assert ids == sorted([i * 100 + j for i in range(40) for j in range(10) if j != 4] + [1, 3])
    assert all(r["_file"].startswith(str(folder) + "/") for r in valid)
    first = next(r for r in valid if r["id"] == 0)
    assert first["extra"] == "e" and first["_file"] == str(folder / "f000.csv")
    assert next(r for r in valid if r["id"] == 101)["extra"] is None  # not in that file
    rejected = rejected_rows(storage, result)
    assert len(rejected) == 41
    oops = next(r for r in rejected if r["_file"] == str(folder / "deep" / "f001.csv"))
    assert (oops["id"], oops["amount"], oops["_line"]) == ("104", "oops", 6)
    short = next(r for r in rejected if r["_file"] == str(folder / "short.csv"))
    assert short["_raw"] == "2" and short["_line"] == 3
    assert "expected 2 fields, got 1" in short["_reason"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_files_with_carriage_return_line_endings_are_read_whole(storage, tmp_path, fmt) -> None:
    """Members with lone \\r line breaks (and one with \\r\\n): every record read, and a
    malformed one names its line, counted in \\r lines."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        newline = "\r\n" if i == 5 else "\r"
        if fmt == "csv":
            rows = ["id,amount", *(f"{i * 10 + j},{j}" for j in range(5)), "bad"]
        else:
            rows = [*(json.dumps({"id": i * 10 + j, "amount": j}) for j in range(5)), "{bad"]
        (folder / f"f{i}.{fmt}").write_bytes(newline.join(rows).encode() + newline.encode())

    result = run(storage, folder, tmp_path / "out", chunk_records=12)

    assert result.result.status == "succeeded"
    assert (result.result.records_in, result.result.records_out) == (36, 30)
    assert sorted(int(r["id"]) for r in valid_rows(storage, result)) == [
        i * 10 + j for i in range(6) for j in range(5)
    ]
    rejected = rejected_rows(storage, result)
    assert {r["_line"] for r in rejected} == {7 if fmt == "csv" else 6}


def write_members(folder: Path, fmt: str, files: int) -> int:
    folder.mkdir(parents=True)
    total = 0
    for i in range(files):
        records = [{"id": i * 10 + j, "amount": j} for j in range(i % 4 + 1)]
        total += len(records)
        if fmt == "jsonl.gz":
            body = "".join(json.dumps(r) + "\n" for r in records) + "{broken\n"
            (folder / f"m{i:02d}.jsonl.gz").write_bytes(gzip.compress(body.encode()))
            total += 1
        elif fmt == "json":
            (folder / f"m{i:02d}.json").write_text(json.dumps(records))
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(records), folder / f"m{i:02d}.parquet")
        else:
            book = openpyxl.Workbook()
            book.active.append(["id", "amount"])
            for r in records:
                book.active.append([r["id"], r["amount"]])
            book.create_sheet("more").append(["id", "amount"])
            book["more"].append([i * 10 + 9, 0])
            total += 1
            book.save(folder / f"m{i:02d}.xlsx")
    return total


@pytest.mark.parametrize(("fmt", "files"), [("jsonl.gz", 30), ("json", 30), ("parquet", 30),
                                            ("excel", 4)])  # fmt: skip
def test_every_format_reads_whole_files_with_its_own_reader(storage, tmp_path, fmt, files) -> None:
    expected = write_members(tmp_path / "in", fmt, files)
    result = run(storage, tmp_path / "in", tmp_path / "out", chunk_records=20)
    batch = result.result
    assert batch.status == "succeeded"
    assert batch.records_in == expected == batch.records_out + batch.records_rejected
    valid = valid_rows(storage, result)
    assert {r["_file"] for r in valid} == {str(p) for p in (tmp_path / "in").iterdir()}
    assert sorted(int(r["id"]) for r in valid)[:3] == (
        [0, 9, 10] if fmt == "excel" else [0, 10, 11]
    )
    if fmt == "jsonl.gz":
        rejected = rejected_rows(storage, result)
        assert len(rejected) == files and all(r["_raw"] == "{broken" for r in rejected)
        assert {r["_line"] for r in rejected} == {i % 4 + 2 for i in range(files)}
    if fmt == "excel":
        assert {r["_worksheet"] for r in valid} == {"Sheet", "more"}


def test_members_narrow_the_set_and_are_kept_for_a_redrive(storage, tmp_path) -> None:
    write_csv_folder(tmp_path / "in", files=6)
    spec = prepare_batch(storage, str(tmp_path / "in"), members=("f000.csv", "deep/f001.csv"))
    assert [m.uri for m in spec.source.members] == [
        str(tmp_path / "in" / "deep" / "f001.csv"),
        str(tmp_path / "in" / "f000.csv"),
    ]
    assert spec.config["members"] == ["deep/f001.csv", "f000.csv"]
    assert workload_key(spec).format == "csv-set"  # the optimizer's history of file sets
    assert estimate_total_records(spec.source) == round(
        spec.source.info.size / spec.source.layout["record_bytes_estimate"]
    )
    every = prepare_batch(storage, str(tmp_path / "in") + "/")
    assert len(every.config["members"]) == 8
    again = prepare_batch(storage, str(tmp_path / "in"))
    assert again.batch_id == every.batch_id and again.batch_id.startswith("in-")
    (tmp_path / "in" / "new.csv").write_text("id,amount\n1,1\n")
    assert prepare_batch(storage, str(tmp_path / "in")).batch_id != every.batch_id
    with pytest.raises(SourceError, match=r"1 member\(s\) are not there: .*/in/gone\.csv"):
        prepare_batch(storage, str(tmp_path / "in"), members=("f000.csv", "gone.csv"))
    with pytest.raises(ConfigError, match="members are for a folder"):
        prepare_batch(storage, str(tmp_path / "in" / "f000.csv"), members=("f000.csv",))


def test_sets_that_cannot_be_read_whole_are_refused_naming_why(
    storage, tmp_path, monkeypatch
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no record files"):
        prepare_batch(storage, str(tmp_path / "empty"))
    write_csv_folder(tmp_path / "mixed", files=3)
    (tmp_path / "mixed" / "x.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ConfigError, match=r"mixes formats \(5 csv file\(s\), 1 jsonl file\(s\)\)"):
        prepare_batch(storage, str(tmp_path / "mixed"))
    monkeypatch.setattr(filesets, "MAX_MEMBER_BYTES", 60)
    with pytest.raises(ConfigError, match=r"bigger than .* \(60 bytes.*f000\.csv.*own batch"):
        prepare_batch(storage, str(tmp_path / "mixed"), members=("f000.csv",))


def test_a_file_changed_after_planning_fails_its_chunk_naming_it(storage, tmp_path) -> None:
    write_csv_folder(tmp_path / "in", files=4)
    spec = prepare_batch(storage, str(tmp_path / "in"), output=str(tmp_path / "out"))
    plan = plan_batch(storage, spec)
    target = tmp_path / "in" / "f002.csv"
    target.write_text(target.read_text() + "999,1\n")
    with pytest.raises(ChunkReadError, match=r"file .*/in/f002\.csv changed after the batch"):
        run_chunk(storage, spec, plan.chunks[0])
    os.remove(target)
    with pytest.raises(SourceError, match=r"f002\.csv does not exist"):
        run_chunk(storage, replace(spec, mode="run"), plan.chunks[0])


def test_a_set_under_an_s3_prefix(storage, aws_endpoint, s3_client, s3_bucket, tmp_path) -> None:
    for i in range(30):
        body = "id,amount\n" + "".join(f"{i * 10 + j},{j}\n" for j in range(5))
        s3_client.put_object(Bucket=s3_bucket, Key=f"drop/2025/f{i:02d}.csv", Body=body.encode())
    s3_client.put_object(Bucket=s3_bucket, Key="drop-other/x.csv", Body=b"id,amount\n1,1\n")
    s3_client.put_object(Bucket=s3_bucket, Key="drop/_tmp/y.csv", Body=b"id,amount\n1,1\n")
    source = f"s3://{s3_bucket}/drop/"
    result = run(storage, source, f"s3://{s3_bucket}/out", chunk_records=50)
    batch = result.result
    assert batch.status == "succeeded" and batch.records_in == batch.records_out == 150
    assert 2 <= batch.chunks <= 6  # about 9 records per file by the estimate
    valid = valid_rows(storage, result)
    assert {r["_file"] for r in valid} == {
        f"s3://{s3_bucket}/drop/2025/f{i:02d}.csv" for i in range(30)
    }
    assert result.spec.source.info.fingerprint.startswith("set-30-")


def test_the_ledger_knows_which_files_finished_sets_processed(storage, tmp_path) -> None:
    write_csv_folder(tmp_path / "in", files=3)
    book = Ledger("sqlite://")
    done = prepare_batch(storage, str(tmp_path / "in"), members=("f000.csv", "deep/f001.csv"))
    running = prepare_batch(storage, str(tmp_path / "in"), members=("f002.csv",))
    for spec in (done, running):
        book.register_batch(spec, plan_batch(storage, replace(spec, output_root=str(tmp_path))))
    book.set_batch_status(done.batch_id, SUCCEEDED)
    uris = [str(tmp_path / "in" / k) for k in ("f000.csv", "deep/f001.csv", "f002.csv")]
    found = book.processed_members(uris, frozenset({SUCCEEDED}))
    assert found == {u: {storage.stat(u).fingerprint} for u in uris[:2]}
    assert book.processed_members(uris[2:], frozenset({SUCCEEDED, RUNNING})) == {
        uris[2]: {storage.stat(uris[2]).fingerprint}
    }
    book.dispose()


def test_files_whose_columns_have_other_types_reject_values_not_the_chunk(storage, tmp_path):
    """A number in one file and text in another (inferred per file) become text for the whole
    chunk, and the processor judges each value, as within one file."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"id": 1, "tags": {"x": 1}}\n')
    (folder / "b.jsonl").write_text('{"id": "x", "tags": "plain"}\n{"id": 3}\n')
    schema = {"columns": {"id": {"type": "int64"}}}
    result = run(storage, folder, tmp_path / "out", processor="validate", processor_options=schema)
    batch = result.result
    assert batch.status == "succeeded"
    assert (batch.records_in, batch.records_out, batch.records_rejected) == (3, 2, 1)
    valid = valid_rows(storage, result)
    assert sorted(r["id"] for r in valid) == [1, 3]
    assert {r["tags"] for r in valid} == {'{"x": 1}', None}
    assert rejected_rows(storage, result)[0]["_reason"] == "id: not a valid int64"
    tables = [pa.table({"n": [1, 2]}), pa.table({"n": ["a"]}), pa.table({"m": [None]})]
    joined = columns.concat_tables(tables)
    assert joined.schema == pa.schema([("n", pa.string()), ("m", pa.null())])
    assert joined.column("n").to_pylist() == ["1", "2", "a", None]


@pytest.mark.parametrize(
    "blank", [b"\xef\xbb\xbf", b"\n", b"   \n\n", gzip.compress(b""), gzip.compress(b"\n")]
)
def test_a_file_with_only_whitespace_is_zero_records_like_an_empty_one(storage, tmp_path, blank):
    folder = tmp_path / "in"
    folder.mkdir()
    suffix = ".csv.gz" if blank.startswith(b"\x1f\x8b") else ".csv"
    (folder / f"a{suffix}").write_bytes(blank)  # first in key order: inspected first too
    (folder / "b.csv").write_text("id,amount\n1,2\n")
    result = run(storage, folder, tmp_path / "out")
    assert result.result.status == "succeeded"
    assert (result.result.records_in, result.result.records_out) == (1, 1)


def test_a_file_without_a_required_column_gets_its_records_rejected(storage, tmp_path) -> None:
    """Whichever file sorts first, a set is not refused for one file's columns."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n1,2\n")
    (folder / "b.csv").write_text("id,amount\n1,2\n")
    result = run(storage, folder, tmp_path / "out", processor="validate", processor_options=SCHEMA)
    assert result.result.status == "succeeded"
    assert (result.result.records_out, result.result.records_rejected) == (1, 1)
    assert rejected_rows(storage, result)[0]["_reason"] == "id: required value missing"


def test_named_members_are_found_whatever_their_suffix(storage, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"r{i}.dat").write_text(f"id,amount\n{i},1\n")
    spec = prepare_batch(storage, str(folder), members=("r0.dat", "r2.dat"), format="csv")
    assert [m.uri.rsplit("/", 1)[1] for m in spec.source.members] == ["r0.dat", "r2.dat"]


def test_compressed_files_are_estimated_by_their_records_and_capped_lower(
    storage, tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(20):
        body = "".join(
            json.dumps({"id": i * 1000 + j, "note": "x" * 40}) + "\n" for j in range(200)
        )
        (folder / f"f{i:02d}.jsonl.gz").write_bytes(gzip.compress(body.encode()))
    spec = prepare_batch(
        storage, str(folder), chunking=ChunkingSettings(chunk_records=1_000), output=str(tmp_path)
    )
    plan = plan_batch(storage, spec)
    assert plan.total_records == pytest.approx(4_000, rel=0.1)  # not the compressed size's
    # About 1,000 records (5 files) per chunk, as asked; by compressed bytes it was 10 times more.
    assert 3 <= len(plan.chunks) <= 5 and max(c.records or 0 for c in plan.chunks) <= 1_300
    biggest = max(p.stat().st_size for p in folder.iterdir())
    monkeypatch.setattr(filesets, "MAX_MEMBER_BYTES", biggest * 4)  # the gzip limit: biggest / 2
    with pytest.raises(ConfigError, match="bigger than a set reads whole"):
        prepare_batch(storage, str(folder))
    assert filesets.member_limit("a.csv") == biggest * 4


def test_an_unreadable_first_file_fails_its_chunk_not_the_set(storage, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv.gz").write_bytes(b"not gzip at all")
    for name in ("b", "c"):
        (folder / f"{name}.csv.gz").write_bytes(gzip.compress(b"id,amount\n1,2\n"))
    spec = prepare_batch(
        storage, str(folder), chunking=ChunkingSettings(chunk_records=1), output=str(tmp_path)
    )
    chunks = plan_batch(storage, spec).chunks
    assert [len(c.members) for c in chunks] == [1, 1, 1]
    with pytest.raises(SourceError, match=r"chunk_00000 of 3 .*/a\.csv\.gz is not a valid gzip"):
        run_chunk(storage, spec, chunks[0])
    assert run_chunk(storage, spec, chunks[1]).records_out == 1
    (folder / "b.csv.gz").write_bytes(b"broken too")
    (folder / "c.csv.gz").write_bytes(b"and this")
    with pytest.raises(SourceError, match="not a valid gzip"):
        prepare_batch(storage, str(folder))  # none can be read: the set is refused


class CountingStorage(Storage):
    """Storage that counts the reads of each object (the results it writes are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    def open_input_file(self, uri: str):
        self.reads[uri] = self.reads.get(uri, 0) + 1
        return super().open_input_file(uri)

    def open_input_stream(self, uri: str, compression: str | None = None):
        self.reads[uri] = self.reads.get(uri, 0) + 1
        return super().open_input_stream(uri, compression)


@pytest.mark.parametrize("fmt", ["csv", "jsonl.gz", "parquet"])
def test_each_file_of_a_chunk_is_read_from_storage_once(storage, tmp_path, fmt) -> None:
    folder = tmp_path / "in"
    if fmt == "parquet":
        write_members(folder, "parquet", 5)
    elif fmt == "jsonl.gz":
        write_members(folder, "jsonl.gz", 5)
    else:
        write_csv_folder(folder, files=5)
    spec = prepare_batch(storage, str(folder), output=str(tmp_path / "out"))
    counting = CountingStorage()
    summary = run_chunk(counting, spec, plan_batch(storage, spec).chunks[0])
    assert summary.records_in > 0
    members = [m.uri for m in spec.source.members if m.size]
    assert {uri: counting.reads.get(uri) for uri in members} == {uri: 1 for uri in members}
