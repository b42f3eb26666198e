"""A big CSV chunk run in slices (``core.processing.slices``) gives exactly what the chunk run
whole gives: the same valid records in order, the same rejected records with the same record
index in the chunk, line and reason, the same counts; and the Parquet object written part by
part (``Storage.parquet_writer``) appears only when the whole chunk is written.

The slices here are a few hundred bytes (``SLICE_BYTES`` patched), so that a small file is cut
into many; the whole run is the same chunk with slicing out of reach."""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import ConservationError
from batch_pipeline.core.common.models import BatchSpec, Chunk, ChunkingSettings, DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.planning import plan_batch
from batch_pipeline.core.processing import slices
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.processing.run import run_chunk
from batch_pipeline.core.stores.storage import Storage

RULES = {
    "columns": {
        "id": {"type": "int64", "required": True},
        "email": {"type": "string", "required": True, "pattern": "@"},
        "amount": {"type": "float64", "min": 0},
        "note": {"type": "string"},
    }
}


def records(count: int, newline: str = "\n", quoted: bool = True) -> str:
    """A CSV of ``count`` records: about one in five invalid for ``RULES``, some of the wrong
    width, and (``quoted``) quoted notes holding delimiters, quotes and line breaks."""
    notes = ["plain", "comma, inside", 'say ""hi""', f"line{newline}break", "é 漢字 🚀", ""]
    lines = ["id,email,amount,note"]
    for i in range(count):
        email = f"u{i}@x.org" if i % 7 else f"u{i}-no-at"
        amount = str(i * 1.5) if i % 11 else "-3"
        ident = str(i) if i % 13 else "twelve"
        note = notes[i % len(notes)]
        if quoted:
            note = f'"{note}"'
        elif not note or "," in note or '"' in note or "\n" in note or "\r" in note:
            note = f"n{i}"
        if i % 17 == 16:
            lines.append(f"{ident},{email}")  # too few fields
        elif i % 19 == 18:
            lines.append(f"{ident},{email},{amount},{note},extra")  # too many
        else:
            lines.append(f"{ident},{email},{amount},{note}")
    return newline.join(lines) + newline


def one_chunk_spec(storage: Storage, path: Path, out: Path) -> tuple[BatchSpec, Chunk]:
    spec = prepare_batch(
        storage,
        str(path),
        processor="validate",
        processor_options=RULES,
        output=str(out),
        chunking=ChunkingSettings(chunk_records=1_000_000),
        delivery=DeliverySettings(target="none"),
    )
    plan = plan_batch(storage, spec)
    assert len(plan.chunks) == 1 and plan.chunks[0].expected_records is not None
    return spec, plan.chunks[0]


def outputs(spec: BatchSpec, chunk: Chunk) -> tuple[pa.Table, pa.Table | None]:
    rejected = spec.rejected_uri(chunk.index)
    return (
        pq.read_table(spec.valid_uri(chunk.index)),
        pq.read_table(rejected) if os.path.exists(rejected) else None,
    )


def whole_and_sliced(
    storage: Storage, tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch, size: int
) -> dict[str, Any]:
    """The one chunk of ``data`` run whole, then in slices of ``size`` bytes, each into its
    own output folder: the summaries, the outputs and how many slices there were."""
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    results: dict[str, Any] = {}
    for how, slice_bytes in (("whole", 1 << 40), ("sliced", size)):
        spec, chunk = one_chunk_spec(storage, path, tmp_path / how)
        monkeypatch.setattr(slices, "SLICE_BYTES", slice_bytes)
        processor = get_processor("validate", RULES)
        assert slices.sliceable(spec, chunk, processor) == (how == "sliced")
        summary = run_chunk(storage, spec, chunk)
        results[how] = (summary, *outputs(spec, chunk))
        if how == "sliced":
            results["slices"] = list(slices.cut_slices(storage, spec, chunk, size))
            results["chunk"] = chunk
    return results


def assert_same(results: dict[str, Any]) -> None:
    (whole, whole_valid, whole_rejected) = results["whole"]
    (sliced, sliced_valid, sliced_rejected) = results["sliced"]
    for name in ("records_in", "records_out", "records_rejected", "bytes_read", "counts"):
        assert getattr(sliced, name) == getattr(whole, name), name
    assert sliced.rejection_reasons == whole.rejection_reasons
    assert sliced.balanced and sliced.records_in == results["chunk"].records
    assert sliced_valid.equals(whole_valid)
    if whole_rejected is None:
        assert sliced_rejected is None
    else:
        assert sliced_rejected is not None
        assert sliced_rejected.to_pylist() == whole_rejected.to_pylist()
    # The slices cover the chunk, in order, without a gap or an overlap.
    pieces = results["slices"]
    assert len(pieces) > 3
    assert pieces[0].start == results["chunk"].start
    for before, after in itertools.pairwise(pieces):
        assert after.start == before.start + len(before.data)
    assert pieces[-1].start + len(pieces[-1].data) == results["chunk"].end


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("quoted", [True, False], ids=["quoted", "unquoted"])
def test_slices_give_what_the_whole_chunk_gives(
    storage: Storage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    newline: str,
    quoted: bool,
) -> None:
    results = whole_and_sliced(
        storage, tmp_path, records(400, newline, quoted).encode(), monkeypatch, 700
    )

    assert_same(results)
    whole, _, rejected = results["whole"]
    assert whole.records_rejected > 50 and whole.records_out > 250  # both kinds, many slices
    assert rejected is not None
    reasons = set(rejected.column("_reason").to_pylist())
    assert any("fields" in r or "columns" in r for r in reasons), reasons  # wrong width read


def test_a_slice_smaller_than_a_record_still_cuts_whole_records(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = whole_and_sliced(storage, tmp_path, records(60).encode(), monkeypatch, 7)

    assert_same(results)
    # each piece read (7 bytes) holds no whole record: slices are at least a record long
    assert all(piece.data.count(b"@") <= 2 for piece in results["slices"])


def test_bad_utf8_and_a_literal_quote_in_an_unquoted_field(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record that is not UTF-8 is rejected with its line in both; a quote inside an
    unquoted field (5'10" tall) makes quote counting untrustworthy, so the rest of the chunk
    is read as one slice, with the same result."""
    text = records(300, quoted=False).encode()
    lines = text.split(b"\n")
    lines[40] = b"40,u40@x.org,1.0,caf\xe9"
    lines[200] = b"200,u200@x.org,2.0,5'10\" tall"
    lines[230] = b'230,u230@x.org,2.0,"quoted, late"'
    results = whole_and_sliced(storage, tmp_path, b"\n".join(lines), monkeypatch, 600)

    assert_same(results)
    _, valid, rejected = results["whole"]
    assert rejected is not None
    bad = [r for r in rejected.to_pylist() if r["_line"] == 41]
    assert len(bad) == 1 and "UTF-8" in bad[0]["_reason"], bad
    assert "5'10\" tall" in valid.column("note").to_pylist()
    assert "quoted, late" in valid.column("note").to_pylist()
    assert len(results["slices"][-1].data) > 600  # the rest of the chunk, whole


def test_a_chunk_with_no_valid_record_writes_an_empty_valid_file(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = "id,email,amount,note\n" + "".join(f"{i},no-at-{i},1,x\n" for i in range(200))
    results = whole_and_sliced(storage, tmp_path, data.encode(), monkeypatch, 500)

    assert_same(results)
    _, valid, _ = results["sliced"]
    assert valid.num_rows == 0 and valid.column_names == ["id", "email", "amount", "note"]


def test_slices_that_read_other_than_the_plans_count_fail_and_write_nothing(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(records(300))
    spec, chunk = one_chunk_spec(storage, path, tmp_path / "out")
    monkeypatch.setattr(slices, "SLICE_BYTES", 600)
    wrong = replace(chunk, records=chunk.records + 1)  # type: ignore[operator]

    with pytest.raises(ConservationError) as info:
        run_chunk(storage, spec, wrong)

    message = str(info.value)
    assert f"read {chunk.records:,} records" in message and "in slices" in message
    assert "nothing of this chunk was written" in message
    folder = Path(spec.valid_uri(0)).parent
    assert not folder.exists() or not list(folder.iterdir())
    assert not os.path.exists(spec.rejected_uri(0))


@pytest.fixture
def tables() -> list[pa.Table]:
    return [
        pa.table({"a": pa.array([1, 2], pa.int64()), "b": ["x", "y"]}),
        pa.table({"a": pa.array([3], pa.int32()), "b": ["z"]}),  # cast to the first's schema
    ]


def test_parquet_writer_appends_parts_and_shows_the_file_only_at_the_end(
    storage: Storage, tmp_path: Path, tables: list[pa.Table]
) -> None:
    uri = str(tmp_path / "out" / "part.parquet")
    with storage.parquet_writer(uri) as writer:
        for table in tables:
            writer.write(table)
        assert not os.path.exists(uri)  # not before the block ends
    written = pq.read_table(uri)
    assert written.to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": "z"}]
    assert written.schema.field("a").type == pa.int64()
    assert pq.ParquetFile(uri).metadata.num_row_groups == 2
    assert os.listdir(tmp_path / "out") == ["part.parquet"]  # no temporary file left


def test_parquet_writer_leaves_nothing_on_an_error_or_with_no_part(
    storage: Storage, tmp_path: Path, tables: list[pa.Table]
) -> None:
    uri = str(tmp_path / "out" / "part.parquet")
    with pytest.raises(RuntimeError), storage.parquet_writer(uri) as writer:
        writer.write(tables[0])
        raise RuntimeError("the chunk failed")
    with storage.parquet_writer(uri):
        pass
    with (
        pytest.raises(ValueError, match="differ from the first part"),
        storage.parquet_writer(uri) as writer,
    ):
        writer.write(tables[0])
        writer.write(pa.table({"a": ["not a number"], "b": ["q"]}))

    assert not os.path.exists(uri)
    assert os.listdir(tmp_path / "out") == []


def test_parquet_writer_on_s3_uploads_once_at_the_end(
    storage: Storage, s3_bucket: str, s3_client: Any, tables: list[pa.Table]
) -> None:
    uri = f"s3://{s3_bucket}/out/part.parquet"
    with pytest.raises(RuntimeError), storage.parquet_writer(uri) as writer:
        writer.write(tables[0])
        raise RuntimeError("the chunk failed")
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0

    with storage.parquet_writer(uri) as writer:
        for table in tables:
            writer.write(table)
        assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0

    written = pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
    assert written.column("a").to_pylist() == [1, 2, 3]


@pytest.mark.parametrize("failing", [0, 3, 9])
def test_a_slice_that_fails_fails_the_chunk_with_its_own_error_and_writes_nothing(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """Slices wait for their turn to write: a failed slice ends the later ones' turns (no
    slice waits forever) and the chunk raises that slice's error, not a later one's."""
    path = tmp_path / "in.csv"
    path.write_text(records(300))
    spec, chunk = one_chunk_spec(storage, path, tmp_path / "out")
    monkeypatch.setattr(slices, "SLICE_BYTES", 600)
    run_slice = slices.run_slice

    def failing_slice(spec: BatchSpec, chunk: Chunk, piece: slices.Slice, *rest: Any) -> Any:
        if piece.number == failing:
            raise RuntimeError(f"slice {piece.number} failed")
        return run_slice(spec, chunk, piece, *rest)

    monkeypatch.setattr(slices, "run_slice", failing_slice)

    with pytest.raises(RuntimeError, match=f"^slice {failing} failed$"):
        run_chunk(storage, spec, chunk)

    folder = Path(spec.valid_uri(0)).parent
    assert not folder.exists() or not list(folder.iterdir())


def test_rejected_columns_keep_their_order_when_a_slice_has_only_parse_rejects(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slice whose only rejects are rows of the wrong width has a rejected table of the
    reject columns alone (``_reason``... ``_raw``); put first, it must not move the data
    columns after them: the rejected file has the columns the whole chunk's has, in order.
    (Found by test_slices_property: ``a,b,c\\n@\\n,,`` in slices of 1 byte.)"""
    data = b"id,email,amount,note\n1,a@b\nx,a@b,1,n\n"
    results = whole_and_sliced(storage, tmp_path, data, monkeypatch, 5)

    (_, _, whole_rejected), (_, _, sliced_rejected) = results["whole"], results["sliced"]
    assert whole_rejected is not None and sliced_rejected is not None
    assert whole_rejected.column_names[:4] == ["id", "email", "amount", "note"]
    assert sliced_rejected.schema.equals(whole_rejected.schema)
    assert sliced_rejected.to_pylist() == whole_rejected.to_pylist()


def test_parquet_writer_on_s3_leaves_nothing_when_the_upload_fails(
    storage: Storage,
    s3_bucket: str,
    s3_client: Any,
    tables: list[pa.Table],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The upload at the end fails: its error is raised, no object appears and the local
    temporary file is removed."""
    from batch_pipeline.core.stores import storage as storage_module

    staged: list[str] = []

    def failing_copy(source: str, *args: Any, **kwargs: Any) -> None:
        staged.append(source)
        assert os.path.getsize(source) > 0
        raise OSError("upload failed")

    monkeypatch.setattr(storage_module.pafs, "copy_files", failing_copy)
    uri = f"s3://{s3_bucket}/out/part.parquet"
    with pytest.raises(OSError, match="upload failed"), storage.parquet_writer(uri) as writer:
        for table in tables:
            writer.write(table)

    assert len(staged) == 1 and not os.path.exists(staged[0])
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["read", "write"])
def test_a_read_or_a_write_that_fails_midway_fails_the_chunk_and_writes_nothing(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The cutting thread's read of the 6th piece fails (slices in work are aborted), or the
    4th slice's append to the valid file fails in its turn (later slices are aborted): the
    chunk raises that error, no thread is left waiting for a turn, nothing is written."""
    path = tmp_path / "in.csv"
    path.write_text(records(300))
    spec, chunk = one_chunk_spec(storage, path, tmp_path / "out")
    monkeypatch.setattr(slices, "SLICE_BYTES", 600)
    calls = itertools.count()
    if where == "read":
        read_range = Storage.read_range

        def failing_read(self: Storage, *args: Any) -> bytes:
            if next(calls) == 5:
                raise OSError("read failed")
            return read_range(self, *args)

        monkeypatch.setattr(Storage, "read_range", failing_read)
    else:
        from batch_pipeline.core.stores.storage import PartWriter

        write = PartWriter.write

        def failing_write(self: PartWriter, table: pa.Table) -> None:
            if next(calls) == 3:
                raise OSError("write failed")
            write(self, table)

        monkeypatch.setattr(PartWriter, "write", failing_write)

    with pytest.raises(OSError, match=f"^{where} failed$"):
        run_chunk(storage, spec, chunk)

    folder = Path(spec.valid_uri(0)).parent
    assert not folder.exists() or not list(folder.iterdir())
    assert not os.path.exists(spec.rejected_uri(0))


def test_slices_that_skip_bytes_fail_even_when_the_records_add_up(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slices must cover the chunk's bytes exactly: a cut that dropped bytes holding no
    record (here blank lines) would go unseen by the record count."""
    path = tmp_path / "in.csv"
    text = records(200, quoted=False)
    lines = text.split("\n")
    path.write_text("\n".join(lines[:100]) + "\n\n\n\n" + "\n".join(lines[100:]))
    spec, chunk = one_chunk_spec(storage, path, tmp_path / "out")
    monkeypatch.setattr(slices, "SLICE_BYTES", 600)
    cut_slices = slices.cut_slices

    def dropping(*args: Any) -> Any:
        for piece in cut_slices(*args):
            yield replace(piece, data=piece.data.replace(b"\n\n\n\n", b"\n"))

    monkeypatch.setattr(slices, "cut_slices", dropping)

    with pytest.raises(ConservationError, match="slices read 3 bytes fewer than the chunk holds"):
        run_chunk(storage, spec, chunk)
    assert not os.path.exists(spec.valid_uri(0))


def test_a_part_writer_closes_its_file_once_even_when_closing_fails(tmp_path: Path) -> None:
    from batch_pipeline.core.stores.storage import PartWriter

    class Failing:
        closed = 0

        def close(self) -> None:
            Failing.closed += 1
            raise OSError("disk full")

    writer = PartWriter(str(tmp_path / "x.parquet"))
    writer._writer = Failing()  # type: ignore[assignment]
    with pytest.raises(OSError):
        writer.close()
    writer.close()  # as parquet_writer's finally does after a failed close
    assert Failing.closed == 1
