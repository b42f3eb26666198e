"""What one mapped chunk step costs on celery workers, next to the in-process executor.

``batch_job`` (passthrough, delivery ``none``) runs on one generated input at a small and a
large fan-out (``--chunks 4 24``) with ``execute_job(reconstructable(get_batch_job))`` on the
production instance (``deploy/dagster.yaml``) on a fresh Postgres database, under:

- ``in_process``: every step in the run's process, outputs on the local disk;
- ``celery``: two workers (``celery -A batch_pipeline.workers worker --concurrency 1``, separate
  processes) on a RabbitMQ vhost of its own, step outputs on S3 (a moto server).

Per-step cost is (W(large) - W(small)) / (large - small); the fixed cost the intercept. Needs
what the tests need (RabbitMQ with ``rabbitmqctl``, Postgres at 127.0.0.1:5432); run from the
repository root::

    .venv/bin/python -m benchmarks.celery_overhead
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def _moto() -> tuple[subprocess.Popen, str]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return process, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the moto server did not start")


def main() -> None:
    import os
    import shutil

    import boto3
    from dagster import DagsterInstance, execute_job, reconstructable

    from batch_pipeline.core.inputs.sample_data import write_sample
    from batch_pipeline.definitions import get_batch_job
    from batch_pipeline_tests.test_celery_workers import Workers, _rabbitmqctl
    from batch_pipeline_tests.test_production_instance import DEPLOY_YAML, _pg_admin, instance_env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs=2, default=[4, 24])
    parser.add_argument("--chunk-records", type=int, default=500)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    vhost, db, bucket = (f"bench-{uuid.uuid4().hex[:8]}" for _ in range(3))
    db = db.replace("-", "_")
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    admin = _pg_admin()
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{db}"')
    moto, endpoint = _moto()
    (root / "home").mkdir()
    shutil.copy(DEPLOY_YAML, root / "home" / "dagster.yaml")
    env = {
        **instance_env(db, bucket, endpoint, root),
        "AWS_SESSION_TOKEN": "testing",
        "DAGSTER_HOME": str(root / "home"),
        "BATCH_PIPELINE_CELERY_BROKER": f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}",
        "BATCH_PIPELINE_LEDGER_URL": f"sqlite:///{root / 'ledger.db'}",
    }
    os.environ.update(env)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    workers = Workers(env, root)
    times: dict[tuple[str, int], float] = {}
    try:
        workers.start("w1")
        workers.start("w2")
        with DagsterInstance.get() as instance:
            for chunks in args.chunks:
                source = write_sample(str(root), chunks * args.chunk_records, 0.0)[0]
                for mode in ("in_process", "celery"):
                    execution: dict[str, Any] = {"in_process": {}}
                    resources: dict[str, Any] = {}
                    if mode == "celery":
                        execution = {"celery": {"timeout_seconds": 600}}
                        resources = {"io_manager": {"config": {"s3_bucket": bucket}}}
                    batch = {
                        "source": source,
                        "batch_id": f"{mode}-{chunks}",
                        "output": str(root / "out"),
                        "chunking": {"chunk_records": args.chunk_records},
                        "delivery": {"target": "none"},
                    }
                    config = {
                        "execution": {"config": execution},
                        "resources": resources,
                        "ops": {"initialize": {"config": batch}},
                    }
                    started = time.perf_counter()
                    result = execute_job(
                        reconstructable(get_batch_job), instance=instance, run_config=config
                    )
                    times[(mode, chunks)] = time.perf_counter() - started
                    assert result.success, mode
    finally:
        workers.stop()
        moto.terminate()
        _rabbitmqctl("delete_vhost", vhost)
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)
    small, large = args.chunks
    print(f"| executor | {small} chunks | {large} chunks | per mapped step | fixed per run |")
    print("|---|---|---|---|---|")
    for mode in ("in_process", "celery"):
        per_step = (times[(mode, large)] - times[(mode, small)]) / (large - small)
        fixed = times[(mode, small)] - small * per_step
        print(
            f"| {mode} | {times[(mode, small)]:.1f} s | {times[(mode, large)]:.1f} s "
            f"| {per_step:.2f} s | {fixed:.1f} s |"
        )


if __name__ == "__main__":
    main()
