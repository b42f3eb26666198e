"""The ledger resource: where the chunk ledger lives."""

from dagster import ConfigurableResource
from pydantic import Field

from batch_pipeline.core.ledger import Ledger, open_ledger


class LedgerResource(ConfigurableResource):
    """The chunk ledger (see ``batch_pipeline.core.ledger``).

    Unset, ``url`` is ``BATCH_PIPELINE_LEDGER_URL``, else SQLite in ``$DAGSTER_HOME``
    (``batch_ledger.db``), else in ``~/.batch_pipeline``. In production, point it at the
    Postgres database of the Dagster instance, with the password from the environment.

    Example:
        .. code-block:: python

            from dagster import Definitions, EnvVar
            from batch_pipeline.resources import LedgerResource

            defs = Definitions(
                jobs=[batch_job],
                resources={"ledger": LedgerResource(url=EnvVar("BATCH_PIPELINE_LEDGER_URL"))},
            )
    """

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL: sqlite:////path/ledger.db or postgresql://user:pw@host/db.",
    )
    db_schema: str | None = Field(
        default=None, description="Postgres schema for the ledger's tables (created if missing)."
    )

    def get_ledger(self) -> Ledger:
        return open_ledger(self.url, self.db_schema)
