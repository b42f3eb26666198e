"""Helpers shared by the core reader/planner tests: run a batch in-process, read what it wrote,
and generate inputs with values that break naive readers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings
from batch_pipeline.core.common.settings import Chunking
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.pipeline import LocalRun, run_batch
from batch_pipeline.core.stores.storage import Storage

NASTY_VALUES = (
    "plain",
    "",
    "comma, inside",
    'say "hi"',
    '""',
    "line\nbreak",
    "crlf\r\nbreak",
    "ends with newline\n",
    "semi;colon|pipe\ttab space",
    "unicode é ü 漢字 🚀",
    "  padded  ",
    "5'10\" tall",
    "\n",
)


def run(
    storage: Storage,
    source: str | Path,
    out: str | Path,
    *,
    chunk_records: int = Chunking.chunk_records.default,
    max_chunks: int = Chunking.max_chunks.default,
    scan: bool = Chunking.scan.default,
    **prepare: Any,
) -> LocalRun:
    """Prepare and run a whole batch in this process, with delivery off."""
    spec = prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=chunk_records, max_chunks=max_chunks, scan=scan),
        output=str(out),
        delivery=DeliverySettings(target="none"),
        **prepare,
    )
    return run_batch(storage, spec)


def _read_all(storage: Storage, uris: list[str]) -> pa.Table | None:
    tables = []
    for uri in uris:
        with storage.open_input_file(uri) as f:
            tables.append(pq.read_table(f))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def valid_rows(storage: Storage, result: LocalRun) -> list[dict[str, Any]]:
    """Valid records of a run as dicts, read from the valid files in chunk order."""
    table = _read_all(storage, result.result.valid_files)
    return [] if table is None else table.to_pylist()


def rejected_rows(storage: Storage, result: LocalRun) -> list[dict[str, Any]]:
    """Rejected records of a run as dicts, in chunk order."""
    table = _read_all(storage, result.result.rejected_files)
    return [] if table is None else table.to_pylist()


def nasty_value(rng: random.Random, allow_newlines: bool = True) -> str:
    value = rng.choice(NASTY_VALUES)
    if not allow_newlines:
        value = value.replace("\r", " ").replace("\n", " ")
    return value + str(rng.randint(0, 999)) if rng.random() < 0.5 else value


def csv_field(value: str, delimiter: str = ",") -> str:
    """RFC 4180 quoting: quote when needed, double inner quotes."""
    if any(c in value for c in (delimiter, '"', "\n", "\r")) or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_text(
    header: list[str], rows: list[list[str]], delimiter: str = ",", newline: str = "\n"
) -> str:
    lines = [delimiter.join(csv_field(v, delimiter) for v in r) for r in [header, *rows]]
    return newline.join(lines) + newline


def nasty_records(n: int, seed: int = 7, allow_newlines: bool = True) -> list[dict[str, str]]:
    """``n`` records with an id and three text fields holding quotes, commas, line breaks,
    unicode."""
    rng = random.Random(seed)
    return [
        {
            "id": str(i),
            "name": nasty_value(rng, allow_newlines),
            "note": nasty_value(rng, allow_newlines),
            "city": rng.choice(["Oslo", "São Paulo", "Zürich", "東京", "New York, NY"]),
        }
        for i in range(n)
    ]


def jsonl_text(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def carriage_return_csv(records: int = 1_000) -> bytes:
    """A CSV with classic Mac line endings (a lone \\r, as some Excel exports write): quoted
    values hold \\r, \\n and \\r\\n; record 500 (whose value holds a \\r) has a field too
    many."""
    lines = ["id,name,note"]
    for i in range(records):
        note = ['"one\rtwo"', '"one\ntwo"', '"one\r\ntwo"', "plain"][i % 4]
        lines.append(f"{i},name {i},{note}" + (",extra" if i == 500 else ""))
    return "\r".join(lines).encode() + b"\r"


def full_device(folder: Path) -> Path:
    """A device that is always full (as /dev/full: writes fail with ENOSPC), made in ``folder``
    so that no other test, here or in another checkout, can replace it under us. Falls back to
    /dev/full where device nodes cannot be made."""
    import os
    import stat

    path = folder / "full"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError:
        path = Path("/dev/full")
    assert stat.S_ISCHR(path.stat().st_mode), f"{path} is not the full device"
    return path


def workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    """An Excel workbook at ``path`` with these sheets, each a list of rows (the first: header)."""
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path
