"""Keys' states in a SQL database (SQLite or Postgres) through SQLAlchemy Core.

One table, ``bp_key_states`` (namespace, key, state, batch_id, before, updated_at; primary key
(namespace, key)), created when the store is opened if it is missing (on Postgres under an
advisory lock, so that processes opening one store at once do not race). ``state`` and
``before`` are JSON text, ``updated_at`` seconds since the epoch, as the ledger keeps times.

``load`` reads in one read transaction, with ``IN`` lists of up to ``SQL_KEYS_PER_STATEMENT``
keys per statement; ``save`` upserts (``INSERT ... ON CONFLICT (namespace, key) DO UPDATE``,
through the driver: on Postgres one statement with the VALUES of 500 rows, on SQLite sqlite3's
executemany of 500), all in one write transaction (on SQLite ``BEGIN IMMEDIATE``): all or
nothing. Rows are written in key order, so that two
processes saving overlapping keys on Postgres wait for each other rather than deadlock.
``operations`` counts the statements ``load`` and ``save`` execute.

The engine is the ledger's (``core.ledger.engine.make_engine``: SQLite's pragmas, its folder
made, a Postgres driver that is installed). Every database error becomes a ``StateStoreError``
naming the store without its password: permanent for a SQLite file that is not a database (or
is damaged, or cannot be opened) and for a statement the database refuses, transient for a
locked SQLite file and a Postgres server that cannot be reached or lost the connection.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.errors import StateStoreError, classify
from batch_pipeline.core.ledger.engine import (
    DAMAGED,
    WRITE,
    lock_key,
    make_engine,
    safe_url,
    url_password,
)
from batch_pipeline.core.stores.state import (
    StoredState,
    check_key,
    check_namespace,
    parse_state,
    state_text,
)

TABLE = "bp_key_states"
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's DateTime keeps a time in SQLite
SQL_KEYS_PER_STATEMENT = 500  # 500 rows x 6 values: far below SQLite's and Postgres's limits


def state_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("before", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


@functools.lru_cache(maxsize=4096)  # a batch's rows share a few times: each written once
def _sqlite_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime(SQLITE_TIME)


class SqlStateStore:
    """Keys' states in table ``bp_key_states`` of the SQLite or Postgres database at ``url``.

    A subclass keeps them in another table (``leads.SqlLeadStore``) by giving its own
    ``_define``, ``_select``, ``_stored``, ``_row`` and ``_conflict``."""

    kind = "state"

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = safe_url(url)
        self.operations = 0
        self._password = url_password(url)
        metadata = sa.MetaData()
        self.table = self._define(metadata)
        try:
            self.engine = make_engine(url)
        except Exception as exc:  # a URL SQLAlchemy cannot use, a folder it cannot make
            raise self._error("cannot be opened", exc) from None
        self._writer = self.engine.execution_options(**{WRITE: True})
        self._postgres = self.engine.dialect.name == "postgresql"
        self._texts: dict[int, str] = {}
        try:
            with self._database("cannot be opened") as engine, engine.begin() as conn:
                if self._postgres:
                    conn.execute(
                        sa.select(sa.func.pg_advisory_xact_lock(lock_key(self.table.name)))
                    )
                metadata.create_all(conn, checkfirst=True)
        except StateStoreError:
            self.engine.dispose()
            raise

    def load(self, namespace: str, keys: Sequence[str]) -> dict[str, StoredState]:
        check_namespace(namespace)
        wanted = sorted({check_key(key, self.description) for key in keys})
        found: dict[str, StoredState] = {}
        if not wanted:
            return found
        with self._database("could not load states") as engine, engine.begin() as conn:
            for start in range(0, len(wanted), SQL_KEYS_PER_STATEMENT):
                part = wanted[start : start + SQL_KEYS_PER_STATEMENT]
                self.operations += 1
                for row in conn.execute(self._select(namespace, part)):
                    key, stored = self._stored(row)
                    found[key] = stored
        return found

    # The layout of ``bp_key_states``; a subclass's table has its own.
    def _define(self, metadata: sa.MetaData) -> sa.Table:
        return state_table(metadata)

    def _select(self, namespace: str, keys: list[str]) -> sa.Select[Any]:
        t = self.table
        return sa.select(t.c.key, t.c.state, t.c.batch_id, t.c.before).where(
            t.c.namespace == namespace, t.c.key.in_(keys)
        )

    def _stored(self, row: Any) -> tuple[str, StoredState]:
        key, state, batch_id, before = row
        return key, StoredState(parse_state(state) or {}, batch_id, parse_state(before))

    def _row(self, namespace: str, key: str, stored: StoredState, now: float) -> dict[str, Any]:
        return {
            "namespace": namespace,
            "key": key,
            "state": state_text(stored.state, key, self.description),
            "batch_id": stored.batch_id,
            "before": state_text(stored.before, key, self.description),
            "updated_at": now,
        }

    def _conflict(self) -> list[sa.Column[Any]]:
        return [self.table.c.namespace, self.table.c.key]

    def save(self, namespace: str, states: Mapping[str, StoredState]) -> None:
        check_namespace(namespace)
        now = time.time()
        rows = [
            self._row(namespace, check_key(key, self.description), stored, now)
            for key, stored in sorted(states.items())
        ]
        if not rows:
            return
        with self._database("could not save states") as _, self._writer.begin() as conn:
            for start in range(0, len(rows), SQL_KEYS_PER_STATEMENT):
                self.operations += 1
                self._write(conn, rows[start : start + SQL_KEYS_PER_STATEMENT])

    def _write(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Upsert ``rows`` through the driver: on Postgres one INSERT of all their VALUES
        (psycopg2's executemany sends a statement per row, half a millisecond each), on SQLite
        sqlite3's executemany (a loop in C). SQLAlchemy's statement and its processing of each
        row's parameters took most of a save (39 µs a lead on SQLite, 330 on Postgres)."""
        names = [column.name for column in self.table.columns]
        values = [tuple(self._driver(row[name]) for name in names) for row in rows]
        if self._postgres:
            flat = [value for row in values for value in row]
            conn.exec_driver_sql(self._upsert_text(len(values)), tuple(flat))
        else:
            conn.exec_driver_sql(self._upsert_text(1), values)

    def _driver(self, value: Any) -> Any:
        """A value as the driver takes it: a time as text on SQLite, where SQLAlchemy's
        ``DateTime`` keeps it so (and reads it back)."""
        if isinstance(value, dt.datetime) and not self._postgres:
            return _sqlite_time(value)
        return value

    def _upsert_text(self, rows: int) -> str:
        """``INSERT ... VALUES`` (``rows`` of them) ``ON CONFLICT (keys) DO UPDATE`` the other
        columns, in the driver's own parameter style."""
        if rows not in self._texts:
            quote = self.engine.dialect.identifier_preparer.quote
            names = [column.name for column in self.table.columns]
            keys = [column.name for column in self._conflict()]
            mark = "%s" if self._postgres else "?"
            one = "(" + ", ".join([mark] * len(names)) + ")"
            self._texts[rows] = (
                f"INSERT INTO {quote(self.table.name)} ({', '.join(map(quote, names))}) "
                f"VALUES {', '.join([one] * rows)} ON CONFLICT ({', '.join(map(quote, keys))}) "
                "DO UPDATE SET "
                + ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in keys)
            )
        return self._texts[rows]

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _database(self, doing: str) -> Iterator[sa.Engine]:
        """The engine, with any database error raised as a StateStoreError."""
        try:
            yield self.engine
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(doing, exc) from exc

    def _error(self, doing: str, exc: Exception) -> StateStoreError:
        # A DBAPI error's own text: SQLAlchemy's would add the statement and its parameters.
        text = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        if any(marker in text for marker in DAMAGED):
            return StateStoreError(
                f"the state store at {self.description} is unusable: {text} (the file was "
                "overwritten or damaged, or is not a SQLite database). Nothing was done: "
                "restore it, or give another path."
            )
        return StateStoreError(
            f"the state store at {self.description} {doing}: {text}",
            permanent=self._permanent(exc, text),
        )

    def _permanent(self, exc: Exception, text: str) -> bool:
        """Whether no retry can mend ``exc``: a statement the database refuses, SQLite trouble
        other than a lock (a path it cannot open), a URL SQLAlchemy cannot use; else as
        ``classify`` says (a Postgres server that cannot be reached, a connection lost, a full
        disk)."""
        refused = (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.DataError)
        if isinstance(exc, sa.exc.DBAPIError):
            if isinstance(exc, refused):
                return True
            if self.url.startswith("sqlite"):
                return not any(word in text for word in ("locked", "busy"))
            return not classify(exc).transient
        # Not the database's answer: a URL or driver SQLAlchemy cannot use, a folder not made.
        return not isinstance(exc, OSError) or not classify(exc).transient
