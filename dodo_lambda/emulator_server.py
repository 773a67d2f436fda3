"""The emulator's server process: moto's WSGI app in our own small server.

    python -m dodo_lambda.emulator_server --build-dir DIR [--idle SECONDS] [--started-by TEXT]

It forks into the background, serves on 127.0.0.1 (a free port), writes the
state file (``emulator/state.json`` in the build dir), prints ``ready URL ID PID``
on stdout for its starter, and from then on logs only to stderr (the starter
points it at ``emulator/server.log``).
Around moto it adds:

- idleness: every request is noted; with none for ``--idle`` seconds and none
  in progress, the server stops itself;
- ``GET /_dodo_lambda/status`` (who it is) and ``POST /_dodo_lambda/stop``;
- Lambda's Invoke (``POST /2015-03-31/functions/NAME/invocations``), answered by
  running the function's stored code and layers with the local invoker, since
  moto needs Docker for that. Its handler's AWS SDK reaches this server.

On exit it removes the state file if the file still names it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from .errors import DodoLambdaError

INVOKE_RE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations/?$")
_REGION_RE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")
StartResponse = Callable[..., Any]


class App:
    """The WSGI app: our paths first, then moto."""

    def __init__(self, moto: Any, state: dict[str, Any], build_dir: Path,
                 stop: threading.Event) -> None:
        self.moto = moto
        self.state = state
        self.build_dir = build_dir
        self.stop = stop
        self.lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.active else time.monotonic() - self.last

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with self.lock:
            self.active += 1
        try:
            return _Tracked(self._dispatch(environ, start_response), self._done)
        except BaseException:
            self._done()
            raise

    def _done(self) -> None:
        with self.lock:
            self.active -= 1
            self.last = time.monotonic()

    def wait_quiet(self, timeout: float) -> None:
        """Until the answers in progress are written (a stop's own answer included)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.active:
                    return
            time.sleep(0.01)

    def _dispatch(self, environ: dict[str, Any], start_response: StartResponse
                  ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/_dodo_lambda/status":
            return _answer(start_response, 200, json.dumps(self.state).encode())
        if path == "/_dodo_lambda/stop" and method == "POST":
            self.stop.set()
            return _answer(start_response, 200, b'{"stopping": true}')
        match = INVOKE_RE.match(path)
        if match and method == "POST":
            body = _body(environ)
            answer = self.invoke(unquote(match.group(1)), environ, body, start_response)
            if answer is not None:
                return answer
            environ["wsgi.input"] = io.BytesIO(body)  # moto answers the rest
        return self.moto(environ, start_response)

    def invoke(self, name: str, environ: dict[str, Any], body: bytes,
               start_response: StartResponse) -> Iterable[bytes] | None:
        """Run the function like Lambda's Invoke; None leaves the request to moto (which
        knows how to say that a function does not exist)."""
        from . import invoke

        query = parse_qs(environ.get("QUERY_STRING", ""))
        qualifier = (query.get("Qualifier") or [None])[0]
        region_match = _REGION_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = region_match.group(1) if region_match else self.state["region"]
        try:
            inv = self.invocation(name, qualifier, region)
        except Exception:  # noqa: BLE001 - moto's own not-found and validation answers
            return None
        kind = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        if kind == "DryRun":
            return _answer(start_response, 204, b"")
        event = body.decode("utf-8", errors="replace") or "{}"
        try:
            json.loads(event)
        except ValueError:
            return _error(start_response, 400, "InvalidRequestContentException",
                          "Could not parse request body into json")
        context = None
        if environ.get("HTTP_X_AMZ_CLIENT_CONTEXT"):
            with contextlib.suppress(ValueError):
                context = json.loads(base64.b64decode(environ["HTTP_X_AMZ_CLIENT_CONTEXT"]))
        if kind == "Event":
            threading.Thread(target=self._run_logged, args=(inv, event, context),
                             daemon=True).start()
            return _answer(start_response, 202, b"")
        try:
            result = invoke.run(inv, event, self.build_dir, capture_logs=True,
                                client_context=context)
        except DodoLambdaError as exc:  # e.g. no node here: the caller's SDK says so
            return _error(start_response, 500, "ServiceException", str(exc))
        _log_invocation(inv, result)
        headers = [("X-Amz-Executed-Version", inv.version)]
        if not result.ok:
            headers.append(("X-Amz-Function-Error", "Unhandled"))
        if environ.get("HTTP_X_AMZ_LOG_TYPE") == "Tail":
            tail = result.tail(inv.version)
            headers.append(("X-Amz-Log-Result", base64.b64encode(tail.encode()).decode()))
        return _answer(start_response, 200, result.payload.encode(), headers)

    def _run_logged(self, inv: Any, event: str, context: Any) -> None:
        from . import invoke

        try:
            _log_invocation(inv, invoke.run(inv, event, self.build_dir, capture_logs=True,
                                            client_context=context))
        except Exception as exc:  # noqa: BLE001 - an asynchronous invocation reports nowhere else
            logging.getLogger("dodo_lambda").warning("%s: %s", inv.name, exc)

    def invocation(self, name: str, qualifier: str | None, region: str) -> Any:
        """The function's stored code, layers and configuration, read from moto's backend."""
        from moto.awslambda.models import lambda_backends

        from . import invoke
        from .emulator import ACCOUNT, CREDENTIALS

        backend = lambda_backends[ACCOUNT][region]
        fn = backend.get_function(name, qualifier)
        if getattr(fn, "package_type", "Zip") != "Zip" or not fn.code_bytes:
            raise LookupError("no zip to run")
        layers = []
        for layer in fn.layers or []:
            version = backend.layers_versions_by_arn(layer["Arn"])
            if version is None:
                raise LookupError(f"no layer version {layer['Arn']}")
            layers.append(invoke.Code(version.code_bytes,
                                      hashlib.sha256(version.code_bytes).hexdigest()))
        return invoke.Invocation(
            name=fn.function_name, handler=str(fn.handler), runtime=str(fn.run_time),
            code=invoke.Code(fn.code_bytes, hashlib.sha256(fn.code_bytes).hexdigest()),
            layers=tuple(layers), memory=int(fn.memory_size), timeout=int(fn.timeout),
            environment=dict(fn.environment_vars or {}),
            architecture=(fn.architectures or ["x86_64"])[0], region=region, account=ACCOUNT,
            version=str(fn.version), who=f"function '{fn.function_name}'",
            # the handler's AWS SDK talks to this emulator, as a function's would to its region
            aws={**CREDENTIALS, "AWS_ENDPOINT_URL": self.state["url"]})


class _Tracked:
    """A response body that says when the server is done with it (WSGI calls close())."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self.body, self.done, self.closed = body, done, False

    def __iter__(self) -> Any:
        return iter(self.body)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                close = getattr(self.body, "close", None)
                if close is not None:
                    close()
            finally:
                self.done()


def _log_invocation(inv: Any, result: Any) -> None:
    """In the server's log, and in CloudWatch Logs as Lambda would (the log group
    ``/aws/lambda/NAME``, a stream per invocation), so that ``doit logs:NAME`` and the
    SDKs' FilterLogEvents see what the function printed."""
    logger = logging.getLogger("dodo_lambda.emulator")
    logger.info("invoke %s: %s", inv.name, "ok" if result.ok else result.payload[:300])
    logger.info("%s", result.report_line())
    try:
        _cloudwatch(inv, result)
    except Exception as exc:  # noqa: BLE001 - the answer matters more than its log
        logger.warning("invoke %s: its log was not written to CloudWatch Logs: %s", inv.name, exc)


def _cloudwatch(inv: Any, result: Any) -> None:
    import uuid

    from moto.logs.exceptions import ResourceAlreadyExistsException
    from moto.logs.models import logs_backends

    backend = logs_backends[inv.account][inv.region]
    group = f"/aws/lambda/{inv.name}"
    stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{inv.version}]{uuid.uuid4().hex}"
    with contextlib.suppress(ResourceAlreadyExistsException):
        backend.create_log_group(group, {})
    backend.create_log_stream(group, stream)
    now = int(time.time() * 1000)
    backend.put_log_events(group, stream, [{"timestamp": now, "message": message}
                                           for message in result.log_events(inv.version)])


def _body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    return stream.read(length) if length else b""


def _answer(start_response: StartResponse, status: int, body: bytes,
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    reasons = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request",
               500: "Internal Server Error"}
    start_response(f"{status} {reasons.get(status, 'OK')}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
        *(headers or [])])
    return [body]


def _error(start_response: StartResponse, status: int, code: str, message: str) -> list[bytes]:
    body = json.dumps({"Type": "User", "message": message}).encode()
    return _answer(start_response, status, body, [("x-amzn-ErrorType", code)])


def _create_role(url: str) -> None:
    """The role the quickstart names, so that a project can create functions at once."""
    import botocore.session

    from .emulator import CREDENTIALS, ROLE_NAME

    session = botocore.session.Session(session_vars={
        "profile": (None, None, None, None),
        "config_file": (None, None, os.devnull, None),
        "credentials_file": (None, None, os.devnull, None)})
    session.set_credentials(CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    iam = session.create_client("iam", region_name="us-east-1", endpoint_url=url)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))


def _write_state(path: Path, state: dict[str, Any]) -> None:
    from .files import write_json

    write_json(path, state)


def _remove_state(path: Path, ident: str) -> None:
    from .files import read_json

    current = read_json(path)
    if isinstance(current, dict) and current.get("id") == ident:
        path.unlink(missing_ok=True)


def serve(build_dir: Path, idle: float, started_by: str) -> int:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from .emulator import REGION
    from .layout import BuildDir

    state_path = BuildDir(build_dir).emulator_state
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    state: dict[str, Any] = {"pid": os.getpid(), "id": os.urandom(8).hex(), "region": REGION,
                             "started_by": started_by, "started_at": time.time(),
                             "idle_seconds": idle}
    app = App(DomainDispatcherApplication(create_backend_app), state, build_dir, stop)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    state["url"] = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    try:
        _create_role(state["url"])
        _write_state(state_path, state)
        print(f"ready {state['url']} {state['id']} {state['pid']}", flush=True)
        os.dup2(2, 1)  # the starter stops reading: from now on, stdout is the log too
        logging.getLogger("dodo_lambda").info("serving at %s for %s", state["url"], started_by)
        while not stop.wait(min(5.0, max(idle / 10, 0.05))):
            if app.idle_for() >= idle:
                logging.getLogger("dodo_lambda").info("idle for %.0f s: stopping", idle)
                break
    finally:
        _remove_state(state_path, state["id"])
        server.shutdown()
        app.wait_quiet(10.0)  # answers being written, the stop's own among them
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dodo_lambda.emulator_server")
    parser.add_argument("--build-dir", type=Path, required=True)
    parser.add_argument("--idle", type=float, default=30 * 60)
    parser.add_argument("--started-by", default="")
    args = parser.parse_args(argv)
    # Into the background: the starter's child exits at once, so no doit process
    # has to reap the server; the server keeps the starter's session (its group).
    if os.fork() > 0:
        os._exit(0)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        return serve(args.build_dir.resolve(), args.idle, args.started_by)
    except BrokenPipeError:
        return 1  # the starter gave up waiting


if __name__ == "__main__":
    sys.exit(main())
