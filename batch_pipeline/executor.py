"""The executor of ``batch_job``: in-process by default, multiprocess (forkserver) or celery
workers (``batch_pipeline.workers``) on request.

The Dagster executor only decides in which process each step runs; a step's work on one chunk
is ``core.processing.run.run_chunk``, and the record processors are ``core.processing.processors``.

Measured on the 2-core machine this runs on (see the README): a mapped step costs 50-75 ms
in-process and 0.6-1.7 s as a subprocess, and Arrow already uses both cores inside a step. So
steps run in one process unless the run config asks for ``multiprocess``; that mode then starts
steps with ``forkserver`` and preloads this package, so a step does not pay for importing
Dagster, pyarrow and pandas again. ``celery`` sends each step to a worker through a broker: for
more machines, at a higher cost per step (the README's "Celery workers").
"""

from typing import Any

from dagster import (
    Executor,
    Field,
    InitExecutorContext,
    Noneable,
    Permissive,
    Selector,
    StringSource,
    executor,
    multi_or_in_process_executor,
    multiple_process_executor_requirements,
)
from dagster._core.execution.retries import get_retries_config

PRELOAD = ["batch_pipeline.definitions"]
DEFAULT_RUN_TIMEOUT_SECONDS = 4 * 3600  # deploy/dagster.yaml's max_runtime_seconds

CELERY_CONFIG = {
    "broker": Field(
        Noneable(StringSource),
        is_required=False,
        description="The celery broker URL. Default: $BATCH_PIPELINE_CELERY_BROKER (keep "
        "passwords there, or give {env: VARIABLE}), else pyamqp://guest@localhost//.",
    ),
    "backend": Field(
        Noneable(StringSource),
        is_required=False,
        description="Where workers send step results. Default: $BATCH_PIPELINE_CELERY_BACKEND, "
        "else rpc:// (through the broker).",
    ),
    "include": Field([str], is_required=False, description="Modules every worker imports."),
    "config_source": Field(
        Noneable(Permissive()),
        is_required=False,
        description="More celery settings, over batch_pipeline.workers.CELERY_SETTINGS "
        "(task_acks_late and task_reject_on_worker_lost on; workers must use the same).",
    ),
    "timeout_seconds": Field(
        float,
        default_value=float(DEFAULT_RUN_TIMEOUT_SECONDS),
        description="The run fails, naming the step and its queue, when a step has not "
        "finished this long after the run started (no worker serves its queue, say).",
    ),
    "retries": get_retries_config(),
}
LOCAL_CONFIG: Any = multi_or_in_process_executor.config_schema.config_type


def _resolve(config: dict[str, Any]) -> dict[str, Any]:
    if "multiprocess" in config:
        multiprocess = dict(config["multiprocess"] or {})
        if not multiprocess.get("start_method"):
            multiprocess["start_method"] = {"forkserver": {"preload_modules": PRELOAD}}
        return {"multiprocess": multiprocess}
    return config


def _requirements(config: Any) -> Any:
    return [] if "in_process" in config else multiple_process_executor_requirements()


@executor(
    name="batch_executor",
    config_schema=Field(
        Selector({**LOCAL_CONFIG.fields, "celery": Field(CELERY_CONFIG)}),
        default_value={"in_process": {}},
        is_required=False,
        description="in_process (default): every step in the run's process. multiprocess: a "
        "process per step, started by forkserver with this package preloaded. celery: each "
        "step on a celery worker (see the README's Celery workers).",
    ),
    requirements=_requirements,
)
def batch_executor(init_context: InitExecutorContext) -> Executor:
    config: dict[str, Any] = dict(init_context.executor_config)
    if "celery" in config:
        from batch_pipeline.workers import build_executor  # dagster-celery: the celery extra

        return build_executor(dict(config["celery"]))
    local = InitExecutorContext(
        job=init_context.job,
        executor_def=multi_or_in_process_executor,
        executor_config=_resolve(config),
        instance=init_context.instance,
    )
    creation = multi_or_in_process_executor.executor_creation_fn
    assert creation is not None
    return creation(local)
