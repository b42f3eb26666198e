"""Running a job in process on a test's instance and reading how it failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dagster import DagsterEvent, DagsterInstance, execute_job, reconstructable


def failed_run(
    instance: DagsterInstance, job_fn: Callable[[], Any], run_config: dict[str, Any]
) -> tuple[str, list[DagsterEvent]]:
    """Run ``job_fn``'s job with ``run_config``; it must fail. Its run id and step failures."""
    with execute_job(
        reconstructable(job_fn), instance=instance, run_config=run_config, raise_on_error=False
    ) as result:
        assert not result.success
        return result.run_id, [e for e in result.all_events if e.is_step_failure]


def initialize_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run config of ``batch_job`` with ``config`` for its initialize op."""
    return {"ops": {"initialize": {"config": config}}}
