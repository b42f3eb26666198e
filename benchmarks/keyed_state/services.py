"""The servers the core part's stores need, started and ended by the benchmark: a moto server on
127.0.0.1 (DynamoDB), in a process group of its own that is ended by its id; and a Postgres
database of its own on the local server (127.0.0.1:5432, user postgres, trust auth), dropped
afterwards whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
START_SECONDS = 30.0


class ServiceError(RuntimeError):
    """A server the benchmark needs cannot be started or reached."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server's URL on 127.0.0.1, for the block; its process group ended afterwards."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ServiceError(f"the moto server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new database's SQLAlchemy URL (``postgresql+psycopg2://``), dropped afterwards."""
    import psycopg2  # type: ignore[import-untyped]

    try:
        admin = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        raise ServiceError(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({exc}); "
            "leave it out with --stores"
        ) from None
    admin.autocommit = True
    name = f"bench_keyed_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
