"""The lead pipeline of seed 003 end to end: ``batch-pipeline run FILE --processor leads``
standardizes, de-duplicates by e-mail and upserts into the lead store, file after file.

Two files in a row (a CSV, then an Excel workbook of two sheets whose headers are spelled
otherwise) hold the same people in other spellings and cases: the store ends with one row per
e-mail holding the merged values, and the counts are exact. A run killed with SIGKILL during
the upsert, then run again, leaves the table a clean run leaves, on each kind of store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import openpyxl
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster import build_sensor_context

from batch_pipeline.automation.requests import BATCH_ID_TAG
from batch_pipeline.automation.uploads import build_upload_sensor
from batch_pipeline.core.ledger import SUCCEEDED, open_ledger
from batch_pipeline.definitions import get_batch_job
from batch_pipeline.resources import StorageResource
from batch_pipeline.settings import WatchSettings
from batch_pipeline_tests.core.ledger.test_ledger import postgres_url  # noqa: F401  (a fixture)
from batch_pipeline_tests.fake_llm import FakeLlm
from batch_pipeline_tests.fault_helpers import (
    SHORT_LEASE,
    cli_env,
    cli_process,
    kill,
    run_cli,
    wait_for,
    wait_for_lease_to_expire,
)

MODULES = "batch_pipeline_tests.fault_processors"
FIELDS = ("name", "phone", "company", "title", "industry", "source", "first_batch", "last_batch")

CSV = """Full Name,E-mail,Phone Number,Company Name,Job Title,Industry
john mcdonald, John.McDonald@Example.com ,(555) 123-4567,acme inc,vp of sales,tech
MARY O'NEIL,mary@corp.io,+44 20 7946 0958,Globex LLC,ceo,banking
   ,not-an-email,555,Nowhere,,
Jan van der Berg,jan@dutch.nl,,Dutch Ltd,cto,
john mcdonald,JOHN.MCDONALD@example.com,,,senior vp of sales,
,,,,,
"""

EAST = [
    ["Name", "Email Address", "Mobile", "Organization", "Position", "Sector", "Lead Source"],
    ["Mary O'Neil", "MARY@CORP.IO", None, "Globex, L.L.C.", "chief executive", None, "Trade show"],
    ["zed zero", "zed@zero.com", "555.987.6543", "Zero Corp", "cto", "software", "Web"],
]
WEST = [
    ["Contact Name", "E-mail", "Phone", "Company", "Title", "Industry"],
    ["JAN VAN DER BERG", " Jan@Dutch.NL", None, "Dutch Limited", "CTO", None],
    ["ZED ZERO", "Zed@Zero.com ", None, None, None, None],
]

# What the store holds after both files (phones in E.164, the merge rules of the issue).
EXPECTED = {
    "john.mcdonald@example.com": ("John McDonald", "+15551234567", "Acme Inc.",
                                  "Senior VP of Sales", "Technology", "leads.csv", "crm-1",
                                  "crm-1"),
    "mary@corp.io": ("Mary O'Neil", "+442079460958", "Globex LLC", "Chief Executive", "Finance",
                     "Trade show", "crm-1", "crm-2"),
    "jan@dutch.nl": ("Jan van der Berg", "N/A", "Dutch Ltd.", "CTO", None, "leads.csv", "crm-1",
                     "crm-1"),
    "zed@zero.com": ("Zed Zero", "+15559876543", "Zero Corp.", "CTO", "Technology", "Web",
                     "crm-2", "crm-2"),
}  # fmt: skip
FIRST_COUNTS = {"leads_inserted": 3, "leads_merged_in_batch": 1, "leads_unchanged": 0,
                "leads_updated": 0}  # fmt: skip
SECOND_COUNTS = {"leads_inserted": 1, "leads_merged_in_batch": 1, "leads_unchanged": 1,
                 "leads_updated": 1}  # fmt: skip


def write_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "leads.csv"
    csv.write_text(CSV)
    book = openpyxl.Workbook()
    east = book.active
    assert east is not None
    east.title = "East"
    for row in EAST:
        east.append(row)
    west = book.create_sheet("West")
    for row in WEST:
        west.append(row)
    xlsx = folder / "more.xlsx"
    book.save(xlsx)
    return csv, xlsx


def leads_table(url: str) -> dict[str, tuple[Any, ...]]:
    """The SQL lead store's rows, by e-mail (the columns of ``FIELDS``)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM leads")).mappings().all()
    finally:
        engine.dispose()
    return {row["email"]: tuple(row[f] for f in FIELDS) for row in rows}


def run_args(
    source: Path | str, output: Path | str, batch: str, store: str, chunk_records: int = 2
) -> list[str]:
    return ["run", str(source), "--processor", "leads", "--output", str(output),
            "--batch-id", batch, "--lead-store", store,
            "--chunk-records", str(chunk_records)]  # fmt: skip


def test_two_files_of_the_same_people_leave_one_merged_row_per_email(
    tmp_path: Path, own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, xlsx = write_files(tmp_path / "in")
    store = f"sqlite:///{tmp_path / 'crm' / 'leads.db'}"
    output = tmp_path / "out"
    code, first, out = run_cli(capsys, *run_args(csv, output, "crm-1", store))
    assert code == 0 and first["batch_status"] == "succeeded", out
    assert (first["records_in"], first["records_out"], first["records_rejected"]) == (6, 4, 2)
    assert first["counts"] == FIRST_COUNTS
    assert "leads_inserted 3, leads_merged_in_batch 1" in out  # the summary says them
    assert "leads: name from 'Full Name'; email from 'E-mail'" in out  # the columns taken
    code, second, out = run_cli(capsys, *run_args(xlsx, output, "crm-2", store))
    assert code == 0 and second["batch_status"] == "succeeded", out
    assert (second["records_in"], second["records_out"], second["records_rejected"]) == (4, 4, 0)
    assert second["counts"] == SECOND_COUNTS
    assert leads_table(store) == EXPECTED

    manifest = json.loads((output / "crm-1" / "manifest.json").read_text())
    assert manifest["counts"] == FIRST_COUNTS
    reasons = manifest["rejection_reasons"]
    assert set(reasons) == {"email: missing", "email: not an e-mail address (got 'not-an-email')"}
    rows = [r for p in sorted((output / "crm-2" / "valid").glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()]  # fmt: skip
    by_email: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_email.setdefault(row["email"], []).append(row)
    assert [r["lead_action"] for r in by_email["zed@zero.com"]] == ["merged", "inserted"]
    assert [r["_worksheet"] for r in by_email["zed@zero.com"]] == ["East", "West"]
    assert by_email["jan@dutch.nl"][0]["lead_action"] == "unchanged"
    assert by_email["jan@dutch.nl"][0]["source"] == "more.xlsx"  # the record's own source
    assert by_email["mary@corp.io"][0]["phone"] == "N/A"
    assert set(rows[0]) >= {"email", "name", "phone", "company", "title", "industry", "source"}
    assert not {"Email Address", "E-mail", "Mobile"} & set(rows[0])  # replaced by the fields


def test_the_same_batch_again_changes_nothing_and_force_redoes_it_exactly(
    tmp_path: Path, own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, xlsx = write_files(tmp_path / "in")
    store = f"sqlite:///{tmp_path / 'leads.db'}"
    for source, batch in ((csv, "crm-1"), (xlsx, "crm-2")):
        assert run_cli(capsys, *run_args(source, tmp_path / "out", batch, store))[0] == 0
    before = leads_table(store)
    code, again, out = run_cli(capsys, *run_args(xlsx, tmp_path / "out", "crm-2", store),
                               "--force")  # fmt: skip
    assert code == 0, out
    assert again["counts"] == SECOND_COUNTS  # from the leads as they were before crm-2
    assert leads_table(store) == before == EXPECTED


def test_the_launchpad_runs_it_with_the_lead_store_as_the_state_store_resource(
    tmp_path: Path,
) -> None:
    csv, _ = write_files(tmp_path / "in")
    store = f"sqlite:///{tmp_path / 'launchpad-leads.db'}"
    run_config = {
        "ops": {"initialize": {"config": {
            "source": str(csv), "output": str(tmp_path / "out"), "batch_id": "crm-1",
            "processor": "leads", "processor_options": {"default_region": "US"},
            "chunking": {"chunk_records": 2},
        }}},
        "resources": {"state_store": {"config": {"url": store}}},
    }  # fmt: skip
    result = get_batch_job().execute_in_process(run_config=run_config)
    assert result.success
    materialized = [
        e.event_specific_data.materialization  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    metadata = {k: v.value for m in materialized for k, v in m.metadata.items()}
    assert {k: metadata[k] for k in FIRST_COUNTS} == FIRST_COUNTS
    assert set(leads_table(store)) == {"john.mcdonald@example.com", "mary@corp.io", "jan@dutch.nl"}


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.services)])
def test_files_dropped_into_the_watched_folder_are_upserted_by_the_sensors_runs(
    where: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 003's upload path: the CSV, then the workbook, land in the watched folder (or S3
    prefix); the sensor's runs, with the run config file naming ``leads``, fill the store."""
    csv, xlsx = write_files(tmp_path / "files")
    store = f"sqlite:///{tmp_path / 'crm' / 'leads.db'}"
    config = tmp_path / "runs.yaml"
    if where == "local":
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        watch, output = str(inbox), str(tmp_path / "results")

        def put(path: Path) -> None:
            (inbox / path.name).write_bytes(path.read_bytes())

    else:
        s3, bucket = request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket")
        watch, output = f"s3://{bucket}/inbox/", f"s3://{bucket}/results"

        def put(path: Path) -> None:
            s3.put_object(Bucket=bucket, Key=f"inbox/{path.name}", Body=path.read_bytes())

    config.write_text(
        f"processor: leads\nprocessor_options: {{default_region: US}}\n"
        f"chunking: {{chunk_records: 2}}\noutput: {output}\n"
    )
    for name, value in (("WATCH_URI", watch), ("RUN_CONFIG", str(config)),
                        ("SETTLE_SECONDS", "0"), ("STATE_STORE_URL", store)):  # fmt: skip
        monkeypatch.setenv(f"BATCH_PIPELINE_{name}", value)
    sensor = build_upload_sensor(WatchSettings.from_env())
    resources = {"storage": StorageResource()}
    cursor, batches = None, []
    for path in (csv, xlsx):
        put(path)
        data = sensor.evaluate_tick(build_sensor_context(cursor=cursor, resources=resources))
        cursor = data.cursor
        [run] = data.run_requests
        config_of_run = run.run_config["ops"]["initialize"]["config"]
        assert config_of_run["processor"] == "leads" and config_of_run["source"].endswith(path.name)
        result = get_batch_job().execute_in_process(run_config=run.run_config, tags=run.tags)
        assert result.success
        batches.append(run.tags[BATCH_ID_TAG])
    table = leads_table(store)
    assert {e: row[:6] for e, row in table.items()} == {e: r[:6] for e, r in EXPECTED.items()}
    assert table["zed@zero.com"][6:] == (batches[1], batches[1])
    assert table["mary@corp.io"][6:] == (batches[0], batches[1])


# SIGKILL during the upsert, on each kind of store --------------------------------------------


@pytest.fixture
def dynamodb_leads(moto_server: str) -> Iterator[str]:
    name = f"leads-{uuid.uuid4().hex[:12]}"
    yield name
    client = boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1")
    if name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)


def dynamodb_rows(client: Any, table: str) -> dict[str, tuple[Any, ...]]:
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["email"]["S"]: tuple(item.get(f, {}).get("S") for f in FIELDS) for item in items}


def many_leads(path: Path, people: int, records: int) -> Path:
    """``records`` rows over ``people`` e-mails, written in varied cases and spellings."""
    lines = ["Name,Email,Phone,Company,Title"]
    for i in range(records):
        person = (i * 7919) % people
        email = f"Person{person}@Example.COM" if i % 2 else f" person{person}@example.com"
        phone = f"(555) 01{person % 100:02d}-{i % 10000:04d}" if i % 3 else ""
        lines.append(f"person {person},{email},{phone},company {person % 50} inc,vp {i % 5}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.services),
        pytest.param("dynamodb", marks=pytest.mark.services),
    ],
)
def test_kill_9_during_the_upsert_then_run_again_equals_a_clean_run(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    own_ledger: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = many_leads(tmp_path / "leads.csv", people=300, records=2_000)
    # The clean run: another ledger, a SQLite store; the killed run's table must equal it.
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    code, _, out = run_cli(capsys, *run_args(source, tmp_path / "clean", "killed-leads", clean,
                                             chunk_records=200),
                           "--ledger", f"sqlite:///{tmp_path / 'clean-ledger.db'}")  # fmt: skip
    assert code == 0, out
    expected = leads_table(clean)
    assert len(expected) == 300

    client, endpoint = None, "http://127.0.0.1:1"  # nothing listens: no AWS call may happen
    if kind == "sqlite":
        store = f"sqlite:///{tmp_path / 'killed.db'}"
    elif kind == "postgres":
        store = request.getfixturevalue("postgres_url")
    else:
        endpoint = request.getfixturevalue("moto_server")
        store = f"dynamodb://{request.getfixturevalue('dynamodb_leads')}"
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        request.getfixturevalue("aws_endpoint")  # this process's runs reach moto too
    args = ["run", str(source), "--processor", "fault_leads", "--processor-options",
            json.dumps({"seconds": 0.4}), "--processor-module", MODULES,
            "--output", str(tmp_path / "out"), "--batch-id", "killed-leads",
            "--lead-store", store, "--chunk-records", "200", "--max-buckets", "10"]  # fmt: skip
    ledger = open_ledger(own_ledger)
    log = tmp_path / "killed.log"
    env = {**cli_env(tmp_path, endpoint, own_ledger), **SHORT_LEASE}
    with cli_process(args, env, log) as process:

        def some_buckets_done() -> bool:
            states = ledger.buckets.chunk_states("killed-leads")
            return sum(s.status == SUCCEEDED for s in states) >= 2

        wait_for(some_buckets_done, "2 buckets succeeded", process, log)
        kill(process)
    states = ledger.buckets.chunk_states("killed-leads")
    assert 2 <= sum(s.status == SUCCEEDED for s in states) < len(states), states
    wait_for_lease_to_expire(ledger, "killed-leads")
    code, resumed, out = run_cli(capsys, *args)  # the same command again
    assert code == 0 and resumed["batch_status"] == "succeeded", out
    assert resumed["records_in"] == 2_000 == resumed["records_out"]
    assert resumed["counts"] == {"leads_inserted": 300, "leads_merged_in_batch": 1_700,
                                 "leads_unchanged": 0, "leads_updated": 0}  # fmt: skip
    if kind == "dynamodb":
        got = dynamodb_rows(client, store.removeprefix("dynamodb://"))
    else:
        got = leads_table(store)
    assert got == expected


def test_the_llm_standardizer_runs_in_the_job_with_its_key_from_the_environment(
    tmp_path: Path,
    own_ledger: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    key = "sk-never-shown-0123456789"
    monkeypatch.setenv("BATCH_PIPELINE_LLM_API_KEY", key)
    csv, _ = write_files(tmp_path / "in")
    store = f"sqlite:///{tmp_path / 'leads.db'}"
    with FakeLlm(delay=0.01) as fake:
        options = {"standardizer": "llm", "llm": {"base_url": fake.url, "model": "deepseek-chat",
                                                  "max_concurrent_calls": 2}}  # fmt: skip
        args = [*run_args(csv, tmp_path / "out", "crm-llm", store), "--processor-options",
                json.dumps(options)]  # fmt: skip
        code, summary, out = run_cli(capsys, *args)
        assert code == 0, out
        assert fake.requests >= 1 and set(fake.authorizations) == {f"Bearer {key}"}
        assert fake.max_concurrent <= 2
    counts = summary["counts"]
    assert counts["llm_calls"] >= 2 and counts["llm_fallbacks"] == 0  # 3 chunks of 2 records
    assert counts["llm_prompt_tokens"] > 0 and counts["leads_inserted"] == 3
    assert leads_table(store)["mary@corp.io"][:2] == ("Mary O'neil", "+442079460958")
    manifest = (tmp_path / "out" / "crm-llm" / "manifest.json").read_text()
    assert key not in manifest and key not in out
