"""Keys' states in a DynamoDB table, through a boto3 client the caller makes.

The table has one hash key, ``pk`` (a string): the namespace, ``NAMESPACE_SEPARATOR`` and the
key (a namespace never holds the separator, so the first one splits them). A key of its own per
namespace and key spreads a namespace's keys over DynamoDB's partitions, where a hash key of the
namespace alone would put a whole processor's keys on one. Other attributes: ``state`` and
``before`` (JSON text, so that numbers round-trip exactly instead of through Decimal; ``before``
absent for None), ``batch_id``, ``updated_at`` (seconds since the epoch). The table is created
when missing (on demand: ``PAY_PER_REQUEST``) and waited for until ``ACTIVE``; one with another
key is refused.

``load``: ``BatchGetItem`` with at most ``GET_KEYS_PER_CALL`` keys per call and
``ConsistentRead``; ``save``: ``BatchWriteItem`` with at most ``PUTS_PER_CALL`` puts per call,
every item checked against ``MAX_ITEM_BYTES`` before the first call. What a call returns as
``UnprocessedKeys``/``UnprocessedItems`` is sent again after ``backoff_delay`` (full jitter), up
to ``retry.max_retries`` more calls per group of keys, then a transient ``StateStoreError``.
A save is not one transaction: one cut short has saved some keys, which a repeat of the same
batch's save overwrites (see ``state.next_stored``). ``operations`` counts the calls ``load``
and ``save`` make, retries included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch_pipeline.core.common.errors import ConfigError, StateStoreError, classify
from batch_pipeline.core.common.models import RetrySettings
from batch_pipeline.core.common.retries import backoff_delay
from batch_pipeline.core.stores.state import (
    NAMESPACE_SEPARATOR,
    StoredState,
    check_key,
    check_namespace,
    parse_state,
    state_text,
)

GET_KEYS_PER_CALL = 100  # BatchGetItem's limit
PUTS_PER_CALL = 25  # BatchWriteItem's limit
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit (names and values, in UTF-8)
TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
ACTIVE_WAIT_SECONDS = 300.0
DEFAULT_RETRY = RetrySettings()  # frozen: one shared default


class DynamoDBStateStore:
    """Keys' states in DynamoDB table ``table`` through ``client`` (a boto3 DynamoDB client).

    A subclass keeps them in items of its own (``leads.DynamoDBLeadStore``) by giving its own
    ``key_attribute``, ``_hash_key``, ``_attributes`` and ``_stored``."""

    kind = "state"
    key_attribute = "pk"

    def __init__(
        self,
        table: str,
        client: Any,
        retry: RetrySettings = DEFAULT_RETRY,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not TABLE_NAME.fullmatch(table):
            raise ConfigError(
                f"dynamodb://{table}: a DynamoDB table name is 3 to 255 letters, digits, "
                "'_', '-' or '.'"
            )
        self.table = table
        self.client = client
        self.retry = retry
        self.description = f"dynamodb://{table}"
        self.operations = 0
        self._sleep = sleep
        self._ensure_table()

    def load(self, namespace: str, keys: Sequence[str]) -> dict[str, StoredState]:
        check_namespace(namespace)
        by_hash = {self._hash_key(namespace, check_key(k, self.description)): k for k in keys}
        wanted = sorted(by_hash)
        name = self.key_attribute
        found: dict[str, StoredState] = {}
        for start in range(0, len(wanted), GET_KEYS_PER_CALL):
            keys_of_call = [{name: {"S": pk}} for pk in wanted[start : start + GET_KEYS_PER_CALL]]
            for response in self._until_processed("BatchGetItem", keys_of_call):
                for item in response.get("Responses", {}).get(self.table, []):
                    found[by_hash[item[name]["S"]]] = self._stored(item)
        return found

    def save(self, namespace: str, states: Mapping[str, StoredState]) -> None:
        check_namespace(namespace)
        now = time.time()
        puts = [
            {"PutRequest": {"Item": self._item(namespace, key, stored, now)}}
            for key, stored in sorted(states.items())
        ]  # every item checked before the first call
        for start in range(0, len(puts), PUTS_PER_CALL):
            for _ in self._until_processed("BatchWriteItem", puts[start : start + PUTS_PER_CALL]):
                pass

    def close(self) -> None:
        """Nothing to release: the client is the caller's."""

    # The layout of a state store's items; a subclass's items have their own.
    def _hash_key(self, namespace: str, key: str) -> str:
        return namespace + NAMESPACE_SEPARATOR + key

    def _attributes(self, key: str, stored: StoredState, now: float) -> dict[str, Any]:
        item: dict[str, Any] = {
            "state": {"S": state_text(stored.state, key, self.description)},
            "batch_id": {"S": stored.batch_id},
            "updated_at": {"N": f"{now:.3f}"},
        }
        before = state_text(stored.before, key, self.description)
        if before is not None:
            item["before"] = {"S": before}
        return item

    def _stored(self, item: dict[str, Any]) -> StoredState:
        before = item.get("before", {}).get("S")
        return StoredState(
            parse_state(item["state"]["S"]) or {}, item["batch_id"]["S"], parse_state(before)
        )

    def _item(self, namespace: str, key: str, stored: StoredState, now: float) -> dict[str, Any]:
        check_key(key, self.description)
        item = {
            self.key_attribute: {"S": self._hash_key(namespace, key)},
            **self._attributes(key, stored, now),
        }
        size = sum(
            len(name.encode()) + len(next(iter(value.values())).encode())
            for name, value in item.items()
        )
        if size > MAX_ITEM_BYTES:
            raise StateStoreError(
                f"{self.description}: the state of key {key[:200]!r} is {size} bytes as a "
                f"DynamoDB item (with its state before batch {stored.batch_id!r}), more than "
                f"the {MAX_ITEM_BYTES} DynamoDB keeps: nothing was saved. Keep less per key."
            )
        return item

    def _until_processed(self, operation: str, requests: list[dict[str, Any]]) -> Any:
        """The responses of ``operation`` (``BatchGetItem``: ``requests`` are keys;
        ``BatchWriteItem``: put requests) until DynamoDB has processed every request, what it
        leaves unprocessed sent again after a backoff, at most ``retry.max_retries`` times."""
        retries = 0
        while True:
            if operation == "BatchGetItem":
                request = {self.table: {"Keys": requests, "ConsistentRead": True}}
                response = self._call(operation, self.client.batch_get_item, request)
                requests = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            else:
                response = self._call(operation, self.client.batch_write_item, {
                    self.table: requests})  # fmt: skip
                requests = response.get("UnprocessedItems", {}).get(self.table, [])
            yield response
            if not requests:
                return
            if retries >= self.retry.max_retries:
                raise StateStoreError(
                    f"{self.description}: DynamoDB left {len(requests)} of a {operation} "
                    f"call's keys unprocessed after {retries} retries (throttled: the table's "
                    "capacity, or a key's partition, is exhausted); try again later",
                    permanent=False,
                )
            self._sleep(backoff_delay(retries, self.retry))
            retries += 1

    def _call(self, operation: str, method: Callable[..., Any], request: Any) -> Any:
        self.operations += 1
        try:
            return method(RequestItems=request)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(f"{operation} failed", exc) from exc

    def _ensure_table(self) -> None:
        """The table, created if missing, once ``ACTIVE``; its key checked."""
        try:
            try:
                table = self.client.describe_table(TableName=self.table)["Table"]
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException":
                    raise
                table = self._create_table()
            deadline = time.monotonic() + ACTIVE_WAIT_SECONDS
            while table.get("TableStatus", "ACTIVE") != "ACTIVE":
                if time.monotonic() > deadline:
                    raise StateStoreError(
                        f"{self.description}: the table is still {table['TableStatus']} after "
                        f"{ACTIVE_WAIT_SECONDS:g} s",
                        permanent=False,
                    )
                self._sleep(1.0)
                table = self.client.describe_table(TableName=self.table)["Table"]
        except (ClientError, BotoCoreError) as exc:
            raise self._error("cannot be opened", exc) from exc
        key_types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        name = self.key_attribute
        if table["KeySchema"] != self._key_schema() or key_types.get(name) != "S":
            raise StateStoreError(
                f"{self.description}: the table's key is {table['KeySchema']}, not a {self.kind} "
                f"store's (one string hash key, {name}): give a table of its own"
            )

    def _key_schema(self) -> list[dict[str, str]]:
        return [{"AttributeName": self.key_attribute, "KeyType": "HASH"}]

    def _create_table(self) -> dict[str, Any]:
        try:
            created = self.client.create_table(
                TableName=self.table,
                AttributeDefinitions=[{"AttributeName": self.key_attribute, "AttributeType": "S"}],
                KeySchema=self._key_schema(),
                BillingMode="PAY_PER_REQUEST",
            )
            return created["TableDescription"]
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # another process is creating it
                raise
            return self.client.describe_table(TableName=self.table)["Table"]

    def _error(self, doing: str, exc: Exception) -> StateStoreError:
        return StateStoreError(
            f"the state store at {self.description} {doing}: {exc}",
            permanent=not classify(exc).transient,
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
