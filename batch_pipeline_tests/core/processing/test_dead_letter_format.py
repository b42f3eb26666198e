"""What other programs read keeps its format: a chunk descriptor in a dead letter (the file and
its SQS copy), in ``plan.json`` and in the ledger says ``count`` for the chunks in the plan, as
it did before the field was renamed ``chunks_in_plan`` in the code."""

from __future__ import annotations

import json

from batch_pipeline.core.common.errors import ErrorInfo
from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.planning import plan_batch, write_plan
from batch_pipeline.core.processing.dead_letters import dead_letter_document
from batch_pipeline.core.stores.storage import Storage

DESCRIPTOR_KEYS = {"index", "count", "uri", "kind"}


def test_descriptors_keep_their_keys(tmp_path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id\n" + "".join(f"{i}\n" for i in range(10)))
    storage = Storage()
    spec = prepare_batch(
        storage,
        str(source),
        output=str(tmp_path / "out"),
        chunking=ChunkingSettings(chunk_records=4),
        delivery=DeliverySettings(target="none"),
    )
    plan = plan_batch(storage, spec)
    chunk = plan.chunks[0]
    error = ErrorInfo("unknown", False, "boom")
    document = dead_letter_document(spec, chunk, error, "trace", 3)
    assert set(document["descriptor"]) >= DESCRIPTOR_KEYS
    assert "chunks_in_plan" not in document["descriptor"]
    write_plan(storage, spec, plan)
    stored = json.loads(storage.read_bytes(spec.plan_uri))
    assert all(set(d) >= DESCRIPTOR_KEYS for d in stored["descriptors"])
    ledger = Ledger("sqlite://")
    ledger.register_batch(spec, plan)
    row = ledger.chunk_states(spec.batch_id)[0]
    assert row.chunk == chunk.index
    with ledger.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT descriptor FROM bp_chunks").scalars().first()
    assert "count" in json.loads(raw) and "chunks_in_plan" not in json.loads(raw)
