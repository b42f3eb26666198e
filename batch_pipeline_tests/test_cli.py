"""``batch-pipeline``: the entry point as a user runs it, on local files and on S3."""

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batch_pipeline.cli import main
from batch_pipeline.core.inputs.sample_data import generate_leads

RECORDS = 600


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def run_cli(capsys, *args: str) -> tuple[int, dict]:
    code = main(["run", *args, "--json"])
    return code, last_json(capsys.readouterr().out)


@pytest.fixture(scope="module")
def leads() -> pa.Table:
    return generate_leads(RECORDS, invalid_fraction=0.0, seed=3)


def encode(table: pa.Table, fmt: str) -> bytes:
    """The table as a file of each format the pipeline reads."""
    if fmt in ("csv", "csv.gz"):
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        data = buffer.getvalue()
    elif fmt in ("jsonl", "jsonl.gz"):
        data = "".join(json.dumps(r) + "\n" for r in table.to_pylist()).encode()
    elif fmt == "json":
        data = json.dumps(table.to_pylist()).encode()
    elif fmt == "parquet":
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=50)
        data = buffer.getvalue()
    else:
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.title = "Leads"
        rows = table.to_pylist()
        half = len(rows) // 2
        sheet.append(table.column_names)
        for row in rows[:half]:
            sheet.append(list(row.values()))
        workbook.create_sheet("Empty")
        more = workbook.create_sheet("More")
        more.append(table.column_names)
        for row in rows[half:]:
            more.append(list(row.values()))
        buffer = io.BytesIO()
        workbook.save(buffer)
        data = buffer.getvalue()
    return gzip.compress(data) if fmt.endswith(".gz") else data


FORMATS = ["csv", "csv.gz", "jsonl", "jsonl.gz", "json", "parquet", "xlsx"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_run_on_s3_in_every_format(fmt, leads, s3_client, s3_bucket, capsys):
    key = f"incoming/leads.{fmt}"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=encode(leads, fmt))
    code, summary = run_cli(
        capsys,
        f"s3://{s3_bucket}/{key}",
        "--chunk-records", "100",
        "--output", f"s3://{s3_bucket}/out",
        "--deliver", "none",
    )  # fmt: skip
    assert code == 0, summary
    assert summary["status"] == "SUCCESS"
    assert summary["records_in"] == summary["records_out"] == RECORDS
    assert summary["records_rejected"] == 0
    assert summary["chunks"] >= 3
    manifest_key = summary["manifest"].removeprefix(f"s3://{s3_bucket}/")
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=manifest_key)["Body"].read())
    ids = []
    for uri in manifest["files"]["valid"]:
        body = s3_client.get_object(Bucket=s3_bucket, Key=uri.removeprefix(f"s3://{s3_bucket}/"))
        ids += [
            str(v) for v in pq.read_table(io.BytesIO(body["Body"].read()))["lead_id"].to_pylist()
        ]
    assert ids == leads.column("lead_id").to_pylist()
    if fmt == "xlsx":
        valid = pq.read_table(
            io.BytesIO(
                s3_client.get_object(
                    Bucket=s3_bucket,
                    Key=manifest["files"]["valid"][-1].removeprefix(f"s3://{s3_bucket}/"),
                )["Body"].read()
            )
        )
        assert set(valid.column("_worksheet").to_pylist()) == {"More"}


@pytest.mark.slow
def test_run_prints_a_summary_and_one_json_line(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("id;name\n1;a\n2;b\n3;c\n")
    code, summary = run_cli(
        capsys, str(source), "--delimiter", ";", "--output", str(tmp_path / "out"),
        "--batch-id", "b-1", "--customer-id", "c-9",
    )  # fmt: skip
    assert code == 0
    for key in ("batch_id", "run_id", "status", "records_in", "records_out",
                "records_rejected", "chunks", "manifest"):  # fmt: skip
        assert key in summary
    assert summary["batch_id"] == "b-1"
    assert summary["records_out"] == 3
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["ids"]["customer_id"] == "c-9"
    assert manifest["run_id"] == summary["run_id"]


class RecordingBar:
    """Stands in for the tqdm bar: records what the watcher told it."""

    made: list["RecordingBar"] = []

    def __init__(self) -> None:
        self.total = 0
        self.n = 0
        self.closed = False
        RecordingBar.made.append(self)

    def refresh(self) -> None:
        pass

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


@pytest.mark.slow
def test_progress_bar_follows_the_chunks_to_the_end(tmp_path, capsys, monkeypatch):
    from batch_pipeline.cli.terminal import RunProgress

    monkeypatch.setattr(RunProgress, "make_bar", staticmethod(lambda **_: RecordingBar()))
    RecordingBar.made.clear()
    source = tmp_path / "rows.csv"
    source.write_text("n\n" + "".join(f"{i}\n" for i in range(60)))
    code, summary = run_cli(
        capsys, str(source), "--chunk-records", "10", "--output", str(tmp_path / "out")
    )
    assert code == 0
    [bar] = RecordingBar.made
    assert bar.total == bar.n == summary["chunks"] == 6
    assert bar.closed


def test_run_failure_exits_non_zero_with_the_reason(tmp_path, capsys):
    code, summary = run_cli(capsys, str(tmp_path / "missing.csv"))
    assert code == 2  # refused before the run: the file is not there
    assert summary["status"] == "ERROR"
    assert "missing.csv does not exist" in summary["error"]


def test_sample_writes_data_and_schema(tmp_path, capsys):
    assert main(["sample", str(tmp_path), "--records", "1234"]) == 0
    table = pacsv.read_csv(
        tmp_path / "leads.csv", parse_options=pacsv.ParseOptions(newlines_in_values=True)
    )
    assert table.num_rows == 1234
    schema = json.loads((tmp_path / "leads_schema.json").read_text())
    assert "email" in schema["columns"]


@pytest.mark.slow
def test_installed_command_runs_200_chunks_on_a_sqlite_instance(tmp_path):
    """The real entry point in a subprocess, on a DAGSTER_HOME instance (SQLite), with the
    default executor: 200 mapped steps, none failed, and the run is in the instance."""
    source = tmp_path / "rows.csv"
    source.write_text("n,label\n" + "".join(f"{i},r{i}\n" for i in range(2_000)))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    script = Path(sys.executable).parent / "batch-pipeline"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    done = subprocess.run(
        [str(script), "run", str(source), "--chunk-records", "10", "--max-chunks", "200",
         "--output", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = last_json(done.stdout)
    assert summary["chunks"] == 200
    assert summary["records_out"] == 2_000

    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(summary["run_id"])
        assert run.status == DagsterRunStatus.SUCCESS
        failures = instance.get_records_for_run(
            summary["run_id"], of_type=DagsterEventType.STEP_FAILURE
        ).records
        assert failures == []
        successes = instance.get_records_for_run(
            summary["run_id"], of_type=DagsterEventType.STEP_SUCCESS, limit=1000
        ).records
        chunk_steps = [
            r for r in successes if r.event_log_entry.step_key.startswith("process_chunk[")
        ]
        assert len(chunk_steps) == 200


@pytest.mark.slow
def test_multiprocess_executor_option_runs_steps_in_subprocesses(tmp_path, capsys):
    source = tmp_path / "rows.csv"
    source.write_text("n\n" + "".join(f"{i}\n" for i in range(30)))
    code, summary = run_cli(
        capsys, str(source), "--chunk-records", "10", "--output", str(tmp_path / "out"),
        "--executor", "multiprocess", "--max-concurrent", "2",
    )  # fmt: skip
    assert code == 0, summary
    assert summary["chunks"] == 3 and summary["records_out"] == 30


@pytest.mark.slow
def test_a_refused_run_prints_no_figures_of_the_run_before(tmp_path, capsys):
    """The second run of a batch, while another run holds the batch's lease, is refused while
    planning: its summary shows no totals and no batch status, though the first run's manifest
    is still there."""
    source = tmp_path / "rows.csv"
    source.write_text("n\n" + "".join(f"{i}\n" for i in range(30)))
    args = [str(source), "--output", str(tmp_path / "out"), "--batch-id", "twice"]
    code, first = run_cli(capsys, *args, "--chunk-records", "10")
    assert code == 0 and first["records_in"] == 30
    assert Path(first["manifest"]).exists()

    from batch_pipeline.core.ledger import open_ledger
    from batch_pipeline.settings import default_ledger_url

    open_ledger(default_ledger_url()).acquire_lease("twice", "another-run", ttl=600)
    code = main(["run", *args, "--chunk-records", "10", "--json"])
    out = capsys.readouterr().out
    second = last_json(out)
    assert code == 1
    assert second["status"] == "FAILURE" and "plan_chunks" in second["error"]
    assert second["batch_status"] is None
    for key in ("records_in", "records_out", "records_rejected", "chunks", "manifest"):
        assert second[key] is None, key
    assert second["failed_chunks"] == [] and second["rejection_reasons"] == {}
    text = out.splitlines()
    assert text[0].startswith("batch twice: FAILURE in ")  # not "FAILURE (succeeded)"
    assert not any("records:" in line or "manifest:" in line for line in text[:-1])


@pytest.mark.slow
def test_a_deleted_results_folder_gets_its_outbox_back(tmp_path, capsys):
    """A tester's case: the batch's folder deleted after a run, then the same run again (and
    with --force) said SUCCESS, "delivered 0 message(s)", and left no outbox."""
    import shutil

    source = tmp_path / "v.jsonl"
    source.write_text("".join(json.dumps({"id": i, "v": "x"}) + "\n" for i in range(30)))
    args = [str(source), "--output", str(tmp_path / "out19"), "--batch-id", "t19"]
    args += ["--chunk-records", "10"]
    code, first = run_cli(capsys, *args)
    assert code == 0 and first["delivered_messages"] == 3
    outbox = tmp_path / "out19" / "t19" / "outbox"
    written = {p.name: p.read_bytes() for p in outbox.iterdir()}
    for extra in ([], ["--force"]):
        shutil.rmtree(tmp_path / "out19" / "t19")
        code, again = run_cli(capsys, *args, *extra)
        assert code == 0 and again["delivered_messages"] == 3, extra
        assert {p.name: p.read_bytes() for p in outbox.iterdir()} == written
