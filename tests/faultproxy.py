"""A loopback HTTP proxy in front of moto that answers chosen requests with faults.

For tests that run doit (or anything) in another process: point AWS_ENDPOINT_URL
at ``proxy.url``. Everything is forwarded byte for byte (headers, bodies, the
Host header the client signed) except requests matching a rule, which get the
rule's answer for their first ``times`` matches. A rule may instead forward the
request and rewrite the JSON answer (e.g. to report LastUpdateStatus InProgress,
which moto never does), forward it and drop the answer (``drop=True``: the request
took effect, the client sees the connection closed), or hold it until the test
releases it (``hold="before"``: moto has not seen it, a hung endpoint; ``hold="after"``:
forwarded, the answer held back); ``rule.wait_arrived()`` is the test's sync point.

    with FaultProxy(moto_url) as proxy:
        rule = proxy.add("PUT", r"^/2015-03-31/functions/orders/code$",
                         **lambda_error(409, "ResourceConflictException"), times=2)
        ...
        assert rule.hits == 2

        held = proxy.add("PUT", CODE_PATH, hold="after")
        ...                       # start the client (a doit process)
        held.wait_arrived()       # the request reached moto; its answer is held
        ...                       # kill the client
        held.release()            # (stop() releases every held request too)
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# Per-connection headers that must not be relayed as they are.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class Rule:
    """Answer requests matching ``method`` and ``path`` (a regex searched in path?query)."""

    method: str
    path: str
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1  # how many matches get the fault; later ones pass through
    transform: Callable[[Any], Any] | None = None  # forward, then rewrite the JSON answer
    # also a regex searched in the request's body (query-protocol services such as IAM
    # and STS name the action there, not in the path)
    request_body: str | None = None
    rewrite: Callable[[bytes], bytes] | None = None  # forward, then rewrite the raw answer
    drop: bool = False  # forward, then close the connection without an answer
    hold: str | None = None  # "before" or "after" forwarding: wait until release()
    hits: int = 0  # matches answered by this rule so far
    seen: int = 0  # all matches, answered or passed through
    forward_held: bool = True  # release(forward=False) drops requests held "before"
    arrived: threading.Event = field(default_factory=threading.Event, repr=False)
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        return (self.method in ("*", method)) and re.search(self.path, path) is not None and (
            self.request_body is None
            or re.search(self.request_body, body.decode("utf-8", "replace")) is not None)

    def wait_arrived(self, timeout: float = 60) -> None:
        """Until a request this rule holds (or drops) has come (and, for hold="after"
        or drop, reached moto)."""
        if not self.arrived.wait(timeout):
            raise AssertionError(f"no {self.method} {self.path} came within {timeout} s")

    def release(self, forward: bool = True) -> None:
        """Let held requests go on; ``forward=False``: a request held before forwarding
        is dropped instead (its client is gone: nothing reaches moto late)."""
        self.forward_held = forward
        self.released.set()


def lambda_error(status: int, code: str, message: str = "injected by faultproxy") -> dict:
    """Rule arguments for a Lambda (rest-json) error answer."""
    body = json.dumps({"Type": "User", "message": message}).encode()
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
    return {"status": status, "body": body, "headers": headers}


def s3_error(status: int, code: str, message: str = "injected by faultproxy") -> dict:
    """Rule arguments for an S3 (XML) error answer."""
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
    ).encode()
    return {"status": status, "body": body, "headers": {"Content-Type": "application/xml"}}


def function_state(**fields: Any) -> Callable[[Any], Any]:
    """A transform setting Configuration fields in GetFunction / GetFunctionConfiguration."""

    def rewrite(doc: Any) -> Any:
        target = doc.get("Configuration", doc) if isinstance(doc, dict) else doc
        target.update(fields)
        return doc

    return rewrite


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a held answer: nothing to report


class FaultProxy:
    """A threaded loopback proxy forwarding to ``upstream`` with fault rules."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: shutdown() waits for the serve loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        for rule in self.rules:
            # held requests end without reaching moto (the next test's moto, maybe)
            rule.release(forward=False)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, method: str, path: str, **kwargs: Any) -> Rule:
        """Add a rule (see Rule's fields); returns it so a test can read ``hits``."""
        rule = Rule(method, path, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def count(self, method: str, path: str) -> int:
        """How many requests with ``method`` and a path matching regex ``path`` came through."""
        with self._lock:
            return sum(1 for m, p, _ in self.log if m == method and re.search(path, p))

    def _pick(self, method: str, path: str, body: bytes = b"") -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, body):
                    rule.seen += 1
                    if rule.hits < rule.times:
                        rule.hits += 1
                        return rule
            return None

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.log.append((method, path, status))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like botocore expects
            # Headers and body go out in separate writes; with Nagle's algorithm
            # and delayed ACKs each answer would take 40 ms more.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the log list is the record; stderr stays quiet

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers end with an empty line
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                rule = proxy._pick(self.command, self.path, body)
                if rule is not None and rule.hold == "before":
                    rule.arrived.set()
                    rule.released.wait()
                    if not rule.forward_held:
                        proxy._record(self.command, self.path, 0)
                        self.close_connection = True
                        return
                    rule = None  # released: the request goes through
                if rule is not None and rule.transform is None and rule.rewrite is None \
                        and not rule.drop and rule.hold is None:
                    self._answer(rule.status, dict(rule.headers), rule.body)
                    return
                status, headers, answer = self._forward(body)
                if rule is not None and rule.drop:
                    proxy._record(self.command, self.path, 0)  # 0: no answer went out
                    rule.arrived.set()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if rule is not None and rule.hold == "after":
                    rule.arrived.set()
                    rule.released.wait()
                if rule is not None and (rule.transform or rule.rewrite) and status == 200:
                    if rule.rewrite is not None:
                        answer = rule.rewrite(answer)
                    else:
                        assert rule.transform is not None
                        answer = json.dumps(rule.transform(json.loads(answer or b"null"))).encode()
                    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                    headers.append(("Content-Length", str(len(answer))))
                self._answer(status, headers, answer, relay=True)

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=120
                )
                try:
                    # putrequest/putheader keep the client's Host (it is signed)
                    # and every header exactly as sent.
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        # Expect: 100-continue was answered by this proxy already.
                        if key.lower() not in _HOP_BY_HOP | {"content-length", "expect"}:
                            conn.putheader(key, value)
                    if body or self.command in ("PUT", "POST", "PATCH"):
                        conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    answer = resp.read()
                    headers = [(k, v) for k, v in resp.getheaders()
                               if k.lower() not in _HOP_BY_HOP]
                    return resp.status, headers, answer
                finally:
                    conn.close()

            def _answer(self, status: int, headers: Any, body: bytes, relay: bool = False) -> None:
                items = headers if isinstance(headers, list) else list(headers.items())
                # logged before the answer goes out: a client that has its answer
                # finds its request in the log (count() right after a call)
                proxy._record(self.command, self.path, status)
                self.send_response_only(status)
                has_length = any(k.lower() == "content-length" for k, _ in items)
                for key, value in items:
                    self.send_header(key, value)
                if not has_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

        return Handler
