"""``batch_job`` on the celery executor (``batch_pipeline.workers``): workers are separate
``celery -A batch_pipeline.workers worker`` processes (concurrency 1, each in its own process
group, stopped by PID), the broker is a RabbitMQ vhost of each test's own (made and deleted with
``rabbitmqctl``), the Dagster instance is ``deploy/dagster.yaml`` on a fresh Postgres database,
the step outputs go to the moto server's S3 (``IntermediatesIOManager``). The run's own process
(this test) only orchestrates.

Which worker ran a step is what dagster-celery records: its engine event "Executing steps ... in
celery worker" carries the worker's name (``w1@host``). Skipped when RabbitMQ, ``rabbitmqctl`` or
Postgres are absent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline_tests import ui_harness as h
from batch_pipeline_tests.test_production_instance import (  # noqa: F401  (a fixture)
    DEPLOY_YAML,
    _pg_admin,
    env_instance,
    instance_env,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]
pytest.importorskip("dagster_celery", reason="dagster-celery is not installed: pip install .[dev]")

RABBIT = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
CELERY = Path(sys.executable).parent / "celery"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A RabbitMQ vhost of this test's own (its queues and messages vanish with it); or, for a
    test parametrised with ``broker="redis"``, a Redis database of its own."""
    if getattr(request, "param", "rabbitmq") == "redis":
        yield from _redis_database()
        return
    try:
        socket.create_connection(RABBIT, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"RabbitMQ is not reachable at {RABBIT[0]}:{RABBIT[1]}: {exc}")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: it makes each test's vhost")
    vhost = f"bp-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"pyamqp://guest:guest@{RABBIT[0]}:{RABBIT[1]}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _redis_database() -> Iterator[str]:
    """An empty database (1-15) of the local Redis for this test, emptied again after it."""
    redis = pytest.importorskip("redis", reason="redis-py is not installed: pip install .[dev]")
    try:
        client = redis.Redis(host=REDIS[0], port=REDIS[1], socket_timeout=5)
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS[0]}:{REDIS[1]}: {exc}")
    for number in range(15, 0, -1):
        database = redis.Redis(host=REDIS[0], port=REDIS[1], db=number, socket_timeout=5)
        if database.dbsize() == 0 and database.set("bp-test-claim", "1", nx=True):
            break
    else:
        pytest.skip("no empty Redis database (1-15) for the test")
    try:
        yield f"redis://{REDIS[0]}:{REDIS[1]}/{number}"
    finally:
        database.flushdb()


@pytest.fixture
def dagster_db() -> Iterator[str]:
    admin = _pg_admin()
    name = f"test_celery_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def env(
    broker: str, dagster_db: str, s3_bucket: str, moto_server: str, tmp_path: Path, own_ledger: str
) -> dict[str, str]:
    """What the run and every worker read: the instance, the broker, the ledger, AWS."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    return {
        **instance_env(dagster_db, s3_bucket, moto_server, tmp_path),
        "DAGSTER_HOME": str(home),
        "BATCH_PIPELINE_CELERY_BROKER": broker,
        # Redis is the result backend too when it is the broker (rpc:// needs AMQP).
        "BATCH_PIPELINE_CELERY_BACKEND": broker if broker.startswith("redis") else "rpc://",
        "BATCH_PIPELINE_LEDGER_URL": own_ledger,
    }


class Workers:
    """Celery workers started by a test, each a process group of its own."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DAGSTER_", "BATCH_PIPELINE_", "AWS_", "PYTEST_"))
        }
        self.env.update(env)
        self.env.update(
            {"DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(h.REPO)}
        )
        self.logs = logs
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, queues: str = "dagster,heavy", wrapper: bool = False) -> None:
        """``celery -A batch_pipeline.workers worker``, or (``wrapper``) the same through
        ``batch-pipeline worker``."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        if wrapper:
            command = [sys.executable, "-m", "batch_pipeline.cli", "worker", "--queues", queues,
                       "--name", f"{name}@%h", "--"]  # fmt: skip
        else:
            command = [str(CELERY), "-A", "batch_pipeline.workers", "worker", "-Q", queues,
                       "--concurrency", "1", "-n", f"{name}@%h"]  # fmt: skip
        self.processes[name] = subprocess.Popen(
            [*command, "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=self.logs,
        )  # fmt: skip
        h.wait_until(
            lambda: b" ready." in (self.logs / f"{name}.log").read_bytes() or self._died(name),
            60,
            f"celery worker {name} ready",
            0.2,
        )
        assert not self._died(name), self.log(name)

    def _died(self, name: str) -> bool:
        return self.processes[name].poll() is not None

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def kill(self, name: str) -> None:
        """SIGKILL to the worker's whole process group: its main process and its pool child."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait()

    def stop(self) -> None:
        h.stop_processes([p for p in self.processes.values() if p.poll() is None])


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    started = Workers(env, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def celery_config(bucket: str, timeout: float = 240) -> dict[str, Any]:
    return {
        "execution": {"config": {"celery": {"timeout_seconds": timeout}}},
        "resources": {"io_manager": {"config": {"s3_bucket": bucket, "s3_prefix": "steps"}}},
    }


def run_on_celery(instance: Any, batch: dict[str, Any], bucket: str, timeout: float = 240) -> Any:
    from dagster import execute_job, reconstructable

    from batch_pipeline.definitions import get_batch_job

    config = {**celery_config(bucket, timeout), "ops": {"initialize": {"config": batch}}}
    return execute_job(
        reconstructable(get_batch_job), instance=instance, run_config=config, raise_on_error=False
    )


def step_workers(instance: Any, run_id: str) -> dict[str, list[str]]:
    """Each step key -> the celery workers that started it, from dagster-celery's events."""
    found: dict[str, list[str]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or "in celery worker" not in (entry.message or ""):
            continue
        metadata = event.engine_event_data.metadata
        found.setdefault(event.step_key, []).append(metadata["Celery worker"].text.split("@")[0])
    return found


def sample(folder: Path, records: int) -> str:
    from batch_pipeline.core.inputs.sample_data import write_sample

    folder.mkdir(exist_ok=True)
    return write_sample(str(folder), records, invalid_fraction=0.02)[0]


def results(output: Path, batch_id: str) -> tuple[dict[str, Any], list[Any], list[str]]:
    """The batch's totals, its valid records (sorted) and its outbox lines (sorted)."""
    import pyarrow.parquet as pq

    manifest = json.loads((output / batch_id / "manifest.json").read_text())
    rows: list[Any] = []
    for part in sorted((output / batch_id / "valid").glob("*.parquet")):
        rows.extend(tuple(sorted(r.items())) for r in pq.read_table(part).to_pylist())
    lines = [
        line
        for path in sorted((output / batch_id / "outbox").glob("*"))
        for line in path.read_text().splitlines()
    ]
    return manifest["totals"], sorted(rows, key=repr), lines


def outbox_records(lines: list[str]) -> list[str]:
    records: list[str] = []
    for line in lines:
        message = json.loads(line)
        records.extend(json.dumps(r, sort_keys=True) for r in message["batch_data"])
    return records


# ------------------------------------------------------------------------------------------


def test_batch_job_on_two_celery_workers_equals_the_in_process_run(
    instance: Any, workers: Workers, s3_bucket: str, s3_client: Any, tmp_path: Path
):
    from batch_pipeline.definitions import get_batch_job

    records, output = 3_000, tmp_path / "output"
    source = sample(tmp_path / "input", records)
    batch = {"source": source, "output": str(output), "chunking": {"chunk_records": 500}}
    workers.start("w1")
    workers.start("w2")

    result = run_on_celery(instance, {**batch, "batch_id": "on-celery"}, s3_bucket)
    assert result.success, workers.log("w1") + workers.log("w2")
    local = get_batch_job().execute_in_process(
        run_config={"ops": {"initialize": {"config": {**batch, "batch_id": "in-process"}}}}
    )
    assert local.success

    totals, valid, outbox = results(output, "on-celery")
    assert totals["records_in"] == totals["records_out"] + totals["records_rejected"] == records
    assert totals["chunks"] == totals["chunks_succeeded"] == 6
    local_totals, local_valid, local_outbox = results(output, "in-process")
    assert {k: totals[k] for k in ("records_in", "records_out", "records_rejected")} == {
        k: local_totals[k] for k in ("records_in", "records_out", "records_rejected")
    }
    assert valid == local_valid
    assert sorted(outbox_records(outbox)) == sorted(outbox_records(local_outbox))

    ran_on = step_workers(instance, result.run_id)
    chunk_workers = {w for key, names in ran_on.items() if "process_chunk" in key for w in names}
    assert chunk_workers == {"w1", "w2"}, ran_on
    keys = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="steps/")["Contents"]
    assert any("plan_chunks" in obj["Key"] for obj in keys)  # the descriptors went through S3


def test_a_worker_killed_during_a_chunk_costs_no_run_and_no_record(
    instance: Any, workers: Workers, s3_bucket: str, tmp_path: Path
):
    import threading

    records, output = 2_000, tmp_path / "output"
    batch = {
        "source": sample(tmp_path / "input", records),
        "output": str(output),
        "batch_id": "killed-worker",
        "chunking": {"chunk_records": 250},
        "processor": "fault_slow",
        "processor_options": {"seconds": 2.0},
        "processor_modules": ["batch_pipeline_tests.fault_processors"],
    }
    workers.start("w1")
    workers.start("w2")
    finished: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: finished.setdefault("result", run_on_celery(instance, batch, s3_bucket))
    )
    runner.start()

    def w1_in_a_chunk() -> str | None:
        for run in instance.get_runs(limit=1):
            for key, names in step_workers(instance, run.run_id).items():
                if "process_chunk" in key and "w1" in names:
                    return key
        return None

    busy = h.wait_until(w1_in_a_chunk, 120, "worker w1 running a chunk", 0.2)
    workers.kill("w1")
    runner.join(timeout=300)
    result = finished["result"]
    assert result.success, workers.log("w2")

    ran_on = step_workers(instance, result.run_id)
    assert ran_on[busy] == ["w1", "w2"], ran_on  # the killed step ran again, on w2
    totals, valid, outbox = results(output, "killed-worker")
    assert totals["records_in"] == totals["records_out"] + totals["records_rejected"] == records
    assert totals["chunks"] == totals["chunks_succeeded"] == 8
    assert len(valid) == len(set(valid)) == totals["records_out"]
    sent = outbox_records(outbox)
    assert len(sent) == len(set(sent)) == totals["records_out"]


def test_heavy_chunks_run_only_on_a_worker_of_the_heavy_queue(
    instance: Any, workers: Workers, s3_bucket: str, tmp_path: Path
):
    records, output = 2_500, tmp_path / "output"
    batch = {
        "source": sample(tmp_path / "input", records),
        "output": str(output),
        "batch_id": "heavy",
        "chunking": {"chunk_records": 1_000, "heavy_records": 600},  # 1000, 1000 heavy; 500
    }
    workers.start("light", queues="dagster")
    workers.start("big", queues="dagster,heavy")

    result = run_on_celery(instance, batch, s3_bucket)
    assert result.success, workers.log("light") + workers.log("big")
    ran_on = step_workers(instance, result.run_id)
    heavy = {key: names for key, names in ran_on.items() if key.startswith("process_heavy")}
    assert sorted(heavy) == ["process_heavy_chunk[chunk_00000]", "process_heavy_chunk[chunk_00001]"]
    assert all(names == ["big"] for names in heavy.values()), ran_on
    assert "process_chunk[chunk_00002]" in ran_on
    totals, _, _ = results(output, "heavy")
    assert totals["records_in"] == records and totals["chunks_succeeded"] == 3


def test_a_run_with_no_worker_for_its_queue_fails_at_its_timeout_naming_the_queue(
    instance: Any, workers: Workers, s3_bucket: str, tmp_path: Path
):
    batch = {
        "source": sample(tmp_path / "input", 1_000),
        "output": str(tmp_path / "output"),
        "batch_id": "no-heavy-worker",
        "chunking": {"chunk_records": 1_000, "heavy_records": 10},
    }
    workers.start("light", queues="dagster")

    result = run_on_celery(instance, batch, s3_bucket, timeout=30)
    assert not result.success
    error = result.get_run_failure_event().event_specific_data.error.to_string()
    assert "did not finish within the run's timeout of 30s on celery queue 'heavy'" in error


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_batch_job_on_celery_with_redis_as_broker_and_backend(
    broker: str, instance: Any, workers: Workers, s3_bucket: str, tmp_path: Path
):
    records, output = 1_500, tmp_path / "output"
    batch = {
        "source": sample(tmp_path / "input", records),
        "output": str(output),
        "batch_id": "on-redis",
        "chunking": {"chunk_records": 500},
    }
    workers.start("r1", wrapper=True)  # batch-pipeline worker
    result = run_on_celery(instance, batch, s3_bucket)
    assert result.success, workers.log("r1")
    ran_on = step_workers(instance, result.run_id)
    assert {w for key, names in ran_on.items() if "process_chunk" in key for w in names} == {"r1"}
    totals, valid, outbox = results(output, "on-redis")
    assert totals["records_in"] == totals["records_out"] + totals["records_rejected"] == records
    assert totals["chunks_succeeded"] == 3
    assert len(valid) == totals["records_out"] == len(outbox_records(outbox))
