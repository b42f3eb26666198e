"""The ledger resource: where the chunk ledger lives."""

from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.ledger import Ledger, open_ledger, safe_url, url_password
from batch_pipeline.settings import LEDGER_URL_ENV, default_ledger_url


def run_config_password_error(
    run_config: Any, resource: str = "ledger", env: str = LEDGER_URL_ENV
) -> ConfigError | None:
    """The error for a run whose config sets ``resources.<resource>.config.url`` (the ledger's,
    or the state store's) to a plain string holding a password; None when it does not
    (``{env: ...}``, no password, nothing set)."""
    try:
        url = run_config["resources"][resource]["config"]["url"]
    except (KeyError, TypeError):
        return None
    if not isinstance(url, str) or url_password(url) is None:
        return None
    name = resource.replace("_", " ")
    return ConfigError(
        f"the {name} URL in this run's config holds a password in plain text ({safe_url(url)}): "
        "Dagster stores a run's config and shows it in the UI, so this run refuses to use it. "
        f"Give it as {{env: {env}}} (resources.{resource}.config.url, with the URL in "
        f"that environment variable of the run's process), or set PGPASSWORD, and delete this "
        "run from the UI (its config is stored)"
    )


class LedgerResource(ConfigurableResource):
    """The chunk ledger (see ``batch_pipeline.core.ledger``).

    Unset, ``url`` is ``BATCH_PIPELINE_LEDGER_URL``, else SQLite in ``$DAGSTER_HOME``
    (``batch_ledger.db``), else in ``~/.batch_pipeline`` (``settings.default_ledger_url``, read
    when the ledger is opened). In production, point it at the
    Postgres database of the Dagster instance, with the password from the environment: the
    whole URL in ``BATCH_PIPELINE_LEDGER_URL`` (or ``url=EnvVar(...)``, which Dagster stores
    as the variable's name, not its value), or a URL without password and ``PGPASSWORD``
    (read by psycopg2). Messages show the URL without its password (``Ledger.safe_url``).

    A run whose config gives ``url`` as a plain string holding a password fails when the
    resource is set up (``setup_for_execution``), before the ledger is opened: Dagster has
    stored that config, and the message says where the password goes instead.

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
        "Never put a password here in run config (Dagster stores run config and shows it; a "
        "run given one refuses it): use {env: BATCH_PIPELINE_LEDGER_URL}, "
        "EnvVar('BATCH_PIPELINE_LEDGER_URL') in code, or PGPASSWORD in the environment.",
    )
    db_schema: str | None = Field(
        default=None, description="Postgres schema for the ledger's tables (created if missing)."
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Refuse a password written in this run's config (see the class docstring). Outside a
        run (a sensor, a schedule) there is no run config to look at."""
        run = context.dagster_run
        error = run_config_password_error(run.run_config) if run is not None else None
        if error is not None:
            raise error

    def get_ledger(self) -> Ledger:
        return open_ledger(self.url or default_ledger_url(), self.db_schema)
