"""The ledger's tables (SQLAlchemy Core), in the database schema given (Postgres) or none.

``bp_batches``: a row per batch (source, config for redrive, plan hash, digests, outcome).
``bp_chunks``: a row per batch and chunk (status, attempts, last error, record counts, timings,
input fingerprint, dead letter, delivery progress). ``bp_buckets``: the same per bucket of a keyed
batch (``core.shuffle``), a table of its own so that ``bp_chunks``' key and every query of it stay
as they were, and a ledger made before it gets it when opened. ``bp_members``: the files of file-set
batches. ``bp_leases``: one lease per batch. ``bp_deliveries``: per batch and destination, what its
messages were made of and how many an external sink took.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa


class LedgerTables(NamedTuple):
    metadata: sa.MetaData
    batches: sa.Table
    chunks: sa.Table
    members: sa.Table
    leases: sa.Table
    deliveries: sa.Table
    buckets: sa.Table


def ledger_tables(schema: str | None) -> LedgerTables:
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
        *_unit_columns(),
        sa.Index("ix_bp_chunks_batch_status", "batch_id", "status"),
    )
    # A keyed batch's buckets (its second stage), with what chunk rows have. The index column
    # is named bucket and keyed chunk, so that the chunk rows' reads and updates serve both
    # (``LedgerQueries.rows_of``).
    buckets = sa.Table(
        "bp_buckets",
        metadata,
        sa.Column("batch_id", sa.String(255), primary_key=True),
        sa.Column("bucket", sa.Integer, key="chunk", primary_key=True, autoincrement=False),
        *_unit_columns(),
        sa.Index("ix_bp_buckets_batch_status", "batch_id", "status"),
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
    return LedgerTables(metadata, batches, chunks, members, leases, deliveries, buckets)


def _unit_columns() -> list[sa.Column]:
    """The columns of a chunk's (or a bucket's) row after its batch and index."""
    return [
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
    ]
