"""Bad input at job level, one scenario each, through the CLI as a user runs it (in this process).

Each one ends either in a clear error that names the file (and the line or chunk where that is
known), refused before the run (exit code 2) when inspecting the source finds it, or in a
completed run whose bad records are rejected one by one with a reason and their
line, with records in = records out + records rejected. Never a bare traceback as the only
message. The last tests change the source under a running batch (deleted, replaced) and
force-complete the batch that this leaves failed.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import threading
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.cli import main
from batch_pipeline.core.ledger import DEAD_LETTERED, SUCCEEDED, open_ledger
from batch_pipeline_tests.fault_helpers import (
    FAULTS_MODULE,
    manifest_of,
    read_uri,
    run_cli,
    run_cli_quiet,
    valid_table,
    wait_for,
)
from batch_pipeline_tests.job_helpers import failed_run, initialize_config


def run(capsys: Any, source: Path | str, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    return run_cli(capsys, "run", str(source), "--output", str(tmp_path / "out"), *extra)


def assert_clear_failure(code: int, summary: dict[str, Any], out: str, *expected: str) -> None:
    """The run failed with a message naming what is expected, not a bare traceback."""
    assert code == 1, out
    assert summary["status"] == "FAILURE"
    for text in expected:
        assert text in summary["error"], summary["error"]
        assert text in out
    assert "Traceback" not in out
    assert "Error occurred while executing op" not in summary["error"]


def assert_refused(code: int, summary: dict[str, Any], out: str, *expected: str) -> None:
    """Refused before the run started (the CLI checks what initialize would): exit code 2, a
    message naming what is expected, no run."""
    assert code == 2, out
    assert summary["status"] == "ERROR" and summary["run_id"] is None
    for text in expected:
        assert text in summary["error"], summary["error"]
    assert "Traceback" not in out


def assert_conserved(summary: dict[str, Any], records_in: int, rejected: int) -> None:
    assert summary["status"] == "SUCCESS", summary
    assert summary["records_in"] == records_in
    assert summary["records_rejected"] == rejected
    assert summary["records_out"] + summary["records_rejected"] == summary["records_in"]


def rejected_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    manifest = manifest_of(None, summary)
    tables = [pq.read_table(io.BytesIO(read_uri(None, u))) for u in manifest["files"]["rejected"]]
    return pa.concat_tables(tables).to_pylist() if tables else []


# Truncated input -------------------------------------------------------------------------------


@pytest.mark.slow
def test_csv_cut_inside_a_quoted_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(f'{i},name {i},"note, with a comma {i}"\n' for i in range(50))
    source = tmp_path / "cut.csv"
    source.write_text("id,name,note\n" + rows + '50,name 50,"the upload stopped her')
    code, summary, out = run(capsys, source, tmp_path, "--chunk-records", "20")
    assert_clear_failure(
        code, summary, out, str(source), "line 52", "never closed", "the file is truncated"
    )


@pytest.mark.slow
@pytest.mark.parametrize("eol", ["\r", "\n"], ids=["cr", "lf"])
def test_no_scan_cut_inside_a_quoted_line_break_fails_loudly(
    eol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planned without a scan, a chunk can end at a line break inside a quoted field
    (documented as unsupported); the run used to report SUCCESS with broken records. Now the
    reader sees the chunk end inside quotes and fails it, naming the chunk and the fix; the
    same file planned with a scan keeps every record exactly."""
    value = 'x""\r\n""y'
    rows = [f'{i},"{value}"' for i in range(2000)]
    source = tmp_path / f"quoted-{len(eol)}.csv"
    source.write_bytes(eol.join(["id,text", *rows, ""]).encode())
    code, summary, out = run(
        capsys, source, tmp_path, "--no-scan", "--chunk-bytes", "5000", "--batch-id", "noscan"
    )
    assert_clear_failure(
        code, summary, out, "cut inside a quoted field", "plan with scan: true", "chunk"
    )
    code, summary, out = run(
        capsys, source, tmp_path, "--chunk-bytes", "5000", "--batch-id", "scanned"
    )
    assert code == 0, out
    assert_conserved(summary, 2000, 0)
    table = valid_table(None, manifest_of(None, summary))
    assert table.column("id").to_pylist() == [str(i) for i in range(2000)]
    assert set(table.column("text").to_pylist()) == {'x"\r\n"y'}


@pytest.mark.slow
@pytest.mark.parametrize("size", ["small", "large"])
def test_truncated_gzip(size: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Small: the cut shows while the source is inspected. Large (the first MiB decompresses):
    it shows while the file is staged for planning."""
    records = 300 if size == "small" else 150_000
    text = "id,name\n" + "".join(f"{i},name {i * 7919 % 104_729}\n" for i in range(records))
    data = gzip.compress(text.encode())
    source = tmp_path / f"cut-{size}.csv.gz"
    source.write_bytes(data[: len(data) // 2])
    code, summary, out = run(capsys, source, tmp_path)
    check = assert_refused if size == "small" else assert_clear_failure
    check(code, summary, out, str(source), "runcated")


# Wrong layout ----------------------------------------------------------------------------------


def test_wrong_delimiter_in_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "semicolons.csv"
    source.write_text("id;name;email\n" + "".join(f"{i};n{i};a{i}@x.org\n" for i in range(30)))
    code, summary, out = run(capsys, source, tmp_path)
    assert_refused(code, summary, out, str(source), "set csv.delimiter to ';'")


@pytest.mark.slow
def test_wrong_delimiter_in_some_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"{i},n{i},a{i}@x.org\n" if i not in (12, 33) else f"{i};n{i};a{i}@x.org\n"
             for i in range(40)]  # fmt: skip
    source = tmp_path / "mixed.csv"
    source.write_text("id,name,email\n" + "".join(lines))
    code, summary, out = run(capsys, source, tmp_path, "--chunk-records", "10")
    assert code == 0, out
    assert_conserved(summary, 40, 2)
    rejects = rejected_rows(summary)
    assert [(r["_chunk"], r["_line"], r["_reason"]) for r in rejects] == [
        (1, 14, "expected 3 fields, got 1"),
        (3, 35, "expected 3 fields, got 1"),
    ]
    assert rejects[0]["_raw"] == "12;n12;a12@x.org"


def test_missing_required_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "leads.csv"
    source.write_text("id,name\n1,a\n2,b\n")
    schema = {"columns": {"email": {"type": "string", "required": True}}}
    code, summary, out = run(
        capsys, source, tmp_path, "--processor", "validate",
        "--processor-options", json.dumps(schema),
    )  # fmt: skip
    assert_refused(code, summary, out, str(source), "required column 'email' is missing")


# Bad records -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_invalid_utf8_rejects_only_its_records(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = []
    for i in range(30):
        name = b"caf\xe9 \xff" if i in (4, 21) else f"name {i}".encode()  # Latin-1, not UTF-8
        if fmt == "csv":
            lines.append(b"%d,%s\n" % (i, name))
        else:
            lines.append(b'{"id": %d, "name": "%s"}\n' % (i, name))
    source = tmp_path / f"latin1.{fmt}"
    source.write_bytes((b"id,name\n" if fmt == "csv" else b"") + b"".join(lines))
    code, summary, out = run(capsys, source, tmp_path, "--chunk-records", "10")
    assert code == 0, out
    assert_conserved(summary, 30, 2)
    rejects = rejected_rows(summary)
    header = 1 if fmt == "csv" else 0
    assert [(r["_chunk"], r["_line"]) for r in rejects] == [(0, 5 + header), (2, 22 + header)]
    assert all("UTF-8" in r["_reason"] for r in rejects), rejects
    assert "caf\\xe9" in rejects[0]["_raw"]
    ids = [int(i) for i in valid_table(None, manifest_of(None, summary)).column("id").to_pylist()]
    assert ids == [i for i in range(30) if i not in (4, 21)]


@pytest.mark.slow
def test_malformed_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(
        '{"id": 1, "kind": "a"}\n'
        '{"id": 2, "kind": \n'
        '{"id": 3, "kind": "c"}\n'
        "[3, 4]\n"
        '{"id": 5, "kind": "e"}\n'
        "not json at all\n"
    )
    code, summary, out = run(capsys, source, tmp_path)
    assert code == 0, out
    assert_conserved(summary, 6, 3)
    rejects = rejected_rows(summary)
    assert [r["_line"] for r in rejects] == [2, 4, 6]
    assert all(r["_reason"].startswith("malformed JSON line") for r in rejects), rejects
    assert "not an object" in rejects[1]["_reason"]
    assert [r["_raw"] for r in rejects] == ['{"id": 2, "kind": ', "[3, 4]", "not json at all"]


# No records ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl"])
def test_empty_file(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / name
    source.write_bytes(b"")
    code, summary, out = run(capsys, source, tmp_path)
    assert_refused(code, summary, out, f"{source} is empty (0 bytes)")


@pytest.mark.slow
def test_header_only_csv_completes_with_zero_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "header.csv"
    source.write_text("id,name,email\n")
    code, summary, out = run(capsys, source, tmp_path)
    assert code == 0, out
    assert_conserved(summary, 0, 0)
    assert summary["chunks"] == 1 and summary["delivered_messages"] == 0


def workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


@pytest.mark.slow
def test_empty_excel_sheets_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = [["id", "name"]] + [[i, f"name {i}"] for i in range(12)]
    source = workbook(
        tmp_path / "book.xlsx", {"Empty": [], "Data": data, "Header only": [["id", "name"]]}
    )
    code, summary, out = run(capsys, source, tmp_path, "--chunk-records", "5")
    assert code == 0, out
    assert_conserved(summary, 12, 0)
    valid = valid_table(None, manifest_of(None, summary))
    assert set(valid.column("_worksheet").to_pylist()) == {"Data"}
    assert valid.column("id").to_pylist() == list(range(12))
    plan = manifest_of(None, summary)["plan"]
    assert "empty sheets skipped: Empty, Header only" in plan["reason"]


@pytest.mark.slow
def test_excel_with_only_empty_sheets_completes_with_zero_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = workbook(tmp_path / "blank.xlsx", {"Sheet1": [], "Sheet2": []})
    code, summary, out = run(capsys, source, tmp_path)
    assert code == 0, out
    assert_conserved(summary, 0, 0)


# Very long record ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_single_100_mb_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One JSON line of 100 MiB between two small ones: read and written whole; delivering it
    fails clearly (no message can hold it) and sends nothing. Written in pieces, never held
    as one Python string by the test."""
    source = tmp_path / "big.jsonl"
    piece = "x" * (1 << 20)
    with open(source, "w") as f:
        f.write('{"id": 0, "blob": "small"}\n{"id": 1, "blob": "')
        for _ in range(100):
            f.write(piece)
        f.write('"}\n{"id": 2, "blob": "small"}\n')
    code, summary, out = run(capsys, source, tmp_path, "--deliver", "none", "--batch-id", "big")
    assert code == 0, out
    assert_conserved(summary, 3, 0)
    manifest = manifest_of(None, summary)
    [valid_file] = manifest["files"]["valid"]
    lengths = pq.read_table(valid_file).column("blob").to_pylist()
    assert [len(v) for v in lengths] == [5, 100 << 20, 5]
    del lengths

    code, summary, out = run(capsys, source, tmp_path, "--batch-id", "big-delivered")
    assert_clear_failure(
        code, summary, out, "chunk 0", "record 1 is 104857", "bytes of JSON", "nothing was sent"
    )
    assert summary["batch_status"] == "succeeded"  # the results are kept; delivery failed
    outbox = tmp_path / "out" / "big-delivered" / "outbox"
    assert not outbox.exists() or not any(outbox.iterdir())


# The source changes under a running batch ------------------------------------------------------


def pause_options(tmp_path: Path) -> dict[str, str]:
    return {
        "column": "id",
        "value": "0",
        "ready": str(tmp_path / "chunk-0-running"),
        "go": str(tmp_path / "source-changed"),
    }


def run_while(change: Any, tmp_path: Path, source: str, batch_id: str) -> dict[str, Any]:
    """Run a 4-chunk batch whose first chunk pauses (``fault_pause``) after it has read
    its slice; meanwhile ``change()`` alters the source, after planning and before the other
    chunks are read. Returns the JSON summary."""
    options = pause_options(tmp_path)
    args = [
        "run", source, "--output", str(tmp_path / "out"), "--batch-id", batch_id,
        "--processor-module", FAULTS_MODULE, "--processor", "fault_pause",
        "--processor-options", json.dumps(options), "--chunk-records", "25",
        "--deliver", "none", "--json",
    ]  # fmt: skip
    codes: list[int] = []
    output = io.StringIO()

    def target() -> None:
        with contextlib.redirect_stdout(output):
            codes.append(main(args))

    runner = threading.Thread(target=target)
    runner.start()
    try:
        wait_for(lambda: Path(options["ready"]).exists(), "chunk 0 to start", limit=60)
        change()
    finally:
        Path(options["go"]).write_text("go")
        runner.join(timeout=120)
    assert not runner.is_alive()
    summary = json.loads(output.getvalue().strip().splitlines()[-1])
    summary["exit_code"] = codes[0]
    return summary


def rows_csv(records: int, label: str = "name") -> bytes:
    return ("id,name\n" + "".join(f"{i},{label} {i:04d}\n" for i in range(records))).encode()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.services)])
def test_source_deleted_between_planning_and_processing(
    where: str,
    tmp_path: Path,
    own_ledger: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if where == "s3":
        s3_client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("s3_bucket")
        s3_client.put_object(Bucket=bucket, Key="in/rows.csv", Body=rows_csv(100))
        source = f"s3://{bucket}/in/rows.csv"

        def delete() -> None:
            s3_client.delete_object(Bucket=bucket, Key="in/rows.csv")
    else:
        path = tmp_path / "rows.csv"
        path.write_bytes(rows_csv(100))
        source = str(path)

        def delete() -> None:
            path.unlink()

    summary = run_while(delete, tmp_path, source, "deleted")
    assert summary["exit_code"] == 1 and summary["status"] == "FAILURE"
    assert "3 of 4 chunk(s) failed" in summary["error"]
    assert "dead letters under" in summary["error"]
    # What chunk 0 processed is kept and listed.
    assert summary["records_in"] == summary["records_out"] == 25
    manifest = json.loads((tmp_path / "out" / "deleted" / "manifest.json").read_text())
    [kept] = manifest["results"]["succeeded"]
    assert kept["chunk"] == 0 and Path(kept["valid"]).exists()
    failed = manifest["results"]["failed"]
    assert [f["chunk"] for f in failed] == [1, 2, 3]
    for entry in failed:
        assert entry["category"] == "missing_object" and entry["attempts"] == 1, entry
        assert source.removeprefix("s3://") in entry["error"], entry["error"]
        letter = json.loads(Path(entry["dead_letter"]).read_text())
        assert letter["slice"] in entry["error"]  # names the chunk and its byte range

    # The batch cannot be redone (its source is gone): an operator closes it, with a reason.
    ledger = open_ledger(own_ledger)
    code = run_cli_quiet("complete", "deleted", "--reason", "source withdrawn by the customer")
    assert code == 2
    batch = ledger.batch("deleted")
    assert batch is not None and batch.status == "failed"
    code = run_cli_quiet(
        "complete", "deleted", "--force", "--reason", "source withdrawn by the customer"
    )
    assert code == 0
    batch = ledger.batch("deleted")
    assert batch is not None
    assert batch.status == "completed_forced"
    assert batch.reason == "source withdrawn by the customer"
    states = ledger.chunk_states("deleted")
    assert [s.status for s in states] == [SUCCEEDED] + [DEAD_LETTERED] * 3  # left as they were
    assert run_cli_quiet("complete", "no-such-batch", "--force", "--reason", "x") == 2
    capsys.readouterr()


@pytest.mark.slow
def test_source_replaced_between_planning_and_processing(
    tmp_path: Path, s3_client: Any, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/rows.csv", Body=rows_csv(100))
    source = f"s3://{s3_bucket}/in/rows.csv"

    def replace() -> None:  # same size, other content: a re-upload of an edited file
        s3_client.put_object(Bucket=s3_bucket, Key="in/rows.csv", Body=rows_csv(100, "NAME"))

    summary = run_while(replace, tmp_path, source, "replaced")
    names: set[str] = set()
    if summary["manifest"]:
        valid = valid_table(s3_client, manifest_of(s3_client, summary))
        names = {name.split()[0] for name in valid.column("name").to_pylist()}
    assert names != {"name", "NAME"}, "the batch mixes two versions of its source"
    assert summary["status"] == "FAILURE"
    assert "changed" in summary["error"]


# Permanent errors of the machine -------------------------------------------------------------


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def retries_of(home: Path, run_id: str) -> list[str]:
    """The steps a run retried (STEP_UP_FOR_RETRY events), from the run's instance."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY
        ).records
    return [r.event_log_entry.step_key or "" for r in records]


@pytest.mark.slow
def test_an_output_folder_whose_name_is_too_long_fails_at_once_with_the_os_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dagster_home: Path
) -> None:
    source = tmp_path / "rows.csv"
    source.write_bytes(rows_csv(20))
    output = tmp_path / ("o" * 300)

    code, summary, out = run_cli(capsys, "run", str(source), "--output", str(output))

    assert_clear_failure(code, summary, out, "File name too long", "[errno 36]")
    assert "Exceeded max_retries" not in summary["error"]
    assert retries_of(dagster_home, summary["run_id"]) == []


@pytest.mark.slow
def test_a_ledger_overwritten_with_garbage_is_refused_before_a_run_and_fails_a_run_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], own_ledger: str, dagster_home: Path
) -> None:
    """The CLI opens the ledger before Dagster starts: a damaged one is one message and exit 2.
    A run that meets it anyway (launched from the UI, or damaged after the check) fails at the
    first step that opens it, with the database's own error, never retried."""
    from dagster import DagsterInstance

    from batch_pipeline.definitions import get_batch_job

    source = tmp_path / "rows.csv"
    source.write_bytes(rows_csv(20))
    (tmp_path / "ledger.db").write_bytes(b"garbage, not a database " * 500)

    code, summary, out = run(capsys, source, tmp_path)

    assert_refused(code, summary, out, "file is not a database", "Restore it from a backup")
    assert summary["error"].count("file is not a database") == 1

    config = {"source": str(source), "output": str(tmp_path / "out")}
    with DagsterInstance.get() as instance:
        run_id, failures = failed_run(instance, get_batch_job, initialize_config(config))
    assert len(failures) == 1
    message = failures[0].step_failure_data.error.message
    assert "file is not a database" in message and "Exceeded max_retries" not in message
    assert retries_of(dagster_home, run_id) == []
