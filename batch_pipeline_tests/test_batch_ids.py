"""Unsafe batch ids and file-set members are refused on every entry point, and nothing is
written outside the output folder: the CLI's commands, a launchpad-style run config through
``execute_job``, a redrive."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from batch_pipeline.cli import main
from batch_pipeline.definitions import get_batch_job, get_redrive_job
from batch_pipeline_tests.job_helpers import failed_run, initialize_config

UNSAFE = ["..", ".", "../elsewhere", "a/b", "x\ny"]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "work" / "in.csv"
    path.parent.mkdir()
    path.write_text("id,name\n1,a\n2,b\n")
    return path


def outside_output(tmp_path: Path, output: Path) -> set[str]:
    """Files written under the test's folder outside the output, the inputs, the ledger and
    the Dagster instance."""
    return {
        f
        for f in files_under(tmp_path)
        if not f.startswith(("home/", "ledger.db"))
        and not f.startswith(str(output.relative_to(tmp_path)) + "/")
        and f != "work/in.csv"
    }


@pytest.mark.parametrize("batch_id", UNSAFE)
def test_cli_run_refuses_an_unsafe_batch_id(
    batch_id: str, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "work" / "out"
    code = main(["run", str(source), "--output", str(output), "--batch-id", batch_id])
    captured = capsys.readouterr()
    assert code == 2  # refused before the run
    assert captured.err.startswith("error: batch_id ")
    assert "is not allowed: use 1-128 characters" in captured.err
    assert outside_output(tmp_path, output) == set()
    assert not output.exists() or files_under(output) == set()


@pytest.mark.parametrize("command", ["redrive", "status", "complete", "dead-letters"])
def test_cli_commands_on_a_batch_refuse_an_unsafe_id_before_touching_the_ledger(
    command: str, own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--force", "--reason", "x"] if command == "complete" else []
    code = main([command, "../x", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: batch_id '../x' is not allowed")
    assert len(err.strip().splitlines()) == 1
    assert not Path(own_ledger.removeprefix("sqlite:///")).exists()  # not even opened


@pytest.mark.slow
@pytest.mark.parametrize("batch_id", ["..", "."])
def test_launchpad_run_config_with_an_unsafe_batch_id_fails_in_initialize(
    batch_id: str, source: Path, tmp_path: Path, instance: DagsterInstance
) -> None:
    output = tmp_path / "work" / "out"
    config = {"source": str(source), "output": str(output), "batch_id": batch_id}
    _, [failure] = failed_run(instance, get_batch_job, initialize_config(config))
    assert failure.step_key == "initialize"
    assert "is not allowed" in failure.step_failure_data.error.message
    assert outside_output(tmp_path, output) == set()
    assert not output.exists()


@pytest.mark.slow
def test_launchpad_run_config_with_a_member_outside_the_set_fails(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    folder = tmp_path / "work" / "set"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("id\n1\n")
    (tmp_path / "work" / "secret.csv").write_text("id\n42\n")
    output = tmp_path / "work" / "out"
    config = {"source": str(folder), "members": ["../secret.csv"], "output": str(output)}
    _, [failure] = failed_run(instance, get_batch_job, initialize_config(config))
    assert "member '../secret.csv' must be a key relative" in (
        failure.step_failure_data.error.message
    )
    assert not output.exists()


@pytest.mark.slow
def test_redrive_job_refuses_an_unsafe_batch_id(instance: DagsterInstance) -> None:
    config = {"ops": {"load_batch": {"config": {"batch_id": "../x"}}}}
    _, [failure] = failed_run(instance, get_redrive_job, config)
    assert failure.step_key == "load_batch"
    assert "batch_id '../x' is not allowed" in failure.step_failure_data.error.message
