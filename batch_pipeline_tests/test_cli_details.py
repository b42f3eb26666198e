"""The CLI's smaller promises: processor options in JSON or YAML with errors that say where;
failure reasons printed whole; an unknown batch exits 2 from every command and says which
ledger was looked in, finding the demo's ledger under ./.dagster_home; the summary's seconds
count from the process start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_pipeline.cli import main
from batch_pipeline.cli.parser import build_parser
from batch_pipeline.cli.run_config import processor_options
from batch_pipeline.core.ledger import open_ledger
from batch_pipeline.settings import default_ledger_url
from batch_pipeline_tests.core.ledger.test_ledger import make_plan, make_spec
from batch_pipeline_tests.fault_helpers import FAULTS_MODULE

SCHEMA = {"columns": {"id": {"type": "int64", "required": True}}}


def options(value: str) -> dict:
    return processor_options(value)


def test_options_inline_as_json_or_yaml() -> None:
    assert options(json.dumps(SCHEMA)) == SCHEMA
    assert options("{columns: {id: {type: int64, required: true}}}") == SCHEMA
    assert options("columns:\n  id: {type: int64, required: true}\n") == SCHEMA


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_options_from_a_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"schema{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(SCHEMA, indent=2))
    else:
        path.write_text("columns:\n  id:\n    type: int64\n    required: true\n")
    assert options(f"@{path}") == SCHEMA
    assert build_parser().parse_args(["run", "x.csv"]).processor_options is None  # none given


def refusal(capsys: pytest.CaptureFixture[str], value: str) -> str:
    """``batch-pipeline run`` with ``--processor-options VALUE``: one ``error: ...`` line on
    stderr, exit code 2, no usage dump; with ``--json``, stdout's last line is the JSON error
    object. Returns the error line."""
    for extra in ([], ["--json"]):
        code = main(["run", "x.csv", "--processor-options", value, *extra])
        out, err = capsys.readouterr()
        assert code == 2
        assert "usage:" not in err and "Traceback" not in err
        [line] = err.strip().splitlines()
        assert line.startswith("error: --processor-options: ")
        if extra:
            summary = json.loads(out.strip().splitlines()[-1])
            assert summary["status"] == "ERROR"
            assert summary["error"] == line.removeprefix("error: ")
        else:
            assert out == ""
    return line


def test_a_json_syntax_error_says_the_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    path.write_text('{\n  "columns": {\n    "id": {"type": "int64",}\n  }\n}\n')
    err = refusal(capsys, f"@{path}")
    assert f"{path}: not valid JSON: " in err and "line 3, column 28" in err

    err = refusal(capsys, '{"columns": {"id": {"type": "int64"}}')
    assert "--processor-options: not valid JSON: " in err and "line 1, column 38" in err


def test_a_yaml_error_and_a_non_mapping_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("columns:\n  id: {type: int64\n")
    err = refusal(capsys, f"@{path}")
    assert f"{path}: not valid YAML: " in err and "line 3, column 1" in err
    err = refusal(capsys, "[1, 2]")
    assert "must be a JSON or YAML object (a mapping of options), not a list" in err
    err = refusal(capsys, "")
    assert "must be a JSON or YAML object (a mapping of options), not nothing" in err
    err = refusal(capsys, f"@{tmp_path / 'missing.yaml'}")
    assert f"cannot read {tmp_path / 'missing.yaml'}: No such file or directory" in err
    err = refusal(capsys, f"@{tmp_path}")
    assert f"cannot read {tmp_path}: Is a directory" in err
    err = refusal(capsys, "@")
    assert "@ needs a file name" in err


# Whole reasons ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_failed_chunks_and_dead_letters_print_the_whole_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_value = "v" * 300
    source = tmp_path / "in.csv"
    source.write_text("id,tag\n1,a\n2,b\n3," + long_value + "\n4,d\n")
    fault = {"column": "tag", "value": long_value}
    code = main(
        ["run", str(source), "--output", str(tmp_path / "out"), "--batch-id", "long-1",
         "--chunk-records", "2", "--processor-module", FAULTS_MODULE,
         "--processor", "fault_fail_when", "--processor-options", json.dumps(fault),
         "--tolerated-failure-count", "1", "--deliver", "none"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    [line] = [x for x in out.splitlines() if x.startswith("  chunk_00001 dead_lettered:")]
    assert f"injected permanent fault: record with tag={long_value}" in line

    assert main(["dead-letters", "long-1"]) == 0
    out = capsys.readouterr().out
    assert f"record with tag={long_value}" in out.splitlines()[0]


# complete --force while a run holds the batch ----------------------------------------------------


@pytest.mark.slow
def test_complete_is_refused_while_a_run_holds_the_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run would finish every chunk and end ``completed_forced``: refused while its lease
    is live, naming the run and its lease's expiry; an expired lease does not stop it."""
    source = tmp_path / "in.csv"
    source.write_text("id\n1\n2\n")
    run = ["run", str(source), "--output", str(tmp_path / "out"), "--batch-id", "busy-1"]
    assert main([*run, "--deliver", "none"]) == 0
    capsys.readouterr()
    ledger = open_ledger(default_ledger_url())
    ledger.acquire_lease("busy-1", "the-other-run", ttl=600)
    complete = ["complete", "busy-1", "--force", "--reason", "stuck"]

    code = main(complete)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("error: batch busy-1 is being processed by run the-other-run ")
    assert "its lease expires at " in line and "wait for it, or stop it first" in line
    assert ledger.batch("busy-1").status == "succeeded"

    ledger.release_lease("busy-1", "the-other-run")
    ledger.acquire_lease("busy-1", "a-dead-run", ttl=0)  # expired: its holder died
    assert main(complete) == 0
    assert capsys.readouterr().out.startswith("batch busy-1: completed_forced (stuck)")


# Unknown batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["status"], ["dead-letters"], ["complete", "--force", "--reason", "x"], ["redrive"]],
    ids=lambda a: a[0],
)
def test_an_unknown_batch_exits_2_from_every_command(
    args: list[str], own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([args[0], "no-such-batch", *args[1:]])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err == f"error: batch no-such-batch is not in the ledger at {own_ledger}\n"


@pytest.fixture
def nothing_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ledger URL, no DAGSTER_HOME, a home folder of the test's own, and the working
    directory a project folder (where ``make demo`` leaves ``.dagster_home``)."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.delenv("BATCH_PIPELINE_LEDGER_URL")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(project)
    return project


def test_status_finds_the_demos_ledger(
    nothing_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = nothing_set / ".dagster_home" / "batch_ledger.db"
    demo.parent.mkdir()
    ledger = open_ledger(f"sqlite:///{demo}")
    ledger.register_batch(make_spec("demo-1"), make_plan(2))
    code = main(["status", "demo-1", "--no-watch"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("batch demo-1: running")
    home_ledger = nothing_set.parent / "home" / ".batch_pipeline" / "batch_ledger.db"
    assert err == (
        f"batch demo-1 is not in the ledger at sqlite:///{home_ledger}; using "
        f"sqlite:///{demo} (make demo's; set DAGSTER_HOME=.dagster_home to use it)\n"
    )


def test_status_says_where_to_look_when_the_demos_ledger_lacks_the_batch(
    nothing_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "nowhere-1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "batch nowhere-1 is not in the ledger at sqlite:///" in err
    assert "set DAGSTER_HOME (make demo's ledger is under .dagster_home), --ledger or" in err


# Seconds from the process start ------------------------------------------------------------------


@pytest.mark.slow
def test_the_summary_counts_seconds_from_the_process_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a command (``main()`` reading sys.argv), the seconds include the start-up before
    main ran: here a process started 100 s before."""
    import batch_pipeline.cli.command as command

    started = command.process_start()
    monkeypatch.setattr(command, "process_start", lambda: started - 100.0)
    source = tmp_path / "in.csv"
    source.write_text("id\n1\n")
    monkeypatch.setattr(
        sys, "argv", ["batch-pipeline", "run", str(source), "--output", str(tmp_path / "o"),
                      "--json"]
    )  # fmt: skip
    assert main() == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["seconds"] >= 100.0


def test_without_dagster_home_an_in_process_run_keeps_its_events_in_memory(
    nothing_set: Path, tmp_path: Path
) -> None:
    """No DAGSTER_HOME: an in-process run's instance holds its events in memory (no SQLite
    file to write per event); a multiprocess run's is a temporary SQLite instance that step
    processes can open, removed afterwards."""
    from dagster._core.storage.event_log import InMemoryEventLogStorage, SqliteEventLogStorage

    from batch_pipeline.cli.run import dagster_instance

    with dagster_instance(in_process=True) as instance:
        assert isinstance(instance.event_log_storage, InMemoryEventLogStorage)
        assert not instance.is_persistent
    with dagster_instance(in_process=False) as instance:
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
        assert instance.is_persistent
        home = Path(instance.root_directory)
        assert home.is_dir()
    assert not home.exists()


def test_the_process_start_is_exact_to_a_few_hundredths_of_a_second() -> None:
    """psutil's create_time adds the boot time in whole seconds (/proc/stat's btime), so it
    can be up to a second early: a 1.7 s run reported 2.6 s. The start the summary counts from
    is the process's age (/proc/self/stat against /proc/uptime) taken from now."""
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "from batch_pipeline.cli.command import process_start as p; "
         "print(repr(p()))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    after = time.time()
    started = float(out)
    assert before - 0.03 <= started <= after, (before, started, after)
    assert started - before < 0.5
