"""The run config of ``batch_job``: typed, described, shown as a form in the UI launchpad.

It carries the seed Step Function's run inputs (source, ``customer_id``, ``tenant_id``,
``batch_id``, ``deployment``, ``snapshot_id``) plus how to read, chunk, process and deliver.
Each field's default and description come from its declaration in
``core.common.settings`` (``described``), which the core's dataclasses and the CLI's flags
share.
"""

import copy
from typing import Any

from dagster import Config
from pydantic import Field

from batch_pipeline.core.common.settings import (
    Batch,
    Chunking,
    Compression,
    Csv,
    Delivery,
    Failures,
    Retry,
    Setting,
    SourceFormat,
)
from batch_pipeline.core.initialize.prepare import prepare_kwargs


def described(setting: Setting) -> Any:
    """The pydantic field of a declared setting: its default (a fresh copy of a list or dict
    for each config) and its description."""
    if isinstance(setting.default, list | dict):
        default = setting.default
        return Field(
            default_factory=lambda: copy.deepcopy(default), description=setting.description
        )
    return Field(default=setting.default, description=setting.description)


class CsvConfig(Config):
    delimiter: str = described(Csv.delimiter)
    quote_char: str = described(Csv.quote_char)
    has_header: bool = described(Csv.has_header)
    column_names: list[str] | None = described(Csv.column_names)


class ChunkingConfig(Config):
    chunk_records: int = described(Chunking.chunk_records)
    auto: bool = described(Chunking.auto)
    max_chunks: int = described(Chunking.max_chunks)
    max_buckets: int = described(Chunking.max_buckets)
    chunk_bytes: int | None = described(Chunking.chunk_bytes)
    scan: bool = described(Chunking.scan)
    heavy_records: int = described(Chunking.heavy_records)


class DeliveryConfig(Config):
    target: str = described(Delivery.target)
    records_per_message: int = described(Delivery.records_per_message)
    key_column: str | None = described(Delivery.key_column)
    max_message_bytes: int = described(Delivery.max_message_bytes)
    max_batch_bytes: int = described(Delivery.max_batch_bytes)
    breaker_failures: int = described(Delivery.breaker_failures)
    breaker_cooldown_seconds: float = described(Delivery.breaker_cooldown_seconds)


class RetryConfig(Config):
    max_retries: int = described(Retry.max_retries)
    base_delay_seconds: float = described(Retry.base_delay_seconds)
    max_delay_seconds: float = described(Retry.max_delay_seconds)


class FailureConfig(Config):
    tolerated_failure_count: int | None = described(Failures.tolerated_failure_count)
    tolerated_failure_percentage: float | None = described(Failures.tolerated_failure_percentage)
    dead_letter_queue: str | None = described(Failures.dead_letter_queue)


class BatchConfig(Config):
    """What to process, how, and where the results go."""

    source: str = Field(description=Batch.source.description)  # required: no default
    members: list[str] | None = described(Batch.members)
    format: SourceFormat = described(Batch.format)
    compression: Compression = described(Batch.compression)
    csv: CsvConfig = Field(default_factory=CsvConfig, description="CSV layout.")
    json_records_path: str = described(Batch.json_records_path)
    excel_sheets: list[str] | None = described(Batch.excel_sheets)
    processor: str = described(Batch.processor)
    processor_options: dict[str, Any] = described(Batch.processor_options)
    processor_modules: list[str] = described(Batch.processor_modules)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunk sizes.")
    output: str = described(Batch.output)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig, description="Delivery.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries with backoff.")
    failures: FailureConfig = Field(
        default_factory=FailureConfig, description="Tolerated failures and dead letters."
    )
    force: bool = described(Batch.force)
    redeliver: bool = described(Batch.redeliver)
    batch_id: str | None = described(Batch.batch_id)
    customer_id: str | None = described(Batch.customer_id)
    tenant_id: str | None = described(Batch.tenant_id)
    deployment: str | None = described(Batch.deployment)
    snapshot_id: str | None = described(Batch.snapshot_id)

    def prepare_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``core.initialize.prepare_batch``, through
        ``core.initialize.prepare_kwargs``."""
        return prepare_kwargs(self.model_dump())


class RedriveConfig(Config):
    """Which batch to redrive: its failed and dead-lettered chunks are processed again."""

    batch_id: str = Field(description="The batch to redrive (as the run's summary named it).")
