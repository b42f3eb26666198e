"""A password in ``--ledger`` never reaches the Dagster instance: not the run's stored config,
not its tags, not a single event of its event log. The run still uses that ledger (the CLI
hands it to the run through the environment, as a deployment would). A run whose config writes
a password in the ledger resource's URL (Dagster stored it already) refuses to use it; from the
environment (``{env: ...}``, ``EnvVar``) it is fine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from batch_pipeline.cli import main
from batch_pipeline.core.ledger import open_ledger
from batch_pipeline.settings import LEDGER_URL_ENV
from batch_pipeline_tests.core.ledger.test_ledger import postgres_url  # noqa: F401  (a fixture)

SECRET = "some-secret"


def with_password(url: str) -> str:
    """The test's database URL with a user and a password (trust auth accepts any)."""
    rest = url.removeprefix("postgresql://postgres@")
    return f"postgresql+psycopg2://postgres:{SECRET}@{rest}"


@pytest.mark.slow
def test_a_ledger_password_is_kept_out_of_the_dagster_instance(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    before = os.environ[LEDGER_URL_ENV]
    url = with_password(postgres_url)
    source = tmp_path / "in.csv"
    source.write_text("id\n" + "".join(f"{i}\n" for i in range(12)))

    code = main(
        ["run", str(source), "--output", str(tmp_path / "out"), "--ledger", url,
         "--batch-id", "secret-1", "--chunk-records", "5", "--json"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0, out + err
    assert SECRET not in out + err
    assert os.environ[LEDGER_URL_ENV] == before  # the CLI's process environment is restored

    # The run used that ledger.
    ledger = open_ledger(url)
    assert ledger.progress("secret-1").succeeded == 3
    assert ledger.batch("secret-1").run_id == summary["run_id"]
    ledger.dispose()

    # And the instance holds no trace of the password.
    with DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        assert SECRET not in json.dumps(run.run_config, default=str)
        assert SECRET not in json.dumps(dict(run.tags))
        records = instance.get_records_for_run(run.run_id, limit=100_000).records
        assert len(records) > 20
        for record in records:
            entry = record.event_log_entry
            assert SECRET not in (entry.user_message or "") + (entry.message or "")
            assert SECRET not in repr(entry.dagster_event), entry.dagster_event
    for db in home.rglob("*.db"):
        assert SECRET.encode() not in db.read_bytes(), db


# A password in the run config's ledger URL: the run refuses it ------------------------------

PASSWORD = "s3cr3tPW"


def small_csv(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "in.csv"
    source.write_text("id\n" + "".join(f"{i}\n" for i in range(6)))
    return source


def launch(
    instance: DagsterInstance, tmp_path: Path, ledger_config: dict | None, batch_id: str = "pw-1"
) -> Any:
    """``batch_job`` as the launchpad starts it, ``ledger_config`` as its ledger resource's
    config: (success, the errors its event log holds: failed steps', failed resources')."""
    from dagster import execute_job, reconstructable

    from batch_pipeline.definitions import get_batch_job

    config = {"source": str(small_csv(tmp_path)), "output": str(tmp_path / "out"),
              "batch_id": batch_id, "delivery": {"target": "none"}}  # fmt: skip
    run_config: dict[str, Any] = {"ops": {"initialize": {"config": config}}}
    if ledger_config is not None:
        run_config["resources"] = {"ledger": {"config": ledger_config}}
    # Not as a context manager: that sets the resources up again to load the outputs.
    result = execute_job(
        reconstructable(get_batch_job), instance=instance, run_config=run_config,
        raise_on_error=False,
    )  # fmt: skip
    errors = []
    for record in instance.get_records_for_run(result.run_id, limit=100_000).records:
        event = record.event_log_entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is not None:
            errors.append(error.message)
    return result.success, errors


@pytest.mark.slow
def test_a_password_in_the_run_configs_ledger_url_fails_the_run_saying_where_it_goes(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
    instance: DagsterInstance,
) -> None:
    url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    success, errors = launch(instance, tmp_path, {"url": url})
    assert not success
    message = "\n".join(errors)  # setting the ledger up failed (in the run's event log)
    assert "the ledger URL in this run's config holds a password in plain text" in message
    assert "{env: BATCH_PIPELINE_LEDGER_URL}" in message and "PGPASSWORD" in message
    assert "delete this run from the UI (its config is stored)" in message
    assert PASSWORD not in message
    # The run did not use that ledger: nothing was recorded in it.
    ledger = open_ledger(postgres_url)
    assert ledger.batch("pw-1") is None
    ledger.dispose()
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_ledger_url_from_the_environment_or_without_password_is_used(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    monkeypatch.setenv("BATCH_PIPELINE_LEDGER_URL", url)
    from_env = {"url": {"env": "BATCH_PIPELINE_LEDGER_URL"}}
    assert launch(instance, tmp_path / "env", from_env, "pw-env") == (True, [])
    plain = {"url": postgres_url}  # no password
    assert launch(instance, tmp_path / "plain", plain, "pw-plain") == (True, [])
    ledger = open_ledger(postgres_url)
    assert ledger.batch("pw-env") is not None and ledger.batch("pw-plain") is not None
    ledger.dispose()
    for run in instance.get_runs():
        assert PASSWORD not in json.dumps(run.run_config, default=str)


@pytest.mark.slow
def test_a_password_set_with_envvar_in_definitions_is_fine(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster import Definitions, EnvVar

    from batch_pipeline.jobs import batch_job
    from batch_pipeline.resources import (
        LedgerResource,
        SQSResource,
        StateStoreResource,
        StorageResource,
    )

    url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    monkeypatch.setenv("BATCH_PIPELINE_LEDGER_URL", url)
    defs = Definitions(
        jobs=[batch_job],
        resources={
            "storage": StorageResource(),
            "sqs": SQSResource(),
            "ledger": LedgerResource(url=EnvVar("BATCH_PIPELINE_LEDGER_URL")),
            "state_store": StateStoreResource(),
        },
    )
    config = {"source": str(small_csv(tmp_path)), "output": str(tmp_path / "out"),
              "batch_id": "pw-2", "delivery": {"target": "none"}}  # fmt: skip
    result = defs.resolve_job_def("batch_job").execute_in_process(
        run_config={"ops": {"initialize": {"config": config}}}
    )
    assert result.success
    ledger = open_ledger(postgres_url)
    assert ledger.batch("pw-2") is not None
    ledger.dispose()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("postgresql://u:pw@host/db", True),
        ("postgresql+psycopg2://u:p%40ss@host:5432/db", True),
        ("not a url://u:pw@host", True),  # SQLAlchemy cannot parse it: still refused
        ("postgresql://u@host/db", False),
        ("postgresql://u:@host/db", False),  # an empty password is none
        ("sqlite:////var/ledger.db", False),
        ({"env": "BATCH_PIPELINE_LEDGER_URL"}, False),
        (None, False),
    ],
)
def test_which_run_configs_are_refused(url: Any, refused: bool) -> None:
    from batch_pipeline.resources.ledger import run_config_password_error

    error = run_config_password_error({"resources": {"ledger": {"config": {"url": url}}}})
    assert (error is not None) == refused
    if error is not None:
        assert "pw" not in str(error).replace("PGPASSWORD", "") and "p%40ss" not in str(error)
    assert run_config_password_error({"ops": {}}) is None
    assert run_config_password_error({"resources": {"ledger": None}}) is None
