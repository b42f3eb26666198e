"""A state store chosen by its URL (``open_state_store``).

- ``sqlite:///PATH``: the embedded default, a SQLite file (its folder made); ``sqlite://`` is
  an in-memory one, for one process (tests).
- ``postgresql://...`` or ``postgresql+DRIVER://...``: Postgres, through a driver that is
  installed (the ledger's ``engine_url``).
- ``dynamodb://TABLE``: DynamoDB, through the boto3 client the caller gives (the core reads no
  environment: the caller makes the client, with its region, endpoint and credentials).

Both SQL forms are ``sql_state.SqlStateStore``, the last ``dynamodb_state.DynamoDBStateStore``;
with ``kind="leads"`` (the ``leads`` processor's lead store) ``leads.SqlLeadStore`` and
``leads.DynamoDBLeadStore``: the same URL names a database whose table ``leads`` holds them, or
the DynamoDB table that does.
"""

from __future__ import annotations

from typing import Any

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import RetrySettings
from batch_pipeline.core.ledger.engine import safe_url
from batch_pipeline.core.stores.dynamodb_state import DEFAULT_RETRY, DynamoDBStateStore
from batch_pipeline.core.stores.leads import DynamoDBLeadStore, SqlLeadStore
from batch_pipeline.core.stores.sql_state import SqlStateStore
from batch_pipeline.core.stores.state import StateStore

ACCEPTED = (
    "sqlite:///PATH, postgresql://USER@HOST/DB (or postgresql+DRIVER://...), dynamodb://TABLE"
)
KINDS = {"state": (SqlStateStore, DynamoDBStateStore), "leads": (SqlLeadStore, DynamoDBLeadStore)}


def open_state_store(
    url: str,
    *,
    dynamodb_client: Any = None,
    retry: RetrySettings = DEFAULT_RETRY,
    kind: str = "state",
) -> StateStore:
    """The store of ``kind`` (``KeyedProcessor.store_kind``: ``state`` or ``leads``) at ``url``
    (see the module docstring), its table created if missing. ``retry`` paces DynamoDB's
    unprocessed keys. An unknown form is a ConfigError naming the accepted ones."""
    if kind not in KINDS:
        raise ConfigError(f"no store of kind {kind!r}: there are {', '.join(KINDS)}")
    sql, dynamodb = KINDS[kind]
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite" or scheme == "postgresql" or scheme.startswith("postgresql+"):
        return sql(url)
    if scheme == "dynamodb":
        if dynamodb_client is None:
            raise ConfigError(
                f"state store {url}: a DynamoDB store needs a boto3 DynamoDB client from the "
                "caller (dynamodb_client)"
            )
        return dynamodb(url.partition("://")[2], dynamodb_client, retry)
    raise ConfigError(
        f"state store URL {safe_url(url)!r} is not one of the accepted forms: {ACCEPTED}"
    )
