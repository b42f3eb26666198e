"""The run config of ``batch_job``: typed, described, shown as a form in the UI launchpad.

It carries the seed Step Function's run inputs (source, ``customer_id``, ``tenant_id``,
``batch_id``, ``deployment``, ``snapshot_id``) plus how to read, chunk, process and deliver.
"""

from typing import Any, Literal

from dagster import Config
from pydantic import Field

from batch_pipeline.core.initialize.prepare import prepare_kwargs


class CsvConfig(Config):
    delimiter: str = Field(
        default=",",
        description="Field delimiter: ',' ';' '|' tab or space (or the names comma, semicolon, "
        "pipe, tab, space). Files ending in .tsv default to tab.",
    )
    quote_char: str = Field(
        default='"',
        description="Quote character; a quote inside a quoted field is doubled (RFC 4180). "
        "Empty: values are never quoted.",
    )
    has_header: bool = Field(
        default=True, description="The first record is a header row naming the columns."
    )
    column_names: list[str] | None = Field(
        default=None,
        description="Column names. With has_header the header row is skipped and these replace "
        "it; without a header they name the columns (default column_1, column_2...).",
    )


class ChunkingConfig(Config):
    chunk_records: int = Field(
        default=500_000,
        description="Target records per chunk. Each chunk is one Dagster step: keep it large "
        "enough that the step's fixed cost is small next to its work.",
    )
    auto: bool = Field(
        default=False,
        description="Pick chunk_records from the history of earlier batches of the same "
        "processor and format in the ledger (rate, peak memory, errors): see the run's "
        "tuning_* metadata for the decision and its reasons. A batch run before keeps its size; "
        "a cold start uses chunk_records.",
    )
    max_chunks: int = Field(
        default=200,
        description="Most chunks (mapped steps) a run may have. Wins over chunk_records: a big "
        "input gets bigger chunks, not more steps.",
    )
    chunk_bytes: int | None = Field(
        default=None,
        description="Optional cap on bytes per chunk for CSV/JSONL (a chunk ends at whichever "
        "of chunk_records or chunk_bytes it reaches first).",
    )
    scan: bool = Field(
        default=True,
        description="Read CSV/JSONL objects once while planning: cuts honour quoted line "
        "breaks, chunks hold exact record counts and rejected records carry their line number. "
        "Off: cuts go at estimated byte offsets, moved to the next newline with small range "
        "reads (only for CSV without line breaks inside quoted fields).",
    )


class DeliveryConfig(Config):
    target: str = Field(
        default="local",
        description="Where valid records go: 'local' (JSONL outbox under the batch's output), "
        "'none', 'sqs://QUEUE_NAME', or an SQS queue URL.",
    )
    records_per_message: int = Field(
        default=100, description="Most records in one message's batch_data."
    )
    max_message_bytes: int = Field(
        default=256 * 1024, description="Most bytes in one message body (SQS: 256 KiB)."
    )
    max_batch_bytes: int = Field(
        default=256 * 1024,
        description="Most bytes in one SQS send_message_batch call, all entries together.",
    )
    breaker_failures: int = Field(
        default=5,
        description="Consecutive failed calls after which the circuit breaker stops calling the "
        "sink for a cool-down.",
    )
    breaker_cooldown_seconds: float = Field(
        default=30.0, description="How long an open circuit breaker waits before a trial call."
    )


class RetryConfig(Config):
    max_retries: int = Field(
        default=3,
        description="Retries of a chunk (or of delivery) after a transient failure: throttling, "
        "timeouts, 5xx, connection resets. Permanent failures are never retried.",
    )
    base_delay_seconds: float = Field(
        default=1.0, description="Delay before the first retry; doubles with each retry."
    )
    max_delay_seconds: float = Field(
        default=30.0, description="Longest delay between retries. Delays get full jitter."
    )


class FailureConfig(Config):
    tolerated_failure_count: int | None = Field(
        default=None,
        description="Failed chunks the run tolerates (succeeding as 'partial'). Unset, with "
        "tolerated_failure_percentage unset too: any failed chunk fails the run.",
    )
    tolerated_failure_percentage: float | None = Field(
        default=None, description="Percentage of failed chunks the run tolerates."
    )
    dead_letter_queue: str | None = Field(
        default=None,
        description="Also send each dead letter to this SQS queue (sqs://NAME or a queue URL); "
        "dead letters are always written under {output}/{batch_id}/dead_letters/.",
    )


class BatchConfig(Config):
    """What to process, how, and where the results go."""

    source: str = Field(
        description="The record file: a local path or s3://bucket/key. A folder, or a prefix "
        "ending in '/', is a file set: its small record files are processed as one batch, "
        "whole files grouped into chunks."
    )
    members: list[str] | None = Field(
        default=None,
        description="For a folder or prefix source: only these files (keys relative to it). "
        "Default: every record file under it when the batch starts.",
    )
    format: Literal["auto", "csv", "jsonl", "json", "parquet", "excel"] = Field(
        default="auto", description="File format; auto: from the extension."
    )
    compression: Literal["auto", "none", "gzip"] = Field(
        default="auto", description="Compression of CSV/JSON/JSONL; auto: from a .gz suffix."
    )
    csv: CsvConfig = Field(default_factory=CsvConfig, description="CSV layout.")
    json_records_path: str = Field(
        default="item",
        description="Where the records are in a JSON document (ijson prefix): 'item' for a "
        "top-level array, 'records.item' for {\"records\": [...]}.",
    )
    excel_sheets: list[str] | None = Field(
        default=None, description="Worksheets to read; default: every worksheet."
    )
    processor: str = Field(default="passthrough", description="Processor: passthrough or validate.")
    processor_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the processor (validate: {columns: {name: {type, required, "
        "min, max, pattern, allowed, ...}}}).",
    )
    processor_modules: list[str] = Field(
        default_factory=list,
        description="Python modules to import first: they register custom processors.",
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunk sizes.")
    output: str = Field(
        default="output",
        description="Where results go: a local folder or s3://bucket/prefix. Each batch writes "
        "under {output}/{batch_id}/.",
    )
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig, description="Delivery.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries with backoff.")
    failures: FailureConfig = Field(
        default_factory=FailureConfig, description="Tolerated failures and dead letters."
    )
    force: bool = Field(
        default=False,
        description="Process every chunk again, even those the ledger has as done (delivery "
        "still sends nothing twice).",
    )
    redeliver: bool = Field(
        default=False,
        description="Deliver every record of the batch again, even what its sink already has: "
        "after the ledger was lost (a batch whose delivery.json says it was delivered is "
        "refused otherwise), or to send a batch again to the same queue with changed settings. "
        "Records the sink has are sent twice: use it only when downstream wants them again.",
    )
    batch_id: str | None = Field(
        default=None,
        description="Batch id; default: derived from the source's key and ETag (or mtime), so "
        "the same input gets the same id.",
    )
    customer_id: str | None = Field(default=None, description="Customer the batch is for.")
    tenant_id: str | None = Field(default=None, description="Tenant the batch is for.")
    deployment: str | None = Field(default=None, description="Deployment (e.g. WORKSPACE).")
    snapshot_id: str | None = Field(default=None, description="Snapshot the batch belongs to.")

    def prepare_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``core.batch.prepare_batch`` (``core.batch.prepare_kwargs``)."""
        return prepare_kwargs(self.model_dump())


class RedriveConfig(Config):
    """Which batch to redrive: its failed and dead-lettered chunks are processed again."""

    batch_id: str = Field(description="The batch to redrive (as the run's summary named it).")
