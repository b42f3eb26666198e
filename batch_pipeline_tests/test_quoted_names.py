"""A file name with a newline (or ESC, CR) cannot forge a line in the Dagster log or the CLI's
output: every name that reaches a log line, a Failure's description or a print is escaped."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, execute_job, reconstructable

from batch_pipeline.cli import main
from batch_pipeline.core.common.text import quoted, shown
from batch_pipeline.definitions import get_batch_job
from batch_pipeline_tests.job_helpers import failed_run, initialize_config

EVIL = "evil\nERROR forged line"


def test_shown_escapes_control_characters_only() -> None:
    assert shown("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert shown("esc\x1b[31mred\x00\x7f\x85") == "esc\\x1b[31mred\\x00\\x7f\\x85"
    assert shown("line\u2028sep") == "line\\u2028sep"
    assert shown("naïve café 漢字 🚀 'quotes' \\ back") == "naïve café 漢字 🚀 'quotes' \\ back"
    assert quoted("x\ny") == "'x\\ny'"


def event_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, limit=10_000).records
    return [r.event_log_entry.user_message or "" for r in records] + [
        r.event_log_entry.message or "" for r in records
    ]


def forged(messages: list[str]) -> list[str]:
    return [m for m in messages if "\nERROR forged line" in m or "\x1b" in m]


@pytest.mark.slow
def test_a_newline_in_a_file_name_forges_no_log_line(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    source = tmp_path / f"{EVIL}.csv"
    source.write_text("id,name\n1,a\n2,b\n3,c\n")
    config = {"source": str(source), "output": str(tmp_path / "out"), "chunking": {
        "chunk_records": 2}}  # fmt: skip
    with execute_job(
        reconstructable(get_batch_job),
        instance=instance,
        run_config={"ops": {"initialize": {"config": config}}},
    ) as result:
        assert result.success
        run_id = result.run_id
    messages = event_messages(instance, run_id)
    assert any("evil\\nERROR forged line.csv" in m for m in messages)  # shown, escaped
    assert forged(messages) == []


@pytest.mark.slow
def test_a_failure_naming_the_file_forges_no_log_line(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    source = tmp_path / f"{EVIL}\x1b[2J.csv"
    source.write_text("")  # empty: initialize fails, naming the file
    config = {"source": str(source), "output": str(tmp_path / "out")}
    run_id, [failure] = failed_run(instance, get_batch_job, initialize_config(config))
    assert "evil\\nERROR forged line\\x1b[2J.csv is empty" in (
        failure.step_failure_data.error.message
    )
    assert forged(event_messages(instance, run_id)) == []


@pytest.mark.slow
def test_the_cli_shows_the_name_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / f"{EVIL}.csv"
    source.write_text("id,name\n1,a\n")
    code = main(["run", str(source), "--output", str(tmp_path / "out"), "--batch-id", "evil-1"])
    out = capsys.readouterr()
    assert code == 0
    assert "\nERROR forged line" not in out.out + out.err

    code = main(["status", "evil-1"])
    out = capsys.readouterr()
    assert code == 0
    assert "evil\\nERROR forged line.csv" in out.out
    assert "\nERROR forged line" not in out.out + out.err

    missing = tmp_path / f"{EVIL}-missing.csv"
    code = main(["run", str(missing), "--output", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code == 2
    assert out.err == f"error: {tmp_path}/evil\\nERROR forged line-missing.csv does not exist\n"
