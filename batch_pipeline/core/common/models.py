"""Plain data the stages hand each other: what a source is, what a chunk is, what a chunk did.

Everything here is small, immutable where it can be, and picklable: chunk descriptors travel
through Dagster's IO manager, so they say *where* records are, never carry the records.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from batch_pipeline.core.common.settings import Batch, Chunking, Csv, Delivery, Failures, Retry
from batch_pipeline.core.common.statuses import ChunkStatus

if TYPE_CHECKING:
    import pyarrow as pa

Format = Literal["csv", "jsonl", "json", "parquet", "excel"]
FORMATS: tuple[str, ...] = ("csv", "jsonl", "json", "parquet", "excel")
ChunkKind = Literal["bytes", "row_groups", "parts", "sheets", "objects", "empty"]


@dataclass(frozen=True)
class ObjectInfo:
    """What storage says about one object."""

    uri: str
    size: int
    mtime: float | None = None
    etag: str | None = None

    @property
    def fingerprint(self) -> str:
        """Changes whenever the object's content may have changed: the ETag, else size + mtime."""
        if self.etag:
            return self.etag.strip('"')
        mtime_ns = int((self.mtime or 0) * 1e9)
        return f"{self.size}-{mtime_ns}"


@dataclass(frozen=True)
class CsvOptions:
    """How a CSV object is laid out. Quotes are RFC 4180 quotes: a quote in a field is doubled."""

    delimiter: str = Csv.delimiter.default
    quote_char: str | None = Csv.quote_char.default
    has_header: bool = Csv.has_header.default
    column_names: tuple[str, ...] | None = Csv.column_names.default


@dataclass(frozen=True)
class ChunkingSettings:
    """How big chunks are and how many there may be."""

    chunk_records: int = Chunking.chunk_records.default
    max_chunks: int = Chunking.max_chunks.default
    max_buckets: int = Chunking.max_buckets.default
    chunk_bytes: int | None = Chunking.chunk_bytes.default
    scan: bool = Chunking.scan.default
    heavy_records: int = Chunking.heavy_records.default

    def is_heavy(self, chunk: Chunk) -> bool:
        """Whether ``chunk`` runs as a heavy step: planned with more than ``heavy_records``
        records (exact or estimated). A chunk of unknown size is light."""
        return chunk.records is not None and chunk.records > self.heavy_records


@dataclass(frozen=True)
class DeliverySettings:
    """Where valid records go, how they are packed into messages, and when to stop hammering a
    sink that keeps failing (circuit breaker)."""

    target: str = Delivery.target.default
    records_per_message: int = Delivery.records_per_message.default
    key_column: str | None = Delivery.key_column.default
    max_message_bytes: int = Delivery.max_message_bytes.default
    max_batch_bytes: int = Delivery.max_batch_bytes.default
    breaker_failures: int = Delivery.breaker_failures.default
    breaker_cooldown_seconds: float = Delivery.breaker_cooldown_seconds.default


@dataclass(frozen=True)
class RetrySettings:
    """Retries of a transient failure: exponential backoff from ``base_delay_seconds``, capped
    at ``max_delay_seconds``, with full jitter (as Step Functions' retriers)."""

    max_retries: int = Retry.max_retries.default
    base_delay_seconds: float = Retry.base_delay_seconds.default
    max_delay_seconds: float = Retry.max_delay_seconds.default


@dataclass(frozen=True)
class FailureSettings:
    """What a batch does with chunks that keep failing. With neither tolerance set, any failed
    chunk fails the run (Step Functions' default)."""

    tolerated_failure_count: int | None = Failures.tolerated_failure_count.default
    tolerated_failure_percentage: float | None = Failures.tolerated_failure_percentage.default
    dead_letter_queue: str | None = Failures.dead_letter_queue.default


@dataclass(frozen=True)
class SourceSpec:
    """What initialize learned of the source, so that no later stage has to guess.

    ``data_start`` is the first byte after the BOM and the header record (text formats).
    ``layout`` holds the format's structure: row groups, sheets, a record-size sample.

    A *file set* (a folder or prefix of record files, see ``filesets``) has its files in
    ``members``; ``uri`` is the folder, ``info`` stands for the whole set (its fingerprint
    hashes every member's), and ``csv``, ``columns`` and ``compression`` are those asked for,
    or learned from the first member: each member is inspected again when its chunk reads it.
    """

    uri: str
    format: Format
    compression: str | None
    info: ObjectInfo
    csv: CsvOptions | None = None
    columns: tuple[str, ...] | None = None
    data_start: int = 0
    layout: dict[str, Any] = field(default_factory=dict)
    json_records_path: str = Batch.json_records_path.default
    excel_sheets: tuple[str, ...] | None = None
    members: tuple[ObjectInfo, ...] = ()

    @property
    def is_file_set(self) -> bool:
        return bool(self.members)

    @property
    def needs_staging(self) -> bool:
        """JSON documents and compressed text cannot be cut by bytes; they are staged first
        (not a file set's members: each is read whole by its chunk)."""
        if self.members:
            return False
        return self.format == "json" or self.compression is not None


@dataclass(frozen=True)
class SheetRange:
    """Rows ``first_row``..``last_row`` of a sheet whose header is ``header_row`` (1-based sheet
    rows, inclusive; ``last_row`` None: to the end of the sheet)."""

    sheet: str
    header_row: int
    first_row: int
    last_row: int | None


@dataclass(frozen=True)
class Chunk:
    """A chunk descriptor: where one slice of the input is, never the records themselves.

    - ``bytes``: bytes ``start``..``end`` of a CSV/JSONL object, cut at record boundaries.
    - ``row_groups``: row groups ``start``..``end`` of a Parquet object.
    - ``parts``: staged Parquet parts of a source that cannot be cut by bytes (JSON, gzip).
    - ``sheets``: row ranges of Excel worksheets.
    - ``objects``: whole files ``start``..``end`` of a file set (``members``: their URIs,
      ``fingerprints``: the versions planned).
    - ``empty``: an input with no records still gets one chunk, so the run reports zero.

    ``first_line`` is the 1-based line (text) or record number (Parquet) of the first record,
    when known; it lets rejected records name their line. ``chunks_in_plan``: how many chunks
    the plan has (``chunk_00002 of 5``).
    """

    index: int
    chunks_in_plan: int
    kind: ChunkKind
    uri: str
    start: int = 0
    end: int = 0
    first_line: int | None = None
    records: int | None = None
    sheets: tuple[SheetRange, ...] = ()
    parts: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunk:
        """The inverse of ``to_dict`` (a descriptor as plan.json, the ledger and dead letters
        hold it); ``chunks_in_plan`` is also accepted under its own name."""
        values = dict(data)
        if "count" in values:
            values["chunks_in_plan"] = values.pop("count")
        values["sheets"] = tuple(SheetRange(**s) for s in values.get("sheets", ()))
        for name in ("parts", "members", "fingerprints"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The descriptor as it is stored and sent: ``asdict(self)`` with ``chunks_in_plan``
        under its established key ``count``. ``plan.json``, the ledger's rows, dead letters (the
        file and its SQS copy) and the ledger's digests (``chunk_fingerprint``, ``plan_hash``)
        keep the format other programs read, and a batch planned before the rename is not
        planned and processed again."""
        return {("count" if k == "chunks_in_plan" else k): v for k, v in asdict(self).items()}

    @property
    def expected_records(self) -> int | None:
        """How many records reading this chunk must give (parsed + rejected by the parser), when
        the plan counted them exactly: byte ranges of a scanned text object (those with
        ``first_line``), Parquet row groups, staged parts, ``empty``. None when the plan only
        estimated, so that no check is possible: byte ranges planned without a scan, Excel
        ``sheets`` (sized from the sheet's dimensions; blank rows are skipped when read) and a
        file set's ``objects`` (records estimated from file sizes)."""
        if self.kind in ("row_groups", "parts", "empty"):
            return self.records
        if self.kind == "bytes" and self.first_line is not None:
            return self.records
        return None

    @property
    def key(self) -> str:
        """Deterministic mapping key, valid for Dagster: ``chunk_00003``."""
        return f"chunk_{self.index:05d}"

    def describe(self) -> str:
        """Which chunk (its key, 0-based like its files and ledger row), which slice, of which
        object: ``chunk_00002 of 5 (bytes 100-200 of s3://b/k.csv)``."""
        if self.kind in ("row_groups", "parts") and self.end <= self.start:
            return f"{self.key} of {self.chunks_in_plan} (no records in {self.uri})"
        where = {
            "bytes": f"bytes {self.start}-{self.end}",
            "row_groups": f"row groups {self.start}-{self.end - 1}",
            "parts": f"staged parts {self.start}-{self.end - 1}",
            "sheets": ", ".join(
                f"sheet {s.sheet!r} rows {s.first_row}-{s.last_row or 'end'}" for s in self.sheets
            ),
            "objects": _files(self.members),
            "empty": "no records",
        }[self.kind]
        return f"{self.key} of {self.chunks_in_plan} ({where} of {self.uri})"


@dataclass(frozen=True)
class BucketPlan:
    """How a keyed batch's records are hash-partitioned (``core.shuffle``): into ``count``
    buckets by the text of ``key_column``, with the hash ``scheme`` (``planning.buckets``)."""

    count: int
    key_column: str
    scheme: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """The chunks of a batch and why they have the size they have. ``schema``: the batch's
    column types, learned from a sample while planning (see ``planning.batch_schema``); each
    chunk conforms its records to it. None in a plan.json written before plans had one.
    ``buckets``: a keyed batch's buckets (None: the batch has one stage, its chunks)."""

    chunks: tuple[Chunk, ...]
    chunk_records: int
    reason: str
    total_records: int | None
    exact_records: bool
    schema: pa.Schema | None = None
    buckets: BucketPlan | None = None


@dataclass(frozen=True)
class BatchSpec:
    """Everything the stages after initialize need, resolved and validated once."""

    batch_id: str
    source: SourceSpec
    processor: str
    processor_options: dict[str, Any]
    chunking: ChunkingSettings
    output_root: str
    delivery: DeliverySettings
    ids: dict[str, str | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    retry: RetrySettings = field(default_factory=RetrySettings)
    failures: FailureSettings = field(default_factory=FailureSettings)
    processor_modules: tuple[str, ...] = ()
    mode: Literal["run", "redrive", "force"] = "run"
    # What initialize found odd without refusing it (a declared column the file lacks): shown
    # in the log, the manifest, batch_results' metadata and the CLI's summary.
    warnings: tuple[str, ...] = ()
    # Deliver every record again, whatever the sink took before (see Ledger.register_batch).
    redeliver: bool = Batch.redeliver.default

    @property
    def output(self) -> str:
        """This batch's own prefix: ``{output_root}/{batch_id}``."""
        return join_uri(self.output_root, self.batch_id)

    # ``unit``: whose file, a chunk's or (a keyed batch's second stage) a bucket's.
    def valid_uri(self, index: int, unit: str = "chunk") -> str:
        return join_uri(self.output, "valid", f"{unit}-{index:05d}.parquet")

    def rejected_uri(self, index: int, unit: str = "chunk") -> str:
        return join_uri(self.output, "rejected", f"{unit}-{index:05d}.parquet")

    def shuffle_part_uri(self, bucket: int, chunk: int) -> str:
        """The records a keyed batch's chunk sent to a bucket (``core.shuffle``)."""
        return join_uri(
            self.output, "shuffle", f"bucket-{bucket:05d}", f"chunk-{chunk:05d}.parquet"
        )

    @property
    def manifest_uri(self) -> str:
        return join_uri(self.output, "manifest.json")

    def dead_letter_uri(self, index: int, unit: str = "chunk") -> str:
        return join_uri(self.output, "dead_letters", f"{unit}-{index:05d}.json")

    @property
    def plan_uri(self) -> str:
        return join_uri(self.output, "plan.json")

    @property
    def outbox(self) -> str:
        return join_uri(self.output, "outbox")


@dataclass
class ChunkSummary:
    """What one chunk (or a keyed batch's bucket, ``key`` ``bucket_00003``) did. Small: it
    travels back to aggregate through Dagster."""

    index: int
    key: str
    count: int
    records_in: int
    records_out: int
    records_rejected: int
    bytes_read: int
    seconds: float
    peak_rss_bytes: int
    valid_uri: str | None
    rejected_uri: str | None
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    status: str = ChunkStatus.SUCCEEDED
    error: str | None = None
    dead_letter: str | None = None
    # A keyed batch's chunk (stage 1): the records it sent to each bucket, by bucket index
    # (``records_out`` is their sum; the chunk has no valid file). Empty for any other.
    shuffled: list[int] = field(default_factory=list)
    # A keyed batch's bucket: the state store its states went to (its URL without password).
    state_store: str | None = None
    # The processor's own named totals (``ProcessResult.counts``: ``leads_inserted``...).
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.records_in == self.records_out + self.records_rejected

    def manifest_entry(self, unit: str = "chunk") -> dict[str, Any]:
        """This succeeded chunk (or bucket: ``unit``) in the manifest's results."""
        return {
            unit: self.index,
            "key": self.key,
            "valid": self.valid_uri,
            "rejected": self.rejected_uri,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "records_rejected": self.records_rejected,
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _files(members: tuple[str, ...]) -> str:
    names = [m.rsplit("/", 1)[-1] for m in members]
    if len(names) <= 3:
        return f"{len(names)} file(s): {', '.join(names)}"
    return f"{len(names)} files: {names[0]} .. {names[-1]}"


def join_uri(base: str, *parts: str) -> str:
    """Join URI or path parts with '/', keeping an ``s3://`` scheme intact."""
    if base.startswith("s3://"):
        return "s3://" + posixpath.join(base[len("s3://") :].rstrip("/"), *parts)
    return posixpath.join(base, *parts)
