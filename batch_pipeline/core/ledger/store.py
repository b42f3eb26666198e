"""The chunk ledger: the single record of what each chunk of each batch has done.

One row per batch and chunk (``bp_chunks``): status, attempts, last error and its category,
records in/out/rejected, timings, the chunk's input fingerprint, its dead letter, and how far
its delivery got. A row per batch (``bp_batches``) keeps the batch's source, config (for
redrive), plan and outcome. Progress, resume, redrive, force-complete and the dead-letter view
all read these tables.

SQLite is the embedded default; any SQLAlchemy URL works, and ``postgresql://...`` (the database
of a production Dagster instance) is the production choice. Every update is one statement or one
transaction, so concurrent steps never lose a count; batch progress is counted from the chunk
rows, never kept as a counter that two steps could both overwrite. All SQL is built by
SQLAlchemy with bound parameters.

A lease per batch (``bp_leases``) keeps two runs of the same batch apart: the run holding it
(its Dagster run id) renews it while it works; another run is refused until it is released,
expires, or (under Dagster) its holder's run is known to have finished. ``bp_deliveries`` keeps,
per batch and external sink, what a batch's messages were made from and how many the sink took,
so that a change which would deliver records twice to the same sink is refused.

Chunk statuses: ``pending`` (planned, or waiting for a retry), ``running`` (an attempt started;
stays so if its process died), ``succeeded``, ``failed`` (the last attempt failed; a retry,
redrive or resume will take it), ``dead_lettered`` (gave up; in the dead-letter store).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.errors import (
    BatchBusyError,
    ConfigError,
    LeaseLostError,
    LedgerError,
)
from batch_pipeline.core.common.models import BatchSpec, Chunk, ChunkSummary, Plan

PENDING, RUNNING, SUCCEEDED, FAILED, DEAD_LETTERED = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "dead_lettered",
)
CHUNK_STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, DEAD_LETTERED)
COMPLETED_FORCED = "completed_forced"
LEDGER_URL_ENV = "BATCH_PIPELINE_LEDGER_URL"


def default_ledger_url() -> str:
    """``BATCH_PIPELINE_LEDGER_URL``; else SQLite in ``$DAGSTER_HOME``; else in
    ``~/.batch_pipeline``. Read when called, never at import."""
    if os.environ.get(LEDGER_URL_ENV):
        return os.environ[LEDGER_URL_ENV]
    home = os.environ.get("DAGSTER_HOME") or os.path.join(
        os.path.expanduser("~"), ".batch_pipeline"
    )
    return f"sqlite:///{os.path.join(home, 'batch_ledger.db')}"


# user:password@ in a URL SQLAlchemy cannot parse (the password's text is never shown).
_PASSWORD_IN_URL = re.compile(r"//[^/@:]*:[^/@]+@")


def url_password(url: str) -> str | None:
    """The password written in a ledger URL (None: there is none)."""
    try:
        return sa.engine.make_url(url).password or None
    except Exception:  # unparseable: a password still must not pass
        found = _PASSWORD_IN_URL.search(url)
        return found.group(0) if found else None


def safe_url(url: str) -> str:
    """``url`` with its password shown as ``***``, for messages (also one SQLAlchemy cannot
    parse)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _PASSWORD_IN_URL.sub(lambda m: m.group(0).split(":")[0] + ":***@", url)


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def output_digest(spec: BatchSpec) -> str:
    """Everything besides the source's content that shapes a batch's output files: how the
    source is parsed, the processor and its options, the chunking, where outputs go."""
    return _digest(
        {
            "parse": parse_settings(spec),
            "processor": spec.processor,
            "options": spec.processor_options,
            "modules": spec.processor_modules,
            "chunking": asdict(spec.chunking),
            "output": spec.output_root,
        }
    )


def delivery_digest(spec: BatchSpec) -> str:
    """What shapes a batch's messages: where they go and how records are packed."""
    d = spec.delivery
    return _digest([d.target, d.records_per_message, d.max_message_bytes])


def parse_settings(spec: BatchSpec) -> dict[str, Any]:
    source = spec.source
    return {
        "format": source.format,
        "compression": source.compression,
        "csv": asdict(source.csv) if source.csv else None,
        "json_records_path": source.json_records_path,
        "excel_sheets": source.excel_sheets,
    }


def chunk_fingerprint(spec: BatchSpec, chunk: Chunk) -> str:
    """Changes whenever the chunk's output could: another source content, another slice,
    other parse, processor, chunking or output settings."""
    return _digest(
        {
            "source": spec.source.info.fingerprint,
            "chunk": chunk.digest_fields(),
            "out": output_digest(spec),
        }
    )


def plan_hash(plan: Plan) -> str:
    return _digest([c.digest_fields() for c in plan.chunks])


# What a batch's messages are made of, piece by piece (so that a refusal can say which changed).
SENT_SETTINGS = {
    "source": "the source's content",
    "plan": "the chunk plan",
    "parse": "the parse settings (format, compression, CSV options, JSON path, sheets)",
    "processor": "the processor or its options",
    "chunking": "the chunking (chunk_records, max_chunks, chunk_bytes, scan)",
    "packing": "the message packing (records_per_message, max_message_bytes)",
}


def sent_settings(spec: BatchSpec, plan: Plan) -> dict[str, str]:
    """Digests of everything that decides which messages a batch sends (not where)."""
    return {
        "source": spec.source.info.fingerprint,
        "plan": plan_hash(plan),
        "parse": _digest(parse_settings(spec)),
        "processor": _digest([spec.processor, spec.processor_options, spec.processor_modules]),
        "chunking": _digest(asdict(spec.chunking)),
        "packing": _digest([spec.delivery.records_per_message, spec.delivery.max_message_bytes]),
    }


def is_external(target: str) -> bool:
    """A sink outside the batch's own folder (SQS today): delivering to it twice is visible
    downstream. ``local`` (the outbox under the output) and ``none`` are not."""
    return target not in ("local", "none")


def sink_key(target: str) -> str:
    """One name per SQS queue whichever way the target names it (``sqs://NAME``, a queue URL),
    to compare destinations; other targets as they are."""
    if not is_external(target):
        return target
    name = target.rstrip("/").rsplit("/", 1)[-1]
    return f"sqs://{name}"


@dataclass(frozen=True)
class Lease:
    """Who holds a batch (``holder``: a run id) and until when, as epoch seconds."""

    batch_id: str
    holder: str
    acquired_at: float
    heartbeat_at: float
    expires_at: float

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        seen = max(0.0, now - self.heartbeat_at)
        left = self.expires_at - now
        expiry = f"expires at {_iso(self.expires_at)}" if left > 0 else "has expired"
        return (
            f"run {self.holder} (since {_iso(self.acquired_at)}, last seen {seen:.0f}s ago; its "
            f"lease {expiry})"
        )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class ChunkState:
    """One row of the chunk ledger."""

    batch_id: str
    chunk: int
    status: str
    attempts: int = 0
    error_category: str | None = None
    error_message: str | None = None
    records_in: int | None = None
    records_out: int | None = None
    records_rejected: int | None = None
    bytes_read: int | None = None
    seconds: float | None = None
    peak_rss_bytes: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    fingerprint: str | None = None
    descriptor: str | None = None
    summary: str | None = None
    dead_letter: str | None = None
    first_message: int | None = None
    messages: int | None = None
    total_messages: int | None = None
    messages_sent: int = 0
    accepted: str | None = None
    updated_at: float | None = None

    def chunk_summary(self) -> ChunkSummary | None:
        return ChunkSummary(**json.loads(self.summary)) if self.summary else None

    @property
    def delivered(self) -> bool:
        return self.messages is not None and self.messages_sent >= self.messages

    def chunk_descriptor(self) -> Chunk | None:
        return Chunk.from_dict(json.loads(self.descriptor)) if self.descriptor else None

    def accepted_numbers(self) -> set[int]:
        """Message numbers the sink accepted beyond the first ``messages_sent`` (out of order,
        from a batch call that was accepted in part)."""
        return set(json.loads(self.accepted)) if self.accepted else set()


@dataclass
class BatchState:
    """One row of the batch table."""

    batch_id: str
    source_uri: str
    fingerprint: str
    status: str
    chunks: int
    plan_hash: str | None
    output_digest: str | None
    delivery_digest: str | None
    config: str | None
    run_id: str | None
    reason: str | None
    created_at: float
    updated_at: float

    def config_dict(self) -> dict[str, Any]:
        return json.loads(self.config) if self.config else {}


@dataclass
class Progress:
    """A batch's counters, as Step Functions' DescribeMapRun reports them, plus how far its
    delivery got. ``records_*`` count succeeded chunks only."""

    batch_id: str
    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    dead_lettered: int
    records_in: int
    records_out: int
    records_rejected: int
    status: str | None = None
    messages: int = 0
    messages_sent: int = 0
    first_started_at: float | None = None
    last_finished_at: float | None = None
    records_since: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.dead_lettered

    @property
    def finished(self) -> bool:
        """No chunk is pending, running, or failed and waiting for a retry."""
        return self.pending == 0 and self.running == 0 and self.failed == 0

    @property
    def percent(self) -> float:
        return round(100.0 * self.succeeded / self.total, 2) if self.total else 100.0

    def records_per_second(self, since: float | None = None, now: float | None = None) -> float:
        """Records of the chunks that succeeded since ``since`` (as passed to ``progress``) per
        second of wall time from ``since`` (default: the first chunk's start) to ``now``
        (default: the last chunk's end)."""
        start = since if since is not None else self.first_started_at
        end = now if now is not None else self.last_finished_at
        if start is None or end is None or end <= start:
            return 0.0
        return round(self.records_since / (end - start), 1)


def _tables(
    schema: str | None,
) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table, sa.Table, sa.Table]:
    metadata = sa.MetaData(schema=schema)
    batches = sa.Table(
        "bp_batches",
        metadata,
        sa.Column("batch_id", sa.String(255), primary_key=True),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("plan_hash", sa.String(64)),
        sa.Column("output_digest", sa.String(64)),
        sa.Column("delivery_digest", sa.String(64)),
        sa.Column("config", sa.Text),
        sa.Column("run_id", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    chunks = sa.Table(
        "bp_chunks",
        metadata,
        sa.Column("batch_id", sa.String(255), primary_key=True),
        sa.Column("chunk", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("error_category", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("records_in", sa.BigInteger),
        sa.Column("records_out", sa.BigInteger),
        sa.Column("records_rejected", sa.BigInteger),
        sa.Column("bytes_read", sa.BigInteger),
        sa.Column("seconds", sa.Float),
        sa.Column("peak_rss_bytes", sa.BigInteger),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("descriptor", sa.Text),
        sa.Column("summary", sa.Text),
        sa.Column("dead_letter", sa.Text),
        sa.Column("first_message", sa.Integer),
        sa.Column("messages", sa.Integer),
        sa.Column("total_messages", sa.Integer),
        sa.Column("messages_sent", sa.Integer, nullable=False, default=0),
        sa.Column("accepted", sa.Text),
        sa.Column("updated_at", sa.Float),
        sa.Index("ix_bp_chunks_batch_status", "batch_id", "status"),
    )
    # The files of file-set batches, so that the nightly schedule can tell which small files
    # a finished set already processed.
    members = sa.Table(
        "bp_members",
        metadata,
        sa.Column("batch_id", sa.String(255), primary_key=True),
        sa.Column("uri", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Index("ix_bp_members_uri", "uri"),
    )
    # One lease per batch: the run that may work on it now (see acquire_lease).
    leases = sa.Table(
        "bp_leases",
        metadata,
        sa.Column("batch_id", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    # Where a batch's messages went: per batch and destination (sink_key), what they were made
    # of (sent_settings, JSON), the output they came from, and how many messages an external
    # sink had taken when the chunk rows' delivery progress last moved to another destination.
    # ``current`` marks the destination the chunk rows' delivery progress is about.
    deliveries = sa.Table(
        "bp_deliveries",
        metadata,
        sa.Column("batch_id", sa.String(255), primary_key=True),
        sa.Column("target", sa.String(1024), primary_key=True),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("messages", sa.Integer, nullable=False, default=0),
        sa.Column("current", sa.Boolean, nullable=False, default=False),
        sa.Column("run_id", sa.String(255)),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    return metadata, batches, chunks, members, leases, deliveries


WRITE = "batch_pipeline_ledger_write"  # execution option of the ledger's write transactions


def _engine_url(url: str) -> sa.URL:
    """``url`` with a driver that is installed: a bare ``postgresql://`` means psycopg (3) to
    SQLAlchemy 2.1 but psycopg2 to 2.0, and the ``postgres`` extra (like dagster-postgres)
    installs psycopg2; take whichever is there."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "postgresql":
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return parsed.set(drivername=f"postgresql+{driver}")
    return parsed


# What SQLite says of a file that is not a database, or a damaged one.
DAMAGED = ("file is not a database", "database disk image is malformed")


def _sqlite_path(url: str) -> str:
    """The file of a SQLite URL; "" for the in-memory database."""
    path = url.split("///", 1)[1] if "///" in url else ""
    return "" if path == ":memory:" else path


def _make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 60})
        else:  # one shared in-memory database for every connection of this engine
            engine = sa.create_engine(
                "sqlite://",
                connect_args={"check_same_thread": False},
                poolclass=sa.pool.StaticPool,
            )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            # pysqlite would begin transactions itself, lazily, at the first write: a read
            # before it (register_batch, assign_messages) would not be in the transaction.
            # Transactions are begun in _begin instead.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if path and path != ":memory:":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # A write transaction takes the write lock at once (waiting up to busy_timeout), so
            # that what it reads cannot change before it writes; reads take no lock.
            immediate = conn.get_execution_options().get(WRITE)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return sa.create_engine(_engine_url(url), pool_pre_ping=True)


def _lock_key(name: str) -> int:
    """A Postgres advisory-lock key (signed 64-bit) for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_LEDGERS: dict[tuple[str, str | None], Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


def open_ledger(url: str | None = None, schema: str | None = None) -> Ledger:
    """The ledger at ``url`` (default: ``default_ledger_url()``), one per process and URL."""
    key = (url or default_ledger_url(), schema)
    with _LEDGERS_LOCK:
        if key not in _LEDGERS:
            _LEDGERS[key] = Ledger(*key)
        return _LEDGERS[key]


@dataclass(frozen=True)
class Destination:
    """Where a batch's messages went (a row of ``bp_deliveries``). ``settings`` None: not known
    (a ledger from before the table; the batch row's digests stand in)."""

    target: str
    settings: dict[str, str] | None
    output: str | None
    messages: int = 0
    current: bool = False
    run_id: str | None = None
    updated_at: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> Destination:
        return cls(
            row.target, json.loads(row.settings) or None, row.output or None, row.messages,
            bool(row.current), row.run_id, row.updated_at,
        )  # fmt: skip


def _current_destination(
    row: Any, destinations: dict[str, Any], spec: BatchSpec
) -> Destination | None:
    """Where the chunk rows' delivery progress went: the current row of ``bp_deliveries``; for
    a batch registered before that table, the target and output its stored config names (else
    this run's, when the batch row's digests say they did not change)."""
    for found in destinations.values():
        if found.current:
            return Destination.from_row(found)
    if row is None:
        return None
    config = json.loads(row.config) if row.config else {}
    target = (config.get("delivery") or {}).get("target")
    if target is None:  # unknown: take it for this run's (the conservative guess)
        target = spec.delivery.target
    output = config.get("output")
    if output is None and row.output_digest == output_digest(spec):
        output = spec.output_root
    return Destination(sink_key(target), None, output)


def _delivery_change(
    spec: BatchSpec,
    plan: Plan,
    settings: dict[str, str],
    current: Destination | None,
    destinations: dict[str, Any],
    sent: int,
    row: Any,
) -> bool:
    """Whether the batch's delivery progress must start again for this run; raises ConfigError
    when this run could deliver records twice to the same external sink.

    - ``redeliver``: start again, whatever the sink has (the operator asked for it).
    - Same external sink (same target) as the progress is about: what is sent changed (plan,
      source content, parse, processor, chunking or packing) after messages went out: refused;
      before any went out: start again; unchanged (another output folder included): keep.
    - Another external sink: start again, unless that sink took messages of this batch before
      (then went elsewhere): refused, since the ledger no longer knows which it has.
    - ``local`` (the outbox under the output folder) or ``none``: a new destination, start
      again, unless the destination (for ``local``, with its output folder) and what is sent
      are the same."""
    target = sink_key(spec.delivery.target)
    if spec.redeliver:
        return True
    if current is None:
        return False
    same = current.target == target and (target != "local" or current.output == spec.output_root)
    changed = _changes(spec, plan, settings, current, row)
    if is_external(target):
        if same:
            if changed and sent:
                raise ConfigError(
                    f"batch {spec.batch_id} delivered {sent} message(s) to "
                    f"{spec.delivery.target}, and this run would send it other messages: "
                    f"{'; '.join(changed)} changed since. Sending them to the same sink would "
                    "deliver records twice. Nothing was done. Run it with the earlier settings, "
                    "give this run another batch id (--batch-id), or run it with --redeliver "
                    f"(redeliver: true) to send every record to {spec.delivery.target} again."
                )
            return bool(changed)
        earlier = destinations.get(target)
        if earlier is not None and earlier.messages:
            before = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(earlier.updated_at))
            raise ConfigError(
                f"batch {spec.batch_id} delivered {earlier.messages} message(s) to "
                f"{spec.delivery.target} before (as of {before}), then went to "
                f"{current.target}: the ledger no longer knows which of its records "
                f"{spec.delivery.target} has, so this run would deliver them twice. Nothing was "
                "done. Give this run another batch id (--batch-id), or run it with --redeliver "
                f"(redeliver: true) to send every record to {spec.delivery.target} again."
            )
        return True
    return not same or bool(changed)


def _changes(
    spec: BatchSpec, plan: Plan, settings: dict[str, str], current: Destination, row: Any
) -> list[str]:
    """What changed in what is sent since the progress was numbered, for people."""
    if current.settings is None:  # a ledger from before bp_deliveries: the batch row's digests
        changed = []
        if row.plan_hash != plan_hash(plan):
            changed.append(f"the chunk plan ({row.chunks} chunks before, {len(plan.chunks)} now)")
        if row.output_digest != output_digest(spec) and current.output == spec.output_root:
            changed.append("the parse, processor or chunking settings")
        if row.delivery_digest != delivery_digest(spec) and current.target == sink_key(
            spec.delivery.target
        ):
            changed.append(SENT_SETTINGS["packing"])
        return changed
    changed = []
    for key, label in SENT_SETTINGS.items():
        if current.settings.get(key) != settings[key]:
            if key == "plan" and row is not None:
                label += f" ({row.chunks} chunks before, {len(plan.chunks)} now)"
            changed.append(label)
    return changed


class Ledger:
    """Reads and atomically updates the chunk ledger. Thread- and process-safe on a SQLite file
    or Postgres; the in-memory ``sqlite://`` ledger (run_batch's default) is for one thread."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.in_memory = self.engine.dialect.name == "sqlite" and not _sqlite_path(url)
        sa.event.listen(self.engine, "handle_error", self._damaged)
        self._writer = self.engine.execution_options(**{WRITE: True})
        self._postgres = self.engine.dialect.name == "postgresql"
        metadata, self.batches, self.chunks, self.members, self.leases, self.deliveries = _tables(
            schema
        )
        # Steps starting at once on a new database all try to create the tables: one at a
        # time (SQLite's write lock, a Postgres advisory lock), each checking what exists.
        # Tables added since a ledger was made (bp_leases, bp_deliveries) are created here.
        try:
            with self._write() as conn:
                if self._postgres:
                    self._lock(conn, f"bp_ledger_schema:{schema or ''}")
                    if schema:
                        conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
                metadata.create_all(conn, checkfirst=True)
        except LedgerError:
            self.engine.dispose()
            raise

    def dispose(self) -> None:
        self.engine.dispose()

    def _damaged(self, context: Any) -> None:
        """SQLAlchemy's ``handle_error`` event: a SQLite file that is not a database, or is
        damaged, becomes one LedgerError saying which ledger and what to do (any statement,
        and opening it)."""
        original = context.original_exception
        text = str(original)
        if not any(marker in text for marker in DAMAGED):
            return
        raise LedgerError(
            f"the ledger at {self.safe_url} is unusable: {text} (the file was overwritten, "
            "truncated in the middle or damaged). Nothing was done. Restore it from a backup, "
            "or move it away to start an empty ledger: every batch's manifest.json and "
            "delivery.json, beside its results, say what ran and what was delivered, and a "
            "batch recorded as delivered to a queue is then refused until run with --redeliver."
        ) from original

    def _write(self) -> Any:
        """A write transaction (on SQLite: ``BEGIN IMMEDIATE``)."""
        return self._writer.begin()

    def _lock(self, conn: sa.Connection, name: str) -> None:
        """Serialize transactions about ``name`` until this one ends (Postgres; SQLite's write
        transactions are serialized already)."""
        if self._postgres:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(name))))

    # Batches ---------------------------------------------------------------------------------

    def register_batch(
        self, spec: BatchSpec, plan: Plan, run_id: str | None = None
    ) -> list[ChunkState]:
        """Record the batch and its planned chunks.

        A batch seen before keeps its chunk rows when its plan is the same; another plan
        replaces them. Delivery progress (message numbering, what the sink took) is kept while
        the destination and what is sent stay the same; otherwise it starts again, except that
        a change is refused (ConfigError naming the setting) when it would deliver records
        twice to the same external sink (see ``_delivery_change``). ``spec.redeliver`` starts
        delivery again whatever the sink has. A force-completed batch stays so, unless the run
        is forced."""
        now = time.time()
        digest = plan_hash(plan)
        outputs, deliveries = output_digest(spec), delivery_digest(spec)
        settings = sent_settings(spec, plan)
        config = json.dumps(spec.config, default=str)
        c, d = self.chunks.c, self.deliveries.c
        with self._write() as conn:
            self._lock(conn, f"bp_batch:{spec.batch_id}")
            row = conn.execute(
                sa.select(self.batches).where(self.batches.c.batch_id == spec.batch_id)
            ).first()
            destinations = {
                r.target: r
                for r in conn.execute(sa.select(self.deliveries).where(d.batch_id == spec.batch_id))
            }
            progress = conn.execute(
                sa.select(c.messages_sent, c.accepted).where(c.batch_id == spec.batch_id)
            ).all()
            sent = sum(r.messages_sent for r in progress) + sum(
                len(json.loads(r.accepted)) for r in progress if r.accepted
            )
            current = _current_destination(row, destinations, spec)
            reset = _delivery_change(spec, plan, settings, current, destinations, sent, row)
            replanned = row is not None and row.plan_hash != digest
            moved = current is not None and (reset or replanned) and is_external(current.target)
            if moved and sent:  # what the sink took, before the chunk rows forget it
                assert current is not None
                self._record_sent(conn, spec.batch_id, current, sent, now)
            if replanned:
                conn.execute(sa.delete(self.chunks).where(c.batch_id == spec.batch_id))
            elif reset:
                conn.execute(
                    sa.update(self.chunks)
                    .where(c.batch_id == spec.batch_id)
                    .values(first_message=None, messages=None, total_messages=None,
                            messages_sent=0, accepted=None)
                )  # fmt: skip
            self._set_destination(conn, spec, settings, run_id, now)
            forced = row is not None and row.status == COMPLETED_FORCED and spec.mode == "run"
            values = {
                "source_uri": spec.source.uri,
                "fingerprint": spec.source.info.fingerprint,
                "status": COMPLETED_FORCED if forced else RUNNING,
                "chunks": len(plan.chunks),
                "plan_hash": digest,
                "output_digest": outputs,
                "delivery_digest": deliveries,
                "config": config,
                "run_id": run_id,
                "reason": row.reason if forced else None,
                "updated_at": now,
            }
            if row is None:
                conn.execute(
                    sa.insert(self.batches).values(batch_id=spec.batch_id, created_at=now, **values)
                )
            else:
                conn.execute(
                    sa.update(self.batches)
                    .where(self.batches.c.batch_id == spec.batch_id)
                    .values(**values)
                )
            if spec.source.members and (row is None or row.plan_hash != digest):
                # The files of a set batch (another set under a reused batch id replaces them).
                conn.execute(
                    sa.delete(self.members).where(self.members.c.batch_id == spec.batch_id)
                )
                conn.execute(
                    sa.insert(self.members),
                    [
                        {"batch_id": spec.batch_id, "uri": m.uri, "fingerprint": m.fingerprint}
                        for m in spec.source.members
                    ],
                )
            existing = {
                r.chunk
                for r in conn.execute(
                    sa.select(self.chunks.c.chunk).where(self.chunks.c.batch_id == spec.batch_id)
                )
            }
            new_rows = [
                {
                    "batch_id": spec.batch_id,
                    "chunk": c.index,
                    "status": PENDING,
                    "attempts": 0,
                    "messages_sent": 0,
                    "descriptor": json.dumps(asdict(c), default=str),
                    "updated_at": now,
                }
                for c in plan.chunks
                if c.index not in existing
            ]
            if new_rows:
                conn.execute(sa.insert(self.chunks), new_rows)
        return self.chunk_states(spec.batch_id)

    def _set_destination(
        self,
        conn: sa.Connection,
        spec: BatchSpec,
        settings: dict[str, str],
        run_id: str | None,
        now: float,
    ) -> None:
        """This run's destination becomes the current one, with what it is sent."""
        d = self.deliveries.c
        target = sink_key(spec.delivery.target)
        conn.execute(
            sa.update(self.deliveries)
            .where(d.batch_id == spec.batch_id, d.target != target)
            .values(current=False)
        )
        values = {
            "settings": json.dumps(settings, sort_keys=True),
            "output": spec.output_root,
            "current": True,
            "run_id": run_id,
            "updated_at": now,
        }
        known = conn.execute(
            sa.select(d.target).where(d.batch_id == spec.batch_id, d.target == target)
        ).first()
        if known is not None:
            conn.execute(
                sa.update(self.deliveries)
                .where(d.batch_id == spec.batch_id, d.target == target)
                .values(**values)
            )
        else:
            conn.execute(
                sa.insert(self.deliveries).values(
                    batch_id=spec.batch_id, target=target, messages=0, **values
                )
            )

    def _record_sent(
        self, conn: sa.Connection, batch_id: str, where: Destination, sent: int, now: float
    ) -> None:
        """Remember that ``where`` (an external sink) took ``sent`` messages of the batch."""
        d = self.deliveries.c
        known = conn.execute(
            sa.select(d.messages).where(d.batch_id == batch_id, d.target == where.target)
        ).first()
        if known is not None:
            conn.execute(
                sa.update(self.deliveries)
                .where(d.batch_id == batch_id, d.target == where.target)
                .values(messages=max(known.messages, sent), updated_at=now)
            )
        else:  # a ledger from before bp_deliveries
            conn.execute(
                sa.insert(self.deliveries).values(
                    batch_id=batch_id, target=where.target, settings="{}",
                    output=where.output or "", messages=sent, current=False, updated_at=now,
                )
            )  # fmt: skip

    def destinations(self, batch_id: str) -> list[Destination]:
        """Where the batch's messages went or go (the current destination first)."""
        d = self.deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(self.deliveries)
                .where(d.batch_id == batch_id)
                .order_by(d.current.desc(), d.target)
            ).all()
        return [Destination.from_row(r) for r in rows]

    def batch(self, batch_id: str) -> BatchState | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.batches).where(self.batches.c.batch_id == batch_id)
            ).first()
        return BatchState(**row._mapping) if row is not None else None

    def set_batch_status(
        self, batch_id: str, status: str, reason: str | None = None, run_id: str | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "reason": reason, "updated_at": time.time()}
        if run_id:
            values["run_id"] = run_id
        with self._write() as conn:
            conn.execute(
                sa.update(self.batches).where(self.batches.c.batch_id == batch_id).values(**values)
            )

    def force_complete(self, batch_id: str, reason: str) -> BatchState:
        """Mark a batch complete whatever its chunks say, with the operator's reason. Refused
        (BatchBusyError, naming the run and when its lease expires) while a run holds the
        batch's lease and it has not expired: that run would finish its chunks under a batch
        already marked complete. Checked and written in one transaction, under the lease's
        lock, so that no run takes the lease in between."""
        if not reason.strip():
            raise ConfigError("force-complete needs a reason")
        batches, leases = self.batches, self.leases
        with self._write() as conn:
            self._lock(conn, f"bp_lease:{batch_id}")
            found = conn.execute(
                sa.select(batches.c.batch_id).where(batches.c.batch_id == batch_id)
            ).first()
            if found is None:
                raise ConfigError(f"batch {batch_id} is not in the ledger at {self.safe_url}")
            row = conn.execute(sa.select(leases).where(leases.c.batch_id == batch_id)).first()
            now = time.time()
            if row is not None and row.expires_at > now:
                raise BatchBusyError(
                    f"batch {batch_id} is being processed by {Lease(**row._mapping).describe(now)}"
                    "; it cannot be completed while that run holds it: wait for it, or stop it "
                    f"first (ledger {self.safe_url})"
                )
            conn.execute(
                sa.update(batches)
                .where(batches.c.batch_id == batch_id)
                .values(status=COMPLETED_FORCED, reason=reason, updated_at=now)
            )
        state = self.batch(batch_id)
        assert state is not None
        return state

    # Leases ----------------------------------------------------------------------------------

    def acquire_lease(
        self,
        batch_id: str,
        holder: str,
        ttl: float,
        holder_finished: Callable[[str], bool] | None = None,
    ) -> Lease:
        """Take the batch's lease for ``holder`` for ``ttl`` seconds: when nobody holds it, its
        lease expired, it is ours already, or ``holder_finished(other)`` says its holder's run
        has ended. Otherwise raise BatchBusyError naming the holder, when it was last seen
        and when its lease expires. Each attempt is one transaction."""
        taken = self._take_lease(batch_id, holder, ttl, None)
        # Whether the holder's run ended is asked outside the transaction.
        if taken.holder != holder and holder_finished and holder_finished(taken.holder):
            taken = self._take_lease(batch_id, holder, ttl, taken.holder)
        if taken.holder == holder:
            return taken
        raise BatchBusyError(
            f"batch {batch_id} is being processed by another run: {taken.describe()}. This run "
            "did nothing. Wait for that run to end; if it died, run the batch again once its "
            f"lease has expired (ledger {self.safe_url})"
        )

    def _take_lease(self, batch_id: str, holder: str, ttl: float, finished: str | None) -> Lease:
        """Our lease if we could take it, else the holder's."""
        table = self.leases
        with self._write() as conn:
            self._lock(conn, f"bp_lease:{batch_id}")
            now = time.time()
            row = conn.execute(sa.select(table).where(table.c.batch_id == batch_id)).first()
            if row is None:
                lease = Lease(batch_id, holder, now, now, now + ttl)
                conn.execute(sa.insert(table).values(**asdict(lease)))
                return lease
            current = Lease(**row._mapping)
            free = current.expires_at <= now or current.holder in (holder, finished)
            if not free:
                return current
            since = current.acquired_at if current.holder == holder else now
            lease = Lease(batch_id, holder, since, now, now + ttl)
            conn.execute(
                sa.update(table).where(table.c.batch_id == batch_id).values(**asdict(lease))
            )
            return lease

    def renew_lease(self, batch_id: str, holder: str, ttl: float) -> Lease:
        """Extend ``holder``'s lease by ``ttl`` seconds from now (also one that expired, as long
        as nobody took it). Raises LeaseLostError when another run holds it, or nobody does."""
        table = self.leases
        with self._write() as conn:
            self._lock(conn, f"bp_lease:{batch_id}")
            now = time.time()
            row = conn.execute(sa.select(table).where(table.c.batch_id == batch_id)).first()
            if row is None or row.holder != holder:
                who = (
                    f"{Lease(**row._mapping).describe(now)} holds it now"
                    if row is not None
                    else "nobody holds it (it was released, or the ledger was reset)"
                )
                raise LeaseLostError(
                    f"batch {batch_id}: this run ({holder}) no longer holds the batch's lease: "
                    f"{who}. This step stopped before writing anything; run the batch again "
                    "once the other run has ended"
                )
            conn.execute(
                sa.update(table)
                .where(table.c.batch_id == batch_id)
                .values(heartbeat_at=now, expires_at=now + ttl)
            )
            return Lease(batch_id, holder, row.acquired_at, now, now + ttl)

    def release_lease(self, batch_id: str, holder: str) -> bool:
        """Give the batch's lease back, if ``holder`` holds it (never another run's)."""
        table = self.leases
        with self._write() as conn:
            result = conn.execute(
                sa.delete(table).where(table.c.batch_id == batch_id, table.c.holder == holder)
            )
        return bool(result.rowcount)

    def release_leases(self, holder: str) -> list[str]:
        """Give back every lease ``holder`` holds (a run that failed); the batch ids."""
        table = self.leases
        with self._write() as conn:
            held = conn.execute(sa.select(table.c.batch_id).where(table.c.holder == holder))
            batch_ids = [r.batch_id for r in held]
            if batch_ids:
                conn.execute(sa.delete(table).where(table.c.holder == holder))
        return batch_ids

    def lease(self, batch_id: str) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.leases).where(self.leases.c.batch_id == batch_id)
            ).first()
        return Lease(**row._mapping) if row is not None else None

    # Chunks ----------------------------------------------------------------------------------

    def chunk_states(self, batch_id: str) -> list[ChunkState]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(self.chunks)
                .where(self.chunks.c.batch_id == batch_id)
                .order_by(self.chunks.c.chunk)
            ).all()
        return [ChunkState(**r._mapping) for r in rows]

    def chunk_state(self, batch_id: str, chunk: int) -> ChunkState | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.chunks).where(
                    self.chunks.c.batch_id == batch_id, self.chunks.c.chunk == chunk
                )
            ).first()
        return ChunkState(**row._mapping) if row is not None else None

    def _update(self, batch_id: str, chunk: int, **values: Any) -> None:
        with self._write() as conn:
            # Stamped once the write transaction holds the lock (SQLite), so that changes are
            # stamped in the order they commit: the dead-letter alert's cursor relies on it.
            values["updated_at"] = time.time()
            conn.execute(
                sa.update(self.chunks)
                .where(self.chunks.c.batch_id == batch_id, self.chunks.c.chunk == chunk)
                .values(**values)
            )

    def reset(self, batch_id: str, chunks: list[int]) -> None:
        """Back to pending for another attempt (delivery progress is kept)."""
        if not chunks:
            return
        with self._write() as conn:
            conn.execute(
                sa.update(self.chunks)
                .where(self.chunks.c.batch_id == batch_id, self.chunks.c.chunk.in_(chunks))
                .values(status=PENDING, updated_at=time.time())
            )

    def mark_running(self, batch_id: str, chunk: int) -> None:
        """An attempt starts: status running, attempts + 1 (atomically)."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                sa.update(self.chunks)
                .where(self.chunks.c.batch_id == batch_id, self.chunks.c.chunk == chunk)
                .values(
                    status=RUNNING,
                    attempts=self.chunks.c.attempts + 1,
                    started_at=now,
                    updated_at=now,
                )
            )

    def mark_succeeded(self, batch_id: str, summary: ChunkSummary, fingerprint: str) -> None:
        self._update(
            batch_id,
            summary.index,
            status=SUCCEEDED,
            error_category=None,
            error_message=None,
            records_in=summary.records_in,
            records_out=summary.records_out,
            records_rejected=summary.records_rejected,
            bytes_read=summary.bytes_read,
            seconds=summary.seconds,
            peak_rss_bytes=summary.peak_rss_bytes,
            finished_at=time.time(),
            fingerprint=fingerprint,
            summary=json.dumps(summary.to_dict()),
            dead_letter=None,
        )

    def mark_failed(self, batch_id: str, chunk: int, category: str, message: str) -> None:
        """The attempt failed; the chunk waits for a retry (or a redrive/resume)."""
        self._update(
            batch_id,
            chunk,
            status=FAILED,
            error_category=category,
            error_message=message[:4000],
            finished_at=time.time(),
        )

    def mark_dead_lettered(
        self, batch_id: str, chunk: int, category: str, message: str, dead_letter: str
    ) -> None:
        self._update(
            batch_id,
            chunk,
            status=DEAD_LETTERED,
            error_category=category,
            error_message=message[:4000],
            finished_at=time.time(),
            dead_letter=dead_letter,
        )

    # Delivery --------------------------------------------------------------------------------

    def assign_messages(self, batch_id: str, counts: dict[int, int]) -> None:
        """Number the messages of the chunks in ``counts`` (chunk -> messages) after the highest
        number given so far, in chunk order, and record the batch's message total as of now
        with each of them. Chunks numbered before keep their numbers and totals, so a message
        is always rebuilt identically, whenever it is (re)sent."""
        c = self.chunks.c
        with self._write() as conn:
            self._lock(conn, f"bp_batch:{batch_id}")
            rows = conn.execute(
                sa.select(c.chunk, c.first_message, c.messages)
                .where(c.batch_id == batch_id)
                .with_for_update()
            ).all()
            numbered = {r.chunk for r in rows if r.first_message is not None}
            last = max((r.first_message + r.messages - 1 for r in rows if r.messages), default=0)
            firsts: dict[int, int] = {}
            for chunk in sorted(set(counts) - numbered):
                firsts[chunk] = last + 1
                last += counts[chunk]
            for chunk, first in firsts.items():
                conn.execute(
                    sa.update(self.chunks)
                    .where(c.batch_id == batch_id, c.chunk == chunk)
                    .values(first_message=first, messages=counts[chunk], total_messages=last)
                )

    def mark_sent(
        self, batch_id: str, chunk: int, messages_sent: int, accepted: set[int] | None = None
    ) -> None:
        """The first ``messages_sent`` messages of the chunk are with the sink, and so are the
        messages numbered ``accepted`` (beyond them, accepted out of order)."""
        extra = json.dumps(sorted(accepted)) if accepted else None
        self._update(batch_id, chunk, messages_sent=messages_sent, accepted=extra)

    # Views -----------------------------------------------------------------------------------

    def progress(self, batch_id: str, since: float | None = None) -> Progress:
        """Counted from the chunk rows in one query: exact under concurrent updates.
        ``records_since`` counts the records of chunks that succeeded at or after ``since``
        (all of them when None), for a rate of this run only."""
        c = self.chunks.c
        recent = c.finished_at >= since if since is not None else sa.true()
        sent = sa.case((c.messages_sent < c.messages, c.messages_sent), else_=c.messages)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    c.status,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(c.records_in), 0),
                    sa.func.coalesce(sa.func.sum(c.records_out), 0),
                    sa.func.coalesce(sa.func.sum(c.records_rejected), 0),
                    sa.func.coalesce(sa.func.sum(c.messages), 0),
                    sa.func.coalesce(sa.func.sum(sent), 0),
                    sa.func.min(c.started_at),
                    sa.func.max(c.finished_at),
                    sa.func.coalesce(sa.func.sum(sa.case((recent, c.records_in), else_=0)), 0),
                )
                .where(c.batch_id == batch_id)
                .group_by(c.status)
            ).all()
            status = conn.execute(
                sa.select(self.batches.c.status).where(self.batches.c.batch_id == batch_id)
            ).scalar()
        counts = {s: 0 for s in CHUNK_STATUSES}
        records = [0, 0, 0]
        messages = sent = since_records = 0
        starts: list[float] = []
        ends: list[float] = []
        for st, count, r_in, r_out, r_rej, msgs, msgs_sent, started, finished, r_since in rows:
            counts[st] = int(count)
            messages += int(msgs)
            sent += int(msgs_sent)
            if started is not None:
                starts.append(float(started))
            if st == SUCCEEDED:
                records = [int(r_in), int(r_out), int(r_rej)]
                since_records = int(r_since)
                if finished is not None:
                    ends.append(float(finished))
        return Progress(
            batch_id,
            sum(counts.values()),
            *counts.values(),
            *records,
            status=status,
            messages=messages,
            messages_sent=sent,
            first_started_at=min(starts) if starts else None,
            last_finished_at=max(ends) if ends else None,
            records_since=since_records,
        )

    def batch_statuses(self, batch_ids: list[str]) -> dict[str, str]:
        """The status of each of ``batch_ids`` the ledger knows (one query per 500 ids)."""
        found: dict[str, str] = {}
        b = self.batches.c
        with self.engine.connect() as conn:
            for i in range(0, len(batch_ids), 500):
                part = batch_ids[i : i + 500]
                query = sa.select(b.batch_id, b.status).where(b.batch_id.in_(part))
                found.update({row.batch_id: row.status for row in conn.execute(query)})
        return found

    def processed_members(self, uris: list[str], statuses: frozenset[str]) -> dict[str, set[str]]:
        """URI -> fingerprints of those of ``uris`` that are files of file-set batches whose
        status is in ``statuses`` (the nightly schedule: small files a finished set took).
        One query per 500 URIs."""
        m, b = self.members.c, self.batches.c
        found: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(uris), 500):
                query = (
                    sa.select(m.uri, m.fingerprint)
                    .join(self.batches, b.batch_id == m.batch_id)
                    .where(m.uri.in_(uris[i : i + 500]), b.status.in_(sorted(statuses)))
                )
                for row in conn.execute(query):
                    found.setdefault(row.uri, set()).add(row.fingerprint)
        return found

    def dead_letters_since(
        self, after: tuple[float, str, int] | None = None, limit: int = 1000
    ) -> list[ChunkState]:
        """Dead-lettered chunks of every batch, oldest change first, after the position
        ``(updated_at, batch_id, chunk)`` of the last one seen (a cursor for alerts)."""
        c = self.chunks.c
        query = sa.select(self.chunks).where(c.status == DEAD_LETTERED)
        if after is not None:
            at, batch_id, chunk = after
            query = query.where(
                sa.or_(
                    c.updated_at > at,
                    sa.and_(
                        c.updated_at == at,
                        sa.or_(c.batch_id > batch_id, sa.and_(c.batch_id == batch_id,
                                                             c.chunk > chunk)),
                    ),
                )
            )  # fmt: skip
        query = query.order_by(c.updated_at, c.batch_id, c.chunk).limit(limit)
        with self.engine.connect() as conn:
            return [ChunkState(**r._mapping) for r in conn.execute(query)]

    def dead_letters(self, batch_id: str) -> list[ChunkState]:
        return [s for s in self.chunk_states(batch_id) if s.status == DEAD_LETTERED]

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return safe_url(self.url)
