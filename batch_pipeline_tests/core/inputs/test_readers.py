"""Reading chunks end to end: the edge cases of CSV, JSONL, JSON, Parquet and Excel inputs, the
records that become rejects, and the lines they name."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import ChunkReadError, ConfigError, SourceError
from batch_pipeline.core.common.models import ChunkingSettings, CsvOptions, DeliverySettings
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.inputs.readers import read_chunk
from batch_pipeline.core.planning import byte_ranges, plan_batch
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.core.helpers import rejected_rows, run, valid_rows, workbook


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def values(rows: list[dict], column: str) -> list:
    return [row[column] for row in rows]


# CSV layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_records", [1, 2, 100])
def test_quoted_newlines_and_crlf_at_chunk_boundaries_stay_in_their_records(
    chunk_records: int, storage: Storage, tmp_path: Path
) -> None:
    # Every record ends in a quoted line break right before its own CRLF: with one record per
    # chunk, every cut falls just after a quoted line break.
    data = b'id,text\r\n1,"a\r\n"\r\n2,"\r\nb\n"\r\n3,"\n"\r\n4,"c\r\nd"'
    source = write(tmp_path / "q.csv", data)

    result = run(storage, source, tmp_path / "out", chunk_records=chunk_records)

    rows = valid_rows(storage, result)
    assert values(rows, "text") == ["a\r\n", "\r\nb\n", "\n", "c\r\nd"]
    assert values(rows, "id") == ["1", "2", "3", "4"]


def test_a_quoted_crlf_split_across_scan_blocks_is_kept_whole(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(byte_ranges, "BLOCK_BYTES", 3)  # every quote and line break in turn
    data = b'id,text\r\n1,"x\r\n,""y""\r\n"\r\n2,plain\r\n3,"\r\n"\r\n'
    source = write(tmp_path / "b.csv", data)

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    assert result.result.chunks == 3
    assert values(valid_rows(storage, result), "text") == ['x\r\n,"y"\r\n', "plain", "\r\n"]


def test_doubled_quotes_are_read_as_one_quote(storage: Storage, tmp_path: Path) -> None:
    source = write(tmp_path / "d.csv", b'id,text\n1,"say ""hi"""\n2,""""\n3,""\n')

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    assert values(valid_rows(storage, result), "text") == ['say "hi"', '"', ""]


def test_a_quote_inside_an_unquoted_field_is_a_literal_character(
    storage: Storage, tmp_path: Path
) -> None:
    data = b'name,height,note\nann,5\'10",tall\nbob,6\'1","two\nlines"\ncid,5\'2",short\n'
    source = write(tmp_path / "h.csv", data)

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    rows = valid_rows(storage, result)
    assert result.result.chunks == 3
    assert values(rows, "height") == ["5'10\"", "6'1\"", "5'2\""]
    assert values(rows, "note") == ["tall", "two\nlines", "short"]


def test_a_utf8_bom_is_not_part_of_the_first_column_name(storage: Storage, tmp_path: Path) -> None:
    source = write(tmp_path / "bom.csv", "\ufeffid,café\n1,crème\n".encode())

    result = run(storage, source, tmp_path / "out")

    assert valid_rows(storage, result) == [{"id": "1", "café": "crème"}]


@pytest.mark.parametrize("chunk_records", [1, 10])
def test_a_last_record_without_a_trailing_newline_is_read(
    chunk_records: int, storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "n.csv", b'id,text\r\n1,a\r\n2,"b\r\nc"')

    result = run(storage, source, tmp_path / "out", chunk_records=chunk_records)

    assert values(valid_rows(storage, result), "text") == ["a", "b\r\nc"]


def test_an_empty_file_is_a_source_error_naming_it(storage: Storage, tmp_path: Path) -> None:
    source = write(tmp_path / "nothing.csv", b"")

    with pytest.raises(SourceError, match=r"nothing\.csv is empty \(0 bytes\)"):
        run(storage, source, tmp_path / "out")


@pytest.mark.parametrize("data", [b"id,name\n", b"id,name", b"\xef\xbb\xbfid,name\r\n\r\n"])
@pytest.mark.parametrize("scan", [True, False])
def test_a_header_only_file_runs_with_zero_records(
    data: bytes, scan: bool, storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "h.csv", data)

    result = run(storage, source, tmp_path / "out", scan=scan)

    assert (result.result.chunks, result.result.records_in) == (1, 0)
    assert result.result.records_out == result.result.records_rejected == 0


def test_a_chunk_planned_without_a_scan_must_not_end_inside_quotes(tmp_path: Path) -> None:
    """Only chunks whose cuts were estimated (no ``first_line``) are checked; a chunk whose
    quotes are ambiguous (a quote inside an unquoted field) cannot tell, and is not failed."""
    from batch_pipeline.core.common.models import Chunk
    from batch_pipeline.core.inputs.readers import check_not_cut_in_quotes

    chunk = Chunk(index=2, chunks_in_plan=5, kind="bytes", uri="s3://b/k.csv", start=100, end=120)
    cut = b'1,"x""\r\n'
    with pytest.raises(ChunkReadError) as caught:
        check_not_cut_in_quotes(cut, '"', ",", chunk)
    assert caught.value.permanent
    assert str(caught.value) == (
        "chunk_00002 of 5 (bytes 100-120 of s3://b/k.csv): cut inside a quoted field (a line "
        "break inside quotes): plan with scan: true"
    )
    check_not_cut_in_quotes(b'1,"x""\r\n""y"\r\n', '"', ",", chunk)  # whole: fine
    check_not_cut_in_quotes(b'1,a"b\n2,"c\n', '"', ",", chunk)  # ambiguous: cannot tell


def test_blank_lines_are_not_records(storage: Storage, tmp_path: Path) -> None:
    source = write(tmp_path / "b.csv", b"\nid,n\n\n1,a\r\n\r\n\n2,b\n\n\n3,c\n\n")

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    assert result.result.chunks == 3
    assert valid_rows(storage, result) == [
        {"id": "1", "n": "a"},
        {"id": "2", "n": "b"},
        {"id": "3", "n": "c"},
    ]


def test_a_record_longer_than_the_read_blocks_is_read_whole(
    storage: Storage, tmp_path: Path
) -> None:
    big = "x" * (6 << 20) + "\r\n" + "y" * 1000  # bigger than pyarrow's and the reader's blocks
    data = f'id,text\n1,short\n2,"{big}"\n3,after\n'.encode()
    source = write(tmp_path / "long.csv", data)

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    assert values(valid_rows(storage, result), "text") == ["short", big, "after"]


def test_a_jsonl_record_longer_than_the_read_blocks_is_read_whole(
    storage: Storage, tmp_path: Path
) -> None:
    big = "z" * (5 << 20)
    data = "".join(json.dumps({"id": i, "v": v}) + "\n" for i, v in enumerate(["a", big, "b"]))
    source = write(tmp_path / "long.jsonl", data.encode())

    result = run(storage, source, tmp_path / "out", chunk_records=2)

    assert values(valid_rows(storage, result), "v") == ["a", big, "b"]


@pytest.mark.parametrize(
    ("option", "delimiter"),
    [("comma", ","), ("semicolon", ";"), ("pipe", "|"), ("tab", "\t"), ("space", " ")],
)
def test_every_delimiter_splits_fields_and_respects_quotes(
    option: str, delimiter: str, storage: Storage, tmp_path: Path
) -> None:
    d = delimiter
    data = f'id{d}name{d}city\n1{d}"ann{d}lee"{d}Oslo\n2{d}"bob\nby"{d}"New{d}York"\n'
    source = write(tmp_path / "d.csv", data.encode())

    result = run(storage, source, tmp_path / "out", chunk_records=1, csv=CsvOptions(option))

    assert valid_rows(storage, result) == [
        {"id": "1", "name": f"ann{d}lee", "city": "Oslo"},
        {"id": "2", "name": "bob\nby", "city": f"New{d}York"},
    ]


def test_a_wrong_delimiter_stops_the_batch_before_any_work(
    storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "semi.csv", b"id;name\n1;a\n")

    with pytest.raises(ConfigError, match=r"semi\.csv.*set csv\.delimiter to ';'"):
        run(storage, source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_csv_values_are_read_as_text(storage: Storage, tmp_path: Path) -> None:
    source = write(tmp_path / "t.csv", b"zip,amount,flag,empty\n007,1.50,true,\n")

    result = run(storage, source, tmp_path / "out")

    assert valid_rows(storage, result) == [
        {"zip": "007", "amount": "1.50", "flag": "true", "empty": ""}
    ]


# Rejects ---------------------------------------------------------------------------------------


def test_rows_with_the_wrong_number_of_fields_are_rejected_with_a_reason(
    storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "w.csv", b"a,b\n1,2\n3\n4,5,6\n7,8\n")

    result = run(storage, source, tmp_path / "out")

    rejected = rejected_rows(storage, result)
    assert valid_rows(storage, result) == [{"a": "1", "b": "2"}, {"a": "7", "b": "8"}]
    assert values(rejected, "_reason") == ["expected 2 fields, got 1", "expected 2 fields, got 3"]
    assert values(rejected, "_raw") == ["3", "4,5,6"]
    assert (result.result.records_in, result.result.records_rejected) == (4, 2)


def test_invalid_utf8_rejects_its_record_and_keeps_the_rest(
    storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "u.csv", b"a,b\n1,ok\n2,caf\xe9\n3,fine\n")

    result = run(storage, source, tmp_path / "out")

    rejected = rejected_rows(storage, result)
    assert values(valid_rows(storage, result), "a") == ["1", "3"]
    assert values(rejected, "_reason") == ["invalid UTF-8 in column b"]
    assert values(rejected, "_raw") == ["2,caf\\xe9"]
    assert result.result.records_in == result.result.records_out + result.result.records_rejected


@pytest.mark.parametrize("name", ["mixed.csv", "mixed.csv.gz"])
def test_invalid_utf8_and_a_wrong_width_in_one_chunk_are_both_rejected(
    name: str, storage: Storage, tmp_path: Path
) -> None:
    data = b"a,b\n1,ok\n2,\xff\xfe\n3\n4,fine\n5,x,y\n"
    source = write(tmp_path / name, gzip.compress(data) if name.endswith(".gz") else data)

    result = run(storage, source, tmp_path / "out")

    rejected = rejected_rows(storage, result)
    assert values(valid_rows(storage, result), "a") == ["1", "4"]
    assert values(rejected, "_reason") == [
        "invalid UTF-8 in column b",
        "expected 2 fields, got 1",
        "expected 2 fields, got 3",
    ]
    assert values(rejected, "_record") == [1, 2, 4]
    assert (result.result.records_in, result.result.records_rejected) == (5, 3)


def test_a_malformed_jsonl_line_is_rejected_with_a_reason(storage: Storage, tmp_path: Path) -> None:
    data = b'{"id": 1}\n{"id": 2,\n\n[3]\n{"id": 4}\n'
    source = write(tmp_path / "m.jsonl", data)

    result = run(storage, source, tmp_path / "out")

    rejected = rejected_rows(storage, result)
    assert values(valid_rows(storage, result), "id") == [1, 4]
    assert [r.split(":")[0] for r in values(rejected, "_reason")] == ["malformed JSON line"] * 2
    assert values(rejected, "_raw") == ['{"id": 2,', "[3]"]
    assert values(rejected, "_line") == [2, 4]


def test_invalid_utf8_in_jsonl_rejects_the_line_instead_of_writing_it(
    storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "u.jsonl", b'{"v": "a"}\n{"v": "\xff"}\n{"v": "c"}\n')

    result = run(storage, source, tmp_path / "out")

    assert valid_rows(storage, result) == [{"v": "a"}, {"v": "c"}]
    assert values(rejected_rows(storage, result), "_reason") == [
        "invalid UTF-8 at byte 7 of the line"
    ]


@pytest.mark.parametrize("literal_quote", [False, True])
def test_an_unterminated_quote_is_a_source_error_naming_its_line(
    literal_quote: bool, storage: Storage, tmp_path: Path
) -> None:
    first = b"1,5'10\"\n" if literal_quote else b"1,ok\n"  # the exact scan, or the fast one
    data = b"a,b\n" + first + b'2,"x\ny"\n\n3,"never closed\n4,d\n5,e\n'
    source = write(tmp_path / "open.csv", data)

    with pytest.raises(SourceError, match=r"open\.csv: .* starting on line 6 .* never closed"):
        run(storage, source, tmp_path / "out", chunk_records=1)


# Lines of rejected records ---------------------------------------------------------------------

LINES_CSV = (
    b"\xef\xbb\xbfid,note\r\n"  # line 1: the header
    b'1,"multi\r\n'  # line 2
    b'line"\r\n'  # line 3
    b"2,bad,extra\r\n"  # line 4: rejected
    b"\r\n"  # line 5: empty
    b'3,"a\n'  # line 6
    b"b\n"  # line 7
    b'c"\n'  # line 8
    b"4\n"  # line 9: rejected
    b"5,ok\n"  # line 10
    b'6,"\n'  # line 11
    b'"\n'  # line 12
    b"\n"  # line 13: empty
    b"7,x,y\n"  # line 14: rejected
    b"8,caf\xe9"  # line 15: rejected, no trailing newline
)


@pytest.mark.parametrize("chunk_records", [1, 2, 3, 4, 100])
def test_rejected_csv_records_name_their_physical_line(
    chunk_records: int, storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "lines.csv", LINES_CSV)

    result = run(storage, source, tmp_path / "out", chunk_records=chunk_records)

    rejected = rejected_rows(storage, result)
    assert values(rejected, "_line") == [4, 9, 14, 15]
    assert values(rejected, "_raw")[:3] == ["2,bad,extra", "4", "7,x,y"]
    assert values(valid_rows(storage, result), "id") == ["1", "3", "5", "6"]


@pytest.mark.parametrize("chunk_records", [1, 3, 100])
def test_rejected_csv_records_name_their_line_on_the_exact_scan(
    chunk_records: int, storage: Storage, tmp_path: Path
) -> None:
    data = LINES_CSV.replace(b"5,ok\n", b"5,5'10\"\n")  # a literal quote: the exact scan

    result = run(
        storage,
        write(tmp_path / "lines.csv", data),
        tmp_path / "out",
        chunk_records=chunk_records,
    )

    assert values(rejected_rows(storage, result), "_line") == [4, 9, 14, 15]


@pytest.mark.parametrize("chunk_records", [1, 2, 100])
def test_rejected_jsonl_records_name_their_line(
    chunk_records: int, storage: Storage, tmp_path: Path
) -> None:
    data = (
        b'\xef\xbb\xbf{"id": 1}\r\n'  # line 1
        b"\n"  # line 2: empty
        b'{"id": 2\n'  # line 3: rejected
        b'{"id": 3}\n'  # line 4
        b"\r\n"  # line 5: empty
        b"\n"  # line 6: empty
        b"not json\n"  # line 7: rejected
        b'{"id": 4}'  # line 8
    )
    source = write(tmp_path / "lines.jsonl", data)

    result = run(storage, source, tmp_path / "out", chunk_records=chunk_records)

    assert values(rejected_rows(storage, result), "_line") == [3, 7]
    assert values(valid_rows(storage, result), "id") == [1, 3, 4]


# Other formats ---------------------------------------------------------------------------------


def test_excel_sheets_are_read_in_order_with_a_worksheet_column_and_empty_sheets_skipped(
    storage: Storage, tmp_path: Path
) -> None:
    source = workbook(
        tmp_path / "book.xlsx",
        {
            "north": [["name", "score"], ["ann", 1], [None, None], ["bob", 2]],
            "empty": [],
            "only header": [["name", "score"]],
            "south": [[None], ["name", "score"], ["cid", 3]],
        },
    )

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    assert valid_rows(storage, result) == [
        {"name": "ann", "score": 1, "_worksheet": "north"},
        {"name": "bob", "score": 2, "_worksheet": "north"},
        {"name": "cid", "score": 3, "_worksheet": "south"},
    ]
    manifest = json.loads(Path(result.result.manifest_uri).read_text())
    assert "empty sheets skipped: empty, only header" in manifest["plan"]["reason"]


def test_an_excel_workbook_with_only_empty_sheets_runs_with_zero_records(
    storage: Storage, tmp_path: Path
) -> None:
    source = workbook(tmp_path / "empty.xlsx", {"a": [], "b": [["only", "header"]]})

    result = run(storage, source, tmp_path / "out")

    assert (result.result.chunks, result.result.records_in) == (1, 0)


def test_excel_records_know_their_sheet_row(storage: Storage, tmp_path: Path) -> None:
    # Rows: 1 empty, 2 header, 3 ann, 4 empty, 5 bob, 6 cid.
    source = workbook(
        tmp_path / "rows.xlsx", {"s": [[None], ["name"], ["ann"], [None], ["bob"], ["cid"]]}
    )
    spec = prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=2),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )
    chunks = plan_batch(storage, spec).chunks

    read = [read_chunk(storage, spec.source, c) for c in chunks]

    assert [d.table.column("name").to_pylist() for d in read] == [["ann"], ["bob", "cid"]]
    assert [list(d.lines(np.arange(d.table.num_rows))) for d in read] == [[3], [5, 6]]


def test_parquet_with_many_row_groups_is_read_by_row_group_ranges(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "p.parquet"
    pq.write_table(pa.table({"n": list(range(1000))}), source, row_group_size=9)

    result = run(storage, source, tmp_path / "out", chunk_records=100)

    assert result.result.chunks == 10  # 112 row groups of 9 rows, 12 per chunk
    assert values(valid_rows(storage, result), "n") == list(range(1000))


def test_gzip_csv_is_staged_and_read_whole(storage: Storage, tmp_path: Path) -> None:
    data = b'\xef\xbb\xbfid,text\r\n1,"a\r\nb"\r\n2,""""\r\n\r\n3,c'
    source = write(tmp_path / "g.csv.gz", gzip.compress(data))

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    assert result.result.chunks == 3
    assert valid_rows(storage, result) == [
        {"id": "1", "text": "a\r\nb"},
        {"id": "2", "text": '"'},
        {"id": "3", "text": "c"},
    ]


def test_gzip_csv_rejects_stay_in_their_place_among_the_records(
    storage: Storage, tmp_path: Path
) -> None:
    data = b"id,v\n1,a\n2\n3,c\n4,d\n5,e,x\n"
    source = write(tmp_path / "w.csv.gz", gzip.compress(data))

    result = run(storage, source, tmp_path / "out", chunk_records=2)

    rejected = rejected_rows(storage, result)
    assert values(valid_rows(storage, result), "id") == ["1", "3", "4"]
    assert [(r["_chunk"], r["_record"], r["_raw"]) for r in rejected] == [
        (0, 1, "2"),
        (2, 0, "5,e,x"),
    ]
    assert values(rejected, "_line") == [2, 5]  # staged sources number records, not lines


def test_gzip_jsonl_is_staged_with_its_rejects(storage: Storage, tmp_path: Path) -> None:
    data = b'\xef\xbb\xbf{"id": 1}\n{"id": 2\n\n{"id": 3}'
    source = write(tmp_path / "g.jsonl.gz", gzip.compress(data))

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    assert values(valid_rows(storage, result), "id") == [1, 3]
    assert [r["_record"] for r in rejected_rows(storage, result)] == [0]
    assert (result.result.records_in, result.result.records_rejected) == (3, 1)


def test_a_json_array_is_staged_and_non_objects_are_rejected(
    storage: Storage, tmp_path: Path
) -> None:
    data = b'\xef\xbb\xbf[{"id": 1, "v": "a"}, 7, {"id": 3, "v": {"x": [1]}}]'
    source = write(tmp_path / "a.json", data)

    result = run(storage, source, tmp_path / "out", chunk_records=10)

    assert values(valid_rows(storage, result), "id") == [1, 3]
    assert values(rejected_rows(storage, result), "_reason") == [
        "record is a JSON int, not an object"
    ]


def test_json_records_under_a_key_are_read_with_a_records_path(
    storage: Storage, tmp_path: Path
) -> None:
    document = {"meta": {"count": 3}, "records": [{"id": i} for i in range(3)], "tail": [9]}
    source = write(tmp_path / "o.json", json.dumps(document).encode())

    result = run(storage, source, tmp_path / "out", json_records_path="records.item")

    assert valid_rows(storage, result) == document["records"]


def test_a_truncated_json_document_is_a_source_error_naming_it(
    storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "cut.json", b'[{"id": 1}, {"id": 2}, {"id"')

    with pytest.raises(SourceError, match=r"cut\.json: malformed JSON after record 2"):
        run(storage, source, tmp_path / "out")


def test_a_chunk_reads_only_its_own_byte_range(storage: Storage, tmp_path: Path) -> None:
    source = write(tmp_path / "r.csv", b"id\n" + b"".join(b"%d\n" % i for i in range(10)))
    spec = prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=4),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )
    chunk = plan_batch(storage, spec).chunks[1]

    data = read_chunk(storage, spec.source, chunk)

    assert data.table.column("id").to_pylist() == ["4", "5", "6", "7"]
    assert data.bytes_read == chunk.end - chunk.start == 8


def test_chunks_of_a_literal_quote_file_parse_their_own_slices(
    storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "l.csv", b'a,b\n1,5\'10"\n2,"x\ny"\n')
    spec = prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=1),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )

    tables = [read_chunk(storage, spec.source, c).table for c in plan_batch(storage, spec).chunks]

    assert [t.to_pylist() for t in tables] == [
        [{"a": "1", "b": "5'10\""}],
        [{"a": "2", "b": "x\ny"}],
    ]


def test_a_chunk_of_an_object_that_changed_after_planning_fails_naming_the_chunk(
    storage: Storage, tmp_path: Path
) -> None:
    source = write(tmp_path / "c.csv", b"id\n1\n2\n3\n4\n")
    spec = prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=2),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )
    chunk = plan_batch(storage, spec).chunks[1]
    source.write_bytes(b"id\n1\n2\n")

    with pytest.raises(
        ChunkReadError, match=r"chunk_00001 of 2 \(bytes 7-11 of .*c\.csv\).*changed"
    ):
        read_chunk(storage, spec.source, chunk)


@pytest.mark.parametrize(
    ("data", "records", "fast"),
    [
        (b"a,1\nb,2\nc,3\n", 3, True),
        (b"a,1\r\nb,2\r\nc,3", 3, True),  # CRLF, no line break after the last record
        (b'a,"x\ny"\nb,2\n', 2, False),  # a quoted line break: 3 lines, 2 records
        (b"a,1\n\nb,2\n", 2, False),  # a blank line is not a record
        (b"a,1\rb,2\n", 2, True),  # a lone carriage return ends a line (and a record) too
        (b"a,1\rb,2\rc,3\r", 3, True),
        (b'a,"x\ry"\rb,2\r', 2, False),  # a quoted lone carriage return is a line break
        (b"a,1\r\rb,2", 2, False),  # a blank line
        (b"", 0, True),
    ],
)
def test_one_record_per_line_only_when_lines_and_records_agree(data, records, fast):
    from batch_pipeline.core.inputs.boundaries import record_line_offsets
    from batch_pipeline.core.inputs.readers import one_record_per_line

    assert one_record_per_line(data, records) is fast
    if fast and records:
        idx = np.arange(records)
        assert (record_line_offsets(data, '"', ",", idx) == idx).all()


def test_header_names_stay_unique_when_a_suffix_is_taken_already(tmp_path: Path, storage) -> None:
    """``a, a_2, a`` used to name two columns ``a_2`` (and the chunk failed on duplicate field
    names); a repeated name takes the next suffix no column has, blanks are ``column_N``."""
    source = tmp_path / "dup.csv"
    source.write_text("a,a_2,a, ,\n1,2,3,4,5\n")
    book = workbook(tmp_path / "dup.xlsx", {"s": [["a", "a_2", "a", None, "x"], [1, 2, 3, 4, 5]]})

    csv_run = run(storage, source, tmp_path / "out-csv")
    excel_run = run(storage, book, tmp_path / "out-xlsx")

    assert valid_rows(storage, csv_run) == [
        {"a": "1", "a_2": "2", "a_3": "3", "column_4": "4", "column_5": "5"}
    ]
    assert valid_rows(storage, excel_run) == [
        {"a": 1, "a_2": 2, "a_3": 3, "column_4": 4, "x": 5, "_worksheet": "s"}
    ]
