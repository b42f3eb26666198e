"""The state store resource and its default URL (the environment read at the edge)."""

from __future__ import annotations

from pathlib import Path

from batch_pipeline.core.stores.state import StoredState
from batch_pipeline.resources import StateStoreResource
from batch_pipeline.resources.ledger import run_config_password_error
from batch_pipeline.settings import default_state_store_url


def test_the_default_url_is_the_variable_else_sqlite_beside_the_ledger(tmp_path: Path) -> None:
    given = {"BATCH_PIPELINE_STATE_STORE_URL": "dynamodb://states"}
    assert default_state_store_url(given) == "dynamodb://states"
    home = {"DAGSTER_HOME": str(tmp_path)}
    assert default_state_store_url(home) == f"sqlite:///{tmp_path}/batch_state.db"


def test_the_resource_opens_the_store_of_its_url(tmp_path: Path) -> None:
    resource = StateStoreResource(url=f"sqlite:///{tmp_path}/states/s.db")
    store = resource.open()
    try:
        store.save("kalman/user_id", {"u1": StoredState({"x": 0.1 + 0.2}, "b1", None)})
        assert store.load("kalman/user_id", ["u1", "u2"]) == {
            "u1": StoredState({"x": 0.1 + 0.2}, "b1", None)
        }
    finally:
        store.close()
    assert (tmp_path / "states" / "s.db").exists()


def test_a_password_in_the_state_store_run_config_is_refused() -> None:
    config = {"resources": {"state_store": {"config": {"url": "postgresql://u:secret@h/db"}}}}
    error = run_config_password_error(config, "state_store", "BATCH_PIPELINE_STATE_STORE_URL")
    assert error is not None
    assert "secret" not in str(error) and "{env: BATCH_PIPELINE_STATE_STORE_URL}" in str(error)
    assert run_config_password_error({"resources": {"state_store": {"config": {}}}}) is None
