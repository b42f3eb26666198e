"""Excel workbooks through openpyxl, read-only and streaming.

Each worksheet's first non-empty row is its header; fully empty rows are not records; every
record gets a ``_worksheet`` column naming its sheet. A workbook on S3 is fetched whole (a zip
archive cannot be read by ranges), then sheets are parsed row by row.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from batch_pipeline.core.columns import table_from_columns, unique_names
from batch_pipeline.core.common.errors import SourceError
from batch_pipeline.core.common.models import SheetRange
from batch_pipeline.core.stores.storage import Storage, is_s3, normalize_uri

WORKSHEET_COLUMN = "_worksheet"


def open_workbook(storage: Storage, uri: str) -> Any:
    """A read-only openpyxl workbook; raises SourceError naming the file if it is not one.
    openpyxl is imported here, when a workbook is read, not with the module."""
    import openpyxl

    try:
        target: Any = io.BytesIO(storage.read_bytes(uri)) if is_s3(uri) else normalize_uri(uri)
        return openpyxl.load_workbook(target, read_only=True, data_only=True)
    except SourceError:
        raise
    except Exception as exc:  # openpyxl raises zipfile/KeyError/InvalidFileException variants
        raise SourceError(f"{uri} is not a readable Excel workbook: {exc}") from exc


def _is_blank(row: Sequence[Any]) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in row)


def header_names(row: Sequence[Any]) -> list[str]:
    """Column names from a header row: text, ``column_N`` for blanks, suffixes for repeats."""
    names = unique_names(row)
    while names and names[-1].startswith("column_") and row[len(names) - 1] is None:
        names.pop()  # trailing empty header cells are padding, not columns
    return names


def sheet_layout(ws: Any) -> dict[str, Any]:
    """Header row, header names, the last row and whether the sheet has any record."""
    header_row = None
    header: list[str] = []
    has_data = False
    rows = ws.iter_rows(values_only=True)
    for number, row in enumerate(rows, start=1):
        if _is_blank(row):
            continue
        if header_row is None:
            header_row, header = number, header_names(row)
            continue
        has_data = True
        break
    max_row = ws.max_row if has_data else header_row
    if has_data and not max_row:
        max_row = sum(1 for _ in ws.iter_rows(values_only=True))
    return {
        "name": ws.title,
        "header_row": header_row,
        "columns": header,
        "max_row": max_row,
        "empty": not has_data,
    }


def read_sheet_ranges(
    storage: Storage, uri: str, ranges: Sequence[SheetRange]
) -> tuple[pa.Table, list[int]]:
    """Records of the given sheet ranges as one table, plus each record's sheet row number.

    Each column is built once over all the ranges (sheets name their columns by their own
    headers; a column a sheet lacks is null there), so a column whose values disagree in type,
    within a sheet or between sheets, is text (see ``tables.column_array``)."""
    workbook = open_workbook(storage, uri)
    columns: dict[str, list[Any]] = {}
    sheets: list[str] = []
    rows_out: list[int] = []
    try:
        for rng in ranges:
            ws = workbook[rng.sheet]
            header = ws.iter_rows(min_row=rng.header_row, max_row=rng.header_row, values_only=True)
            names = header_names(next(header))
            records, numbers = _records(ws, rng, len(names))
            width = max([len(names)] + [len(r) for r in records])
            names = names + [f"column_{i + 1}" for i in range(len(names), width)]
            before = len(rows_out)
            for i, name in enumerate(names):
                values = columns.setdefault(name, [None] * before)
                values.extend(r[i] if i < len(r) else None for r in records)
            for values in columns.values():
                if len(values) < before + len(records):  # not a column of this sheet
                    values.extend([None] * (before + len(records) - len(values)))
            sheets.extend([rng.sheet] * len(records))
            rows_out.extend(numbers)
    finally:
        workbook.close()
    if not ranges:
        return pa.table({}), []
    table = table_from_columns(list(columns), list(columns.values()))
    table = table.append_column(WORKSHEET_COLUMN, pa.array(sheets, type=pa.string()))
    return table, rows_out


def _records(ws: Any, rng: SheetRange, width: int) -> tuple[list[tuple[Any, ...]], list[int]]:
    records: list[tuple[Any, ...]] = []
    numbers: list[int] = []
    rows: Iterator[tuple[Any, ...]] = ws.iter_rows(
        min_row=rng.first_row, max_row=rng.last_row, values_only=True
    )
    for number, row in enumerate(rows, start=rng.first_row):
        if _is_blank(row):
            continue
        last = len(row)
        while last > width and row[last - 1] is None:
            last -= 1  # trailing empty cells beyond the header are padding
        records.append(tuple(row[:last]))
        numbers.append(number)
    return records, numbers
