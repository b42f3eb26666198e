"""The plan file, ``{output}/{batch_id}/plan.json``: the chunk descriptors, the chunk size and
why, the totals and the batch schema, written once planned (``write_plan``), reused by a resumed
run when made for the same source content and settings (``plan_or_reuse``), and read by each
chunk for the schema to conform to (``plan_schema``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from batch_pipeline.core.columns import schema_from_json, schema_to_json
from batch_pipeline.core.common.models import BatchSpec, Chunk, Plan
from batch_pipeline.core.ledger import parse_settings
from batch_pipeline.core.planning.plan import plan_batch
from batch_pipeline.core.stores.storage import Storage

_SCHEMAS: dict[tuple, pa.Schema | None] = {}  # plan_schema's, per plan (see there)


def plan_to_json(spec: BatchSpec, plan: Plan) -> dict[str, Any]:
    return {
        "source_fingerprint": spec.source.info.fingerprint,
        "parse": _parse_key(spec),
        "chunking": asdict(spec.chunking),
        "chunks": len(plan.chunks),
        "chunk_records": plan.chunk_records,
        "reason": plan.reason,
        "total_records": plan.total_records,
        "exact_records": plan.exact_records,
        "descriptors": [c.to_dict() for c in plan.chunks],
        "schema": schema_to_json(plan.schema) if plan.schema is not None else None,
    }


def write_plan(storage: Storage, spec: BatchSpec, plan: Plan) -> None:
    storage.write_bytes(spec.plan_uri, json.dumps(plan_to_json(spec, plan), indent=1).encode())


def _parse_key(spec: BatchSpec) -> dict[str, Any]:
    """How the source is read, as JSON (what plan.json must match to be reused)."""
    return json.loads(json.dumps(parse_settings(spec), default=str))


def plan_or_reuse(storage: Storage, spec: BatchSpec) -> Plan:
    """The batch's ``plan.json`` when it was made for the same source content, parse settings
    and chunk settings (so a resumed run does not scan the source again), else a new plan,
    written."""
    if storage.exists(spec.plan_uri):
        try:
            data = json.loads(storage.read_bytes(spec.plan_uri))
        except ValueError:
            data = {}
        if (
            data.get("source_fingerprint") == spec.source.info.fingerprint
            and data.get("parse") == _parse_key(spec)
            and data.get("chunking") == asdict(spec.chunking)
            and data.get("descriptors")
        ):
            chunks = tuple(Chunk.from_dict(d) for d in data["descriptors"])
            reason = data["reason"] + " (plan reused from plan.json)"
            total, exact = data["total_records"], data["exact_records"]
            schema = schema_from_json(data.get("schema"))  # None: a plan from before schemas
            return Plan(chunks, data["chunk_records"], reason, total, exact, schema)
    plan = plan_batch(storage, spec)
    write_plan(storage, spec, plan)
    return plan


def plan_schema(storage: Storage, spec: BatchSpec) -> pa.Schema | None:
    """The batch schema in ``plan.json`` when the plan there was made for this source content
    and these settings (as ``plan_or_reuse`` decides), else None. Read once per plan and
    process: such a plan is never rewritten with other contents."""
    key = (
        spec.plan_uri,
        spec.source.info.fingerprint,
        json.dumps(_parse_key(spec), sort_keys=True),
        json.dumps(asdict(spec.chunking), sort_keys=True),
    )
    if key not in _SCHEMAS:
        try:
            data = json.loads(storage.read_bytes(spec.plan_uri))
        except (OSError, ValueError):
            return None  # no plan (a chunk run on its own): nothing to conform to
        if (
            data.get("source_fingerprint") != spec.source.info.fingerprint
            or data.get("parse") != _parse_key(spec)
            or data.get("chunking") != asdict(spec.chunking)
        ):
            return None
        if len(_SCHEMAS) > 64:
            _SCHEMAS.clear()
        _SCHEMAS[key] = schema_from_json(data.get("schema"))
    return _SCHEMAS[key]
