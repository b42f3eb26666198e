"""The ledger resource: where the chunk ledger lives."""

from dagster import ConfigurableResource
from pydantic import Field

from batch_pipeline.core.ledger import Ledger, open_ledger


class LedgerResource(ConfigurableResource):
    """The chunk ledger (see ``batch_pipeline.core.ledger``).

    Unset, ``url`` is ``BATCH_PIPELINE_LEDGER_URL``, else SQLite in ``$DAGSTER_HOME``
    (``batch_ledger.db``), else in ``~/.batch_pipeline``. In production, point it at the
    Postgres database of the Dagster instance, with the password from the environment: the
    whole URL in ``BATCH_PIPELINE_LEDGER_URL`` (or ``url=EnvVar(...)``, which Dagster stores
    as the variable's name, not its value), or a URL without password and ``PGPASSWORD``
    (read by psycopg2). Messages show the URL without its password (``Ledger.safe_url``).

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
        description="SQLAlchemy URL: sqlite:////path/ledger.db or postgresql://user@host/db. "
        "Never put a password here in run config (Dagster stores run config and shows it): "
        "use EnvVar('BATCH_PIPELINE_LEDGER_URL'), or PGPASSWORD in the environment.",
    )
    db_schema: str | None = Field(
        default=None, description="Postgres schema for the ledger's tables (created if missing)."
    )

    def get_ledger(self) -> Ledger:
        return open_ledger(self.url, self.db_schema)
