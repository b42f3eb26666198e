"""The production instance (``deploy/dagster.yaml``) on a fresh Postgres database of its own:
it loads; ``dagster-webserver`` and ``dagster-daemon run`` on it take a ``batch_job`` run
through the queue to success with its compute logs on S3 (the moto server); a run whose process
is killed with SIGKILL is failed, and retried automatically, resuming through the ledger.

The servers are subprocesses in their own process groups, stopped by PID at the end
(``ui_harness.stop_processes``). Postgres is the local server at 127.0.0.1:5432 (trust auth);
the tests skip when it cannot be reached."""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from batch_pipeline_tests import ui_harness as h
from batch_pipeline_tests.core.ledger.test_ledger import PG_HOST, PG_PORT, PG_USER, _pg_admin

pytestmark = [pytest.mark.services, pytest.mark.slow]

DEPLOY_YAML = h.REPO / "deploy" / "dagster.yaml"
LOG_PREFIX = "compute-logs"
MONITORING_POLL_SECONDS = 2


@pytest.fixture(scope="module")
def dagster_db() -> Iterator[str]:
    """A database of this module's own for Dagster's storage, dropped afterwards."""
    admin = _pg_admin()
    name = f"test_dagster_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def log_bucket(moto_server: str) -> str:
    import boto3

    name = f"test-logs-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def dirs() -> Iterator[dict[str, Path]]:
    root = h.temp_dir("batch-prod-")
    found = {name: root / name for name in ("home", "work", "input", "output")}
    for path in found.values():
        path.mkdir()
    found["root"] = root
    # The servers' copy polls run monitoring every 2 s instead of every minute.
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    config["run_monitoring"]["poll_interval_seconds"] = MONITORING_POLL_SECONDS
    (found["home"] / "dagster.yaml").write_text(yaml.safe_dump(config))
    yield found
    h.remove_dir(root)


def instance_env(db: str, bucket: str, endpoint: str, root: Path) -> dict[str, str]:
    """What deploy/dagster.yaml reads, for this test's database and bucket."""
    return {
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_USER": PG_USER,
        "DAGSTER_PG_PASSWORD": "",  # trust auth on the local server
        "DAGSTER_PG_DB": db,
        "DAGSTER_COMPUTE_LOGS_BUCKET": bucket,
        "DAGSTER_COMPUTE_LOGS_PREFIX": LOG_PREFIX,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
    }


@pytest.fixture(scope="module")
def env(dagster_db: str, log_bucket: str, moto_server: str, dirs: dict[str, Path]) -> dict:
    return {
        **instance_env(dagster_db, log_bucket, moto_server, dirs["root"]),
        "DAGSTER_HOME": str(dirs["home"]),
        "BATCH_PIPELINE_LEDGER_URL": f"sqlite:///{dirs['root'] / 'ledger.db'}",
        "BATCH_PIPELINE_WATCH_URI": str(dirs["root"] / "inbox"),
    }


@pytest.fixture(name="instance")
def env_instance(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This test process's view of the servers' instance (their database)."""
    from dagster import DagsterInstance

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.get() as opened:
        yield opened


@pytest.fixture
def deployed_instance(
    instance: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """deploy/dagster.yaml exactly as it is in the repository, on the same database."""
    from dagster import DagsterInstance

    shutil.copy(DEPLOY_YAML, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as opened:
        yield opened


@pytest.fixture(scope="module")
def servers(env: dict[str, str], dirs: dict[str, Path]) -> Iterator[h.DagsterUI]:
    """dagster-webserver and dagster-daemon on the production instance; stopped by PID."""
    server_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "BATCH_PIPELINE_", "AWS_", "PYTEST_"))
    }
    server_env.update(env)
    server_env.update(
        {"DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(h.REPO)}
    )
    ui = h.DagsterUI(
        workspace=h.REPO / "workspace.yaml",
        env=server_env,
        logs=dirs["root"] / "logs",
        cwd=dirs["work"],
    )
    try:
        ui.start()
        yield ui
    finally:
        ui.stop()


def submit(servers: h.DagsterUI, config: dict[str, Any], batch_id: str, **tags: str) -> str:
    """A batch_job run submitted through the GraphQL API (queued by the instance)."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=servers.port, timeout=60)
    return client.submit_job_execution(
        "batch_job",
        run_config={"ops": {"initialize": {"config": {**config, "batch_id": batch_id}}}},
        tags={"batch_pipeline/batch_id": batch_id, **tags},
    )


def sample(dirs: dict[str, Path], records: int) -> str:
    from batch_pipeline.core.inputs.sample_data import write_sample

    folder = dirs["input"] / uuid.uuid4().hex[:8]
    folder.mkdir()
    csv_path, _ = write_sample(str(folder), records, invalid_fraction=0.0)
    return csv_path


def manifest_of(output: Path, batch_id: str) -> dict[str, Any]:
    return json.loads((output / batch_id / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------


def wait_for_chunks(servers: Any, ledger: Any, batch_id: str, done: int) -> None:
    """Until ``done`` chunks of the batch succeeded (the servers checked alive meanwhile)."""

    def enough() -> bool:
        servers.check_alive()
        progress = ledger.progress(batch_id)
        return progress.total > 0 and progress.succeeded >= done

    h.wait_until(enough, 180, f"{done} chunks done", 0.5, servers.diagnostics)


def test_production_yaml_loads_on_postgres_with_queue_monitoring_retries_and_s3_logs(
    deployed_instance: Any,
):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresRunStorage

    instance = deployed_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert instance.run_storage.postgres_url.startswith("postgresql+psycopg2://postgres@")
    assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    assert queue.max_concurrent_runs == 2
    assert {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits} == {
        "batch_pipeline/batch_id": 1,
        "batch_pipeline/trigger": 1,
    }
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_max_resume_run_attempts == 0
    assert instance.run_monitoring_max_runtime_seconds == 14400
    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure


def test_batch_job_goes_through_the_queue_to_success_with_logs_on_s3(
    servers: h.DagsterUI, dirs: dict[str, Path], instance: Any, log_bucket: str, moto_server: str
):
    import boto3
    from dagster import DagsterEventType

    records = 2_000
    source = sample(dirs, records)
    run_id = submit(
        servers,
        {"source": source, "chunking": {"chunk_records": 500}, "output": str(dirs["output"])},
        "prod-queue",
    )
    run = servers.wait_for_run(run_id, timeout=240)
    assert run["status"] == "SUCCESS", servers.diagnostics()

    kinds = [e.dagster_event_type for e in instance.all_logs(run_id) if e.is_dagster_event]
    assert kinds.index(DagsterEventType.RUN_ENQUEUED) < kinds.index(DagsterEventType.RUN_STARTING)
    totals = manifest_of(dirs["output"], "prod-queue")["totals"]
    assert totals["records_in"] == totals["records_out"] == records
    assert totals["chunks"] == totals["chunks_succeeded"] == 4

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=log_bucket, Prefix=f"{LOG_PREFIX}/")
    keys = [obj["Key"] for obj in listed.get("Contents", [])]
    assert any(run_id in key for key in keys), f"no compute logs of the run on S3: {keys}"


def _worker_pid(instance: Any, run_id: str) -> int | None:
    for entry in instance.all_logs(run_id):
        message = entry.message or ""
        if "Started process for run (pid: " in message:
            return int(message.split("(pid: ")[1].split(")")[0])
    return None


def test_a_killed_run_is_failed_then_retried_and_resumes_through_the_ledger(
    servers: h.DagsterUI, dirs: dict[str, Path], instance: Any, env: dict[str, str]
):
    from batch_pipeline.core.ledger import open_ledger

    records, batch_id = 2_000, "prod-killed"
    source = sample(dirs, records)
    config = {
        "source": source,
        "processor": "fault_slow",
        "processor_options": {"seconds": 1.0},
        "processor_modules": ["batch_pipeline_tests.fault_processors"],
        "chunking": {"chunk_records": 125},
        "output": str(dirs["output"]),
    }
    run_id = submit(servers, config, batch_id)
    ledger = open_ledger(env["BATCH_PIPELINE_LEDGER_URL"])

    wait_for_chunks(servers, ledger, batch_id, 2)
    pid = h.wait_until(lambda: _worker_pid(instance, run_id), 30, "the run worker's pid")
    os.kill(pid, signal.SIGKILL)

    killed = servers.wait_for_run(run_id, timeout=120)
    assert killed["status"] == "FAILURE", servers.diagnostics()
    # The code server that started the process noticed that it died.
    assert any(
        f"Run execution process for {run_id}" in (entry.message or "")
        for entry in instance.all_logs(run_id)
    )

    assert_retried_to_success(servers, dirs, run_id, batch_id, records)
    ledger.dispose()


def assert_retried_to_success(
    servers: h.DagsterUI, dirs: dict[str, Path], run_id: str, batch_id: str, records: int
) -> None:
    """The run was retried automatically (ALL_STEPS), and the retry finished the batch with
    every record."""

    def retry_of_it() -> dict[str, Any] | None:
        for run in servers.runs("batch_job"):
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if tags.get("dagster/parent_run_id") == run_id:
                assert tags.get("dagster/retry_strategy") == "ALL_STEPS"
                return run
        return None

    retry = h.wait_until(retry_of_it, 120, "an automatic retry of the failed run", 1.0)
    finished = servers.wait_for_run(retry["runId"], timeout=240)
    assert finished["status"] == "SUCCESS", servers.diagnostics()
    manifest = manifest_of(dirs["output"], batch_id)
    assert manifest["run_id"] == retry["runId"]
    totals = manifest["totals"]
    assert totals["records_in"] == totals["records_out"] == records
    assert totals["chunks"] == totals["chunks_succeeded"] == 16


def test_run_monitoring_fails_a_run_whose_worker_and_code_server_died(
    servers: h.DagsterUI, dirs: dict[str, Path], instance: Any, env: dict[str, str]
):
    """With the default run launcher, run monitoring has no worker health check: a run left
    "started" by a dead worker and a dead code server (a machine that restarted) is failed by
    the monitoring daemon once it exceeds its maximum runtime (shortened here with the tag
    dagster/max_runtime; deploy/dagster.yaml's default is 4 hours), then retried."""
    import psutil
    from dagster import DagsterRunStatus

    from batch_pipeline.core.ledger import open_ledger

    records, batch_id, max_runtime = 2_000, "prod-orphaned", 25
    config = {
        "source": sample(dirs, records),
        "processor": "fault_slow",
        "processor_options": {"seconds": 1.0},
        "processor_modules": ["batch_pipeline_tests.fault_processors"],
        "chunking": {"chunk_records": 125},
        "output": str(dirs["output"]),
    }
    run_id = submit(servers, config, batch_id, **{"dagster/max_runtime": str(max_runtime)})
    ledger = open_ledger(env["BATCH_PIPELINE_LEDGER_URL"])

    wait_for_chunks(servers, ledger, batch_id, 2)
    worker = h.wait_until(lambda: _worker_pid(instance, run_id), 30, "the run worker's pid")
    daemon = psutil.Process(servers.processes["daemon"].pid)
    code_servers = [p for p in daemon.children(recursive=True) if "grpc" in " ".join(p.cmdline())]
    assert code_servers, "the daemon's code server was not found"
    for process in code_servers:  # first, so that none of them sees the worker die
        process.send_signal(signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED

    failed = servers.wait_for_run(run_id, timeout=max_runtime + 60)
    assert failed["status"] == "FAILURE", servers.diagnostics()
    messages = [entry.message or "" for entry in instance.all_logs(run_id)]
    assert any("exceeding maximum runtime" in message for message in messages), messages[-5:]
    assert_retried_to_success(servers, dirs, run_id, batch_id, records)
    ledger.dispose()
