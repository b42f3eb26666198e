"""A user's mistake gets one clear message before Dagster starts: ``error: ...`` naming the
file, the setting and the fix, exit code 2, no traceback (unless ``--verbose``), and no Dagster
run. Failures inside a run print the summary's error, not Dagster's stack traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance

from batch_pipeline.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Dagster instance of the test's own, as DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def runs_in(home: Path) -> int:
    with DagsterInstance.from_config(str(home)) as instance:
        return len(instance.get_runs())


@pytest.fixture
def leads(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    path.write_text("id,email,age\n1,a@x.org,31\n2,b@x.org,42\n")
    return path


def refused(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> str:
    """Run ``batch-pipeline ARGS``; assert the refusal's shape; return its message."""
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out == ""
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    assert runs_in(home) == 0
    return err


@pytest.mark.slow
def test_a_typo_in_the_processor_name(leads: Path, home: Path, capsys) -> None:
    err = refused(capsys, home, "run", str(leads), "--processor", "validat")
    assert "Unknown processor 'validat': available are " in err  # (and any registered since)
    assert "passthrough" in err and "validate" in err


@pytest.mark.slow
def test_an_unknown_type_in_the_schema(leads: Path, home: Path, capsys) -> None:
    schema = {"columns": {"age": {"type": "integer"}}}
    err = refused(
        capsys, home, "run", str(leads), "--processor", "validate",
        "--processor-options", json.dumps(schema),
    )  # fmt: skip
    assert "Invalid options for processor 'validate'" in err
    assert "columns.age.type" in err and "'int64'" in err


@pytest.mark.slow
def test_a_missing_file(tmp_path: Path, home: Path, capsys) -> None:
    err = refused(capsys, home, "run", str(tmp_path / "nope.csv"))
    assert f"{tmp_path / 'nope.csv'} does not exist" in err


@pytest.mark.slow
def test_an_output_folder_that_cannot_be_made(leads: Path, tmp_path: Path, home: Path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    err = refused(capsys, home, "run", str(leads), "--output", str(blocker / "out"))
    assert f"--output {blocker / 'out'}" in err and f"{blocker} is a file" in err


def test_an_unwritable_output_folder(leads: Path, tmp_path: Path, home: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: folder permissions do not apply")
        err = refused(capsys, home, "run", str(leads), "--output", str(locked / "out"))
        assert f"--output {locked / 'out'}" in err and f"{locked} is not writable" in err
    finally:
        locked.chmod(0o755)


@pytest.mark.slow
def test_a_wrong_delimiter(tmp_path: Path, home: Path, capsys) -> None:
    source = tmp_path / "semi.csv"
    source.write_text("id;name;email\n" + "".join(f"{i};n{i};a{i}@x.org\n" for i in range(5)))
    err = refused(capsys, home, "run", str(source))
    assert str(source) in err and "set csv.delimiter to ';'" in err


@pytest.mark.slow
def test_a_missing_required_column(leads: Path, home: Path, capsys) -> None:
    schema = {"columns": {"phone": {"type": "string", "required": True}}}
    err = refused(
        capsys, home, "run", str(leads), "--processor", "validate",
        "--processor-options", json.dumps(schema),
    )  # fmt: skip
    assert str(leads) in err and "required column 'phone' is missing" in err


@pytest.mark.slow
def test_a_ledger_that_does_not_open(leads: Path, home: Path, capsys) -> None:
    err = refused(
        capsys, home, "run", str(leads),
        "--ledger", "postgresql://someone:hunter2@127.0.0.1:1/nothing",
    )  # fmt: skip
    assert "the ledger at postgresql://someone:***@127.0.0.1:1/nothing cannot be opened" in err
    assert "hunter2" not in err


def test_json_mode_ends_with_one_json_line_too(tmp_path: Path, home: Path, capsys) -> None:
    code = main(["run", str(tmp_path / "nope.csv"), "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "ERROR" and "nope.csv does not exist" in summary["error"]
    assert err.startswith("error: ")


def test_verbose_adds_the_traceback(tmp_path: Path, home: Path, capsys) -> None:
    code = main(["run", str(tmp_path / "nope.csv"), "--verbose"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_redrive_of_an_unknown_batch_is_refused_before_dagster(home: Path, capsys) -> None:
    err = refused(capsys, home, "redrive", "no-such-batch")
    assert "batch no-such-batch is not in the ledger at sqlite:///" in err


@pytest.mark.slow
def test_the_installed_command_refuses_in_a_few_lines(tmp_path: Path) -> None:
    """The real entry point: one line on stderr, exit 2, and Dagster never imported."""
    script = Path(sys.executable).parent / "batch-pipeline"
    probe = (
        "import sys, runpy; sys.argv = sys.argv[1:];"
        "code = 0\n"
        "try:\n runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n code = e.code\n"
        "print('dagster imported' if 'dagster' in sys.modules else 'no dagster', file=sys.stderr)\n"
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(script), "run", str(tmp_path / "nope.csv")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'nope.csv'} does not exist",
        "no dagster",
    ]


@pytest.mark.slow
def test_a_failure_inside_the_run_prints_no_stack_trace(tmp_path: Path, capsys) -> None:
    """Refused while planning (another run holds the batch): the summary says why; Dagster's
    console logger prints no stack trace without --verbose."""
    source = tmp_path / "rows.csv"
    source.write_text("n\n" + "".join(f"{i}\n" for i in range(20)))
    args = ["run", str(source), "--output", str(tmp_path / "out"), "--batch-id", "b2"]
    assert main(args) == 0
    capsys.readouterr()
    from batch_pipeline.core.ledger import open_ledger
    from batch_pipeline.settings import default_ledger_url

    open_ledger(default_ledger_url()).acquire_lease("b2", "another-run", ttl=600)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 1
    assert "plan_chunks:" in out and "another-run" in out
    assert "Traceback" not in err and "Stack Trace" not in err and 'File "' not in err


@pytest.mark.slow
def test_redrive_of_a_batch_with_nothing_failed_starts_no_run(
    leads: Path, tmp_path: Path, home: Path, capsys
) -> None:
    run = ["run", str(leads), "--output", str(tmp_path / "out"), "--batch-id", "done-1"]
    assert main(run) == 0
    capsys.readouterr()
    assert runs_in(home) == 1
    code = main(["redrive", "done-1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(
        "batch done-1: nothing to redrive: no chunk (or bucket) failed or was dead-lettered"
    )
    assert runs_in(home) == 1  # no redrive run


@pytest.mark.slow
@pytest.mark.parametrize("output", ["", "s3://", "s3:///x", "s3://b//x", "s3://b/./x"])
def test_an_output_that_names_no_place_is_refused(
    output: str, leads: Path, tmp_path: Path, home: Path, monkeypatch, capsys
) -> None:
    """``--output ''`` was the current folder, ``s3://`` the root of a bucket named like the
    batch id."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    err = refused(capsys, home, "run", str(leads), "--output", output, "--batch-id", "t15s")
    assert err.startswith(f"error: output {output!r} ")
    assert "s3://BUCKET/KEY" in err
    assert list(work.iterdir()) == []
    code = main(["run", str(leads), "--output", output, "--batch-id", "t15s", "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and json.loads(out.strip().splitlines()[-1])["status"] == "ERROR"


@pytest.mark.slow
def test_an_s3_output_climbing_into_another_bucket_is_refused(
    leads: Path, home: Path, s3_client, s3_bucket: str, capsys
) -> None:
    """``s3://hbucket/a/../../other`` is resolved by S3 to bucket ``other``: the run wrote (and
    pruned) there while its summary named the first bucket."""
    other = f"{s3_bucket}-other"
    s3_client.create_bucket(Bucket=other)
    try:
        output = f"s3://{s3_bucket}/a/../../{other}"
        err = refused(capsys, home, "run", str(leads), "--output", output, "--batch-id", "t15o")
        assert f"error: output {output!r} has an empty, '.' or '..' segment" in err
        assert s3_client.list_objects_v2(Bucket=other).get("KeyCount") == 0
        assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    finally:
        for item in s3_client.list_objects_v2(Bucket=other).get("Contents", []):
            s3_client.delete_object(Bucket=other, Key=item["Key"])
        s3_client.delete_bucket(Bucket=other)


@pytest.mark.slow
def test_a_queue_without_a_name_is_refused_before_processing(
    leads: Path, tmp_path: Path, home: Path, capsys
) -> None:
    """It processed every chunk, then failed in deliver."""
    output = tmp_path / "out"
    err = refused(capsys, home, "run", str(leads), "--deliver", "sqs://", "--output", str(output))
    assert "error: delivery target 'sqs://' has no valid queue name" in err
    assert not output.exists()


@pytest.mark.slow
def test_a_kafka_target_without_a_port_is_refused_before_processing(
    leads: Path, tmp_path: Path, home: Path, capsys
) -> None:
    output = tmp_path / "out"
    target = "kafka://broker/leads"
    err = refused(capsys, home, "run", str(leads), "--deliver", target, "--output", str(output))
    assert f"error: delivery target {target!r} is not kafka://HOST:PORT/TOPIC" in err
    assert not output.exists()


def test_a_worker_without_queues_is_refused_before_celery_starts(home: Path, capsys) -> None:
    message = refused(capsys, home, "worker", "--queues", " , ")
    assert "give at least one queue" in message
    message = refused(capsys, home, "worker", "--concurrency", "0")
    assert "concurrency of at least 1" in message
