"""An HTTP proxy in front of the moto server that injects real network faults.

``FaultProxy(upstream, fault_rate=0.2, seed=7)`` listens on 127.0.0.1 (a thread per connection,
HTTP/1.1 keep-alive) and forwards every request to ``upstream``, except a seeded share of them,
which it answers itself with HTTP 503 (S3's ``SlowDown`` XML error; SQS's JSON
``ServiceUnavailable``) or drops by closing the connection without an answer. Both happen
*before* forwarding: the server never sees a faulted request, so no side effect (a PUT, a
message sent) can happen twice because of the proxy. ``may_503`` limits which requests may get
a 503; the others drawn for one are dropped instead. ``rule(request)`` may force an action
(``"503"``, ``"drop"``) on chosen requests, before the draw.

``rewrite(request)`` may change what reaches the server and what the client gets back: it
returns None (forward as is) or the request to forward instead and a function from the server's
answer body to the body the client gets (its ``x-amz-crc32`` checksum header, which DynamoDB's
clients check, recomputed); with None for the request nothing is forwarded, and the client gets
a JSON answer (HTTP 200) of the function's body for ``{}``. The state store tests use it to
take some of a DynamoDB batch call's keys out before the server sees them and give them back
as unprocessed. ``calls`` holds every request the server answered (as forwarded), for checks
on the wire.

``hold(predicate, after=n)`` makes the proxy hold the request after the first ``n`` that match
``predicate``: ``held`` is set while it waits, and ``release("drop")`` or ``release("forward")``
decides what becomes of it. The kill tests use it to kill a run while one of its SQS calls is in
flight.

Point the SDKs at it with ``AWS_ENDPOINT_URL=proxy.url``; stop it with ``stop()`` (or use it as
a context manager), which also closes the connections it holds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "upgrade",
    "expect",
}
S3_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate. (injected by the fault proxy)</Message>"
    b"<RequestId>FAULTPROXY</RequestId></Error>"
)
SQS_UNAVAILABLE = (
    b'{"__type": "com.amazonaws.sqs#ServiceUnavailable", '
    b'"message": "Service Unavailable (injected by the fault proxy)"}'
)
DYNAMODB_UNAVAILABLE = (
    b'{"__type": "com.amazonaws.dynamodb.v20120810#ServiceUnavailable", '
    b'"message": "Service Unavailable (injected by the fault proxy)"}'
)


@dataclass(frozen=True)
class Request:
    """What the proxy read of one request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def service(self) -> str:
        """``sqs`` for SQS calls (JSON or query protocol), ``dynamodb`` for DynamoDB's, else
        ``s3``."""
        target = self.headers.get("x-amz-target", "")
        if target.startswith("DynamoDB_"):
            return "dynamodb"
        if target.startswith("AmazonSQS.") or b"Action=" in self.body[:200]:
            return "sqs"
        return "s3"

    @property
    def target(self) -> str | None:
        """The operation of a JSON-protocol call (``BatchGetItem``, ``SendMessageBatch``)."""
        target = self.headers.get("x-amz-target", "")
        return target.partition(".")[2] or None

    @property
    def range_bytes(self) -> int | None:
        """Bytes asked for by a ``Range: bytes=a-b`` header, None without one."""
        value = self.headers.get("range", "")
        first, _, last = value.removeprefix("bytes=").partition("-")
        if not value.startswith("bytes=") or not first.isdigit() or not last.isdigit():
            return None
        return int(last) - int(first) + 1

    @property
    def entries(self) -> int:
        """Messages in an SQS send_message_batch call (JSON protocol)."""
        return len(json.loads(self.body).get("Entries", []))

    @property
    def sqs_action(self) -> str | None:
        target = self.headers.get("x-amz-target", "")
        return target.removeprefix("AmazonSQS.") if target.startswith("AmazonSQS.") else None


Action = Literal["forward", "503", "drop", "hold"]
# A request -> None (forward it as is), or the request to forward and the answer body to give.
Rewrite = Callable[[Request], tuple[Request | None, Callable[[bytes], bytes]] | None]


class FaultProxy:
    """A fault-injecting HTTP proxy (see the module docstring). Thread-safe counters:
    ``injected`` counts faults by ``(kind, service)``, ``forwarded`` by service."""

    def __init__(
        self,
        upstream: str,
        fault_rate: float = 0.0,
        seed: int = 0,
        may_503: Callable[[Request], bool] | None = None,
        rule: Callable[[Request], Action | None] | None = None,
        rewrite: Rewrite | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.fault_rate = fault_rate
        self.may_503 = may_503
        self.rule = rule
        self.rewrite = rewrite
        # One random stream per service: which S3 and which SQS calls fail does not depend on
        # how the two interleave.
        self._rngs = {
            "s3": random.Random(seed),
            "sqs": random.Random(seed + 1),
            "dynamodb": random.Random(seed + 2),
        }
        self._lock = threading.Lock()
        self.injected: Counter[tuple[str, str]] = Counter()
        self.forwarded: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []  # (method, path, action) of every request
        self.sqs_calls: list[Request] = []  # the SQS requests the server answered, in order
        self.calls: list[Request] = []  # every request the server answered, in order
        self._hold_predicate: Callable[[Request], bool] | None = None
        self._hold_after = 0
        self._hold_seen = 0
        self.held = threading.Event()
        self._released = threading.Event()
        self._release_action: Literal["drop", "forward"] = "drop"
        self._connections: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def faults(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release("drop")
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_fault_rate(self, rate: float) -> None:
        with self._lock:
            self.fault_rate = rate

    def hold(self, predicate: Callable[[Request], bool], after: int = 0) -> None:
        """Hold the request that follows the first ``after`` requests matching ``predicate``."""
        with self._lock:
            self._hold_predicate, self._hold_after, self._hold_seen = predicate, after, 0
            self.held.clear()
            self._released.clear()

    def release(self, action: Literal["drop", "forward"]) -> None:
        """Let a held request go: ``drop`` closes its connection unanswered (the server never
        sees it), ``forward`` sends it on (the server acts on it; its answer may reach no
        one)."""
        with self._lock:
            self._release_action = action
            self._hold_predicate = None
        self._released.set()

    # Called by the handler threads ----------------------------------------------------------

    def decide(self, request: Request) -> Action:
        action = self._decide(request)
        with self._lock:
            self.log.append((request.method, request.path, action))
        return action

    def _decide(self, request: Request) -> Action:
        with self._lock:
            predicate = self._hold_predicate
            if predicate is not None and not self.held.is_set() and predicate(request):
                self._hold_seen += 1
                if self._hold_seen > self._hold_after:
                    self.held.set()
                    return "hold"
            forced = self.rule(request) if self.rule else None
            if forced in ("503", "drop"):
                self.injected[forced, request.service] += 1
                return forced
            draw = self._rngs[request.service].random()
            may_503 = self.may_503 is None or self.may_503(request)
            if draw < self.fault_rate / 2 and may_503:
                self.injected["503", request.service] += 1
                return "503"
            if draw < self.fault_rate:
                self.injected["drop", request.service] += 1
                return "drop"
            return "forward"

    def wait_release(self) -> Literal["drop", "forward"]:
        self._released.wait()
        with self._lock:
            return self._release_action

    def forward(
        self, request: Request, headers: dict[str, str]
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send ``request`` (with its ``headers`` as received) upstream; the answer."""
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(
                request.method,
                request.path,
                body=request.body or None,
                headers=headers,
                encode_chunked=False,
            )
            response = conn.getresponse()
            data = response.read()
            with self._lock:
                self.forwarded[request.service] += 1
                if request.service == "sqs":
                    self.sqs_calls.append(request)
                self.calls.append(request)
            return response.status, response.reason, response.getheaders(), data
        finally:
            conn.close()

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def setup(self) -> None:
        super().setup()
        self._proxy().track(self.connection, add=True)

    def finish(self) -> None:
        self._proxy().track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def _proxy(self) -> FaultProxy:
        return self.server.proxy  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = bytearray()
            while True:  # keep the chunked encoding: the body is forwarded as it came
                size_line = self.rfile.readline()
                raw += size_line
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        line = self.rfile.readline()
                        raw += line
                        if line in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self._proxy()
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        request = Request(self.command, self.path, {k.lower(): v for k, v in headers.items()}, body)
        action = proxy.decide(request)
        if action == "hold":
            action = "drop" if proxy.wait_release() == "drop" else "forward"
        if action == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action == "503":
            self._answer_503(request)
            return
        answer = None
        forwarded: Request | None = request
        if proxy.rewrite and (rewritten := proxy.rewrite(request)) is not None:
            forwarded, answer = rewritten
        if forwarded is None:  # answered here: nothing reaches the server
            status, reason, data = 200, "OK", b"{}"
            response_headers = [("Content-Type", "application/x-amz-json-1.0")]
        else:
            if forwarded is not request:
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                headers["Content-Length"] = str(len(forwarded.body))
            status, reason, response_headers, data = proxy.forward(forwarded, headers)
        if answer is not None:
            data = answer(data)
            response_headers = [
                (name, str(zlib.crc32(data)) if name.lower() == "x-amz-crc32" else value)
                for name, value in response_headers
            ]
        try:
            self.send_response(status, reason)
            content_length = None
            for name, value in response_headers:
                lower = name.lower()
                if lower in HOP_BY_HOP or lower == "transfer-encoding":
                    continue
                if lower == "content-length":
                    content_length = value
                    continue
                self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", content_length or "0")
                self.end_headers()
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away (it was killed): nothing to answer
            self.close_connection = True

    def _answer_503(self, request: Request) -> None:
        if request.service == "sqs":
            body, content_type = SQS_UNAVAILABLE, "application/x-amz-json-1.0"
        elif request.service == "dynamodb":
            body, content_type = DYNAMODB_UNAVAILABLE, "application/x-amz-json-1.0"
        else:
            body, content_type = S3_SLOW_DOWN, "application/xml"
        self.send_response(503, "Slow Down")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True
