"""The plan file, ``{output}/{batch_id}/plan.json``: the chunk descriptors, the chunk size and
why, the totals, the batch schema and a keyed batch's buckets (count, key column, hash
scheme), written once planned (``write_plan``), reused by a resumed run when made for the same
source content and settings (``plan_or_reuse``), and read by each chunk for the schema to
conform to (``plan_schema``). A plan whose buckets were cut with another hash scheme than this
version's is refused for a resume (its buckets would hold other keys): only a forced run plans
them again."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pyarrow as pa

from batch_pipeline.core.columns import schema_from_json, schema_to_json
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import BatchSpec, BucketPlan, Chunk, Plan
from batch_pipeline.core.ledger import chunking_settings, parse_settings
from batch_pipeline.core.planning.buckets import HASH_SCHEME, plan_buckets_for
from batch_pipeline.core.planning.plan import plan_batch
from batch_pipeline.core.stores.storage import Storage

_SCHEMAS: dict[tuple, pa.Schema | None] = {}  # plan_schema's, per plan (see there)


def plan_to_json(spec: BatchSpec, plan: Plan) -> dict[str, Any]:
    data = {
        "source_fingerprint": spec.source.info.fingerprint,
        "parse": _parse_key(spec),
        "chunking": chunking_settings(spec),
        "chunks": len(plan.chunks),
        "chunk_records": plan.chunk_records,
        "reason": plan.reason,
        "total_records": plan.total_records,
        "exact_records": plan.exact_records,
        "descriptors": [c.to_dict() for c in plan.chunks],
        "schema": schema_to_json(plan.schema) if plan.schema is not None else None,
    }
    if plan.buckets is not None:  # a keyed batch's (a plan of one stage has no such key)
        data["buckets"] = plan.buckets.to_dict()
    return data


def write_plan(storage: Storage, spec: BatchSpec, plan: Plan) -> None:
    storage.write_bytes(spec.plan_uri, json.dumps(plan_to_json(spec, plan), indent=1).encode())


def _parse_key(spec: BatchSpec) -> dict[str, Any]:
    """How the source is read, as JSON (what plan.json must match to be reused)."""
    return json.loads(json.dumps(parse_settings(spec), default=str))


def plan_or_reuse(storage: Storage, spec: BatchSpec) -> Plan:
    """The batch's ``plan.json`` when it was made for the same source content, parse settings
    and chunk settings (so a resumed run does not scan the source again), else a new plan,
    written. A reused plan's buckets are chosen again (the processor or ``max_buckets`` may
    have changed; the file is rewritten if so), and refused when cut with another hash
    scheme unless the run is forced."""
    if storage.exists(spec.plan_uri):
        try:
            data = json.loads(storage.read_bytes(spec.plan_uri))
        except ValueError:
            data = {}
        if (
            data.get("source_fingerprint") == spec.source.info.fingerprint
            and data.get("parse") == _parse_key(spec)
            and data.get("chunking") == chunking_settings(spec)
            and data.get("descriptors")
        ):
            chunks = tuple(Chunk.from_dict(d) for d in data["descriptors"])
            buckets = plan_buckets_for(spec, len(chunks))
            scheme = (data.get("buckets") or {}).get("scheme", HASH_SCHEME)
            if buckets is not None and scheme != HASH_SCHEME and spec.mode != "force":
                raise ConfigError(
                    f"{spec.plan_uri} cuts batch {spec.batch_id}'s buckets with hash scheme "
                    f"{scheme!r}, this version with {HASH_SCHEME!r}: its buckets would hold "
                    "other keys. Nothing was done; run the batch with force to process it again"
                )
            reason = data["reason"] + " (plan reused from plan.json)"
            total, exact = data["total_records"], data["exact_records"]
            schema = schema_from_json(data.get("schema"))  # None: a plan from before schemas
            plan = Plan(chunks, data["chunk_records"], reason, total, exact, schema, buckets)
            if data.get("buckets") != (buckets.to_dict() if buckets else None):
                write_plan(storage, spec, replace(plan, reason=data["reason"]))
            return plan
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
        json.dumps(chunking_settings(spec), sort_keys=True),
    )
    if key not in _SCHEMAS:
        try:
            data = json.loads(storage.read_bytes(spec.plan_uri))
        except (OSError, ValueError):
            return None  # no plan (a chunk run on its own): nothing to conform to
        if (
            data.get("source_fingerprint") != spec.source.info.fingerprint
            or data.get("parse") != _parse_key(spec)
            or data.get("chunking") != chunking_settings(spec)
        ):
            return None
        if len(_SCHEMAS) > 64:
            _SCHEMAS.clear()
        _SCHEMAS[key] = schema_from_json(data.get("schema"))
    return _SCHEMAS[key]


def planned_buckets(storage: Storage, spec: BatchSpec) -> BucketPlan | None:
    """A keyed batch's buckets as ``plan.json`` has them, when the plan there was made for this
    source content and these settings; else None. Read each time: a reused plan whose buckets
    changed is rewritten (``plan_or_reuse``)."""
    try:
        data = json.loads(storage.read_bytes(spec.plan_uri))
    except (OSError, ValueError):
        return None
    if (
        data.get("source_fingerprint") != spec.source.info.fingerprint
        or data.get("parse") != _parse_key(spec)
        or data.get("chunking") != chunking_settings(spec)
        or not data.get("buckets")
    ):
        return None
    return BucketPlan(**data["buckets"])
