"""What a hostile review of the ``leads`` processor (issue 15) found, kept as regression tests.

Each test's docstring says what went wrong before the fix ("Before the fix:"), and its
asserts what must hold now. They failed on commit 9c3665f.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import BatchStatus, Ledger
from batch_pipeline.core.pipeline import LocalRun, run_batch
from batch_pipeline.core.stores.state import StateStore
from batch_pipeline.core.stores.state_stores import open_state_store
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.core.ledger.test_ledger import postgres_url  # noqa: F401  (a fixture)
from batch_pipeline_tests.fake_llm import FakeLlm

NS = "leads/email"


def leads_spec(source: Path, out: Path, batch_id: str, options: dict[str, Any] | None = None,
               chunk_records: int = 10) -> Any:  # fmt: skip
    return prepare_batch(
        Storage(),
        str(source),
        processor="leads",
        processor_options=options or {},
        chunking=ChunkingSettings(chunk_records=chunk_records),
        output=str(out),
        batch_id=batch_id,
        delivery=DeliverySettings(target="none"),
    )


def run_leads(
    source: Path,
    out: Path,
    store: StateStore,
    batch_id: str = "b1",
    options: dict[str, Any] | None = None,
    ledger: Ledger | None = None,
    secrets: dict[str, str] | None = None,
) -> tuple[LocalRun, list[dict[str, Any]]]:
    spec = leads_spec(source, out, batch_id, options)
    run = run_batch(Storage(), spec, ledger=ledger, state_store=store, secrets=secrets)
    rows = [r for uri in run.result.valid_files for r in pq.read_table(uri).to_pylist()]
    return run, rows


def sqlite_store(tmp_path: Path, name: str = "leads.db") -> StateStore:
    return open_state_store(f"sqlite:///{tmp_path / name}", kind="leads")


def lead_of(store: StateStore, email: str) -> dict[str, Any]:
    return store.load(NS, [email])[email].state


def values_in(rows: list[dict[str, Any]]) -> set[str]:
    return {str(v) for row in rows for v in row.values() if v is not None}


# 1. HIGH: a second column of the same field is dropped from the output


def test_a_second_alias_column_of_a_field_is_silently_dropped(tmp_path: Path) -> None:
    """Before the fix: when a source has two columns of one field (``Phone`` and ``Mobile``,
    ``Email`` and ``Work Email``), ``prepare`` coalesces them (first non-blank) and then removes
    BOTH source columns from the output (``used`` in ``Leads.prepare``): the second column's
    value is in no valid record, no rejected record and not in the lead store. Records in = out
    + rejected still holds, so the run succeeds, yet values the source held are gone: the
    promise "every kept value exactly as it came in" is broken silently."""
    source = tmp_path / "crm.csv"
    source.write_text(
        "Email,Phone,Mobile,Work Email\n"
        "ann@x.com,555-123-4567,555-999-8888,\n"
        "bob@x.com,555-222-3333,555-777-6666,bob.work@corp.com\n"
    )
    run, rows = run_leads(source, tmp_path / "out", sqlite_store(tmp_path))
    assert run.result.status == BatchStatus.SUCCEEDED
    assert run.result.records_out == 2
    kept = values_in(rows)
    # The mobile numbers (in any form) and the work e-mail must survive somewhere.
    assert any("5559998888" in v.replace("-", "") for v in kept), rows
    assert any("5557776666" in v.replace("-", "") for v in kept), rows
    assert "bob.work@corp.com" in kept, rows


# 2. HIGH: numeric phone columns coalesced through Arrow's float->string cast


def test_two_phone_columns_one_of_them_float_lose_the_phone(tmp_path: Path) -> None:
    """Before the fix: ``_first_present`` with two columns of a field casts a float64 column with
    ``pc.cast(..., pa.string())``, which writes 15551234567.0 as ``1.5551234567e+10`` (and
    442079460958.0 as ``4.42079460958e+11``): the phone rule cannot read it and the lead gets
    ``N/A``. With one column the same float goes through ``rules._float_text`` and is read
    fine. A CSV exported by pandas (phones as floats) that has a ``Mobile`` column too loses
    every phone."""
    source = tmp_path / "crm.csv"
    source.write_text(
        "Email,Phone,Mobile\n"
        "ann@x.com,15551234567.0,\n"
        "bob@x.com,5552223333.5,\n"  # forces float64 for the whole column
        "cy@x.com,,555-444-5555\n"
    )
    _, rows = run_leads(source, tmp_path / "out", sqlite_store(tmp_path))
    phones = {r["email"]: r["phone"] for r in rows}
    assert phones["ann@x.com"] == "+15551234567", phones
    assert phones["cy@x.com"] == "+15554445555", phones


def test_a_nan_in_the_first_phone_column_hides_the_second(tmp_path: Path) -> None:
    """Before the fix: a pandas NaN in the first of two phone columns is cast to the text
    ``nan``, which is not blank, so ``pc.coalesce`` keeps it over the second column's real
    number: the phone becomes ``N/A`` (the one-column path reads NaN as missing, as rules'
    docstring says)."""
    source = tmp_path / "crm.parquet"
    table = pa.table({
        "Email": ["ann@x.com"],
        "Phone": pa.array([float("nan")], pa.float64()),
        "Mobile": ["555-222-3333"],
    })  # fmt: skip
    pq.write_table(table, source)
    _, rows = run_leads(source, tmp_path / "out", sqlite_store(tmp_path))
    assert rows[0]["phone"] == "+15552223333", rows


# 3. MEDIUM: "N/A" in a text field blanks the stored lead


def test_na_in_a_text_field_blanks_the_stored_value(tmp_path: Path) -> None:
    """Before the fix: ``process_bucket`` merges any non-null value, so a CRM placeholder ``N/A`` in
    ``Company`` replaces the stored ``Acme Inc.`` and the lead is counted ``updated``, while
    its own change test (``_empty``) holds ``N/A`` to be *no value*: by the processor's own
    definition an empty value blanks a stored one ("never blanked by an empty value")."""
    store = sqlite_store(tmp_path)
    first = tmp_path / "one.csv"
    first.write_text("Email,Company,Job Title\nann@x.com,acme inc,ceo\n")
    second = tmp_path / "two.csv"
    second.write_text("Email,Company,Job Title\nann@x.com,N/A,n/a\n")
    run_leads(first, tmp_path / "out", store, "b1")
    run, _ = run_leads(second, tmp_path / "out", store, "b2")
    lead = lead_of(store, "ann@x.com")
    assert (lead["company"], lead["title"]) == ("Acme Inc.", "CEO"), lead
    assert run.result.counts["leads_unchanged"] == 1, run.result.counts


# 4. MEDIUM: Unicode normalization of e-mails


def test_an_nfd_email_is_the_same_lead_as_its_nfc_spelling(tmp_path: Path) -> None:
    """Before the fix: ``standardize_email`` neither NFC-normalizes nor accepts combining marks
    (\\p{M}) in its regex: ``josé@x.com`` written decomposed (NFD: e + U+0301, as macOS and
    some exports write it) is REJECTED as "not an e-mail address" although it is the same
    address as the precomposed spelling in the same file. Expected: one lead, two records
    merged, nothing rejected."""
    nfc = unicodedata.normalize("NFC", "josé@x.com")
    nfd = unicodedata.normalize("NFD", "josé@x.com")
    assert nfc != nfd
    source = tmp_path / "crm.csv"
    source.write_text(f"Email,Name\n{nfc},Ann\n{nfd},Ann B\n", encoding="utf-8")
    run, _ = run_leads(source, tmp_path / "out", sqlite_store(tmp_path))
    assert run.result.records_rejected == 0, run.result.rejection_reasons
    assert run.result.counts["leads_inserted"] == 1
    assert run.result.counts["leads_merged_in_batch"] == 1


# 5. MEDIUM: a NUL in a lead's field fails the whole bucket on Postgres


@pytest.mark.services
def test_a_nul_in_one_leads_company_fails_every_lead_of_its_bucket_on_postgres(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """Before the fix: the lead store writes fields as raw text; Postgres refuses a NUL in text,
    so one record with a NUL in its company makes the save of its whole bucket fail, retried 4
    times (category ``unknown``) and dead-lettered: every other lead of the bucket is never
    stored, and on SQLite the same file succeeds. The keys are checked for NUL
    (``process._storable_keys``), the fields are not. Expected: the record rejected with a
    reason (or the NUL removed as a declared conversion), the other leads stored."""
    source = tmp_path / "crm.csv"
    source.write_bytes(b"Email,Company\nann@x.com,Ac\x00me\nbob@x.com,Bob Co\n")
    store = open_state_store(postgres_url, kind="leads")
    try:
        run, _ = run_leads(source, tmp_path / "out", store)
        assert run.result.status == BatchStatus.SUCCEEDED, run.result.failed_buckets
        assert "bob@x.com" in store.load(NS, ["bob@x.com"])
    finally:
        store.close()


# 6. MEDIUM: a DynamoDB lead item without last_batch


@pytest.fixture
def dynamodb_leads(moto_server: str) -> Iterator[tuple[Any, str]]:
    client = boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1")
    name = f"leads-{uuid.uuid4().hex[:12]}"
    yield client, name
    if name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)


@pytest.mark.services
def test_a_dynamodb_lead_without_last_batch_fails_with_a_bare_keyerror(
    tmp_path: Path, dynamodb_leads: tuple[Any, str]
) -> None:
    """Before the fix: the lead store is "a table users query (seed 003's DynamoDB leads
    table)", but ``DynamoDBLeadStore._stored`` reads ``item["last_batch"]["S"]`` unguarded: one
    item another writer put there (hash key ``email``, a name, no ``last_batch``) fails its
    bucket with the error text ``'last_batch'`` (a KeyError, category ``unknown``, retried 4
    times). Expected: the item read as a lead of no batch (or a StateStoreError naming the
    e-mail and what is missing), not a bare KeyError."""
    client, table = dynamodb_leads
    store = open_state_store(f"dynamodb://{table}", dynamodb_client=client, kind="leads")
    client.put_item(TableName=table, Item={"email": {"S": "ann@x.com"}, "name": {"S": "Ann"}})
    source = tmp_path / "crm.csv"
    source.write_text("Email,Company\nann@x.com,Acme\n")
    run, _ = run_leads(source, tmp_path / "out", store)
    failed = run.result.failed_buckets
    assert run.result.status == BatchStatus.SUCCEEDED or (
        "ann@x.com" in failed[0]["error"] and failed[0]["category"] != "unknown"
    ), failed


# 7. MEDIUM: the LLM path loses a phone the rules read


def test_the_llm_path_loses_a_phone_the_rules_standardize(tmp_path: Path) -> None:
    """Before the fix: with ``standardizer: llm``, a record the model answered takes the model's
    phone through the rules; when the model says ``N/A`` (here the fake, for any non-NANP
    number) the lead loses a phone the rules read perfectly (``+44 20 7946 0958`` ->
    ``+442079460958``). Expected: a phone the model gives up on falls back to the rules'
    phone."""
    source = tmp_path / "crm.csv"
    source.write_text("Email,Phone\nann@x.com,+44 20 7946 0958\n")
    with FakeLlm() as fake:
        options = {"standardizer": "llm", "llm": {"base_url": fake.url, "model": "m"}}
        run, rows = run_leads(source, tmp_path / "out", sqlite_store(tmp_path), options=options,
                              secrets={"BATCH_PIPELINE_LLM_API_KEY": "sk-test"})  # fmt: skip
    assert run.result.counts["llm_fallbacks"] == 0  # the model answered
    assert rows[0]["phone"] == "+442079460958", rows


# 8. MEDIUM: a redriven batch overwrites a later batch's values


def test_a_redriven_earlier_batch_overwrites_the_values_of_a_later_one(tmp_path: Path) -> None:
    """Before the fix: batch b1 (registered first) has its bucket dead-lettered; b2 then updates the
    lead; b1 redriven applies its OLDER values over b2's (phone, company) and the table no
    longer equals a clean run of b1 then b2 (also ``first_batch`` becomes b2). ``process_bucket``
    ignores ``context.batch_time`` versus the stored ``updated_at``: late data is not handled
    (kalman rejects it). Expected: the clean run's lead."""
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text("Email,Phone,Company\nann@x.com,555-111-1111,Old Co\n")
    two.write_text("Email,Phone,Company\nann@x.com,555-222-2222,New Co\n")
    clean = sqlite_store(tmp_path, "clean.db")
    clean_ledger = Ledger("sqlite://")
    run_leads(one, tmp_path / "clean", clean, "b1", ledger=clean_ledger)
    run_leads(two, tmp_path / "clean", clean, "b2", ledger=clean_ledger)
    expected = lead_of(clean, "ann@x.com")

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    store = sqlite_store(tmp_path)
    marker = tmp_path / "broken"
    marker.touch()
    spec_one = replace(
        leads_spec(one, tmp_path / "out", "b1"),
        processor="fault_leads",
        processor_options={"marker": str(marker)},
        processor_modules=("batch_pipeline_tests.fault_processors",),
    )
    spec_one = replace(spec_one, retry=replace(spec_one.retry, max_retries=0))
    failed = run_batch(Storage(), spec_one, ledger=ledger, state_store=store)
    assert failed.result.status == BatchStatus.FAILED  # its bucket dead-lettered
    run_leads(two, tmp_path / "out", store, "b2", ledger=ledger)
    marker.unlink()
    redriven = run_batch(Storage(), replace(spec_one, mode="redrive"), ledger=ledger,
                         state_store=store)  # fmt: skip
    assert redriven.result.status == BatchStatus.SUCCEEDED
    got = lead_of(store, "ann@x.com")
    fields = ("phone", "company", "first_batch")
    assert {f: got[f] for f in fields} == {f: expected[f] for f in fields}


# 9. LOW: a store of the wrong kind is found only after stage 1


def test_a_store_of_the_wrong_kind_is_refused_before_any_work(tmp_path: Path) -> None:
    """Before the fix: ``run_batch`` checks that a keyed batch has a store, not that it is of the
    processor's ``store_kind``: with a ``state`` store, stage 1 runs over every chunk (with
    ``standardizer: llm``: every paid LLM call) and only then every bucket is dead-lettered.
    Expected: a ConfigError up front, as for a missing store."""
    source = tmp_path / "crm.csv"
    source.write_text("Email\nann@x.com\n")
    wrong = open_state_store(f"sqlite:///{tmp_path / 'state.db'}", kind="state")
    with pytest.raises(ConfigError, match="leads"):
        run_leads(source, tmp_path / "out", wrong)
