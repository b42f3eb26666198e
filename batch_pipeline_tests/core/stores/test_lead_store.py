"""The lead store (SQLite, Postgres, DynamoDB on the moto server): one row per e-mail in a table
named ``leads`` with the issue's columns, leads round-trip exactly with the batch that last
changed them and the lead before it, saves replace, and a store of one kind is refused where
the other is expected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batch_pipeline.core.common.errors import ConfigError, StateStoreError
from batch_pipeline.core.stores.leads import iso_time
from batch_pipeline.core.stores.state import StateStore, StoredState, next_stored
from batch_pipeline.core.stores.state_stores import open_state_store
from batch_pipeline_tests.core.ledger.test_ledger import postgres_url  # noqa: F401  (a fixture)
from batch_pipeline_tests.core.stores.test_state_stores import (  # noqa: F401  (a fixture)
    dynamodb_client,
    dynamodb_table,
)

NS = "leads/email"
COLUMNS = {"email", "name", "phone", "company", "title", "industry", "source", "first_batch",
           "last_batch", "created_at", "updated_at", "previous"}  # fmt: skip


def lead(name: str | None, batch: str, at: float, **fields: Any) -> dict[str, Any]:
    base = {"name": name, "phone": "N/A", "company": None, "title": None, "industry": None,
            "source": "leads.csv", "first_batch": batch, "created_at": iso_time(at),
            "updated_at": iso_time(at)}  # fmt: skip
    return {**base, **fields}


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.services),
        pytest.param("dynamodb", marks=pytest.mark.services),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        opened = open_state_store(f"sqlite:///{tmp_path / 'leads.db'}", kind="leads")
    elif request.param == "postgres":
        opened = open_state_store(request.getfixturevalue("postgres_url"), kind="leads")
    else:
        table = request.getfixturevalue("dynamodb_table")
        client = dynamodb_client(request.getfixturevalue("moto_server"))
        opened = open_state_store(f"dynamodb://{table}", dynamodb_client=client, kind="leads")
    yield opened
    opened.close()


def test_leads_round_trip_with_their_batch_and_the_lead_before_it(store: StateStore) -> None:
    assert store.kind == "leads"
    assert store.load(NS, ["ann@example.com"]) == {}
    first = lead("Ann Lee", "b1", 1_700_000_000, company="Acme Inc.", phone="+15551234567")
    bo = lead("Bo", "b1", 1_700_000_000)
    store.save(
        NS,
        {
            "ann@example.com": StoredState(first, "b1", None),
            "bo@example.com": StoredState(bo, "b1", None),
        },
    )
    loaded = store.load(NS, ["ann@example.com", "bo@example.com", "nobody@example.com"])
    assert loaded["ann@example.com"] == StoredState(first, "b1", None)
    assert set(loaded) == {"ann@example.com", "bo@example.com"}
    # Batch b2 updates Ann: the row holds b2's lead and the one before b2.
    second = {**first, "title": "CEO", "updated_at": iso_time(1_700_086_400)}
    store.save(NS, {"ann@example.com": next_stored(loaded["ann@example.com"], "b2", second)})
    again = store.load(NS, ["ann@example.com"])["ann@example.com"]
    assert again == StoredState(second, "b2", first)
    assert again.start_for("b2") == first and again.start_for("b3") == second
    # b2 saved again (a retried bucket): the lead before b2 stays the one before it.
    store.save(NS, {"ann@example.com": next_stored(again, "b2", {**second, "title": "CTO"})})
    assert store.load(NS, ["ann@example.com"])["ann@example.com"].before == first


def test_the_sql_table_is_leads_with_the_columns_users_query(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    store = open_state_store(url, kind="leads")
    try:
        store.save(NS, {"c@x.io": StoredState(lead("Cy", "b1", 1_700_000_000), "b1", None)})
    finally:
        store.close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("leads")}
        row = conn.execute(sa.text("SELECT * FROM leads")).mappings().one()
    engine.dispose()
    assert columns == COLUMNS
    assert (row["email"], row["name"], row["phone"], row["first_batch"], row["last_batch"]) == (
        "c@x.io", "Cy", "N/A", "b1", "b1"
    )  # fmt: skip
    assert str(row["created_at"]).startswith("2023-11-14 22:13:20")
    assert row["previous"] is None


def test_a_lead_store_and_a_state_store_are_not_each_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'both.db'}"
    states, leads = open_state_store(url), open_state_store(url, kind="leads")
    try:  # one database holds both tables, apart
        states.save(NS, {"a@x.io": StoredState({"x": 1}, "b1", None)})
        leads.save(NS, {"a@x.io": StoredState(lead("A", "b1", 1.0), "b1", None)})
        assert states.load(NS, ["a@x.io"])["a@x.io"].state == {"x": 1}
        assert leads.load(NS, ["a@x.io"])["a@x.io"].state["name"] == "A"
        with pytest.raises(StateStoreError, match="is not a lead"):
            leads.save(NS, {"b@x.io": StoredState({"x": 1}, "b1", None)})
    finally:
        states.close()
        leads.close()
    with pytest.raises(ConfigError, match="no store of kind 'lead'"):
        open_state_store(url, kind="lead")


@pytest.mark.services
def test_a_dynamodb_state_table_is_refused_as_a_lead_table(
    moto_server: str,
    dynamodb_table: str,  # noqa: F811  (the fixture)
) -> None:
    client = dynamodb_client(moto_server)
    open_state_store(f"dynamodb://{dynamodb_table}", dynamodb_client=client).close()
    with pytest.raises(StateStoreError, match=r"not a leads store's .* email"):
        open_state_store(f"dynamodb://{dynamodb_table}", dynamodb_client=client, kind="leads")
