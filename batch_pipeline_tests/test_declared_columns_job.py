"""A declared optional column the file lacks warns all the way: the initialize op's log (at
warning level) and metadata, the batch_results metadata, the manifest and the CLI's summary;
``extra_columns: error`` is refused by the CLI before the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from batch_pipeline.cli import main
from batch_pipeline.definitions import get_batch_job

SCHEMA = {"columns": {"id": {"type": "int64", "required": True}, "emial": {"type": "string"}}}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text("id,email\n1,a@x.org\n2,b@x.org\n3,c@x.org\n")
    return path


@pytest.mark.slow
def test_the_warning_reaches_the_log_the_metadata_and_the_manifest(source: Path, tmp_path: Path):
    config = {"source": str(source), "processor": "validate", "processor_options": SCHEMA,
              "output": str(tmp_path / "out"), "delivery": {"target": "none"}}  # fmt: skip
    expected = f"{source}: column 'emial' is declared but not in the file (columns: id, email)"
    with DagsterInstance.ephemeral() as instance:
        result = get_batch_job().execute_in_process(
            run_config={"ops": {"initialize": {"config": config}}}, instance=instance
        )
        assert result.success
        logs = instance.all_logs(result.run_id)
        warned = [e for e in logs if e.level == logging.WARNING and e.step_key == "initialize"]
        assert [e.user_message for e in warned] == [expected]

        outputs = [
            e for e in result.all_events
            if e.event_type == DagsterEventType.STEP_OUTPUT and e.step_key == "initialize"
        ]  # fmt: skip
        metadata = outputs[0].step_output_data.metadata
        assert metadata["warnings"].value == [expected]

        [materialization] = [
            e.step_materialization_data.materialization
            for e in result.all_events
            if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
        ]
        assert materialization.metadata["warnings"].value == [expected]

        batch = result.output_for_node("aggregate")
        assert batch.records_in == batch.records_out == 3
        manifest = json.loads(Path(batch.manifest_uri).read_text())
        assert manifest["warnings"] == [expected]


@pytest.mark.slow
def test_the_cli_summary_says_the_warning(source: Path, tmp_path: Path, capsys) -> None:
    code = main(
        ["run", str(source), "--processor", "validate", "--processor-options", json.dumps(SCHEMA),
         "--output", str(tmp_path / "out"), "--json"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    expected = f"{source}: column 'emial' is declared but not in the file (columns: id, email)"
    assert f"  warning: {expected}" in out.splitlines()
    assert json.loads(out.strip().splitlines()[-1])["warnings"] == [expected]


def test_extra_columns_error_is_refused_before_the_run(source: Path, capsys) -> None:
    strict = {**SCHEMA, "extra_columns": "error"}
    code = main(
        ["run", str(source), "--processor", "validate", "--processor-options", json.dumps(strict)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"error: {source}: column 'email' is not declared in the schema (extra_columns: error; "
        "declared: id, emial)\n"
    )
