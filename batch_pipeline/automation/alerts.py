"""Alert sensors: a failed run of ``batch_job`` or ``redrive_job``, and new dead-lettered chunks.

Both send a ``core.automation.alerts.Alert`` to the webhook in
``BATCH_PIPELINE_ALERT_WEBHOOK`` (read at each evaluation), or log it as a warning when that is
unset. Both start STOPPED: turn them on in the UI (Automation > Sensors).

- ``batch_run_failure_alert`` reacts to each failed run of the two jobs: its batch id (the run's
  ``batch_pipeline/batch_id`` tag, else the ``batch_id`` output metadata of ``initialize`` or
  ``load_batch``, else the run config), the batch's counts and dead letters from the ledger, and
  the failed steps' errors. A run that failed before it had a batch id is reported with the
  source of its run config. Dagster moves a run-status sensor past a run even when its
  evaluation fails, so a webhook failure is written to the failed run's event log and fails the
  tick (with the whole alert in the tick's log) rather than being retried.
- ``batch_dead_letter_alert`` polls the ledger every minute for chunks dead-lettered since its
  cursor and sends one alert per batch. Its first tick does not alert the history: it records
  the newest dead letter present as its starting point (dead letters from before the sensor was
  turned on are in ``batch-pipeline dead-letters``). When a webhook fails, the cursor never
  moves past an alert that was not sent: with nothing sent the tick fails (cursor unchanged);
  after some batches were sent it stops before the first unsent batch's first dead letter, logs
  an error and says so in the tick's skip reason; the next tick sends the rest (alerts are sent
  at least once).
- ``batch_dead_bucket_alert`` does the same for a keyed batch's buckets (``bp_buckets``), with a
  cursor of its own.
"""

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from batch_pipeline.automation.requests import BATCH_ID_TAG
from batch_pipeline.core.automation.alerts import (
    AlertDeliveryError,
    dead_letter_alert,
    run_failure_alert,
    send_alert,
)
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.ledger import ChunkState, Ledger, LedgerQueries
from batch_pipeline.jobs import batch_job, redrive_job
from batch_pipeline.ops.failures import step_error_text
from batch_pipeline.resources import LedgerResource
from batch_pipeline.settings import alert_webhook_url

BATCH_ID_STEPS = ("initialize", "load_batch")
DEAD_LETTER_PAGE = 1000  # dead letters read per tick; a bigger backlog goes on at the next tick

Position = tuple[float, str, int]  # (updated_at, batch_id, chunk) of a dead letter


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# Run failures ----------------------------------------------------------------------------------


def _config_value(run_config: Any, *path: str) -> Any:
    value = run_config
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def run_batch_id(instance: DagsterInstance, run: DagsterRun) -> tuple[str | None, str]:
    """The batch id of ``run`` and where it was found: the run's tag, the batch id that
    ``initialize``/``load_batch`` reported (output metadata), or the run config."""
    tagged = run.tags.get(BATCH_ID_TAG)
    if tagged:
        return tagged, f"tag {BATCH_ID_TAG}"
    records = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_OUTPUT)
    for record in records.records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key not in BATCH_ID_STEPS:
            continue
        value = event.step_output_data.metadata.get("batch_id")
        if value is not None and getattr(value, "value", None):
            return str(value.value), f"{event.step_key} output metadata"
    for op_name in ("load_batch", "initialize"):
        configured = _config_value(run.run_config, "ops", op_name, "config", "batch_id")
        if configured:
            return str(configured), f"run config ops.{op_name}.config.batch_id"
    return None, "nowhere"


def run_failure_reason(context: RunFailureSensorContext) -> str:
    """The failed steps' errors (``step: message``), else the run failure's message."""
    reasons: list[str] = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        text = f"{event.step_key}: {step_error_text(error) if error else 'failed'}"
        if text not in reasons:
            reasons.append(text)
    return "; ".join(reasons) or context.failure_event.message or "the run failed"


@run_failure_sensor(
    name="batch_run_failure_alert",
    monitored_jobs=[batch_job, redrive_job],
    default_status=DefaultSensorStatus.STOPPED,
    description="Alert when a run of batch_job or redrive_job fails: the batch id, its chunk and "
    "record counts and dead letters from the ledger, and the failed steps' errors, posted to "
    "the webhook in BATCH_PIPELINE_ALERT_WEBHOOK (Slack-compatible JSON), or logged as a warning "
    "when it is unset.",
)
def batch_run_failure_alert(context: RunFailureSensorContext, ledger: LedgerResource) -> None:
    run = context.dagster_run
    batch_id, found_in = run_batch_id(context.instance, run)
    reason = run_failure_reason(context)
    progress = batch = None
    letters: list[ChunkState] = []
    note = None
    if batch_id is not None:
        try:
            book = ledger.get_ledger()
            batch = book.batch(batch_id)
            if batch is None:
                note = f"batch {batch_id} is not in the ledger at {book.safe_url} (no plan yet)"
            else:
                progress = book.progress(batch_id)
                letters = book.dead_letters(batch_id)
        except Exception as exc:  # the alert goes out without counts rather than not at all
            note = f"counts unavailable, the ledger could not be read: {type(exc).__name__}: {exc}"
    source = _config_value(run.run_config, "ops", "initialize", "config", "source")
    alert = run_failure_alert(
        batch_id=batch_id,
        reason=reason,
        run_id=run.run_id,
        job_name=run.job_name,
        progress=progress,
        batch=batch,
        dead_letters=letters,
        source=source if isinstance(source, str) else None,
        note=note,
    )
    context.log.info(shown(f"run {run.run_id} failed; batch id {batch_id} (from {found_in})"))
    try:
        send_alert(alert, alert_webhook_url(), context.log)
    except AlertDeliveryError as exc:
        context.instance.report_engine_event(
            f"batch_run_failure_alert could not send its alert: {exc}", dagster_run=run
        )
        raise


# Dead letters ----------------------------------------------------------------------------------


def _position(state: ChunkState) -> Position:
    assert state.updated_at is not None
    return (float(state.updated_at), state.batch_id, state.chunk)


def encode_cursor(after: Position | None, started_at: float) -> str:
    """The dead-letter sensor's cursor: the position of the last dead letter alerted (or seen at
    the first tick), and when the sensor started."""
    return json.dumps({"after": list(after) if after else None, "started_at": started_at})


def decode_cursor(cursor: str) -> tuple[Position | None, float]:
    try:
        data = json.loads(cursor)
        after = data["after"]
        position = (float(after[0]), str(after[1]), int(after[2])) if after else None
        return position, float(data["started_at"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(
            f"batch_dead_letter_alert: unreadable cursor {cursor!r} ({exc}); reset the sensor's "
            "cursor in the UI to start again from the newest dead letter"
        ) from exc


def _describe(after: Position | None, started_at: float, unit: str = "chunk") -> str:
    if after is None:
        return f"the sensor started at {_iso(started_at)}"
    at, batch_id, index = after
    return f"{unit} {index} of batch {batch_id} (dead-lettered at {_iso(at)})"


def _newest_dead_letter(rows: LedgerQueries) -> tuple[Position | None, int]:
    """The position of the newest dead letter in the ledger and how many there are."""
    newest: Position | None = None
    count = 0
    while True:
        page = rows.dead_letters_since(newest, DEAD_LETTER_PAGE)
        if not page:
            return newest, count
        count += len(page)
        newest = _position(page[-1])
        if len(page) < DEAD_LETTER_PAGE:
            return newest, count


def _by_batch(letters: Sequence[ChunkState]) -> dict[str, list[int]]:
    """Indices into ``letters`` per batch, batches in order of their first dead letter."""
    groups: dict[str, list[int]] = {}
    for i, state in enumerate(letters):
        groups.setdefault(state.batch_id, []).append(i)
    return groups


def _dead_letter_sensor(
    name: str, unit: str, rows_of: Callable[[Ledger], LedgerQueries]
) -> SensorDefinition:
    """The sensor alerting on ``unit``s (chunks; a keyed batch's buckets) dead-lettered since
    its cursor, in the ledger rows ``rows_of(ledger)`` (see the module docstring)."""

    @sensor(
        name=name,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Every minute, alert on {unit}s dead-lettered since the last tick: one alert "
        f"per batch with the {unit}s, error categories and messages, dead letter URIs and the "
        "batch's counts, to the webhook in BATCH_PIPELINE_ALERT_WEBHOOK or the log. Starts "
        "from the newest dead letter present when first turned on; never moves its cursor past "
        "an unsent alert.",
    )
    def dead_letter_sensor(
        context: SensorEvaluationContext, ledger: LedgerResource
    ) -> SensorResult:
        book = ledger.get_ledger()
        rows = rows_of(book)
        if not context.cursor:
            started_at = time.time()
            newest, count = _newest_dead_letter(rows)
            if newest is None:
                reason = (
                    f"first tick: no dead-lettered {unit}s in the ledger at {book.safe_url} yet; "
                    "alerting on new ones from now on"
                )
            else:
                reason = (
                    f"first tick: starting from now; the {count} dead letter(s) already in the "
                    f"ledger are not alerted (newest: {_describe(newest, started_at, unit)}; see "
                    "batch-pipeline dead-letters BATCH_ID)"
                )
            return SensorResult(
                skip_reason=SkipReason(shown(reason)), cursor=encode_cursor(newest, started_at)
            )

        after, started_at = decode_cursor(context.cursor)
        letters = rows.dead_letters_since(after, DEAD_LETTER_PAGE)
        if not letters:
            return SensorResult(
                skip_reason=SkipReason(
                    shown(f"no new dead letters since {_describe(after, started_at, unit)}")
                ),
                cursor=context.cursor,
            )

        url = alert_webhook_url()
        sent: list[str] = []
        for batch_id, indices in _by_batch(letters).items():
            found = [letters[i] for i in indices]
            alert = dead_letter_alert(
                batch_id, found, rows.progress(batch_id), book.batch(batch_id), unit
            )
            try:
                send_alert(alert, url, context.log)
            except AlertDeliveryError as exc:
                if not sent:
                    raise  # the tick fails; its cursor stays where it was
                first_unsent = indices[0]  # > 0: an earlier batch's first dead letter is before
                kept = _position(letters[first_unsent - 1])
                context.log.error(
                    shown(
                        f"alerted batch(es) {', '.join(sent)}, then: {exc}. The cursor stops "
                        f"before batch {batch_id}'s dead letters; the next tick sends the rest."
                    )
                )
                return SensorResult(
                    skip_reason=SkipReason(
                        shown(
                            f"sent {len(sent)} alert(s) (batch {', '.join(sent)}), then FAILED: "
                            f"{exc}; the dead letters from batch {batch_id}'s first new one on "
                            "are read again at the next tick"
                        )
                    ),
                    cursor=encode_cursor(kept, started_at),
                )
            sent.append(f"{batch_id} ({len(found)} {unit}(s))")
        more = " (more are waiting: next tick)" if len(letters) == DEAD_LETTER_PAGE else ""
        return SensorResult(
            skip_reason=SkipReason(
                shown(
                    f"alerted {len(letters)} new dead letter(s) in {len(sent)} batch(es): "
                    f"{', '.join(sent)}{more}"
                )
            ),
            cursor=encode_cursor(_position(letters[-1]), started_at),
        )

    return dead_letter_sensor


batch_dead_letter_alert = _dead_letter_sensor("batch_dead_letter_alert", "chunk", lambda b: b)
batch_dead_bucket_alert = _dead_letter_sensor(
    "batch_dead_bucket_alert", "bucket", lambda b: b.buckets
)


ALERT_SENSORS = [batch_run_failure_alert, batch_dead_letter_alert, batch_dead_bucket_alert]
