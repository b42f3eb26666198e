"""A state store chosen by its URL (``open_state_store``).

- ``sqlite:///PATH``: the embedded default, a SQLite file (its folder made); ``sqlite://`` is
  an in-memory one, for one process (tests).
- ``postgresql://...`` or ``postgresql+DRIVER://...``: Postgres, through a driver that is
  installed (the ledger's ``engine_url``).
- ``dynamodb://TABLE``: DynamoDB, through the boto3 client the caller gives (the core reads no
  environment: the caller makes the client, with its region, endpoint and credentials).

Both SQL forms are ``sql_state.SqlStateStore``, the last ``dynamodb_state.DynamoDBStateStore``.
"""

from __future__ import annotations

from typing import Any

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import RetrySettings
from batch_pipeline.core.ledger.engine import safe_url
from batch_pipeline.core.stores.dynamodb_state import DEFAULT_RETRY, DynamoDBStateStore
from batch_pipeline.core.stores.sql_state import SqlStateStore
from batch_pipeline.core.stores.state import StateStore

ACCEPTED = (
    "sqlite:///PATH, postgresql://USER@HOST/DB (or postgresql+DRIVER://...), dynamodb://TABLE"
)


def open_state_store(
    url: str, *, dynamodb_client: Any = None, retry: RetrySettings = DEFAULT_RETRY
) -> StateStore:
    """The state store at ``url`` (see the module docstring), its table created if missing.
    ``retry`` paces DynamoDB's unprocessed keys. An unknown form is a ConfigError naming the
    accepted ones."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite" or scheme == "postgresql" or scheme.startswith("postgresql+"):
        return SqlStateStore(url)
    if scheme == "dynamodb":
        if dynamodb_client is None:
            raise ConfigError(
                f"state store {url}: a DynamoDB store needs a boto3 DynamoDB client from the "
                "caller (dynamodb_client)"
            )
        return DynamoDBStateStore(url.partition("://")[2], dynamodb_client, retry)
    raise ConfigError(
        f"state store URL {safe_url(url)!r} is not one of the accepted forms: {ACCEPTED}"
    )
