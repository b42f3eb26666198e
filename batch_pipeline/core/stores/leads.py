"""The lead store: one row per e-mail, the ``leads`` processor's merged leads, in a table users
query (seed 003's DynamoDB leads table).

It is a state store of another layout (``StateStore`` with ``kind = "leads"``), so the keyed
stage loads and saves it in bulk and makes it exactly-once as it does states: the key is the
normalized e-mail, the state a lead's fields (``LEAD_FIELDS``) with ``first_batch``,
``created_at`` and ``updated_at``, the batch the last batch that inserted or changed it, and
``before`` the lead as it was before that batch (``StoredState``). A resumed or redriven batch
therefore starts each of its leads from before the batch and leaves the table a clean run
would (the times are the batch's, not the clock's).

- SQL (SQLite, Postgres; ``SqlLeadStore``): table ``leads`` with columns ``email`` (primary
  key), ``name``, ``phone``, ``company``, ``title``, ``industry``, ``source``, ``first_batch``,
  ``last_batch``, ``created_at``, ``updated_at`` (timestamps with time zone, UTC) and
  ``previous`` (JSON text: the lead before ``last_batch``; null when that batch inserted it).
  Upserted in bulk (``INSERT ... ON CONFLICT (email) DO UPDATE``), all in one transaction.
- DynamoDB (``DynamoDBLeadStore``): hash key ``email`` (a string), the same attributes as
  strings (times in ISO 8601), an empty field left out.

A lead store keeps the leads of one processor class: the namespace the stage gives
(``leads/email``, ``Leads.state_namespace``, the same for a subclass) names the lease that
serializes batches, and is not stored. Chosen by URL as state stores are
(``state_stores.open_state_store`` with ``kind="leads"``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.errors import StateStoreError
from batch_pipeline.core.stores.dynamodb_state import DynamoDBStateStore
from batch_pipeline.core.stores.sql_state import SqlStateStore
from batch_pipeline.core.stores.state import KeyState, StoredState, parse_state

TABLE = "leads"
LEAD_FIELDS = ("name", "phone", "company", "title", "industry", "source")
TIMES = ("created_at", "updated_at")
KEPT = (*LEAD_FIELDS, "first_batch", *TIMES)  # what a lead's state holds


def lead_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("email", sa.String(1024), primary_key=True),
        *(sa.Column(name, sa.Text) for name in LEAD_FIELDS),
        sa.Column("first_batch", sa.String(255), nullable=False),
        sa.Column("last_batch", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous", sa.Text),
    )


ISO = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: text order is time order


def iso_time(seconds: float) -> str:
    """A time as the lead store keeps it: ISO 8601, UTC, to the microsecond."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime(ISO)


def _datetime(text: Any, key: str, store: str) -> dt.datetime:
    try:
        return _parsed(str(text))
    except ValueError:
        raise StateStoreError(f"{store}: lead {key!r} has the time {text!r}") from None


# A batch's leads share a few times: each is parsed and written once (strptime per lead was a
# third of a first batch's time).
@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, ISO).replace(tzinfo=dt.UTC)


@functools.lru_cache(maxsize=4096)
def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:  # SQLite keeps no zone: the store writes UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime(ISO)


def _checked(state: KeyState | None, key: str, store: str) -> KeyState:
    if not isinstance(state, dict) or any(name not in state for name in KEPT):
        raise StateStoreError(
            f"{store}: lead {key!r} is not a lead ({', '.join(KEPT)}): {state!r:.200}"
        )
    return state


def _previous(stored: StoredState, key: str, store: str) -> str | None:
    if stored.before is None:
        return None
    before = _checked(stored.before, key, store)
    return json.dumps({name: before[name] for name in KEPT}, separators=(",", ":"))


class SqlLeadStore(SqlStateStore):
    """Leads in table ``leads`` of the SQLite or Postgres database at ``url``."""

    kind = "leads"

    def _define(self, metadata: sa.MetaData) -> sa.Table:
        return lead_table(metadata)

    def _select(self, namespace: str, keys: list[str]) -> sa.Select[Any]:
        return sa.select(self.table).where(self.table.c.email.in_(keys))

    def _stored(self, row: Any) -> tuple[str, StoredState]:
        values = row._mapping
        state: KeyState = {name: values[name] for name in (*LEAD_FIELDS, "first_batch")}
        state.update({name: _iso(values[name]) for name in TIMES})
        return values["email"], StoredState(
            state, values["last_batch"], parse_state(values["previous"])
        )

    def _row(self, namespace: str, key: str, stored: StoredState, now: float) -> dict[str, Any]:
        state = _checked(stored.state, key, self.description)
        row: dict[str, Any] = {"email": key, "last_batch": stored.batch_id}
        row.update({name: state[name] for name in (*LEAD_FIELDS, "first_batch")})
        row.update({name: _datetime(state[name], key, self.description) for name in TIMES})
        row["previous"] = _previous(stored, key, self.description)
        return row

    def _conflict(self) -> list[sa.Column[Any]]:
        return [self.table.c.email]


class DynamoDBLeadStore(DynamoDBStateStore):
    """Leads in DynamoDB table ``table`` (hash key ``email``) through ``client``."""

    kind = "leads"
    key_attribute = "email"

    def _hash_key(self, namespace: str, key: str) -> str:
        return key

    def _attributes(self, key: str, stored: StoredState, now: float) -> dict[str, Any]:
        state = _checked(stored.state, key, self.description)
        item: dict[str, Any] = {"last_batch": {"S": stored.batch_id}}
        for name in KEPT:
            if state[name] is not None and state[name] != "":
                item[name] = {"S": str(state[name])}
        previous = _previous(stored, key, self.description)
        if previous is not None:
            item["previous"] = {"S": previous}
        return item

    def _stored(self, item: dict[str, Any]) -> StoredState:
        state: KeyState = {name: item.get(name, {}).get("S") for name in KEPT}
        previous = item.get("previous", {}).get("S")
        # An item another program wrote may lack our bookkeeping: a lead of no batch of ours.
        last = item.get("last_batch", {}).get("S", "")
        return StoredState(state, last, parse_state(previous))
