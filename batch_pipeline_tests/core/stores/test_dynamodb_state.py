"""The DynamoDB state store on the wire: every call within DynamoDB's limits, consistent reads,
and what DynamoDB leaves unprocessed sent again with backoff. The requests go through the fault
proxy in front of the moto server, which records them and, since moto never leaves anything
unprocessed, takes some keys out of a call before moto sees them and returns them as
``UnprocessedKeys``/``UnprocessedItems``, as DynamoDB does when throttled."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from batch_pipeline.core.common.errors import StateStoreError, classify
from batch_pipeline.core.common.models import RetrySettings
from batch_pipeline.core.stores.dynamodb_state import MAX_ITEM_BYTES, DynamoDBStateStore
from batch_pipeline.core.stores.state import StoredState
from batch_pipeline.core.stores.state_stores import open_state_store
from batch_pipeline_tests.conftest import DEAD_ENDPOINT
from batch_pipeline_tests.core.stores import test_state_stores as shared
from batch_pipeline_tests.fault_proxy import FaultProxy, Request

NS = "kalman/user_id"
dynamodb_client = shared.dynamodb_client
dynamodb_table = shared.dynamodb_table  # the fixture: a table name of the test's own
TINY = RetrySettings(max_retries=3, base_delay_seconds=0.01, max_delay_seconds=0.02)


class Unprocessed:
    """The proxy's ``rewrite``: of each BatchGetItem/BatchWriteItem, the last third of the keys
    (at least one) is taken out before moto sees it and returned as unprocessed, each key at
    most ``times`` times per operation. A call left with no key is answered by the proxy."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.held: Counter[tuple[str, str]] = Counter()  # (operation, pk) -> times held back

    def __call__(self, request: Request) -> tuple[Request | None, Callable[[bytes], bytes]] | None:
        operation = request.target or ""
        if operation not in ("BatchGetItem", "BatchWriteItem"):
            return None
        body = json.loads(request.body)
        ((table, asked),) = body["RequestItems"].items()
        entries = asked["Keys"] if operation == "BatchGetItem" else asked
        last_third = entries[len(entries) - max(1, len(entries) // 3) :]
        held = [e for e in last_third if self.held[operation, pk_of(e)] < self.times]
        if not held:
            return None
        self.held.update((operation, pk_of(e)) for e in held)
        sent = [e for e in entries if e not in held]
        if operation == "BatchGetItem":
            body["RequestItems"][table]["Keys"] = sent
            unprocessed: dict[str, Any] = {"UnprocessedKeys": {table: {**asked, "Keys": held}}}
        else:
            body["RequestItems"][table] = sent
            unprocessed = {"UnprocessedItems": {table: held}}

        def answer(data: bytes) -> bytes:
            return json.dumps({**json.loads(data), **unprocessed}).encode()

        if not sent:
            return None, answer
        forwarded = Request(
            request.method, request.path, request.headers, json.dumps(body).encode()
        )
        return forwarded, answer


def pk_of(entry: dict[str, Any]) -> str:
    item = entry["PutRequest"]["Item"] if "PutRequest" in entry else entry
    return str(item["pk"]["S"])


def sizes(proxy: FaultProxy, operation: str) -> list[int]:
    """Keys or items per ``operation`` call that reached moto, in order."""
    found = []
    for call in proxy.calls:
        if call.target == operation:
            (asked,) = json.loads(call.body)["RequestItems"].values()
            found.append(len(asked["Keys"] if operation == "BatchGetItem" else asked))
    return found


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server) as started:
        yield started


class Sleeps(list[float]):
    """A store's ``sleep``: records each delay, then sleeps it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


def states(count: int) -> dict[str, StoredState]:
    return {
        f"user-{i:04d}": StoredState({"x": i + 0.1, "P": [[i]]}, "b1", None) for i in range(count)
    }


def test_calls_on_the_wire_stay_within_dynamodb_limits(
    proxy: FaultProxy, dynamodb_table: str
) -> None:
    store = open_state_store(
        f"dynamodb://{dynamodb_table}", dynamodb_client=dynamodb_client(proxy.url)
    )
    saved = states(250)
    store.save(NS, saved)
    assert store.load(NS, list(saved)) == saved
    assert sizes(proxy, "BatchWriteItem") == [25] * 10
    assert sizes(proxy, "BatchGetItem") == [100, 100, 50]
    gets = [json.loads(c.body) for c in proxy.calls if c.target == "BatchGetItem"]
    assert all(g["RequestItems"][dynamodb_table]["ConsistentRead"] is True for g in gets)
    assert store.operations == 13
    table = dynamodb_client(proxy.url).describe_table(TableName=dynamodb_table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]

    proxy.calls.clear()
    thousand = states(1000)
    store.save(NS, thousand)
    assert store.load(NS, list(thousand)) == thousand
    assert sizes(proxy, "BatchWriteItem") == [25] * 40
    assert sizes(proxy, "BatchGetItem") == [100] * 10


def test_unprocessed_keys_and_items_are_sent_again_with_backoff(
    moto_server: str, dynamodb_table: str
) -> None:
    """Every call's last third is held back, and the last third of those once more: each group
    of keys takes three calls, with two backoffs between them, and every key arrives."""
    with FaultProxy(moto_server, rewrite=Unprocessed(times=2)) as proxy:
        sleeps = Sleeps()
        client = dynamodb_client(proxy.url)
        store = DynamoDBStateStore(dynamodb_table, client, TINY, sleep=sleeps)
        saved = states(250)
        store.save(NS, saved)
        writes = sizes(proxy, "BatchWriteItem")
        assert writes == [17, 6, 2] * 10  # 25 = 17 + (8 held: 6 + (2 held))
        assert sleeps and len(sleeps) == 20
        # The retries' delays: full jitter under the ceiling of retry 0, then of retry 1.
        assert all(0 <= d <= 0.01 for d in sleeps[0::2])
        assert all(0 <= d <= 0.02 for d in sleeps[1::2])

        sleeps.clear()
        loaded = store.load(NS, list(saved))
        assert loaded == saved
        assert sizes(proxy, "BatchGetItem") == [67, 22, 11, 67, 22, 11, 34, 11, 5]
        assert len(sleeps) == 6
        assert store.operations == 30 + 9

    # What moto holds, read past the proxy: every key, once.
    direct = DynamoDBStateStore(dynamodb_table, dynamodb_client(moto_server))
    assert direct.load(NS, list(saved)) == saved


def test_keys_left_unprocessed_after_every_retry_are_a_transient_error(
    moto_server: str, dynamodb_table: str
) -> None:
    with FaultProxy(moto_server, rewrite=Unprocessed(times=100)) as proxy:
        sleeps = Sleeps()
        store = DynamoDBStateStore(dynamodb_table, dynamodb_client(proxy.url), TINY, sleep=sleeps)
        with pytest.raises(StateStoreError, match="left 1 of a BatchWriteItem call's keys "
                           "unprocessed after 3 retries") as error:  # fmt: skip
            store.save(NS, states(25))
        # The first call and 3 retries, the last with nothing left for moto.
        assert sizes(proxy, "BatchWriteItem") == [17, 6, 1]
        assert len(sleeps) == 3 and store.operations == 4
        assert not error.value.permanent and classify(error.value).transient
        assert "dynamodb://" + dynamodb_table in str(error.value)


def test_a_state_too_big_for_an_item_is_refused_before_any_call(
    proxy: FaultProxy, dynamodb_table: str
) -> None:
    store = open_state_store(
        f"dynamodb://{dynamodb_table}", dynamodb_client=dynamodb_client(proxy.url)
    )
    big = {"user-7": StoredState({"blob": "x" * MAX_ITEM_BYTES}, "b1", None)}
    with pytest.raises(StateStoreError, match=r"key 'user-7' is 4096\d\d bytes") as error:
        store.save(NS, {**states(30), **big})
    assert error.value.permanent and not classify(error.value).transient
    assert sizes(proxy, "BatchWriteItem") == [] and store.operations == 0
    # Just under the limit (with its before) is kept.
    fits = {"user-8": StoredState({"b": "y" * 200_000}, "b1", {"b": "z" * 200_000})}
    store.save(NS, fits)
    assert store.load(NS, ["user-8"]) == fits


def test_a_table_with_another_key_is_refused(moto_server: str, dynamodb_table: str) -> None:
    client = dynamodb_client(moto_server)
    client.create_table(
        TableName=dynamodb_table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(StateStoreError, match="not a state store's"):
        open_state_store(f"dynamodb://{dynamodb_table}", dynamodb_client=client)


def test_an_unreachable_dynamodb_is_a_transient_error() -> None:
    quick = boto3.client(
        "dynamodb",
        endpoint_url=DEAD_ENDPOINT,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(StateStoreError, match="dynamodb://states cannot be opened") as error:
        open_state_store("dynamodb://states", dynamodb_client=quick)
    assert not error.value.permanent
