"""The executor of ``batch_job``: in-process by default, multiprocess (forkserver) on request.

The Dagster executor only decides in which process each step runs; a step's work on one chunk
is ``core.processing.run.run_chunk``, and the record processors are ``core.processing.processors``.

Measured on the 2-core machine this runs on (see the README): a mapped step costs 50-75 ms
in-process and 0.6-1.7 s as a subprocess, and Arrow already uses both cores inside a step. So
steps run in one process unless the run config asks for ``multiprocess``; that mode then starts
steps with ``forkserver`` and preloads this package, so a step does not pay for importing
Dagster, pyarrow and pandas again.
"""

from typing import Any

from dagster import Field, multi_or_in_process_executor

PRELOAD = ["batch_pipeline.definitions"]


def _resolve(config: dict[str, Any]) -> dict[str, Any]:
    if "multiprocess" in config:
        multiprocess = dict(config["multiprocess"] or {})
        if not multiprocess.get("start_method"):
            multiprocess["start_method"] = {"forkserver": {"preload_modules": PRELOAD}}
        return {"multiprocess": multiprocess}
    return config


batch_executor = multi_or_in_process_executor.configured(
    _resolve,
    name="batch_executor",
    config_schema=Field(
        multi_or_in_process_executor.config_schema.config_type,
        default_value={"in_process": {}},
        is_required=False,
        description="in_process (default): every step in the run's process. multiprocess: a "
        "process per step, started by forkserver with this package preloaded.",
    ),
)
