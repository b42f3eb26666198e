"""Alerts about batches: a run that failed, chunks that were dead-lettered.

An ``Alert`` holds what an operator needs to act: the batch, its counts from the ledger, the
reason, the run and job, and links (dead letters, manifest). ``send_alert`` posts it as JSON to a
webhook, Slack-compatible (a top-level ``text`` plus the structured fields, which Slack ignores),
or, with no webhook configured, logs it as one warning line. The caller gives the webhook's URL:
the sensors read ``BATCH_PIPELINE_ALERT_WEBHOOK`` each time they send an alert
(``batch_pipeline.settings.alert_webhook_url``), never at import.

A webhook that answers 5xx, 408 or 429, times out or cannot be reached is tried
``attempts`` times (default 3) with a short exponential backoff; then, as at once for other 4xx
answers, ``AlertDeliveryError`` says which webhook failed and how (the URL without credentials,
query string or secret path segments) and the alert itself is logged at error level, so that its
content is never lost. Callers decide what not sending means (the sensors keep their cursor).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from batch_pipeline.core.common.models import join_uri
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.ledger import BatchState, ChunkState, Progress

ALERT_WEBHOOK_ENV = "BATCH_PIPELINE_ALERT_WEBHOOK"
AlertKind = Literal["run_failure", "dead_letter"]
RETRYABLE_HTTP = frozenset({408, 425, 429})
MAX_REASON = 2000  # characters of a reason in the one-line text
MAX_LISTED = 5  # chunks named in a dead-letter alert's summary and reason


class AlertLog(Protocol):
    """What ``send_alert`` logs to: a ``logging.Logger`` or Dagster's ``context.log``."""

    def info(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...

    def error(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...


class AlertDeliveryError(RuntimeError):
    """The webhook refused the alert or could not be reached (after the retries)."""


def safe_webhook_url(url: str) -> str:
    """``url`` for messages: scheme, host, port and the first path segment only. Credentials,
    query strings and the rest of the path (where Slack keeps its secret) are left out."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable webhook URL>"
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}" if segments else ""
    if len(segments) > 1:
        path += "/..."
    return f"{parts.scheme}://{host}{port}{path}"


def counts_from_progress(progress: Progress) -> dict[str, int]:
    """The counts an alert carries, from ``Ledger.progress``."""
    return {
        "chunks_total": progress.total,
        "chunks_succeeded": progress.succeeded,
        "chunks_failed": progress.failed,
        "chunks_dead_lettered": progress.dead_lettered,
        "chunks_unfinished": progress.pending + progress.running,
        "records_in": progress.records_in,
        "records_out": progress.records_out,
        "records_rejected": progress.records_rejected,
    }


def describe_counts(counts: dict[str, int]) -> str:
    """``chunks: 4 total, 3 succeeded, 0 failed, 1 dead-lettered; records: 30 in, ...``."""
    if not counts:
        return "no counts (the batch is not in the ledger)"
    text = (
        f"chunks: {counts.get('chunks_total', 0):,} total, "
        f"{counts.get('chunks_succeeded', 0):,} succeeded, {counts.get('chunks_failed', 0):,} "
        f"failed, {counts.get('chunks_dead_lettered', 0):,} dead-lettered"
    )
    if counts.get("chunks_unfinished"):
        text += f", {counts['chunks_unfinished']:,} unfinished"
    return (
        f"{text}; records: {counts.get('records_in', 0):,} in, "
        f"{counts.get('records_out', 0):,} out, {counts.get('records_rejected', 0):,} rejected"
    )


def _one_line(text: str, limit: int = MAX_REASON) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Alert:
    """One alert about one batch (or about a run that failed before it had a batch)."""

    kind: AlertKind
    batch_id: str | None
    summary: str
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    run_id: str | None = None
    job_name: str | None = None
    source: str | None = None
    links: list[str] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)

    def text(self) -> str:
        """One line: what happened, the counts, the reason."""
        head = f"[batch_pipeline {self.kind}] batch {self.batch_id or '(no batch id)'}: "
        line = f"{head}{self.summary} | {describe_counts(self.counts)}"
        if self.reason:
            line += f" | reason: {_one_line(self.reason)}"
        if self.run_id:
            line += f" | run {self.run_id}" + (f" of {self.job_name}" if self.job_name else "")
        return shown(line)  # names and reasons may hold newlines: still one line

    def to_payload(self) -> dict[str, Any]:
        """The webhook's JSON body: Slack's ``text`` (with &, < and > escaped as Slack asks)
        plus every field."""
        text = self.text().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        payload = asdict(self)
        payload["created_at"] = _iso(self.created_at)
        return {"text": text, **payload}


def dead_letter_alert(
    batch_id: str,
    letters: Sequence[ChunkState],
    progress: Progress | None = None,
    batch: BatchState | None = None,
    unit: str = "chunk",
) -> Alert:
    """An alert about ``letters``, new dead-lettered chunks of one batch (or buckets of a keyed
    batch: ``unit``; ``progress`` then counts its buckets)."""
    ordered = sorted(letters, key=lambda s: s.chunk)
    named = ", ".join(str(s.chunk) for s in ordered[:MAX_LISTED])
    more = f" and {len(ordered) - MAX_LISTED} more" if len(ordered) > MAX_LISTED else ""
    categories = sorted({s.error_category or "unknown" for s in ordered})
    reasons = [
        f"{unit} {s.chunk}: {s.error_category or 'unknown'}: "
        f"{_one_line(s.error_message or '', 300)}"
        for s in ordered[:MAX_LISTED]
    ]
    return Alert(
        kind="dead_letter",
        batch_id=batch_id,
        summary=(
            f"{len(ordered)} {unit}(s) dead-lettered ({unit} {named}{more}; "
            f"{', '.join(categories)})"
        ),
        counts=counts_from_progress(progress) if progress is not None else {},
        reason="; ".join(reasons) + (f"; and {len(ordered) - MAX_LISTED} more" if more else ""),
        run_id=batch.run_id if batch else None,
        source=batch.source_uri if batch else None,
        links=[s.dead_letter for s in ordered if s.dead_letter],
        chunks=[{**_chunk_entry(s, unit), "dead_lettered_at": _iso(s.updated_at)} for s in ordered],
    )


def _chunk_entry(state: ChunkState, unit: str = "chunk") -> dict[str, Any]:
    return {
        unit: state.chunk,
        "attempts": state.attempts,
        "category": state.error_category,
        "error": state.error_message,
        "dead_letter": state.dead_letter,
    }


def run_failure_alert(
    *,
    batch_id: str | None,
    reason: str,
    run_id: str,
    job_name: str,
    progress: Progress | None = None,
    batch: BatchState | None = None,
    dead_letters: Sequence[ChunkState] = (),
    source: str | None = None,
    note: str | None = None,
) -> Alert:
    """An alert about a failed run of ``job_name``. ``batch_id`` is None when the run failed
    before it had one (then ``source`` says what it was given); ``note`` adds what the summary
    should say besides (for instance why there are no counts)."""
    if batch_id is None:
        summary = f"run of {job_name} failed before a batch id existed"
        summary += f" (source {source})" if source else " (no source in its run config)"
    else:
        summary = f"run of {job_name} failed"
    if note:
        summary += f"; {note}"
    links = [s.dead_letter for s in sorted(dead_letters, key=lambda s: s.chunk) if s.dead_letter]
    output = batch.config_dict().get("output") if batch else None
    if batch_id and isinstance(output, str) and output:
        links.append(join_uri(output, batch_id, "manifest.json"))
    return Alert(
        kind="run_failure",
        batch_id=batch_id,
        summary=summary,
        counts=counts_from_progress(progress) if progress is not None else {},
        reason=reason,
        run_id=run_id,
        job_name=job_name,
        source=batch.source_uri if batch else source,
        links=links,
        chunks=[_chunk_entry(s) for s in sorted(dead_letters, key=lambda s: s.chunk)],
    )


def send_alert(
    alert: Alert,
    webhook_url: str | None,
    log: AlertLog,
    *,
    attempts: int = 3,
    backoff_seconds: float = 0.5,
    timeout: float = 10.0,
) -> None:
    """Post ``alert`` to ``webhook_url``; with no URL, log it as one warning line.

    Retries 5xx, 408, 425 and 429 answers, time-outs and connection failures ``attempts`` times
    with ``backoff_seconds * 2**n`` between them; other 4xx answers fail at once. On failure,
    logs the alert at error level and raises ``AlertDeliveryError`` naming the webhook (see
    ``safe_webhook_url``) and the last error.
    """
    if not webhook_url:
        log.warning(f"ALERT (no {ALERT_WEBHOOK_ENV} set, logged only): {alert.text()}")
        return
    where = safe_webhook_url(webhook_url)
    scheme = urllib.parse.urlsplit(webhook_url).scheme.lower()
    if scheme not in ("http", "https"):
        log.error(f"ALERT (not sent: {ALERT_WEBHOOK_ENV} is not http(s)): {alert.text()}")
        raise AlertDeliveryError(
            f"{ALERT_WEBHOOK_ENV} must be an http:// or https:// URL, not {where}"
        )
    body = json.dumps(alert.to_payload(), default=str).encode()
    request = urllib.request.Request(
        webhook_url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "batch-pipeline-alerts"},
    )
    last = "no attempt made"
    tried = 0
    for attempt in range(max(1, attempts)):
        tried = attempt + 1
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            log.info(f"sent the {alert.kind} alert of batch {alert.batch_id} to {where}")
            return
        except urllib.error.HTTPError as exc:
            detail = _one_line(exc.read(300).decode("utf-8", "replace"), 200)
            last = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            if exc.code < 500 and exc.code not in RETRYABLE_HTTP:
                break
        except urllib.error.URLError as exc:
            last = f"cannot reach it: {exc.reason}"
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad answers
            last = f"{type(exc).__name__}: {exc}"
        if attempt + 1 < attempts:
            time.sleep(backoff_seconds * 2**attempt)
    message = (
        f"could not send the {alert.kind} alert of batch {alert.batch_id or '(no batch id)'} "
        f"to webhook {where}: {last} (after {tried} attempt(s))"
    )
    log.error(f"{message}; the alert: {alert.text()}")
    raise AlertDeliveryError(message)
