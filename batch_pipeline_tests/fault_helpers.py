"""Shared pieces of the fault tests: inputs with known records, the CLI as a user runs it (in
this process or as a subprocess that can be killed), and readers for what a run left behind
(manifests, valid files, queue messages)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.cli import main
from batch_pipeline_tests.conftest import drain_queue

FAULTS_MODULE = "batch_pipeline_tests.fault_processors"
REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "batch-pipeline")


def csv_input(records: int, malformed: tuple[int, ...] = ()) -> tuple[bytes, list[str]]:
    """A CSV of ``records`` records ``id,name,amount`` (ids 0..records-1); the records at the
    indices in ``malformed`` have an extra field, so the reader rejects them. Returns the bytes
    and the ids of the valid records, in order."""
    lines = ["id,name,amount\n"]
    valid: list[str] = []
    for i in range(records):
        if i in malformed:
            lines.append(f"{i},name {i},{i % 97}.5,extra\n")
        else:
            lines.append(f"{i},name {i},{i % 97}.5\n")
            valid.append(str(i))
    return "".join(lines).encode(), valid


def run_cli(capsys: Any, *args: str) -> tuple[int, dict[str, Any], str]:
    """``batch-pipeline ARGS --json`` in this process: exit code, JSON summary, stdout."""
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1]), out


def run_cli_quiet(*args: str) -> int:
    """``batch-pipeline ARGS`` in this process, its stdout discarded (background threads)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return main(list(args))


# A killed run's lease on its batch lasts until it expires (core.ledger.lease): short in the kill
# tests, so that the run again need not wait a minute.
SHORT_LEASE = {
    "BATCH_PIPELINE_LEASE_TTL_SECONDS": "3",
    "BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS": "0.5",
}


def wait_for_lease_to_expire(ledger: Any, batch_id: str) -> None:
    """Until the batch's lease (of a killed run) has expired, so that another run may take it."""
    lease = ledger.lease(batch_id)
    if lease is not None:
        wait_for(lambda: time.time() > lease.expires_at, f"the lease of {batch_id} to expire")


def cli_env(tmp_path: Path, endpoint: str, ledger_url: str) -> dict[str, str]:
    """The environment of a ``batch-pipeline`` subprocess: the test's AWS endpoint and ledger,
    a Dagster instance of its own (SQLite, no telemetry), and the fault processors importable."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "BATCH_PIPELINE_LEDGER_URL": ledger_url,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": python_path,
    }


@contextlib.contextmanager
def cli_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``batch-pipeline ARGS`` as a subprocess (stdout and stderr to ``log``); killed by its PID
    on the way out if it is still running."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [CLI, *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield process
    finally:
        kill(process)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL by PID (nothing else), then reap it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(
    condition: Callable[[], bool],
    what: str,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
    limit: float = 120.0,
) -> None:
    """Poll ``condition`` until it holds. Fails (with the subprocess's output) when the process
    ends first or nothing happens for ``limit`` seconds: a hang guard, not a timing check."""
    deadline = time.monotonic() + limit
    while not condition():
        if process is not None and process.poll() is not None:
            output = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(
                f"the run ended (exit {process.returncode}) before {what}\n{output}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def read_uri(s3_client: Any, uri: str) -> bytes:
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def manifest_of(s3_client: Any, summary: dict[str, Any]) -> dict[str, Any]:
    return json.loads(read_uri(s3_client, summary["manifest"]))


def valid_table(s3_client: Any, manifest: dict[str, Any]) -> pa.Table:
    """The batch's valid records: its manifest's ``files.valid``, read in order."""
    tables = [pq.read_table(io.BytesIO(read_uri(s3_client, u))) for u in manifest["files"]["valid"]]
    return pa.concat_tables(tables)


def drain_messages(sqs_client: Any, queue_url: str) -> list[dict[str, Any]]:
    return [json.loads(body) for body in drain_queue(sqs_client, queue_url)]


def assert_each_once(messages: list[dict[str, Any]], expected_ids: list[str]) -> None:
    """The messages carry every expected record exactly once, and nothing else; message
    numbers are unique."""
    ids = [str(record["id"]) for m in messages for record in m["batch_data"]]
    counts = Counter(ids)
    duplicated = sorted((i for i, n in counts.items() if n > 1), key=int)
    missing = sorted(set(expected_ids) - set(counts), key=int)
    unexpected = sorted(set(counts) - set(expected_ids), key=int)
    assert not duplicated, f"records delivered more than once: {duplicated[:20]}"
    assert not missing, f"records never delivered: {missing[:20]}"
    assert not unexpected, f"records that are not valid records: {unexpected[:20]}"
    numbers = [m["batch_number"] for m in messages]
    assert len(numbers) == len(set(numbers)), "a message number was sent twice"
