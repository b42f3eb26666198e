"""The run config of ``batch_job``: typed, described, shown as a form in the UI launchpad.

It carries the seed Step Function's run inputs (source, ``customer_id``, ``tenant_id``,
``batch_id``, ``deployment``, ``snapshot_id``) plus how to read, chunk, process and deliver.
"""

from typing import Any, Literal

from dagster import Config
from pydantic import Field

from batch_pipeline.core.models import ChunkingSettings, CsvOptions, DeliverySettings


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


class BatchConfig(Config):
    """What to process, how, and where the results go."""

    source: str = Field(description="The record file: a local path or s3://bucket/key.")
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
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunk sizes.")
    output: str = Field(
        default="output",
        description="Where results go: a local folder or s3://bucket/prefix. Each batch writes "
        "under {output}/{batch_id}/.",
    )
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig, description="Delivery.")
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
        """Keyword arguments of ``core.batch.prepare_batch``."""
        return {
            "source": self.source,
            "format": self.format,
            "compression": self.compression,
            "csv": CsvOptions(
                delimiter=self.csv.delimiter,
                quote_char=self.csv.quote_char or None,
                has_header=self.csv.has_header,
                column_names=tuple(self.csv.column_names) if self.csv.column_names else None,
            ),
            "json_records_path": self.json_records_path,
            "excel_sheets": tuple(self.excel_sheets) if self.excel_sheets else None,
            "processor": self.processor,
            "processor_options": self.processor_options,
            "chunking": ChunkingSettings(**self.chunking.model_dump()),
            "output": self.output,
            "delivery": DeliverySettings(**self.delivery.model_dump()),
            "batch_id": self.batch_id,
            "ids": {
                "customer_id": self.customer_id,
                "tenant_id": self.tenant_id,
                "deployment": self.deployment,
                "snapshot_id": self.snapshot_id,
            },
            "config": self.model_dump(),
        }
