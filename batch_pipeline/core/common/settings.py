"""Every setting of a batch declared once: its default, the words that explain it and the range
it must lie in.

The sections mirror ``batch_job``'s run config: ``Batch`` is its top level, ``Csv``,
``Chunking``, ``Delivery``, ``Retry`` and ``Failures`` its sub-sections. The rest derive from
them: the core's dataclasses (``CsvOptions``, ``ChunkingSettings``, ``DeliverySettings``,
``RetrySettings``, ``FailureSettings``) take their defaults, the Dagster ``Config`` classes of
``batch_pipeline.config`` (the launchpad's form) their defaults and descriptions, and the CLI's
flags (``batch_pipeline.cli.parser``) their defaults, choices and help. Plain Python, like all
of core: no Dagster, no pydantic.
"""

from dataclasses import dataclass
from typing import Any, Literal, get_args

SourceFormat = Literal["auto", "csv", "jsonl", "json", "parquet", "excel"]
Compression = Literal["auto", "none", "gzip"]


@dataclass(frozen=True)
class Setting:
    """One setting. ``default`` is its value when not given (none when ``required``);
    ``description`` the words the launchpad and ``--help`` show; ``choices`` the values it may
    take. ``ge``/``le`` bound it: ``prepare_batch`` refuses a value outside with a ConfigError
    that names the setting (the bounds are not put into the launchpad's pydantic fields, whose
    check would fail the op with a ValidationError instead)."""

    default: Any
    description: str
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False


class Section:
    """A group of settings, as the class attributes of a subclass."""

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """The section's settings by name, in the order they are declared."""
        return {name: value for name, value in vars(cls).items() if isinstance(value, Setting)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of each setting that is not required, by name."""
        return {name: s.default for name, s in cls.settings().items() if not s.required}


class Csv(Section):
    """``csv``: how a CSV object is laid out (``CsvOptions``)."""

    delimiter = Setting(
        ",",
        "Field delimiter: ',' ';' '|' tab or space (or the names comma, semicolon, pipe, tab, "
        "space). Files ending in .tsv default to tab.",
    )
    quote_char = Setting(
        '"',
        "Quote character; a quote inside a quoted field is doubled (RFC 4180). Empty: values "
        "are never quoted.",
    )
    has_header = Setting(True, "The first record is a header row naming the columns.")
    column_names = Setting(
        None,
        "Column names. With has_header the header row is skipped and these replace it; without "
        "a header they name the columns (default column_1, column_2...).",
    )


class Chunking(Section):
    """``chunking``: how big chunks are and how many there may be (``ChunkingSettings``; ``auto``
    is the tuner's)."""

    chunk_records = Setting(
        500_000,
        "Target records per chunk. Each chunk is one Dagster step: keep it large enough that the "
        "step's fixed cost is small next to its work.",
        ge=1,
    )
    auto = Setting(
        False,
        "Pick chunk_records from the history of earlier batches of the same processor and "
        "format in the ledger (rate, peak memory, errors): see the run's tuning_* metadata for "
        "the decision and its reasons. A batch run before keeps its size; a cold start uses "
        "chunk_records.",
    )
    max_chunks = Setting(
        200,
        "Most chunks (mapped steps) a run may have. Wins over chunk_records: a big input gets "
        "bigger chunks, not more steps.",
        ge=1,
        le=10_000,
    )
    max_buckets = Setting(
        200,
        "Most buckets (keyed steps) a keyed processor's shuffle may have: a keyed batch gets "
        "about one bucket per chunk, at most this many. Chosen when the batch is planned and "
        "kept in plan.json, so a resumed run uses the same buckets.",
        ge=1,
        le=10_000,
    )
    chunk_bytes = Setting(
        None,
        "Optional cap on bytes per chunk for CSV/JSONL (a chunk ends at whichever of "
        "chunk_records or chunk_bytes it reaches first).",
    )
    scan = Setting(
        True,
        "Read CSV/JSONL objects once while planning: cuts honour quoted line breaks, chunks "
        "hold exact record counts and rejected records carry their line number. Off: cuts go "
        "at estimated byte offsets, moved to the next newline with small range reads (only for "
        "CSV without line breaks inside quoted fields).",
    )
    heavy_records = Setting(
        1_000_000,
        "Chunks planned with more records than this are heavy: they run as process_heavy_chunk "
        "steps, which the celery executor sends to the heavy queue (and Kubernetes gives a "
        "larger resource request). Results are the same either way.",
        ge=1,
    )


class Delivery(Section):
    """``delivery``: where valid records go and how they are packed (``DeliverySettings``)."""

    target = Setting(
        "local",
        "Where valid records go: 'local' (JSONL outbox under the batch's output), 'none', "
        "'sqs://QUEUE_NAME', an SQS queue URL, or 'kafka://HOST:PORT/TOPIC' (an existing "
        "topic; SASL/TLS settings come from the environment).",
    )
    records_per_message = Setting(100, "Most records in one message's batch_data.", ge=1)
    key_column = Setting(
        None,
        "A record column whose value keys the messages, for per-key order: a message then holds "
        "records of one value only (in input order), Kafka gets the value as the message key "
        "(one partition per key) and a FIFO SQS queue as the MessageGroupId. Without it, and "
        "for records with no value, a Kafka message is keyed BATCH_ID:NUMBER and a FIFO "
        "queue's group is the batch.",
    )
    max_message_bytes = Setting(
        256 * 1024, "Most bytes in one message body (SQS: 256 KiB).", ge=1024
    )
    max_batch_bytes = Setting(
        256 * 1024, "Most bytes in one SQS send_message_batch call, all entries together."
    )
    breaker_failures = Setting(
        5,
        "Consecutive failed calls after which the circuit breaker stops calling the sink for a "
        "cool-down.",
    )
    breaker_cooldown_seconds = Setting(
        30.0, "How long an open circuit breaker waits before a trial call."
    )


class Retry(Section):
    """``retry``: retries of a transient failure (``RetrySettings``)."""

    max_retries = Setting(
        3,
        "Retries of a chunk (or of delivery) after a transient failure: throttling, timeouts, "
        "5xx, connection resets. Permanent failures are never retried.",
        ge=0,
    )
    base_delay_seconds = Setting(
        1.0, "Delay before the first retry; doubles with each retry.", ge=0
    )
    max_delay_seconds = Setting(
        30.0, "Longest delay between retries. Delays get full jitter.", ge=0
    )


class Failures(Section):
    """``failures``: what a batch does with chunks that keep failing (``FailureSettings``)."""

    tolerated_failure_count = Setting(
        None,
        "Failed chunks the run tolerates (succeeding as 'partial'). Unset, with "
        "tolerated_failure_percentage unset too: any failed chunk fails the run.",
        ge=0,
    )
    tolerated_failure_percentage = Setting(
        None, "Percentage of failed chunks the run tolerates.", ge=0, le=100
    )
    dead_letter_queue = Setting(
        None,
        "Also send each dead letter to this SQS queue (sqs://NAME or a queue URL); dead letters "
        "are always written under {output}/{batch_id}/dead_letters/.",
    )


class Batch(Section):
    """The top level: what to process, how to read it, the processor, where results go, the
    batch's ids (the sub-sections are the classes above)."""

    source = Setting(
        None,
        "The record file: a local path or s3://bucket/key. A folder, or a prefix ending in '/', "
        "is a file set: its small record files are processed as one batch, whole files grouped "
        "into chunks.",
        required=True,
    )
    members = Setting(
        None,
        "For a folder or prefix source: only these files (keys relative to it). Default: every "
        "record file under it when the batch starts.",
    )
    format = Setting(
        "auto", "File format; auto: from the extension.", choices=get_args(SourceFormat)
    )
    compression = Setting(
        "auto",
        "Compression of CSV/JSON/JSONL; auto: from a .gz suffix.",
        choices=get_args(Compression),
    )
    json_records_path = Setting(
        "item",
        "Where the records are in a JSON document (ijson prefix): 'item' for a top-level array, "
        "'records.item' for {\"records\": [...]}.",
    )
    excel_sheets = Setting(None, "Worksheets to read; default: every worksheet.")
    processor = Setting(
        "passthrough",
        "Processor: passthrough, validate, kalman (keyed: see the README's Keyed processing), or "
        "one of processor_modules.",
    )
    processor_options = Setting(
        {},
        "Options of the processor (validate: {columns: {name: {type, required, min, max, "
        "pattern, allowed, ...}}}).",
    )
    processor_modules = Setting(
        [], "Python modules to import first: they register custom processors."
    )
    output = Setting(
        "output",
        "Where results go: a local folder or s3://bucket/prefix. Each batch writes under "
        "{output}/{batch_id}/.",
    )
    force = Setting(
        False,
        "Process every chunk again, even those the ledger has as done (delivery still sends "
        "nothing twice).",
    )
    redeliver = Setting(
        False,
        "Deliver every record of the batch again, even what its sink already has: after the "
        "ledger was lost (a batch whose delivery.json says it was delivered is refused "
        "otherwise), or to send a batch again to the same queue with changed settings. Records "
        "the sink has are sent twice: use it only when downstream wants them again.",
    )
    batch_id = Setting(
        None,
        "Batch id; default: derived from the source's key and ETag (or mtime), so the same "
        "input gets the same id.",
    )
    customer_id = Setting(None, "Customer the batch is for.")
    tenant_id = Setting(None, "Tenant the batch is for.")
    deployment = Setting(None, "Deployment (e.g. WORKSPACE).")
    snapshot_id = Setting(None, "Snapshot the batch belongs to.")
