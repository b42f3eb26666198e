"""Chunk steps on celery workers (dagster-celery): the executor that sends each step to the
broker, with a run timeout, and the celery app that the workers run.

A worker serves the queues it names: ``dagster`` (dagster-celery's default queue: every step
but heavy chunks) and ``heavy`` (``process_heavy_chunk``, chunks over
``chunking.heavy_records``)::

    celery -A batch_pipeline.workers worker -Q dagster,heavy --concurrency 1

It reads the same environment as the run: the broker (``BATCH_PIPELINE_CELERY_BROKER``), the
Dagster instance (``DAGSTER_HOME`` and what its ``dagster.yaml`` reads), the ledger
(``BATCH_PIPELINE_LEDGER_URL``) and the AWS settings (the intermediates on S3). The app is built
when celery asks for ``app``, not at import.

Celery acknowledges a step's message only when the step has finished (``task_acks_late``), and
gives it back to the broker when its worker process dies (``task_reject_on_worker_lost``): a
worker killed in the middle of a chunk costs that chunk's work, not the run; another worker runs
the step again and the ledger makes that safe.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from dagster._core.execution.retries import RetryMode
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CeleryExecutor, _submit_task
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from kombu import Exchange, Queue

from batch_pipeline.ops.process import HEAVY_QUEUE
from batch_pipeline.settings import celery_backend, celery_broker

DEFAULT_QUEUE = "dagster"  # dagster-celery's task_default_queue

CELERY_SETTINGS: dict[str, Any] = {
    # dagster-celery publishes a step of queue Q with the routing key "Q.execute_plan", and
    # binds its default queue with "dagster.#": only a topic exchange routes that.
    "task_default_exchange_type": "topic",
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,  # a worker holds one step at a time, not four
}


def step_queue(name: str) -> Queue:
    """A queue of steps as dagster-celery addresses it: a topic exchange of its own name, bound
    with ``name.#`` (celery's queues made on the fly are bound with ``name`` alone, which the
    step's routing key ``name.execute_plan`` does not match)."""
    return Queue(name, Exchange(name, type="topic"), routing_key=f"{name}.#")


class RunTimeoutError(Exception):
    """A step of a celery run did not finish within the run's timeout."""


class _TimedResult:
    """A step's celery result that turns ready, with a clear error, once the run's deadline
    has passed: the celery executor otherwise waits for ever for a step no worker takes."""

    def __init__(self, result: Any, deadline: float, step_key: str, queue: str, timeout: float):
        self._result, self._deadline = result, deadline
        self._step_key, self._queue, self._timeout = step_key, queue, timeout

    def ready(self) -> bool:
        return bool(self._result.ready()) or time.monotonic() > self._deadline

    def get(self) -> Any:
        if self._result.ready():
            return self._result.get()
        self._result.revoke()
        raise RunTimeoutError(
            f"step {self._step_key} did not finish within the run's timeout of "
            f"{self._timeout:g}s on celery queue {self._queue!r}: is a worker serving that queue "
            f"running on this broker? (celery -A batch_pipeline.workers worker -Q "
            f"{DEFAULT_QUEUE},heavy)"
        )

    def revoke(self) -> None:
        self._result.revoke()


class BatchCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor with a deadline for the whole run (``timeout_seconds``)."""

    def __init__(self, timeout_seconds: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.timeout_seconds = timeout_seconds

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        deadline = time.monotonic() + self.timeout_seconds

        def submit(app: Any, context: Any, step: Any, queue: str, priority: int, known: Any) -> Any:
            if queue not in app.amqp.queues:  # declared, bound, before the first step is sent
                app.amqp.queues.add(step_queue(queue))
            result = _submit_task(app, context, step, queue, priority, known)
            return _TimedResult(result, deadline, step.key, queue, self.timeout_seconds)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


def build_executor(config: dict[str, Any]) -> BatchCeleryExecutor:
    """The executor of the run config's ``celery`` block; broker and backend default to the
    environment's (``celery_broker``, ``celery_backend``)."""
    return BatchCeleryExecutor(
        timeout_seconds=config["timeout_seconds"],
        retries=RetryMode.from_config(config.get("retries") or {"enabled": {}}),
        broker=config.get("broker") or celery_broker(),
        backend=config.get("backend") or celery_backend(),
        include=config.get("include") or [],
        config_source={**CELERY_SETTINGS, **(config.get("config_source") or {})},
    )


def worker_app() -> Celery:
    """The celery app of a worker: the executor's settings, from the environment, and
    dagster-celery's step task."""
    executor = BatchCeleryExecutor(
        timeout_seconds=0,
        retries=RetryMode.ENABLED,
        broker=celery_broker(),
        backend=celery_backend(),
        config_source=dict(CELERY_SETTINGS),
    )
    app = make_app(executor.app_args())
    app.conf.task_queues = [*app.conf.task_queues, step_queue(HEAVY_QUEUE)]
    create_task(app)
    return app


def __getattr__(name: str) -> Any:
    """``app`` (what ``celery -A batch_pipeline.workers`` looks up), built when asked for."""
    if name == "app":
        return worker_app()
    raise AttributeError(name)
