"""Where messages go: a local outbox (the embedded default) or an SQS queue.

Both take the messages of one chunk at a time. The outbox keeps one JSONL file per chunk and
merges what it is given into it by message number (a resend of some messages never drops the
others); it is our own folder, so it can say which of a chunk's messages it no longer holds
(``missing``: a file deleted or cut short), and delivery writes those chunks again. A queue's
messages are consumed downstream and cannot be checked: SQS never reports one missing. SQS
gets ``send_message_batch`` calls of up to 10 entries within the request size limit
(``max_batch_bytes``: "batch" is SQS's word for one such call here); entries reported as
failed are retried with exponential backoff and full jitter, never assumed sent; failures the
sender caused (too large, invalid) are not retried. FIFO queues get a ``MessageGroupId`` (the
delivery key's value, else the batch) and a deterministic ``MessageDeduplicationId``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from batch_pipeline.core.common.errors import DeliveryError, classify
from batch_pipeline.core.common.models import RetrySettings, join_uri
from batch_pipeline.core.common.retries import backoff_delay
from batch_pipeline.core.common.settings import Delivery
from batch_pipeline.core.delivery.breaker import CircuitBreaker
from batch_pipeline.core.stores.storage import Storage

SQS_MAX_ENTRIES = 10
# The end of a message body in the seed format (packing.envelope): its number.
_NUMBER = re.compile(rb', "batch_number": (\d+), "total_batches": \d+\}\s*$')
# What SQS accepts as a MessageGroupId: 1 to 128 printable ASCII characters, no space.
GROUP_ID = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True)
class Message:
    """One message: its body, the ids that make redelivery recognisable downstream, and the
    value of the delivery key column its records share (None: not keyed, or no value)."""

    body: str
    batch_id: str
    number: int
    key: str | None = None

    @property
    def dedup_id(self) -> str:
        """Deterministic: the same batch and message number always give the same id."""
        return hashlib.sha256(f"{self.batch_id}:{self.number}".encode()).hexdigest()

    @property
    def group_id(self) -> str:
        """The FIFO group: the key (per-key order), else the batch id; its digest when SQS
        would not accept it as one."""
        if self.key is not None:
            return self.key if GROUP_ID.fullmatch(self.key) else _digested("key", self.key)
        if GROUP_ID.fullmatch(self.batch_id):
            return self.batch_id
        return _digested("batch", self.batch_id)


def _digested(kind: str, text: str) -> str:
    return f"{kind}-" + hashlib.sha256(text.encode()).hexdigest()


OnAccepted = Callable[[Sequence[int]], None]


class Sink(Protocol):
    description: str

    def send(
        self, chunk_index: int, messages: Sequence[Message], on_accepted: OnAccepted | None = None
    ) -> None:
        """Deliver ``messages`` of a chunk, or raise DeliveryError. ``on_accepted(numbers)`` is
        called as soon as the sink has accepted the messages of those numbers (also when the
        rest of a call failed), so that none of them is ever sent again."""

    def missing(self, chunk_index: int, numbers: Sequence[int]) -> set[int]:
        """Which of ``numbers``, messages of the chunk the sink accepted before, it does not
        hold now (a sink that cannot tell: none)."""


class OutboxSink:
    """JSONL files in a folder (or S3 prefix): ``chunk-00000.jsonl``, one message per line (a
    keyed batch's, ``unit`` bucket: ``bucket-00000.jsonl``)."""

    def __init__(self, storage: Storage, directory: str, unit: str = "chunk") -> None:
        self.storage = storage
        self.directory = directory
        self.description = directory
        self.unit = unit

    def send(
        self, chunk_index: int, messages: Sequence[Message], on_accepted: OnAccepted | None = None
    ) -> None:
        """One file per chunk, in message number order, written whole and atomically. The
        messages already in it are kept: these are added, or replace those of the same number
        (a resend after a partial delivery). Nothing to add leaves an existing file alone."""
        uri = join_uri(self.directory, f"{self.unit}-{chunk_index:05d}.jsonl")
        exists = self.storage.exists(uri)
        if messages or not exists:
            bodies = self._read(uri) if exists else {}
            bodies.update({m.number: m.body.encode() for m in messages})
            data = b"".join(bodies[n] + b"\n" for n in sorted(bodies))
            self.storage.write_bytes(uri, data)
        if on_accepted:
            on_accepted([m.number for m in messages])

    def missing(self, chunk_index: int, numbers: Sequence[int]) -> set[int]:
        """The numbers its file does not hold: all of them when the file is gone."""
        if not numbers:
            return set()
        uri = join_uri(self.directory, f"{self.unit}-{chunk_index:05d}.jsonl")
        held = self._read(uri) if self.storage.exists(uri) else {}
        return set(numbers) - held.keys()

    def _read(self, uri: str) -> dict[int, bytes]:
        """The messages of an outbox file by number."""
        bodies: dict[int, bytes] = {}
        for line in self.storage.read_bytes(uri).splitlines():
            if not line.strip():
                continue
            found = _NUMBER.search(line)
            if found is not None:
                number = int(found.group(1))
            else:
                try:
                    number = int(json.loads(line)["batch_number"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise DeliveryError(
                        f"{uri} holds a line that is not a message: {line[:200]!r}",
                        permanent=True,
                    ) from exc
            bodies[number] = line
        return bodies


class SqsSink:
    """An SQS queue reached with a boto3 client, behind a circuit breaker."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        max_batch_bytes: int = Delivery.max_batch_bytes.default,
        max_attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = client
        self.breaker = breaker or CircuitBreaker(queue_url)
        self.queue_url = queue_url
        self.max_batch_bytes = max_batch_bytes
        self.max_attempts = max_attempts
        self.backoff = RetrySettings(0, base_delay, max_delay)
        self.sleep = sleep
        self.fifo = queue_url.endswith(".fifo")
        self.description = queue_url
        self.calls = 0

    def send(
        self, chunk_index: int, messages: Sequence[Message], on_accepted: OnAccepted | None = None
    ) -> None:
        for call in self._calls(messages):
            self._send_call(call, on_accepted)

    def missing(self, chunk_index: int, numbers: Sequence[int]) -> set[int]:
        """None: a queue's messages are consumed downstream; what it accepted is never resent."""
        return set()

    def _calls(self, messages: Sequence[Message]) -> Iterator[list[Message]]:
        """The messages of each SendMessageBatch call: at most 10, within the byte limit."""
        call: list[Message] = []
        size = 0
        for message in messages:
            body = len(message.body.encode())
            if call and (len(call) == SQS_MAX_ENTRIES or size + body > self.max_batch_bytes):
                yield call
                call, size = [], 0
            call.append(message)
            size += body
        if call:
            yield call

    def _entry(self, entry_id: str, message: Message) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message.body}
        if self.fifo:
            entry["MessageGroupId"] = message.group_id
            entry["MessageDeduplicationId"] = message.dedup_id[:128]
        return entry

    def _send_call(self, call: list[Message], on_accepted: OnAccepted | None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        pending = {str(i): m for i, m in enumerate(call)}
        last_error = ""
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(backoff_delay(attempt - 1, self.backoff))
            entries = [self._entry(i, m) for i, m in pending.items()]
            self.breaker.before_call()  # raises CircuitOpenError while the queue keeps failing
            try:
                self.calls += 1
                response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except ClientError as exc:
                if not classify(exc).transient:  # the sender's mistake: another try won't help
                    numbers = sorted(m.number for m in pending.values())
                    raise DeliveryError(
                        f"{self.queue_url} refused messages {numbers}: {exc}", permanent=True
                    ) from exc
                self.breaker.record_failure()
                last_error = str(exc)
                continue
            except BotoCoreError as exc:  # connection errors and the like: worth another try
                self.breaker.record_failure()
                last_error = str(exc)
                continue
            accepted = [pending.pop(ok["Id"]).number for ok in response.get("Successful", [])
                        if ok["Id"] in pending]  # fmt: skip
            if accepted and on_accepted:
                on_accepted(accepted)
            failed = response.get("Failed", [])
            sender_faults = [f for f in failed if f.get("SenderFault")]
            if sender_faults:
                detail = "; ".join(
                    f"message {pending[f['Id']].number}: {f.get('Code')} {f.get('Message', '')}"
                    for f in sender_faults
                )
                raise DeliveryError(f"{self.queue_url} refused messages: {detail}", permanent=True)
            if not pending:
                self.breaker.record_success()
                return
            self.breaker.record_failure()
            last_error = "; ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in failed)
        numbers = sorted(m.number for m in pending.values())
        raise DeliveryError(
            f"{len(pending)} message(s) {numbers} not accepted by {self.queue_url} after "
            f"{self.max_attempts} attempts: {last_error}"
        )


def resolve_queue_url(client: Any, target: str) -> str:
    """``sqs://name`` -> the queue's URL; an http(s) URL is taken as the queue URL."""
    if target.startswith(("https://", "http://")):
        return target
    name = target[len("sqs://") :]
    if name.startswith(("https://", "http://")):
        return name
    try:
        return client.get_queue_url(QueueName=name)["QueueUrl"]
    except Exception as exc:
        permanent = not classify(exc).transient
        raise DeliveryError(
            f"SQS queue {name!r} cannot be found: {exc}", permanent=permanent
        ) from exc


def is_sqs_target(target: str) -> bool:
    return target.startswith(("sqs://", "https://sqs.", "http://"))
