"""Where a batch's messages go, and the rules for changing it without delivering twice.

A destination is a sink (``sink_key``: one name per SQS queue or Kafka topic) and,
for the local outbox, the output folder. ``bp_deliveries`` keeps a ``Destination`` per batch and
sink: what its messages were made of and how many an external sink took. When a batch is
registered again, ``delivery_change`` decides whether its delivery progress is kept or starts
again, and refuses (``ConfigError``) a change that could deliver records twice to the same
external sink.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import BatchSpec, Plan
from batch_pipeline.core.ledger.digests import (
    SENT_SETTINGS,
    delivery_digest,
    output_digest,
    plan_hash,
)


def is_external(target: str) -> bool:
    """A sink outside the batch's own folder (an SQS queue, a Kafka topic): delivering to it
    twice is visible downstream. ``local`` (the outbox under the output) and ``none`` are not."""
    return target not in ("local", "none")


def sink_key(target: str) -> str:
    """One name per SQS queue whichever way the target names it (``sqs://NAME``, a queue URL),
    to compare destinations; other targets (``local``, ``none``, ``kafka://HOST:PORT/TOPIC``)
    as they are."""
    if not is_external(target) or target.startswith("kafka://"):
        return target
    name = target.rstrip("/").rsplit("/", 1)[-1]
    return f"sqs://{name}"


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


def current_destination(
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


def delivery_change(
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
