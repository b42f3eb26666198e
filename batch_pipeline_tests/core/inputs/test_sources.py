"""inspect_source: format detection and the checks that run before any work."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import ConfigError, SourceError
from batch_pipeline.core.common.models import CsvOptions
from batch_pipeline.core.inputs.sources import detect_format, inspect_source
from batch_pipeline.core.stores.storage import Storage


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def workbook_bytes(sheets: dict[str, list[list[object]]]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    sink = io.BytesIO()
    book.save(sink)
    return sink.getvalue()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", ("csv", None)),
        ("a.TSV", ("csv", None)),
        ("a.csv.gz", ("csv", "gzip")),
        ("a.jsonl.gz", ("jsonl", "gzip")),
        ("a.ndjson", ("jsonl", None)),
        ("a.json", ("json", None)),
        ("a.parquet", ("parquet", None)),
        ("a.xlsx", ("excel", None)),
    ],
)
def test_the_format_comes_from_the_extension(name: str, expected: tuple) -> None:
    assert detect_format(f"s3://bucket/dir/{name}") == expected


def test_an_unknown_extension_asks_for_the_format() -> None:
    with pytest.raises(ConfigError, match=r"data\.bin.*set format"):
        detect_format("/tmp/data.bin")


def test_gzip_parquet_is_refused() -> None:
    with pytest.raises(ConfigError, match="parquet files carry their own compression"):
        detect_format("/tmp/a.parquet.gz")


def test_a_missing_file_is_a_source_error_naming_it(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.csv does not exist"):
        inspect_source(storage, str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.json", "empty.parquet"])
def test_an_empty_file_is_a_source_error_naming_it(
    name: str, storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / name, b"")

    with pytest.raises(SourceError, match=rf"{name} is empty \(0 bytes\)"):
        inspect_source(storage, path)


def test_a_whitespace_only_csv_is_a_source_error(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "blank.csv", b"\xef\xbb\xbf\r\n\n  \n")

    with pytest.raises(SourceError, match=r"blank\.csv holds no CSV data"):
        inspect_source(storage, path)


def test_the_bom_is_skipped_and_the_data_starts_after_the_header(
    storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / "bom.csv", b"\xef\xbb\xbfid,name\r\n1,a\r\n")

    spec = inspect_source(storage, path)

    assert spec.columns == ("id", "name")
    assert spec.data_start == 3 + len(b"id,name\r\n")
    assert spec.layout["bom"] is True


def test_empty_lines_before_the_header_are_skipped(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "lead.csv", b"\n\r\nid,name\n1,a\n")

    spec = inspect_source(storage, path)

    assert spec.columns == ("id", "name")
    assert spec.data_start == len(b"\n\r\nid,name\n")


def test_a_header_may_hold_a_quoted_line_break(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", b'"first\nname",age\nann,3\n')

    spec = inspect_source(storage, path)

    assert spec.columns == ("first\nname", "age")
    assert spec.data_start == len(b'"first\nname",age\n')


def test_repeated_and_blank_header_names_are_made_unique(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "dup.csv", b"a,a,,b\n1,2,3,4\n")

    assert inspect_source(storage, path).columns == ("a", "a_2", "column_3", "b")


def test_a_header_only_csv_has_columns_and_no_data(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", b"id,name")

    spec = inspect_source(storage, path)

    assert spec.columns == ("id", "name")
    assert spec.data_start == spec.info.size


def test_without_a_header_columns_are_numbered(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "nh.csv", b"1,a,x\n2,b,y\n")

    spec = inspect_source(storage, path, csv_options=CsvOptions(has_header=False))

    assert spec.columns == ("column_1", "column_2", "column_3")
    assert spec.data_start == 0


@pytest.mark.parametrize(
    ("option", "character"),
    [("comma", ","), ("semicolon", ";"), ("pipe", "|"), ("tab", "\t"), ("space", " ")],
)
def test_delimiter_names_become_characters(
    option: str, character: str, storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / "d.csv", f"id{character}name\n1{character}a\n".encode())

    spec = inspect_source(storage, path, csv_options=CsvOptions(delimiter=option))

    assert spec.csv is not None and spec.csv.delimiter == character
    assert spec.columns == ("id", "name")


def test_a_tsv_file_is_tab_separated_by_default(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", b"id\tname\n1\ta\n")

    assert inspect_source(storage, path).columns == ("id", "name")


@pytest.mark.parametrize(
    ("header", "given", "actual"),
    [
        ("id;name;city", ",", ";"),
        ("id|name|city", ",", "|"),
        ("id\tname\tcity", ",", "\t"),
        ("id,name,city", ";", ","),
    ],
)
def test_a_wrong_delimiter_is_detected_from_the_header(
    header: str, given: str, actual: str, storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / "w.csv", f"{header}\n1\n".encode())

    with pytest.raises(
        ConfigError, match=rf"w\.csv.*set csv\.delimiter to {re.escape(repr(actual))}"
    ):
        inspect_source(storage, path, csv_options=CsvOptions(delimiter=given))


def test_an_unsupported_delimiter_is_a_config_error(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", b"a#b\n1#2\n")

    with pytest.raises(ConfigError, match="not supported"):
        inspect_source(storage, path, csv_options=CsvOptions(delimiter="#"))


def test_a_gzip_csv_is_inspected_through_decompression(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv.gz", gzip.compress(b"\xef\xbb\xbfid,name\n1,a\n"))

    spec = inspect_source(storage, path)

    assert (spec.compression, spec.columns, spec.needs_staging) == ("gzip", ("id", "name"), True)


def test_a_jsonl_file_whose_first_line_is_not_json_is_refused(
    storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / "bad.jsonl", b"id,name\n1,a\n")

    with pytest.raises(SourceError, match=r"bad\.jsonl: the first line is not JSON"):
        inspect_source(storage, path)


def test_jsonl_lines_must_be_objects(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "arr.jsonl", b"[1, 2]\n")

    with pytest.raises(SourceError, match="must be objects"):
        inspect_source(storage, path)


def test_a_json_object_needs_a_records_path(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "obj.json", b'{"records": [{"a": 1}]}')

    with pytest.raises(SourceError, match=r"obj\.json is a JSON object.*json_records_path"):
        inspect_source(storage, path)


def test_a_json_array_takes_no_records_path(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "arr.json", b'[{"a": 1}]')

    with pytest.raises(SourceError, match="is a JSON array"):
        inspect_source(storage, path, json_records_path="records.item")


def test_a_json_document_must_start_with_an_array_or_object(
    storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / "s.json", b'"just a string"')

    with pytest.raises(SourceError, match="does not start with a JSON array or object"):
        inspect_source(storage, path)


def test_parquet_layout_lists_its_row_groups(storage: Storage, tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"a": list(range(25))}), path, row_group_size=10)

    spec = inspect_source(storage, str(path))

    assert spec.layout == {"row_groups": [10, 10, 5], "num_rows": 25}
    assert spec.columns == ("a",)


def test_a_file_that_is_not_parquet_is_a_source_error(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "fake.parquet", b"not parquet at all")

    with pytest.raises(SourceError, match=r"fake\.parquet is not a readable Parquet file"):
        inspect_source(storage, path)


def test_excel_layout_marks_empty_and_header_only_sheets(storage: Storage, tmp_path: Path) -> None:
    path = write(
        tmp_path / "b.xlsx",
        workbook_bytes(
            {
                "leads": [[None], ["name", "email"], ["ann", "a@x"], ["bob", "b@x"]],
                "blank": [],
                "header only": [["name", "email"]],
            }
        ),
    )

    spec = inspect_source(storage, path)

    sheets = {s["name"]: s for s in spec.layout["sheets"]}
    assert (sheets["leads"]["header_row"], sheets["leads"]["max_row"]) == (2, 4)
    assert [sheets[n]["empty"] for n in ("leads", "blank", "header only")] == [False, True, True]
    assert spec.excel_sheets == ("leads", "blank", "header only")


def test_an_unknown_worksheet_is_a_config_error_listing_the_sheets(
    storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / "b.xlsx", workbook_bytes({"one": [["a"], [1]]}))

    with pytest.raises(ConfigError, match="has no worksheet 'two'; it has 'one'"):
        inspect_source(storage, path, excel_sheets=("two",))


def test_a_file_that_is_not_a_workbook_is_a_source_error(storage: Storage, tmp_path: Path) -> None:
    path = write(tmp_path / "fake.xlsx", b"not a zip")

    with pytest.raises(SourceError, match=r"fake\.xlsx is not a readable Excel workbook"):
        inspect_source(storage, path)


def test_an_s3_object_is_inspected_by_range_reads(
    storage: Storage, s3_client, s3_bucket: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/a.csv", Body=b"id;name\n1;a\n")

    spec = inspect_source(
        storage, f"s3://{s3_bucket}/in/a.csv", csv_options=CsvOptions(delimiter=";")
    )

    assert spec.columns == ("id", "name")
    assert spec.info.etag


def test_a_missing_s3_object_is_a_source_error_naming_it(storage: Storage, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/in/nothing.csv"

    with pytest.raises(SourceError, match=rf"{uri} does not exist"):
        inspect_source(storage, uri)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("data", [b"id,name", b"\xef\xbb\xbfid,name"])
def test_a_gzip_csv_of_one_line_without_a_newline_is_inspected(
    data: bytes, storage: Storage, tmp_path: Path
) -> None:
    path = write(tmp_path / "h.csv.gz", gzip.compress(data))

    assert inspect_source(storage, path).columns == ("id", "name")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["open.csv", "open.csv.gz", "open-literal.csv"])
def test_a_header_whose_quote_never_closes_is_a_source_error(
    name: str, storage: Storage, tmp_path: Path
) -> None:
    data = b'"id,name\n1,a\n2,b\n' if "literal" not in name else b'id,na"me,"x\n1,a,b\n'
    path = write(tmp_path / name, gzip.compress(data) if name.endswith(".gz") else data)

    with pytest.raises(SourceError, match=rf"{name}: the first record .* never closed"):
        inspect_source(storage, path)
