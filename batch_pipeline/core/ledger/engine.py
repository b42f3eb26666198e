"""Connecting to a ledger: its URL, and the database behind it.

Ledger URLs: the password in one (``url_password``), one shown without it (``safe_url``), the
URL SQLAlchemy is given (``engine_url``: a Postgres driver that is installed) and the file of a
SQLite one (``sqlite_path``). Which URL a process uses when none is given is decided at the edge
(``batch_pipeline.settings.default_ledger_url``), never here: the core reads no environment.

The ledger's database: the SQLAlchemy engine (SQLite's pragmas and write transactions, a
Postgres driver that is installed), write transactions, advisory locks, and one clear error for
a SQLite file that is not a database or is damaged. ``LedgerDatabase`` opens the engine and
creates the tables (one process at a time, each checking what exists); the ``Ledger``
(``store.py``) adds the reads and writes of each table to it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sqlite3
import time
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.errors import LedgerError
from batch_pipeline.core.ledger.schema import ledger_tables

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


def engine_url(url: str) -> sa.URL:
    """``url`` with a driver that is installed: a bare ``postgresql://`` means psycopg (3) to
    SQLAlchemy 2.1 but psycopg2 to 2.0, and the ``postgres`` extra (like dagster-postgres)
    installs psycopg2; take whichever is there."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "postgresql":
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return parsed.set(drivername=f"postgresql+{driver}")
    return parsed


def sqlite_path(url: str) -> str:
    """The file of a SQLite URL; "" for the in-memory database."""
    path = url.split("///", 1)[1] if "///" in url else ""
    return "" if path == ":memory:" else path


WRITE = "batch_pipeline_ledger_write"  # execution option of the ledger's write transactions


# What SQLite says of a file that is not a database, or a damaged one.
DAMAGED = ("file is not a database", "database disk image is malformed")


def make_engine(url: str) -> sa.Engine:
    """The engine of ``url``: on SQLite (a file, or one in-memory database shared by every
    connection) with its pragmas and ``BEGIN IMMEDIATE`` for write transactions; else with a
    driver that is installed (``engine_url``) and connections checked before use."""
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
                set_wal(cursor)
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
    return sa.create_engine(engine_url(url), pool_pre_ping=True)


def set_wal(cursor: Any, wait_seconds: float = 60.0, pause: float = 0.05) -> None:
    """``PRAGMA journal_mode=WAL`` on a new connection, tried again while it finds the database
    locked. Two processes opening a new ledger file at once both hold a shared lock and both
    want the exclusive one to switch it to WAL: SQLite answers one of them "database is locked"
    at once, without its busy timeout (a deadlock it refuses to wait on). Once the other has
    switched, the pragma only reads the mode."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)


def lock_key(name: str) -> int:
    """A Postgres advisory-lock key (signed 64-bit) for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class LedgerDatabase:
    """The engine and tables of a ledger, its write transactions and locks. Thread- and
    process-safe on a SQLite file or Postgres; the in-memory ``sqlite://`` ledger (run_batch's
    default) is for one thread."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.in_memory = self.engine.dialect.name == "sqlite" and not sqlite_path(url)
        sa.event.listen(self.engine, "handle_error", self._damaged)
        self._writer = self.engine.execution_options(**{WRITE: True})
        self._postgres = self.engine.dialect.name == "postgresql"
        tables = ledger_tables(schema)
        metadata, self.batches, self.chunks = tables.metadata, tables.batches, tables.chunks
        self.members, self.leases, self.deliveries = (
            tables.members,
            tables.leases,
            tables.deliveries,
        )
        self.bucket_table = tables.buckets
        # Steps starting at once on a new database all try to create the tables: one at a
        # time (SQLite's write lock, a Postgres advisory lock), each checking what exists.
        # Tables added since a ledger was made (bp_leases, bp_deliveries, bp_buckets) are
        # created here.
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
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(name))))

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return safe_url(self.url)
