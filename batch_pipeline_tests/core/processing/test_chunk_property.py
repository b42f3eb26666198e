"""The property that matters most: however an input is cut into chunks, the chunks together give
exactly the records a whole-file read gives, with the same values, in the same order.

Each format is cut into 1, 7 and 200 chunks (and into at most 7 when max_chunks bounds a
chunk_records of 1); the valid Parquet files, read in chunk order, must equal the reference read
of the whole file by the format's standard reader."""

from __future__ import annotations

import gzip
import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.core.helpers import (
    csv_field,
    csv_text,
    jsonl_text,
    nasty_records,
    nasty_value,
    run,
    valid_rows,
)

N = 2800  # 2800 = 400 * 7 = 14 * 200: record counts that give exactly 1, 7 and 200 chunks
CHUNK_RECORDS = {1: N, 7: N // 7, 200: N // 200}


@dataclass(frozen=True)
class Case:
    """An input file and how to read it whole."""

    extension: str
    data: bytes
    reference: list[dict[str, Any]]
    chunk_records: dict[int, int]


def _csv_reference(data: bytes, columns: list[str]) -> list[dict[str, Any]]:
    """pyarrow's whole-file read: every column as text, line breaks allowed in quoted values."""
    table = pacsv.read_csv(
        io.BytesIO(data),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}),
    )
    assert table.column_names == columns
    return table.to_pylist()


def _jsonl_reference(data: bytes) -> list[dict[str, Any]]:
    return pajson.read_json(io.BytesIO(data)).to_pylist()


def _typed_records(n: int, seed: int) -> list[dict[str, Any]]:
    """Records with text (nasty), integer, float and boolean fields."""
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "name": nasty_value(rng),
            "note": nasty_value(rng),
            "score": round(rng.uniform(-1e6, 1e6), 3),
            "ok": rng.random() < 0.5,
        }
        for i in range(n)
    ]


def csv_case(newline: str) -> Case:
    records = nasty_records(N, seed=len(newline))
    columns = list(records[0])
    raw = csv_text(columns, [list(r.values()) for r in records], newline=newline).encode()
    return Case("csv", raw, _csv_reference(raw, columns), CHUNK_RECORDS)


LINE_BREAKS = ("\n", "\r\n", "\r")


def csv_line_breaks_case(newline: str | None) -> Case:
    """Records ended by ``newline`` (None: each by \\n, \\r\\n or a lone \\r at random), with
    quoted values holding every line break style, and empty lines of every style."""
    rng = random.Random(21)
    records = nasty_records(N, seed=22)
    columns = list(records[0])
    out = [",".join(columns) + (newline or "\r")]
    for record in records:
        values = list(record.values())
        if rng.random() < 0.3:
            values[1] = "a" + rng.choice(LINE_BREAKS) + values[1] + rng.choice(LINE_BREAKS)
        end = newline or rng.choice(LINE_BREAKS)
        blank = end * rng.choice([0, 0, 0, 1, 2])
        out.append(",".join(csv_field(v) for v in values) + end + blank)
    raw = "".join(out).encode()
    return Case("csv", raw, _csv_reference(raw, columns), CHUNK_RECORDS)


def csv_literal_quotes_case(newline: str = "\n") -> Case:
    """Quotes inside unquoted fields (5'10"), which send the planner to the exact scan, next to
    quoted fields with line breaks and doubled quotes."""
    rng = random.Random(3)
    lines = ["id,height,remark"]
    for i in range(N):
        height = f"{rng.randint(4, 6)}'{rng.randint(0, 11)}\""
        remark = rng.choice(['"two\nlines"', '"say ""hi"""', "plain", '"a,b"', '12" pipe'])
        lines.append(f"{i},{height},{remark.replace(chr(10), newline)}")
    raw = (newline.join(lines) + newline).encode()
    return Case("csv", raw, _csv_reference(raw, ["id", "height", "remark"]), CHUNK_RECORDS)


def jsonl_case(newline: str = "\n") -> Case:
    records = _typed_records(N, seed=11)
    raw = jsonl_text(records).replace("\n", newline).encode()
    return Case("jsonl", raw, _jsonl_reference(raw), CHUNK_RECORDS)


def json_array_case() -> Case:
    records = _typed_records(N, seed=12)
    raw = json.dumps(records, ensure_ascii=False, indent=1).encode()
    return Case("json", raw, json.loads(raw), CHUNK_RECORDS)


def gzip_csv_case() -> Case:
    plain = csv_case("\r\n")
    return Case("csv.gz", gzip.compress(plain.data), plain.reference, CHUNK_RECORDS)


def gzip_jsonl_case(newline: str = "\n") -> Case:
    plain = jsonl_case(newline)
    return Case("jsonl.gz", gzip.compress(plain.data), plain.reference, CHUNK_RECORDS)


def gzip_csv_line_breaks_case(newline: str | None) -> Case:
    plain = csv_line_breaks_case(newline)
    return Case("csv.gz", gzip.compress(plain.data), plain.reference, CHUNK_RECORDS)


def parquet_case() -> Case:
    records = _typed_records(N, seed=13)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink, row_group_size=7)  # 400 row groups
    raw = sink.getvalue()
    return Case("parquet", raw, pq.read_table(io.BytesIO(raw)).to_pylist(), CHUNK_RECORDS)


EXCEL_SHEETS = {"first": 86, "empty": 0, "second": 57, "third": 57}  # 200 records


def excel_case() -> Case:
    """Three sheets and an empty one; sizes chosen so that whole sheet ranges give exactly 1, 7
    (29 rows) and 200 (1 row) chunks."""
    rng = random.Random(14)
    sink = io.BytesIO()
    with pd.ExcelWriter(sink, engine="openpyxl") as writer:
        for sheet, rows in EXCEL_SHEETS.items():
            frame = pd.DataFrame(
                {
                    "id": range(rows),
                    "name": ["x" + nasty_value(rng).replace("\r", "") for _ in range(rows)],
                    "score": [rng.uniform(0, 100) for _ in range(rows)],
                }
            )
            frame.to_excel(writer, sheet_name=sheet, index=False)
    raw = sink.getvalue()
    reference: list[dict[str, Any]] = []
    for sheet, frame in pd.read_excel(io.BytesIO(raw), sheet_name=None).items():
        for row in frame.to_dict(orient="records"):
            reference.append({**row, "_worksheet": sheet})
    return Case("xlsx", raw, reference, {1: 10**6, 7: 29, 200: 1})


CASES: dict[str, Callable[[], Case]] = {
    "csv-lf": lambda: csv_case("\n"),
    "csv-crlf": lambda: csv_case("\r\n"),
    "csv-cr": lambda: csv_line_breaks_case("\r"),
    "csv-mixed-line-breaks": lambda: csv_line_breaks_case(None),
    "csv-literal-quotes": csv_literal_quotes_case,
    "csv-literal-quotes-cr": lambda: csv_literal_quotes_case("\r"),
    "jsonl": jsonl_case,
    "jsonl-cr": lambda: jsonl_case("\r"),
    "json": json_array_case,
    "csv.gz": gzip_csv_case,
    "csv.gz-cr": lambda: gzip_csv_line_breaks_case("\r"),
    "jsonl.gz": gzip_jsonl_case,
    "jsonl.gz-cr": lambda: gzip_jsonl_case("\r"),
    "parquet": parquet_case,
    "xlsx": excel_case,
}
_built: dict[str, Case] = {}


def build(name: str) -> Case:
    if name not in _built:
        _built[name] = CASES[name]()
    return _built[name]


def _normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN (pandas' empty cell) as None, so that rows compare by value."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows
    ]


@pytest.mark.parametrize("chunks", [1, 7, pytest.param(200, marks=pytest.mark.slow)])
@pytest.mark.parametrize("fmt", list(CASES))
def test_any_number_of_chunks_gives_the_whole_file_records(
    fmt: str, chunks: int, storage: Storage, tmp_path: Path
) -> None:
    case = build(fmt)
    source = tmp_path / f"input.{case.extension}"
    source.write_bytes(case.data)

    result = run(storage, source, tmp_path / "out", chunk_records=case.chunk_records[chunks])

    assert result.result.chunks == chunks
    assert result.result.records_rejected == 0
    assert _normalise(valid_rows(storage, result)) == _normalise(case.reference)


@pytest.mark.parametrize("fmt", list(CASES))
def test_max_chunks_bounds_fan_out_without_losing_records(
    fmt: str, storage: Storage, tmp_path: Path
) -> None:
    case = build(fmt)
    source = tmp_path / f"input.{case.extension}"
    source.write_bytes(case.data)

    result = run(storage, source, tmp_path / "out", chunk_records=1, max_chunks=7)

    assert 1 < result.result.chunks <= 7
    assert _normalise(valid_rows(storage, result)) == _normalise(case.reference)


@pytest.mark.parametrize(
    ("fmt", "chunks"),
    [
        ("csv-crlf", 7),
        ("csv-cr", 7),
        pytest.param("csv-mixed-line-breaks", 200, marks=pytest.mark.slow),
        ("csv-literal-quotes", 7),
        ("csv-literal-quotes-cr", 7),
        ("jsonl", 7),
        ("jsonl-cr", 7),
        ("json", 7),
        ("csv.gz", 7),
        ("jsonl.gz", 7),
        ("parquet", 7),
        ("xlsx", 7),
    ],
)
def test_chunks_read_from_s3_give_the_whole_file_records(
    fmt: str, chunks: int, storage: Storage, s3_client, s3_bucket: str
) -> None:
    case = build(fmt)
    key = f"in/input.{case.extension}"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=case.data)

    result = run(
        storage,
        f"s3://{s3_bucket}/{key}",
        f"s3://{s3_bucket}/out",
        chunk_records=case.chunk_records[chunks],
    )

    assert result.result.chunks == chunks
    assert result.result.valid_files[0].startswith(f"s3://{s3_bucket}/out/")
    assert _normalise(valid_rows(storage, result)) == _normalise(case.reference)
