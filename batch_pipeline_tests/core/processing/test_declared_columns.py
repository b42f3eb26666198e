"""A declared column the file lacks is never ignored silently: required refuses the batch,
optional warns (the BatchSpec carries the warning to the log, the manifest and the summary).
``extra_columns: error`` refuses a column the schema does not declare: before the run for a
single file, per chunk (dead-lettered, category config) for a file set. The columns the
pipeline adds itself (``_worksheet``, ``_file``) are never extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.inputs import excel, filesets
from batch_pipeline.core.ledger import DEAD_LETTERED, SUCCEEDED, Ledger
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.processing.processors.base import ADDED_COLUMNS
from batch_pipeline.core.stores.storage import Storage

SCHEMA = {
    "columns": {
        "id": {"type": "int64", "required": True},
        "emial": {"type": "string"},
        "agee": {"type": "int64"},
    }
}


def test_optional_declared_columns_missing_are_warnings() -> None:
    processor = get_processor("validate", SCHEMA)
    assert processor.check_columns(["id", "email", "age"]) == []
    assert processor.column_warnings(["id", "email", "age"]) == [
        "column 'emial' is declared but not in the file (columns: id, email, age)",
        "column 'agee' is declared but not in the file (columns: id, email, age)",
    ]
    assert processor.column_warnings(["id", "emial", "agee"]) == []
    assert get_processor("passthrough").column_warnings(["a"]) == []


def test_extra_columns_error_names_the_undeclared_columns() -> None:
    strict = get_processor("validate", {**SCHEMA, "extra_columns": "error"})
    assert strict.check_columns(["id", "emial", "agee", "_worksheet", "_file"]) == []
    assert strict.check_columns(["id", "emial", "agee", "email", "note"]) == [
        "columns 'email', 'note' are not declared in the schema (extra_columns: error; "
        "declared: id, emial, agee)"
    ]
    keep = get_processor("validate", SCHEMA)
    assert keep.check_columns(["id", "email", "note"]) == []


def test_the_pipelines_own_columns_are_the_added_ones() -> None:
    assert {excel.WORKSHEET_COLUMN, filesets.FILE_COLUMN} == ADDED_COLUMNS


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_prepare_batch_carries_the_warnings_into_the_manifest(tmp_path: Path) -> None:
    source = write(tmp_path / "people.csv", "id,email,age\n1,a@x.org,3\n2,b@x.org,4\n")
    storage = Storage()
    spec = prepare_batch(
        storage,
        str(source),
        processor="validate",
        processor_options=SCHEMA,
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )
    assert spec.warnings == (
        f"{source}: column 'emial' is declared but not in the file (columns: id, email, age)",
        f"{source}: column 'agee' is declared but not in the file (columns: id, email, age)",
    )
    done = run_batch(storage, spec)
    assert done.result.records_in == done.result.records_out == 2
    manifest = json.loads(Path(spec.manifest_uri).read_text())
    assert manifest["warnings"] == list(spec.warnings)


def test_extra_columns_error_refuses_a_single_file_before_any_work(tmp_path: Path) -> None:
    source = write(tmp_path / "people.csv", "id,emial,agee,note\n1,a@x.org,3,hi\n")
    with pytest.raises(ConfigError) as error:
        prepare_batch(
            Storage(),
            str(source),
            processor="validate",
            processor_options={**SCHEMA, "extra_columns": "error"},
            output=str(tmp_path / "out"),
        )
    assert str(error.value) == (
        f"{source}: column 'note' is not declared in the schema (extra_columns: error; "
        "declared: id, emial, agee)"
    )


def test_extra_columns_error_dead_letters_the_chunk_of_a_file_set(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    write(folder / "a.csv", "id,emial,agee\n1,a@x.org,3\n")
    write(folder / "b.csv", "id,emial,agee,note\n2,b@x.org,4,extra\n")
    storage = Storage()
    spec = prepare_batch(
        storage,
        str(folder),
        processor="validate",
        processor_options={**SCHEMA, "extra_columns": "error"},
        chunking=ChunkingSettings(chunk_records=1),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )
    ledger = Ledger("sqlite://")
    done = run_batch(storage, spec, ledger)
    states = ledger.chunk_states(spec.batch_id)
    assert [s.status for s in states] == [SUCCEEDED, DEAD_LETTERED]
    assert states[1].error_category == "config"
    assert "column 'note' is not declared in the schema (extra_columns: error" in (
        states[1].error_message or ""
    )
    assert "b.csv" in (states[1].error_message or "")  # names the chunk's file
    assert done.result.records_in == 1 and done.result.status == "failed"
