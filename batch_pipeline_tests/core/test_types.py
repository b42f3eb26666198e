"""Column types (issue 11): a value keeps its type or becomes its own text, never another
value; a column null in a whole chunk is processed like any other; one schema per batch, so
``valid/`` reads back as one table; records nested deeper than Parquet reads are rejected."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.storage import Storage
from batch_pipeline_tests.core.helpers import run, valid_rows


def workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def succeeded(result, records: int) -> None:
    batch = result.result
    assert batch.status == "succeeded", batch.failure
    assert (batch.records_in, batch.records_out + batch.records_rejected) == (records, records)


# Item 2: a column null in a whole chunk ---------------------------------------------------------


def test_a_jsonl_field_null_in_every_record_is_processed(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "n.jsonl"
    source.write_text("".join(json.dumps({"id": i, "gone": None}) + "\n" for i in range(5)))

    result = run(storage, source, tmp_path / "out", chunk_records=2)

    succeeded(result, 5)
    assert result.result.records_out == 5
    assert [r["gone"] for r in valid_rows(storage, result)] == [None] * 5


def test_a_blank_excel_column_and_a_formula_column_without_cached_values_are_processed(
    storage: Storage, tmp_path: Path
) -> None:
    rows = [["name", "blank", "total"]] + [[f"n{i}", None, f"=1+{i}"] for i in range(3)]
    source = workbook(tmp_path / "f.xlsx", {"s": rows})  # openpyxl caches no formula values

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 3)
    assert result.result.records_out == 3
    assert [(r["blank"], r["total"]) for r in valid_rows(storage, result)] == [(None, None)] * 3


def test_a_parquet_column_of_nulls_is_processed(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "gone": pa.nulls(3)}), source)

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 3)
    assert result.result.records_out == 3


def test_columns_count_distinct_cannot_count_are_not_dictionary_encoded() -> None:
    from batch_pipeline.core.storage import dictionary_columns

    table = pa.table({"gone": pa.nulls(4), "same": ["a"] * 4, "n": pa.array([[1]] * 4)})
    assert dictionary_columns(table) == ["same"]
