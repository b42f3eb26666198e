"""The state stores (SQLite, Postgres, DynamoDB on the moto server) behave alike: absent keys,
exact round trips, namespaces apart, replacing saves, bulk loads and saves in few operations,
exactly-once ``before``; and their errors say which store failed without its password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from batch_pipeline.core.common.errors import ConfigError, StateStoreError, classify
from batch_pipeline.core.stores.sql_state import SqlStateStore
from batch_pipeline.core.stores.state import MAX_KEY_BYTES, StateStore, StoredState, next_stored
from batch_pipeline.core.stores.state_stores import open_state_store
from batch_pipeline_tests.core.ledger.test_ledger import postgres_url  # noqa: F401  (a fixture)

NS = "kalman/user_id"
# Per store kind: (statements or calls to save 1,000 keys, to load them).
OPERATIONS_PER_1000 = {"sql": (2, 2), "dynamodb": (40, 10)}


def dynamodb_client(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def dynamodb_table(moto_server: str) -> Iterator[str]:
    """A table name of this test's own on the moto server; the table deleted afterwards."""
    name = f"states-{uuid.uuid4().hex[:12]}"
    yield name
    client = dynamodb_client(moto_server)
    if name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.services),
        pytest.param("dynamodb", marks=pytest.mark.services),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """Each kind of store, new and empty (asked for at run time: marked where declared)."""
    if request.param == "sqlite":
        opened = open_state_store(f"sqlite:///{tmp_path / 'states' / 'states.db'}")
    elif request.param == "postgres":
        opened = open_state_store(request.getfixturevalue("postgres_url"))
    else:
        table = request.getfixturevalue("dynamodb_table")
        client = dynamodb_client(request.getfixturevalue("moto_server"))
        opened = open_state_store(f"dynamodb://{table}", dynamodb_client=client)
    yield opened
    opened.close()


def kind(store: StateStore) -> str:
    return "dynamodb" if store.description.startswith("dynamodb://") else "sql"


def test_keys_never_saved_load_as_nothing(store: StateStore) -> None:
    assert store.load(NS, ["a", "b", "c"]) == {}
    assert store.load(NS, []) == {}
    store.save(NS, {})
    assert store.load(NS, ["a"]) == {}


ODD_KEYS = [
    "user-1",
    "",
    "ключ/ü/😀",
    "a\x1fb",  # the separator of DynamoDB's pk, inside a key
    'quote\'s "and" %_ wildcards\n',
    "k" * MAX_KEY_BYTES,
    "é" * (MAX_KEY_BYTES // 2),  # 2 bytes each in UTF-8: exactly the limit
]


def test_states_round_trip_exactly(store: StateStore) -> None:
    state = {
        "x": 0.1 + 0.2,
        "tiny": 5e-324,
        "big": 2**63 + 1,
        "neg": -1.7976931348623157e308,
        "P": [[1.0, 0.25], [0.25, 1e-12]],
        "nested": {"deep": [[[]], {"a": None, "b": True}], "text": "naïve ☃ \u0000 \ud800"},
    }
    saved = {
        key: StoredState({**state, "i": i}, "batch-2", {"x": i / 3} if i % 2 else None)
        for i, key in enumerate(ODD_KEYS)
    }
    saved["empty"] = StoredState({}, "batch-2", {})
    store.save(NS, saved)
    loaded = store.load(NS, [*saved, "absent"])
    assert loaded == saved
    assert loaded["user-1"].state["x"] == 0.30000000000000004
    assert type(loaded["user-1"].state["big"]) is int
    assert loaded["empty"].before == {} and loaded["user-1"].before is None


def test_namespaces_are_kept_apart(store: StateStore) -> None:
    store.save("kalman/user_id", {"u1": StoredState({"n": 1}, "b1", None)})
    store.save("kalman/device_id", {"u1": StoredState({"n": 2}, "b1", None)})
    store.save("kalman", {"user_id\x1fu1": StoredState({"n": 3}, "b1", None)})
    longest = "😀" * 255  # the longest namespace, with the longest key
    store.save(longest, {"é" * (MAX_KEY_BYTES // 2): StoredState({"n": 4}, "b1", None)})
    assert store.load(longest, ["é" * (MAX_KEY_BYTES // 2)])
    assert store.load("kalman/user_id", ["u1"])["u1"].state == {"n": 1}
    assert store.load("kalman/device_id", ["u1"])["u1"].state == {"n": 2}
    assert store.load("kalman", ["u1", "user_id\x1fu1"]) == {
        "user_id\x1fu1": StoredState({"n": 3}, "b1", None)
    }
    assert store.load("other", ["u1"]) == {}


def test_a_save_replaces_the_keys_it_names_only(store: StateStore) -> None:
    store.save(NS, {"a": StoredState({"v": 1}, "b1", None), "b": StoredState({"v": 1}, "b1", None)})
    store.save(NS, {"a": StoredState({"w": [2]}, "b2", {"v": 1})})
    assert store.load(NS, ["a", "b"]) == {
        "a": StoredState({"w": [2]}, "b2", {"v": 1}),
        "b": StoredState({"v": 1}, "b1", None),
    }


def test_a_thousand_keys_load_and_save_in_bulk(store: StateStore) -> None:
    keys = [f"user-{i:04d}" for i in range(1000)]
    states = {
        key: StoredState({"x": i * 0.1, "P": [i, 0.5]}, "b1", None) for i, key in enumerate(keys)
    }
    saves, loads = OPERATIONS_PER_1000[kind(store)]
    before = store.operations
    store.save(NS, states)
    assert store.operations - before == saves
    before = store.operations
    assert store.load(NS, keys + keys[:10]) == states  # a key asked for twice is loaded once
    assert store.operations - before == loads


def test_a_retried_batch_starts_each_key_from_its_state_before_the_batch(
    store: StateStore,
) -> None:
    """Batch b2 adds its measurements to a counter; run twice (a retry after its save), it
    still counts each measurement once, and b3 goes on from b2's result."""

    def run(batch_id: str, add: int) -> None:
        stored = store.load(NS, ["k"]).get("k")
        start = (stored.start_for(batch_id) if stored else None) or {"n": 0}
        store.save(NS, {"k": next_stored(stored, batch_id, {"n": start["n"] + add})})

    run("b1", 1)
    run("b2", 10)
    run("b2", 10)  # retried after it had saved
    assert store.load(NS, ["k"])["k"] == StoredState({"n": 11}, "b2", {"n": 1})
    run("b3", 100)
    assert store.load(NS, ["k"])["k"] == StoredState({"n": 111}, "b3", {"n": 11})


def test_next_stored_keeps_the_state_from_before_the_batch() -> None:
    first = next_stored(None, "b1", {"n": 1})
    assert first == StoredState({"n": 1}, "b1", None)
    again = next_stored(first, "b1", {"n": 2})  # b1 re-saves: still nothing before it
    assert again == StoredState({"n": 2}, "b1", None)
    second = next_stored(again, "b2", {"n": 3})
    assert second == StoredState({"n": 3}, "b2", {"n": 2})
    assert next_stored(second, "b2", {"n": 4}) == StoredState({"n": 4}, "b2", {"n": 2})
    assert second.start_for("b2") == {"n": 2} and second.start_for("b3") == {"n": 3}


def test_keys_namespaces_and_states_a_store_cannot_keep_are_refused(store: StateStore) -> None:
    with pytest.raises(StateStoreError, match="more than the 1024") as too_long:
        store.save(NS, {"k" * (MAX_KEY_BYTES + 1): StoredState({}, "b1", None)})
    assert too_long.value.permanent
    with pytest.raises(StateStoreError, match="more than the 1024"):
        store.load(NS, ["é" * (MAX_KEY_BYTES // 2 + 1)])
    with pytest.raises(StateStoreError, match=r"'bad'.*not JSON"):
        store.save(
            NS, {"ok": StoredState({}, "b1", None), "bad": StoredState({"t": {1, 2}}, "b1", None)}
        )
    with pytest.raises(StateStoreError, match="holds a NUL"):
        store.load(NS, ["a\0b"])
    for namespace in ("", "a\x1fb", "a\0b", "n" * 256):
        with pytest.raises(ConfigError, match="namespace"):
            store.load(namespace, ["k"])
    assert store.load(NS, ["ok"]) == {}  # nothing of the refused save was stored


# The SQL store: one transaction, readable errors ------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStateStore]:
    if request.param == "sqlite":
        opened = SqlStateStore(f"sqlite:///{tmp_path / 'states.db'}")
    else:
        opened = SqlStateStore(request.getfixturevalue("postgres_url"))
    yield opened
    opened.close()


FAIL_ON_KEY = {
    "sqlite": [
        "CREATE TRIGGER fail_k0900 BEFORE INSERT ON bp_key_states WHEN NEW.key = 'k0900' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_k0900() RETURNS trigger AS $$ BEGIN IF NEW.key = 'k0900' THEN "
        "RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_k0900 BEFORE INSERT ON bp_key_states FOR EACH ROW "
        "EXECUTE FUNCTION fail_k0900()",
    ],
}


def test_a_sql_save_is_all_or_nothing(sql_store: SqlStateStore) -> None:
    """The database refuses key k0900 (a trigger), in the second of the save's two statements:
    the first statement's 500 keys are not kept either."""
    with sql_store.engine.begin() as conn:
        for statement in FAIL_ON_KEY[sql_store.engine.dialect.name]:
            conn.exec_driver_sql(statement)
    keys = [f"k{i:04d}" for i in range(1000)]
    with pytest.raises(StateStoreError, match=r"could not save states: .*injected failure") as e:
        sql_store.save(NS, {key: StoredState({"i": 1}, "b1", None) for key in keys})
    assert "INSERT" not in str(e.value)  # the database's words, not the statement
    assert sql_store.load(NS, keys) == {}
    assert sql_store.operations == 2 + 2


def test_the_table_is_made_once_and_shared(sql_store: SqlStateStore) -> None:
    sql_store.save(NS, {"a": StoredState({"v": 1}, "b1", None)})
    again = SqlStateStore(sql_store.url)
    try:
        assert again.load(NS, ["a"]) == {"a": StoredState({"v": 1}, "b1", None)}
        columns = {c["name"] for c in sa.inspect(again.engine).get_columns("bp_key_states")}
        assert columns == {"namespace", "key", "state", "batch_id", "before", "updated_at"}
    finally:
        again.close()


def test_an_unreachable_postgres_is_a_transient_error_without_the_password() -> None:
    url = "postgresql+psycopg2://states:s3cret-pw@127.0.0.1:9/states?connect_timeout=2"
    with pytest.raises(StateStoreError) as error:
        open_state_store(url)
    message = str(error.value)
    assert "s3cret-pw" not in message
    assert "states:***@127.0.0.1:9/states" in message and "cannot be opened" in message
    assert not error.value.permanent and classify(error.value).transient


def test_a_sqlite_file_that_is_not_a_database_is_a_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "states.db"
    path.write_bytes(b"these are not the states you are looking for\n" * 100)
    with pytest.raises(StateStoreError, match="is unusable: file is not a database") as error:
        open_state_store(f"sqlite:///{path}")
    assert str(path) in str(error.value)
    assert error.value.permanent and not classify(error.value).transient
    with pytest.raises(StateStoreError, match="cannot be opened") as folder:
        open_state_store(f"sqlite:///{tmp_path}")  # a folder
    assert folder.value.permanent


def test_the_sqlite_folder_is_made(tmp_path: Path) -> None:
    store = open_state_store(f"sqlite:///{tmp_path / 'a' / 'b' / 'states.db'}")
    store.save(NS, {"k": StoredState({}, "b1", None)})
    store.close()
    assert (tmp_path / "a" / "b" / "states.db").is_file()
    assert store.description == f"sqlite:///{tmp_path / 'a' / 'b' / 'states.db'}"


# Choosing a store by URL -----------------------------------------------------------------------


def test_an_unknown_url_is_a_config_error_naming_the_accepted_forms() -> None:
    for url in ("redis://:hunter2@localhost:6379/0", "states.db", "postgres://u@h/db"):
        with pytest.raises(ConfigError, match=r"sqlite:///PATH.*postgresql://.*dynamodb://TABLE"):
            open_state_store(url)
    with pytest.raises(ConfigError) as error:
        open_state_store("redis://:hunter2@localhost:6379/0")
    assert "hunter2" not in str(error.value)


def test_a_dynamodb_store_needs_its_client_and_a_table_name() -> None:
    with pytest.raises(ConfigError, match="needs a boto3 DynamoDB client"):
        open_state_store("dynamodb://states")
    with pytest.raises(ConfigError, match="table name"):
        open_state_store("dynamodb://a/b", dynamodb_client=object())
