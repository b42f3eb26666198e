"""A data column named like one of the columns the rejected files add (``_reason``,
``_chunk``, ``_record``, ``_line``, ``_raw``) is renamed in the rejected file as a repeated
header is (``_reason_2``, the next free suffix); ours keep their names, and valid files keep
the data's. Before, such a column made the chunk fail with "duplicate field names", retried as
unknown, dead-lettered, 0 records out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings, RetrySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.core.processing.run import REJECT_META
from batch_pipeline.core.stores.storage import Storage

EMAIL_REQUIRED = {"columns": {"email": {"type": "string", "required": True}}}


def run(storage: Storage, ledger: Ledger, source: Path, chunk_records: int = 100) -> Any:
    spec = prepare_batch(
        storage,
        str(source),
        processor="validate",
        processor_options=EMAIL_REQUIRED,
        chunking=ChunkingSettings(chunk_records=chunk_records),
        output=str(source.parent / "out"),
        delivery=DeliverySettings(target="none"),
        retry=RetrySettings(max_retries=0),
    )
    return run_batch(storage, spec, ledger)


def test_a_csv_column_named_reason(storage: Storage, ledger: Ledger, tmp_path: Path) -> None:
    source = tmp_path / "k1.csv"
    source.write_text("id,_reason,email\n1,mine,\n2,m,e@x\n")
    done = run(storage, ledger, source)
    result = done.result
    assert result.status == "succeeded"
    assert (result.records_in, result.records_out, result.records_rejected) == (2, 1, 1)
    [valid] = [pq.read_table(uri) for uri in result.valid_files]
    assert valid.column_names == ["id", "_reason", "email"]
    assert valid.to_pylist() == [{"id": "2", "_reason": "m", "email": "e@x"}]
    [rejected] = [pq.read_table(uri) for uri in result.rejected_files]
    assert rejected.column_names == ["id", "_reason_2", "email", *REJECT_META]
    [row] = rejected.to_pylist()
    assert row["_reason_2"] == "mine" and row["id"] == "1" and row["email"] == ""
    assert "email" in row["_reason"] and row["_line"] == 2 and row["_record"] == 0


def test_jsonl_columns_named_line_and_raw_with_a_parse_reject(
    storage: Storage, ledger: Ledger, tmp_path: Path
) -> None:
    """The next free suffix: ``_line_2`` is taken by the data, so ``_line`` becomes
    ``_line_3``. A line that does not parse keeps its text in our ``_raw``."""
    source = tmp_path / "k1.jsonl"
    rows = [
        {"id": 1, "_line": "a", "_line_2": "b", "_raw": "r1", "_chunk": 7, "email": None},
        {"id": 2, "_line": "c", "_line_2": "d", "_raw": "r2", "_chunk": 8, "email": "e@x"},
    ]
    lines = [json.dumps(rows[0]), "{not json", json.dumps(rows[1])]
    source.write_text("\n".join(lines) + "\n")
    result = run(storage, ledger, source, chunk_records=2).result
    assert result.status == "succeeded"
    assert (result.records_in, result.records_out, result.records_rejected) == (3, 1, 2)
    valid = pq.read_table(result.valid_files[0])  # the files are unified to one schema
    assert [r for r in pq.read_table(result.valid_files[1]).to_pylist()] == [rows[1]]
    assert valid.num_rows == 0
    rejected = pq.read_table(result.rejected_files[0])
    data = ["id", "_line_3", "_line_2", "_raw_2", "_chunk_2", "email"]
    assert rejected.column_names == [*data, *REJECT_META]
    first, broken = rejected.to_pylist()
    assert {k: first[k] for k in data} == {
        "id": 1, "_line_3": "a", "_line_2": "b", "_raw_2": "r1", "_chunk_2": 7, "email": None
    }  # fmt: skip
    assert (first["_line"], first["_chunk"], first["_raw"]) == (1, 0, None)
    assert (broken["_line"], broken["_raw"], broken["_record"]) == (2, "{not json", 1)
    assert broken["_line_3"] is None and "JSON" in broken["_reason"]


@pytest.mark.parametrize("name", REJECT_META)
def test_every_reject_column_name(
    name: str, storage: Storage, ledger: Ledger, tmp_path: Path
) -> None:
    source = tmp_path / "k.csv"
    source.write_text(f"{name},email\nmine,\nyours,e@x\n")
    result = run(storage, ledger, source).result
    assert (result.records_out, result.records_rejected) == (1, 1)
    [rejected] = [pq.read_table(uri).to_pylist() for uri in result.rejected_files]
    assert rejected[0][f"{name}_2"] == "mine"
