"""A batch from request to result, without Dagster.

``prepare_batch`` is what the ``initialize`` op runs: it checks the source and the config and
returns the BatchSpec every later stage works from. ``run_batch`` runs all stages one after the
other in this process; the Dagster job runs the same functions as separate steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batch_pipeline.core.delivery.deliver import DeliverySummary, deliver_files
from batch_pipeline.core.delivery.sinks import (
    OutboxSink,
    Sink,
    SqsSink,
    is_sqs_target,
    resolve_queue_url,
)
from batch_pipeline.core.errors import ConfigError
from batch_pipeline.core.models import (
    BatchSpec,
    ChunkingSettings,
    CsvOptions,
    DeliverySettings,
    SourceSpec,
)
from batch_pipeline.core.planning import plan_batch
from batch_pipeline.core.processing import run_chunk
from batch_pipeline.core.processors import get_processor
from batch_pipeline.core.results import BatchResult, aggregate, write_plan
from batch_pipeline.core.sources import derive_batch_id, inspect_source
from batch_pipeline.core.storage import Storage, normalize_uri, split_s3

DELIVERY_TARGETS = "local, none, sqs://QUEUE_NAME or a queue URL"


def prepare_batch(
    storage: Storage,
    source: str,
    *,
    format: str = "auto",
    compression: str = "auto",
    csv: CsvOptions | None = None,
    json_records_path: str = "item",
    excel_sheets: tuple[str, ...] | None = None,
    processor: str = "passthrough",
    processor_options: dict[str, Any] | None = None,
    chunking: ChunkingSettings | None = None,
    output: str = "output",
    delivery: DeliverySettings | None = None,
    batch_id: str | None = None,
    ids: dict[str, str | None] | None = None,
    config: dict[str, Any] | None = None,
) -> BatchSpec:
    """Validate a batch request before any work. Raises ConfigError or SourceError naming the
    source and what is wrong."""
    chunking = chunking or ChunkingSettings()
    delivery = delivery or DeliverySettings()
    if chunking.chunk_records < 1:
        raise ConfigError(f"chunk_records must be at least 1, got {chunking.chunk_records}")
    if not 1 <= chunking.max_chunks <= 10_000:
        raise ConfigError(f"max_chunks must be between 1 and 10000, got {chunking.max_chunks}")
    _check_delivery(delivery)
    proc = get_processor(processor, processor_options)
    spec_source = inspect_source(
        storage,
        source,
        fmt=format,
        compression=compression,
        csv_options=csv,
        json_records_path=json_records_path,
        excel_sheets=excel_sheets,
    )
    if spec_source.columns is not None:
        problems = proc.check_columns(spec_source.columns)
        if problems:
            raise ConfigError(f"{spec_source.uri}: " + "; ".join(problems))
    resolved_id = batch_id or derive_batch_id(spec_source.info)
    if "/" in resolved_id or not resolved_id.strip():
        raise ConfigError(f"batch_id {resolved_id!r} must be a non-empty name without '/'")
    return BatchSpec(
        batch_id=resolved_id,
        source=spec_source,
        processor=processor,
        processor_options=dict(processor_options or {}),
        chunking=chunking,
        output_root=normalize_uri(output),
        delivery=delivery,
        ids=dict(ids or {}),
        config=dict(config or {}),
    )


def _check_delivery(delivery: DeliverySettings) -> None:
    target = delivery.target
    if target not in ("local", "none") and not is_sqs_target(target):
        raise ConfigError(f"Unknown delivery target {target!r}: use {DELIVERY_TARGETS}")
    if delivery.records_per_message < 1:
        raise ConfigError("records_per_message must be at least 1")
    if delivery.max_message_bytes < 1024:
        raise ConfigError("max_message_bytes must be at least 1024")


def file_key(source: SourceSpec) -> str:
    """The seed message format's ``file_key``: the S3 key, or the local path."""
    if source.uri.startswith("s3://"):
        return split_s3(source.uri)[1]
    return source.uri


def open_sink(storage: Storage, spec: BatchSpec, sqs_client: Any = None) -> Sink | None:
    """The sink for ``spec.delivery.target``; None when delivery is off."""
    target = spec.delivery.target
    if target == "none":
        return None
    if target == "local":
        return OutboxSink(storage, spec.outbox)
    if sqs_client is None:
        raise ConfigError(f"delivery target {target} needs an SQS client")
    url = resolve_queue_url(sqs_client, target)
    return SqsSink(sqs_client, url, max_batch_bytes=spec.delivery.max_batch_bytes)


def deliver_batch(
    storage: Storage, spec: BatchSpec, result: BatchResult, sink: Sink
) -> DeliverySummary:
    return deliver_files(
        storage, spec.batch_id, file_key(spec.source), result.valid_files, spec.delivery, sink
    )


@dataclass
class LocalRun:
    spec: BatchSpec
    result: BatchResult
    delivery: DeliverySummary | None


def run_batch(storage: Storage, spec: BatchSpec, sqs_client: Any = None) -> LocalRun:
    """Every stage in order, in this process (tests, benchmarks, debugging)."""
    plan = plan_batch(storage, spec)
    write_plan(storage, spec, plan)
    processor = get_processor(spec.processor, spec.processor_options)
    summaries = [run_chunk(storage, spec, chunk, processor) for chunk in plan.chunks]
    result = aggregate(storage, spec, summaries)
    sink = open_sink(storage, spec, sqs_client)
    delivered = deliver_batch(storage, spec, result, sink) if sink else None
    return LocalRun(spec, result, delivered)
