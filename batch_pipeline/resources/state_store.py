"""The state store resource: where keyed processors keep each key's state between batches."""

from dagster import InitResourceContext
from pydantic import Field

from batch_pipeline.core.common.models import RetrySettings
from batch_pipeline.core.stores.state import StateStore
from batch_pipeline.core.stores.state_stores import open_state_store
from batch_pipeline.resources.aws_config import Boto3Configuration, boto3_client
from batch_pipeline.resources.ledger import run_config_password_error
from batch_pipeline.settings import STATE_STORE_URL_ENV, default_state_store_url


class StateStoreResource(Boto3Configuration):
    """The per-key state of keyed processors (``kalman``): see ``core.stores.state``; for the
    ``leads`` processor, the lead store (table ``leads`` of the same database, or the DynamoDB
    table the URL names): see ``core.stores.leads``.

    Unset, ``url`` is ``BATCH_PIPELINE_STATE_STORE_URL``, else SQLite beside the default ledger
    (``batch_state.db`` in ``$DAGSTER_HOME``; ``settings.default_state_store_url``). Forms:
    ``sqlite:///PATH``, ``postgresql+psycopg2://USER@HOST/DB`` (the password from the
    environment, as for the ledger: a run whose config holds one refuses it) and
    ``dynamodb://TABLE``, whose client takes the dagster-aws settings of this resource
    (``region_name``, ``endpoint_url``...; unset, boto3's own resolution and
    ``settings.resolve_region``). The table is created if missing.
    """

    url: str | None = Field(
        default=None,
        description="sqlite:////path/state.db, postgresql+psycopg2://user@host/db or "
        "dynamodb://TABLE. Never put a password here in run config: use "
        "{env: BATCH_PIPELINE_STATE_STORE_URL} or PGPASSWORD.",
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.dagster_run
        error = (
            run_config_password_error(run.run_config, "state_store", STATE_STORE_URL_ENV)
            if run is not None
            else None
        )
        if error is not None:
            raise error

    def store_url(self) -> str:
        return self.url or default_state_store_url()

    def open(self, retry: RetrySettings | None = None, kind: str = "state") -> StateStore:
        """The store (close it when done) of ``kind``: ``state``, or ``leads`` for the
        ``leads`` processor (its ``leads`` table in the same database; ``core.stores.leads``);
        DynamoDB's unprocessed keys paced by ``retry``."""
        url = self.store_url()
        client = boto3_client(self, "dynamodb") if url.lower().startswith("dynamodb://") else None
        if retry is None:
            return open_state_store(url, dynamodb_client=client, kind=kind)
        return open_state_store(url, dynamodb_client=client, retry=retry, kind=kind)
