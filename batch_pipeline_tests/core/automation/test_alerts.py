"""Alerts without Dagster: the payload, the log target, a real webhook (an HTTP server on
127.0.0.1) that answers, fails then answers, refuses, or is not there at all.

``WebhookReceiver`` is used by the sensor tests too."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from batch_pipeline.core.automation.alerts import (
    ALERT_WEBHOOK_ENV,
    Alert,
    AlertDeliveryError,
    dead_letter_alert,
    run_failure_alert,
    safe_webhook_url,
    send_alert,
)
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.settings import alert_webhook_url
from batch_pipeline_tests.core.ledger.test_ledger import make_plan, make_spec, summary_for


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 (port 0) recording every POST. It answers the next
    requests with the statuses queued in ``statuses``, then 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type"),
                            "body": json.loads(body),
                            "status": status,
                        }
                    )
                answer = b"ok" if status == 200 else b"no_service"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.requests if r["status"] == 200]

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_lettered_batch(ledger: Ledger) -> tuple[Alert, list[Any]]:
    """A batch of 5 chunks: 2 succeeded (1 + 2 records, 1 rejected), 2 dead-lettered, 1
    pending; the dead-letter alert about it."""
    ledger.register_batch(make_spec("alert-batch"), make_plan(5))
    ledger.mark_succeeded("alert-batch", summary_for(0, 5), "fp0")
    ledger.mark_succeeded("alert-batch", summary_for(1, 5, rejected=1), "fp1")
    ledger.mark_dead_lettered("alert-batch", 3, "bad_data", "line 7: <bad> & worse", "s3://o/dl3")
    ledger.mark_dead_lettered("alert-batch", 2, "processor", "ValueError: boom", "s3://o/dl2")
    letters = ledger.dead_letters("alert-batch")
    alert = dead_letter_alert(
        "alert-batch", letters, ledger.progress("alert-batch"), ledger.batch("alert-batch")
    )
    return alert, letters


def test_dead_letter_alert_payload_has_counts_chunks_and_links(ledger: Ledger) -> None:
    alert, _ = dead_lettered_batch(ledger)
    payload = alert.to_payload()
    assert json.loads(json.dumps(payload)) == payload  # plain JSON
    assert payload["kind"] == "dead_letter"
    assert payload["batch_id"] == "alert-batch"
    assert payload["counts"] == {
        "chunks_total": 5,
        "chunks_succeeded": 2,
        "chunks_failed": 0,
        "chunks_dead_lettered": 2,
        "chunks_unfinished": 1,
        "records_in": 3,
        "records_out": 2,
        "records_rejected": 1,
    }
    assert payload["links"] == ["s3://o/dl2", "s3://o/dl3"]  # in chunk order
    assert [(c["chunk"], c["category"]) for c in payload["chunks"]] == [
        (2, "processor"),
        (3, "bad_data"),
    ]
    assert payload["source"] == "s3://bucket/incoming/leads.csv"
    assert payload["summary"] == "2 chunk(s) dead-lettered (chunk 2, 3; bad_data, processor)"
    assert payload["reason"] == (
        "chunk 2: processor: ValueError: boom; chunk 3: bad_data: line 7: <bad> & worse"
    )
    # Slack's text: one line, with &, < and > escaped; the structured fields keep them.
    text = payload["text"]
    assert "\n" not in text
    assert text.startswith("[batch_pipeline dead_letter] batch alert-batch: 2 chunk(s)")
    assert "chunks: 5 total, 2 succeeded, 0 failed, 2 dead-lettered, 1 unfinished" in text
    assert "records: 3 in, 2 out, 1 rejected" in text
    assert "line 7: &lt;bad&gt; &amp; worse" in text
    assert "<bad>" not in text


def test_run_failure_alert_without_a_batch_id_names_the_source() -> None:
    alert = run_failure_alert(
        batch_id=None,
        reason="initialize: source not found: /data/in.csv",
        run_id="r-1",
        job_name="batch_job",
        source="/data/in.csv",
    )
    assert (
        alert.summary == "run of batch_job failed before a batch id existed (source /data/in.csv)"
    )
    assert alert.counts == {}
    line = alert.text()
    assert "batch (no batch id)" in line
    assert "no counts (the batch is not in the ledger)" in line
    assert "reason: initialize: source not found: /data/in.csv" in line
    assert line.endswith("run r-1 of batch_job")


def test_without_a_webhook_the_alert_is_one_warning_line(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    alert, _ = dead_lettered_batch(ledger)
    log = logging.getLogger("test_alerts")
    with caplog.at_level(logging.INFO, logger="test_alerts"):
        send_alert(alert, None, log)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    message = caplog.records[0].getMessage()
    assert "\n" not in message
    assert f"no {ALERT_WEBHOOK_ENV} set" in message
    for part in (
        "batch alert-batch",
        "2 dead-lettered",
        "records: 3 in, 2 out, 1 rejected",
        "reason: chunk 2: processor: ValueError: boom",
    ):
        assert part in message


def test_webhook_receives_the_json_payload(ledger: Ledger, webhook: WebhookReceiver) -> None:
    alert, _ = dead_lettered_batch(ledger)
    send_alert(alert, webhook.url, logging.getLogger("test_alerts"))
    assert len(webhook.requests) == 1
    request = webhook.requests[0]
    assert request["path"] == "/hook"
    assert request["content_type"] == "application/json"
    assert request["body"] == alert.to_payload()


def test_webhook_500_is_retried_then_succeeds(ledger: Ledger, webhook: WebhookReceiver) -> None:
    alert, _ = dead_lettered_batch(ledger)
    webhook.statuses = [500, 503]
    send_alert(alert, webhook.url, logging.getLogger("test_alerts"), backoff_seconds=0.01)
    assert [r["status"] for r in webhook.requests] == [500, 503, 200]
    assert webhook.bodies == [alert.to_payload()]


def test_webhook_that_keeps_failing_raises_naming_it_without_secrets(
    ledger: Ledger, webhook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    alert, _ = dead_lettered_batch(ledger)
    webhook.statuses = [500, 500, 500, 500]
    with (
        caplog.at_level(logging.ERROR, logger="test_alerts"),
        pytest.raises(AlertDeliveryError) as raised,
    ):
        send_alert(
            alert,
            f"{webhook.url}?token=s3cret",
            logging.getLogger("test_alerts"),
            backoff_seconds=0.01,
        )
    message = str(raised.value)
    assert len(webhook.requests) == 3  # three attempts, then the error
    assert webhook.url in message
    assert "HTTP 500" in message and "no_service" in message and "after 3 attempt(s)" in message
    assert "s3cret" not in message
    # The alert is kept in the log when it could not be sent.
    assert "batch alert-batch" in caplog.records[-1].getMessage()


def test_webhook_4xx_is_not_retried(ledger: Ledger, webhook: WebhookReceiver) -> None:
    alert, _ = dead_lettered_batch(ledger)
    webhook.statuses = [404]
    with pytest.raises(AlertDeliveryError, match=r"HTTP 404 .*after 1 attempt"):
        send_alert(alert, webhook.url, logging.getLogger("test_alerts"), backoff_seconds=0.01)
    assert len(webhook.requests) == 1


def test_unreachable_webhook_raises_a_clear_error(ledger: Ledger) -> None:
    alert, _ = dead_lettered_batch(ledger)
    url = f"http://user:pw@127.0.0.1:{closed_port()}/services/T0/B0/SECRET?x=1"
    with pytest.raises(AlertDeliveryError) as raised:
        send_alert(alert, url, logging.getLogger("test_alerts"), backoff_seconds=0.01)
    message = str(raised.value)
    assert "could not send the dead_letter alert of batch alert-batch" in message
    assert "cannot reach it" in message and "after 3 attempt(s)" in message
    assert "/services/..." in message
    for secret in ("SECRET", "pw", "x=1"):
        assert secret not in message


def test_webhook_url_is_read_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    assert alert_webhook_url() is None
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, "  ")
    assert alert_webhook_url() is None
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, "https://hooks.example.com/a/b")
    assert alert_webhook_url() == "https://hooks.example.com/a/b"


def test_safe_webhook_url_keeps_only_host_and_first_segment() -> None:
    assert (
        safe_webhook_url("https://hooks.slack.com/services/T000/B000/XXXX")
        == "https://hooks.slack.com/services/..."
    )
    assert (
        safe_webhook_url("http://u:p@127.0.0.1:8080/hook?token=t") == "http://127.0.0.1:8080/hook"
    )
    assert safe_webhook_url("https://example.com") == "https://example.com"


def test_non_http_webhook_is_refused(ledger: Ledger, tmp_path: Any) -> None:
    alert, _ = dead_lettered_batch(ledger)
    target = tmp_path / "alert.json"
    with pytest.raises(AlertDeliveryError, match="must be an http"):
        send_alert(alert, f"file://{target}", logging.getLogger("test_alerts"))
    assert not target.exists()
