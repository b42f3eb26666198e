"""A password in ``--ledger`` never reaches the Dagster instance: not the run's stored config,
not its tags, not a single event of its event log. The run still uses that ledger (the CLI
hands it to the run through the environment, as a deployment would)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dagster import DagsterInstance

from batch_pipeline.cli import main
from batch_pipeline.core.ledger import LEDGER_URL_ENV, open_ledger
from batch_pipeline_tests.core.test_ledger import postgres_url  # noqa: F401  (a fixture)

SECRET = "some-secret"


def with_password(url: str) -> str:
    """The test's database URL with a user and a password (trust auth accepts any)."""
    rest = url.removeprefix("postgresql://postgres@")
    return f"postgresql+psycopg2://postgres:{SECRET}@{rest}"


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
