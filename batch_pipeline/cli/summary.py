"""The summary of a finished ``run``/``redrive``: built from the run's outputs (or, when it
failed before aggregating, from the manifest it wrote) and printed as lines, with ``--json``
ending in one JSON object.
"""

import json
from typing import Any

from batch_pipeline.cli.output import echo


def _failure_message(result: Any) -> str:
    from batch_pipeline.ops.failures import step_error_text

    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            messages.append(f"{event.step_key}: {step_error_text(error)}")
    return "; ".join(messages) or "the run failed"


def _output(result: Any, node: str) -> Any:
    try:
        return result.output_for_node(node)
    except Exception:  # the step failed, was skipped, or is not in this job
        return None


def _manifest(spec: Any, run_id: str) -> dict[str, Any]:
    """The manifest aggregate wrote in this run when it failed the run (its totals are still
    there); nothing when the manifest is another run's (this run failed before aggregating)."""
    from batch_pipeline.core.stores.storage import Storage
    from batch_pipeline.settings import s3_settings

    try:
        manifest = json.loads(Storage(s3_settings).read_bytes(spec.manifest_uri))
    except Exception:
        return {}
    return manifest if manifest.get("run_id") == run_id else {}


def summarize_run(result: Any) -> dict[str, Any]:
    spec = _output(result, "initialize") or _output(result, "load_batch")
    batch = _output(result, "aggregate")
    delivered = _output(result, "deliver")
    if batch is not None:
        totals: dict[str, Any] = batch.to_dict()
    else:
        manifest = _manifest(spec, result.run_id) if spec else {}
        totals = {
            **manifest.get("totals", {}),
            "status": manifest.get("status"),
            "manifest_uri": spec.manifest_uri if manifest else None,
            "rejection_reasons": manifest.get("rejection_reasons", {}),
            "failed_chunks": manifest.get("results", {}).get("failed", []),
        }
    summary: dict[str, Any] = {
        "batch_id": spec.batch_id if spec else None,
        "run_id": result.run_id,
        "status": "SUCCESS" if result.success else "FAILURE",
        "batch_status": totals.get("status"),
        "records_in": totals.get("records_in"),
        "records_out": totals.get("records_out"),
        "records_rejected": totals.get("records_rejected"),
        "chunks": totals.get("chunks"),
        "chunks_failed": totals.get("chunks_failed"),
        "manifest": totals.get("manifest_uri"),
        "output": spec.output if spec else None,
        "rejection_reasons": totals.get("rejection_reasons", {}),
        "failed_chunks": totals.get("failed_chunks", []),
        "delivered_messages": delivered.messages if delivered else None,
        "delivered_to": delivered.target if delivered else None,
        "warnings": list(spec.warnings) if spec else [],
    }
    if not result.success:
        summary["error"] = _failure_message(result)
    return summary


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    head = f"batch {summary['batch_id'] or '?'}: {summary['status']}"
    if summary["batch_status"]:
        head += f" ({summary['batch_status']})"
    echo(f"{head} in {summary['seconds']}s")
    for warning in summary["warnings"]:
        echo(f"  warning: {warning}")
    if summary["records_in"] is not None:
        echo(
            f"  records: {summary['records_in']:,} in = {summary['records_out']:,} out + "
            f"{summary['records_rejected']:,} rejected, {summary['chunks']} chunk(s)"
        )
        for reason, count in list(summary["rejection_reasons"].items())[:5]:
            echo(f"    {count:>9,}  {reason}")
    shown_chunks = 10
    for failed in summary["failed_chunks"][:shown_chunks]:  # each with its whole reason
        echo(
            f"  chunk_{failed['chunk']:05d} {failed['status']}: {failed['category']}: "
            f"{failed['error'] or ''} ({failed['dead_letter']})"
        )
    more = len(summary["failed_chunks"]) - shown_chunks
    if more > 0:
        echo(
            f"  ... and {more} more failed chunk(s): "
            f"batch-pipeline dead-letters {summary['batch_id']}"
        )
    if summary["output"]:
        echo(f"  results:  {summary['output']}")
    if summary["manifest"]:
        echo(f"  manifest: {summary['manifest']}")
    if summary["delivered_to"]:
        echo(
            f"  delivered {summary['delivered_messages']:,} message(s) to {summary['delivered_to']}"
        )
    if summary.get("error"):
        echo(f"  {summary['error']}")
    if as_json:
        print(json.dumps(summary, default=str))
