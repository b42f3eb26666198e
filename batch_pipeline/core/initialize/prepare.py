"""Initialize a batch: check its request before any work and return the spec of the batch.

``prepare_batch`` is what the ``initialize`` op runs: it checks the source and the config and
returns the BatchSpec every later stage works from; ``prepare_kwargs`` maps a run config to its
arguments (declared once, for the op and the CLI); ``prepare_redrive`` rebuilds the spec of a
batch from the config the ledger kept; ``check_queue`` refuses an SQS target that no queue could
be named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import (
    BatchSpec,
    ChunkingSettings,
    CsvOptions,
    DeliverySettings,
    FailureSettings,
    RetrySettings,
)
from batch_pipeline.core.common.naming import check_batch_id, check_location
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.delivery.sinks import is_sqs_target
from batch_pipeline.core.inputs.filesets import inspect_file_set, is_file_set, relative_key
from batch_pipeline.core.inputs.sources import derive_batch_id, inspect_source
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.stores.storage import Storage, normalize_uri

DELIVERY_TARGETS = "local, none, sqs://QUEUE_NAME or a queue URL"


def prepare_batch(
    storage: Storage,
    source: str,
    *,
    members: tuple[str, ...] | None = None,
    format: str = "auto",
    compression: str = "auto",
    csv: CsvOptions | None = None,
    json_records_path: str = "item",
    excel_sheets: tuple[str, ...] | None = None,
    processor: str = "passthrough",
    processor_options: dict[str, Any] | None = None,
    processor_modules: tuple[str, ...] = (),
    chunking: ChunkingSettings | None = None,
    output: str = "output",
    delivery: DeliverySettings | None = None,
    retry: RetrySettings | None = None,
    failures: FailureSettings | None = None,
    batch_id: str | None = None,
    ids: dict[str, str | None] | None = None,
    config: dict[str, Any] | None = None,
    force: bool = False,
    redeliver: bool = False,
) -> BatchSpec:
    """Validate a batch request before any work. Raises ConfigError or SourceError naming the
    source and what is wrong."""
    # Before anything is read: the id and the output name where results go, the source what
    # is read.
    if batch_id is not None:
        check_batch_id(batch_id)
    output_root = check_location(output, "output")
    check_location(source, "source")
    chunking = chunking or ChunkingSettings()
    delivery = delivery or DeliverySettings()
    retry = retry or RetrySettings()
    failures = failures or FailureSettings()
    if chunking.chunk_records < 1:
        raise ConfigError(f"chunk_records must be at least 1, got {chunking.chunk_records}")
    if not 1 <= chunking.max_chunks <= 10_000:
        raise ConfigError(f"max_chunks must be between 1 and 10000, got {chunking.max_chunks}")
    _check_delivery(delivery)
    _check_failures(retry, failures)
    proc = get_processor(processor, processor_options, processor_modules)
    config = dict(config or {})
    if is_file_set(source):
        spec_source = inspect_file_set(
            storage, source, members, format, compression, csv, json_records_path, excel_sheets
        )
        # The set is fixed from now on: a resume or a redrive reads these very files.
        config["members"] = [relative_key(spec_source.uri, m.uri) for m in spec_source.members]
    elif members:
        raise ConfigError(f"members are for a folder or prefix source; {source} is one file")
    else:
        spec_source = inspect_source(
            storage,
            source,
            fmt=format,
            compression=compression,
            csv_options=csv,
            json_records_path=json_records_path,
            excel_sheets=excel_sheets,
        )
    # A set's files each have their own columns (a file lacking one gets its records rejected
    # with the reason): only a single file is refused here for a missing column.
    warnings: list[str] = []
    if spec_source.columns is not None and not spec_source.is_file_set:
        problems = proc.check_columns(spec_source.columns)
        if problems:
            raise ConfigError(f"{spec_source.uri}: " + "; ".join(problems))
        warnings = [f"{spec_source.uri}: {w}" for w in proc.column_warnings(spec_source.columns)]
    resolved_id = check_batch_id(batch_id or derive_batch_id(spec_source.info))
    return BatchSpec(
        batch_id=resolved_id,
        source=spec_source,
        processor=processor,
        processor_options=dict(processor_options or {}),
        chunking=chunking,
        output_root=output_root,
        delivery=delivery,
        ids=dict(ids or {}),
        config=config,
        retry=retry,
        failures=failures,
        processor_modules=tuple(processor_modules),
        mode="force" if force else "run",
        warnings=tuple(warnings),
        redeliver=redeliver,
    )


def prepare_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``prepare_batch`` for a ``batch_job`` run config (what
    ``ops.initialize.config`` holds: the shape of ``config.BatchConfig``, whose
    ``prepare_kwargs`` calls this). Declared once, Dagster-free, so that the CLI checks a run
    exactly as ``initialize`` will, before Dagster starts. Missing keys take
    ``prepare_batch``'s and the settings' defaults."""
    csv = dict(config.get("csv") or {})
    names = csv.get("column_names")
    chunking = {k: v for k, v in (config.get("chunking") or {}).items() if k != "auto"}
    ids = ("customer_id", "tenant_id", "deployment", "snapshot_id")
    source, output = config["source"], config.get("output", "output")
    return {
        "source": source,
        "members": tuple(config["members"]) if config.get("members") else None,
        "format": config.get("format", "auto"),
        "compression": config.get("compression", "auto"),
        "csv": CsvOptions(
            delimiter=csv.get("delimiter", ","),
            quote_char=csv.get("quote_char", '"') or None,
            has_header=csv.get("has_header", True),
            column_names=tuple(names) if names else None,
        ),
        "json_records_path": config.get("json_records_path", "item"),
        "excel_sheets": tuple(config["excel_sheets"]) if config.get("excel_sheets") else None,
        "processor": config.get("processor", "passthrough"),
        "processor_options": dict(config.get("processor_options") or {}),
        "processor_modules": tuple(config.get("processor_modules") or ()),
        "chunking": ChunkingSettings(**chunking),
        "output": output,
        "delivery": DeliverySettings(**(config.get("delivery") or {})),
        "retry": RetrySettings(**(config.get("retry") or {})),
        "failures": FailureSettings(**(config.get("failures") or {})),
        "force": bool(config.get("force", False)),
        "redeliver": bool(config.get("redeliver", False)),
        "batch_id": config.get("batch_id"),
        "ids": {name: config.get(name) for name in ids},
        # Kept in the ledger for redrive: paths made absolute, so that a redrive from another
        # working directory finds the same source and output.
        "config": {**config, "source": normalize_uri(source), "output": normalize_uri(output)},
    }


def prepare_redrive(storage: Storage, ledger: Ledger, batch_id: str, prepare: Any) -> BatchSpec:
    """The spec of an earlier batch, rebuilt from the config the ledger kept, in redrive mode.

    ``prepare(config)`` turns a stored run config into a BatchSpec (the Dagster layer passes
    its config class's). Refuses when the source changed since the batch was planned: its
    chunks would no longer describe the same records."""
    check_batch_id(batch_id)
    state = ledger.batch(batch_id)
    if state is None:
        raise ConfigError(f"batch {batch_id} is not in the ledger at {ledger.safe_url}")
    spec = prepare(state.config_dict())
    if spec.source.info.fingerprint != state.fingerprint:
        raise ConfigError(
            f"the source of batch {batch_id}, {state.source_uri}, changed since it was planned "
            f"(fingerprint {state.fingerprint} is now {spec.source.info.fingerprint}); redrive "
            "would mix two versions of it: run the new version as its own batch"
        )
    # A redrive never delivers again what was delivered, even if the stored run asked to.
    return replace(spec, batch_id=batch_id, mode="redrive", redeliver=False)


# SQS's rule for a queue's name: 1-80 characters of A-Z a-z 0-9 - _, a FIFO queue's ending
# with .fifo.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo")


def check_queue(target: str, what: str) -> None:
    """An ``sqs://NAME`` target names a queue SQS could have (a URL, ``sqs://URL`` included, is
    taken as given): else ConfigError now, not after every chunk was processed."""
    if not target.startswith("sqs://"):
        return
    name = target[len("sqs://") :]
    if name.startswith(("https://", "http://")) or _QUEUE_NAME.fullmatch(name):
        return
    raise ConfigError(
        f"{what} {shown(repr(target))} has no valid queue name: use sqs://QUEUE_NAME (1-80 "
        "characters of A-Z a-z 0-9 - _, a FIFO queue's ending with .fifo) or the queue's URL"
    )


def _check_delivery(delivery: DeliverySettings) -> None:
    target = delivery.target
    if target not in ("local", "none") and not is_sqs_target(target):
        raise ConfigError(f"Unknown delivery target {target!r}: use {DELIVERY_TARGETS}")
    check_queue(target, "delivery target")
    if delivery.records_per_message < 1:
        raise ConfigError("records_per_message must be at least 1")
    if delivery.max_message_bytes < 1024:
        raise ConfigError("max_message_bytes must be at least 1024")


def _check_failures(retry: RetrySettings, failures: FailureSettings) -> None:
    if retry.max_retries < 0 or retry.base_delay_seconds < 0 or retry.max_delay_seconds < 0:
        raise ConfigError("retry settings must not be negative")
    count, percentage = failures.tolerated_failure_count, failures.tolerated_failure_percentage
    if count is not None and count < 0:
        raise ConfigError("tolerated_failure_count must not be negative")
    if percentage is not None and not 0 <= percentage <= 100:
        raise ConfigError("tolerated_failure_percentage must be between 0 and 100")
    queue = failures.dead_letter_queue
    if queue and not is_sqs_target(queue):
        raise ConfigError(f"dead_letter_queue {queue!r} must be sqs://QUEUE_NAME or a queue URL")
    if queue:
        check_queue(queue, "dead_letter_queue")
