"""Local AWS for the tests: one moto server per session, reset before each test.

Fixtures
  moto_server   session: the running server (``.url``, request log)
  aws_env       function: a clean moto and an environment that can only reach it
                (AwsEnv: .url .region .mark() .requests() .count() .boto() .role_arn()
                .bucket() .env())
  fault_proxy   function: a FaultProxy in front of moto, AWS_ENDPOINT_URL pointing at it
                (requires aws_env)
  make_zip      function: make_zip(name="fn", files=None) -> Path of a tiny Node.js zip
  fast_aws      function: no pauses between dodo_lambda's polls and retries, nor botocore's

Helpers (import from awsfixtures)
  sha(path) -> (hex, base64) SHA-256 of a file; random_file(path, size) -> path
  create_function(aws_env, zip_path, name="orders", architecture="x86_64", **settings)
                                             create a function with plain boto3
  MakeZip, WHO, CODE_PATH, CONFIG_PATH       make_zip's type; function 'orders' in
                                             messages and in Lambda's API paths
  inject_fault(client, "UpdateFunctionCode", status=409, code="ResourceConflictException",
               times=2)                      in-process error answers, counts calls
  fake_answer(client, "UpdateFunctionCode", times=1, LastUpdateStatus="InProgress")
                                             an operation's answer reports fields moto never
                                             reports, for the first N calls
  fake_function_state(client, times=2, LastUpdateStatus="InProgress")
                                             the same for GetFunction[Configuration]

Nothing here can reach a real AWS account: every botocore request made in the
test process is checked to go to a loopback address, and the environment the
``aws_env`` fixture builds has dummy credentials and no profile or config files.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from faultproxy import FaultProxy

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
_LOG_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S*) HTTP/[0-9.]+" (?P<status>\d{3})')
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_SYNC = "dodo-sync="

# A urllib opener that ignores http_proxy and friends: moto is on loopback.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Request:
    """One request moto logged."""

    method: str
    path: str
    status: int


class MotoServer:
    """``moto_server`` in a subprocess, with its request log collected by a thread."""

    def __init__(self, **settings: str) -> None:
        """``settings``: extra environment for the server (e.g. MOTO_IAM_LOAD_MANAGED_POLICIES)."""
        exe = Path(sys.executable).with_name("moto_server")
        command = str(exe) if exe.exists() else shutil.which("moto_server")
        if command is None:
            raise RuntimeError("moto_server not found; pip install 'moto[server]'")
        # The server needs no AWS settings of ours; unbuffered so lines arrive at once.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(settings)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._sync_ids = itertools.count(1)
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self.proc = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(_ANSI_RE.sub("", line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()  # the server is gone: wake any waiter

    def _wait_for(self, predicate: Callable[[str], bool], timeout: float, start: int = 0) -> int:
        """Index of the first line from ``start`` that satisfies ``predicate``."""
        seen = start

        def found() -> bool:
            nonlocal seen
            while seen < len(self.lines):
                if predicate(self.lines[seen]):
                    return True
                seen += 1
            return self.proc.poll() is not None and not self._reader.is_alive()

        with self._cond:
            if not self._cond.wait_for(found, timeout=timeout) or seen >= len(self.lines):
                raise RuntimeError(
                    "moto_server did not log the expected line; its output:\n"
                    + "\n".join(self.lines[-30:])
                )
        return seen

    def _wait_for_url(self) -> str:
        index = self._wait_for(lambda line: "Running on http://" in line, timeout=60)
        match = re.search(r"Running on (http://127\.0\.0\.1:\d+)", self.lines[index])
        if not match:
            raise RuntimeError(f"unexpected moto_server line: {self.lines[index]}")
        return match.group(1)

    def sync(self) -> int:
        """Index of a fresh marker line: every request answered before it is logged above."""
        # werkzeug logs a request as it starts the answer, so any request whose
        # answer a client has seen is logged before this marker request.
        marker = f"{_SYNC}{next(self._sync_ids)}"
        with _direct.open(f"{self.url}/moto-api/config?{marker}", timeout=30) as resp:
            resp.read()
        return self._wait_for(lambda line: f"{marker} " in line, timeout=30)

    def requests(self, since: int = 0) -> list[Request]:
        """The requests logged after line ``since`` (a ``mark()``), up to now."""
        end = self.sync()
        with self._cond:
            lines = self.lines[since:end]
        out = []
        for line in lines:
            match = _LOG_RE.search(line)
            if match and _SYNC not in match["path"]:
                out.append(Request(match["method"], match["path"], int(match["status"])))
        return out

    def client(self, service: str) -> Any:
        """A boto3 client for this server, made once per session (they cost ~50 ms each)."""
        import boto3

        with self._cond:
            if service not in self._clients:
                if self._session is None:
                    # Explicit settings: independent of whatever a test does to os.environ.
                    self._session = boto3.Session(
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        aws_session_token="testing", region_name=REGION,
                    )
                self._clients[service] = self._session.client(service, endpoint_url=self.url)
            return self._clients[service]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with _direct.open(request, timeout=30) as resp:
            resp.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ no real AWS, ever

_escapes: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _loopback_only() -> Iterator[None]:
    """Refuse (and fail the session on) any botocore request to a non-loopback host."""
    from botocore.httpsession import URLLib3Session

    original = URLLib3Session.send

    def send(self: Any, request: Any) -> Any:
        host = urlsplit(request.url).hostname
        if host not in LOOPBACK:
            _escapes.append(request.url)
            raise AssertionError(f"test tried to reach {request.url}; only loopback is allowed")
        return original(self, request)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(URLLib3Session, "send", send)
        yield
    if _escapes:
        pytest.fail(f"tests tried to reach non-loopback AWS endpoints: {_escapes}")


def _check_loopback_env(env: dict[str, str] | os._Environ[str]) -> None:
    for key, value in env.items():
        if key.startswith("AWS_ENDPOINT_URL") and urlsplit(value).hostname not in LOOPBACK:
            raise AssertionError(f"{key}={value} is not a loopback endpoint")


# ------------------------------------------------------------------ the per-test environment


class AwsEnv:
    """The test's view of local AWS: where it is, what it was asked, and shortcuts."""

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.url = server.url
        self.region = REGION
        self.account = ACCOUNT
        self._start = 0  # the log position when the test began

    def mark(self) -> int:
        """A position in the request log; pass it as ``since`` to look at what came after."""
        return self.server.sync() + 1

    def requests(self, since: int = 0) -> list[Request]:
        """Requests moto answered since the mark (all of this test's when 0)."""
        return self.server.requests(since or self._start)

    def count(self, method: str, path: str, since: int = 0) -> int:
        """How many ``method`` requests with a path (and query) matching regex ``path``."""
        return sum(
            1 for r in self.requests(since) if r.method == method and re.search(path, r.path)
        )

    def boto(self, service: str) -> Any:
        """A plain boto3 client for moto (test set-up and inspection, not the code under test)."""
        return self.server.client(service)

    def role_arn(self, name: str = "dodo-lambda-test") -> str:
        """Create an IAM role Lambda may assume and return its ARN."""
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam = self.boto("iam")
        try:
            role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        except iam.exceptions.EntityAlreadyExistsException:
            role = iam.get_role(RoleName=name)
        return str(role["Role"]["Arn"])

    def bucket(self, name: str = "dodo-artifacts") -> str:
        """Create an S3 bucket and return its name."""
        self.boto("s3").create_bucket(Bucket=name)
        return name

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a subprocess (doit) that must use the same local AWS."""
        env = dict(os.environ)
        env.update(extra)
        _check_loopback_env(env)
        return env


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEnv]:
    """An empty moto, and an environment in which boto3 reaches only it."""
    assert urlsplit(moto_server.url).hostname == "127.0.0.1"
    moto_server.reset()
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)  # AWS_PROFILE, AWS_ENDPOINT_URL_*, role/web identity...
    settings = {
        "AWS_ENDPOINT_URL": moto_server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        # dodo_lambda's documented knob: no pauses between polls and retries
        "DODO_LAMBDA_WAIT_SCALE": "0",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    no_proxy = ",".join(sorted(LOOPBACK))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)
    env = AwsEnv(moto_server)
    env._start = env.mark()
    yield env


@pytest.fixture
def fault_proxy(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A FaultProxy in front of moto; AWS_ENDPOINT_URL (and aws_env.env()) point at it."""
    with FaultProxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    """make_zip(name="fn", files=None) -> a zip with index.js (or ``files``) in tmp_path."""

    def make(name: str = "fn", files: dict[str, str | bytes] | None = None) -> Path:
        files = files or {"index.js": f"exports.handler = async () => '{name}';\n"}
        path = tmp_path / f"{name}.zip"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for arcname, content in sorted(files.items()):
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, content)
        path.write_bytes(buffer.getvalue())
        return path

    return make


@pytest.fixture
def fast_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pauses between polls and retries: moto answers at once anyway."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setenv("DODO_LAMBDA_WAIT_SCALE", "0")  # dodo_lambda's documented knob
    # botocore's own retry backoff (up to a second or more per retry), in this process.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)


MakeZip = Callable[..., Path]  # what the make_zip fixture gives
# The function create_function makes by default: how messages name it, and the
# paths of its code and its configuration in Lambda's API.
WHO = "function 'orders'"
CODE_PATH = r"^/2015-03-31/functions/orders/code$"
CONFIG_PATH = r"^/2015-03-31/functions/orders/configuration$"


def sha(path: Path) -> tuple[str, str]:
    """(hex, base64) SHA-256 of a file's bytes."""
    digest = hashlib.sha256(path.read_bytes()).digest()
    return digest.hex(), base64.b64encode(digest).decode()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def create_function(env: AwsEnv, zip_path: Path, name: str = "orders",
                    architecture: str = "x86_64", **settings: Any) -> dict:
    """Set-up: a function made with plain boto3 (not the code under test)."""
    config = env.boto("lambda").create_function(
        FunctionName=name, Role=env.role_arn(), Runtime="nodejs24.x", Handler="index.handler",
        Architectures=[architecture], PackageType="Zip", Code={"ZipFile": zip_path.read_bytes()},
        **settings,
    )
    config.pop("ResponseMetadata", None)
    return dict(config)


# ------------------------------------------------------------------ in-process faults


class _Body:
    """The ``raw`` of a botocore AWSResponse: something with stream()."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


@dataclass
class FaultCounter:
    """What an injection saw: every call of the operation, and how many it answered."""

    calls: int = 0
    injected: int = 0


def _error_response(client: Any, request: Any, status: int, code: str, message: str) -> Any:
    from botocore.awsrequest import AWSResponse, HeadersDict

    protocol = client.meta.service_model.protocol
    if protocol in ("rest-xml", "query"):
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
        ).encode()
        headers = HeadersDict({"Content-Type": "application/xml"})
    elif protocol == "json":  # CloudWatch Logs, ...: the code is in the body
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = HeadersDict({"Content-Type": "application/x-amz-json-1.1"})
    else:
        body = json.dumps({"Type": "User", "message": message}).encode()
        headers = HeadersDict({"Content-Type": "application/json", "x-amzn-ErrorType": code})
    headers["Content-Length"] = str(len(body))
    return AWSResponse(request.url, status, headers, _Body(body))


@contextlib.contextmanager
def inject_fault(
    client: Any,
    operation: str,
    *,
    status: int,
    code: str,
    message: str = "injected by the test",
    times: int = 1,
) -> Iterator[FaultCounter]:
    """Answer the first ``times`` sends of ``operation`` on ``client`` with an error.

    Every attempt counts, including botocore's own retries.
    """
    counter = FaultCounter()
    service = client.meta.service_model.service_id.hyphenize()
    event = f"before-send.{service}.{operation}"

    def handler(request: Any, **_: Any) -> Any:
        counter.calls += 1
        if counter.injected < times:
            counter.injected += 1
            return _error_response(client, request, status, code, message)
        return None

    client.meta.events.register(event, handler)
    try:
        yield counter
    finally:
        client.meta.events.unregister(event, handler)


@contextlib.contextmanager
def fake_answer(client: Any, *operations: str, times: int = 1, **fields: Any
                ) -> Iterator[FaultCounter]:
    """Make the first ``times`` answers of ``operations`` carry ``fields``.

    moto never reports LastUpdateStatus InProgress or State Pending; this rewrites
    the parsed answer (after-call hook) so the code under test sees them.
    """
    counter = FaultCounter()
    service = client.meta.service_model.service_id.hyphenize()
    events = [f"after-call.{service}.{op}" for op in operations]

    def handler(parsed: dict, **_: Any) -> None:
        counter.calls += 1
        if "Error" in parsed or counter.injected >= times:
            return
        counter.injected += 1
        parsed.get("Configuration", parsed).update(fields)

    for event in events:
        client.meta.events.register(event, handler)
    try:
        yield counter
    finally:
        for event in events:
            client.meta.events.unregister(event, handler)


def fake_function_state(client: Any, times: int = 1, **fields: Any
                        ) -> contextlib.AbstractContextManager[FaultCounter]:
    """fake_answer for GetFunction and GetFunctionConfiguration (the waiters' reads)."""
    return fake_answer(client, "GetFunction", "GetFunctionConfiguration", times=times, **fields)
