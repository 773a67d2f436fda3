"""Run a function's built zip in a local ``node`` process, the way Lambda does.

What runs is what would be deployed: the zip, extracted once per SHA-256 into a
cache folder under the build dir (the task root, Lambda's ``/var/task``), and
its layers extracted in order into one ``/opt``-like folder, reachable through
the module paths Lambda sets (``NODE_PATH``). The handler is loaded and called
by a small runtime shim shipped with this package (``runtime/bootstrap.mjs``)
with Lambda's environment variables, a ``context`` and the function's timeout.

The node process gets the environment Lambda would give it plus the basics a
local process needs (PATH, a private HOME, LANG, TZ), never the caller's AWS
credentials unless asked: a handler must not silently run with a developer's
own keys.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import re
import selectors
import shutil
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DodoLambdaError
from .layout import BuildDir

if TYPE_CHECKING:
    from .config import Function
    from .context import RunContext

log = logging.getLogger("dodo_lambda")

BOOTSTRAP = Path(__file__).with_name("runtime") / "bootstrap.mjs"
DEFAULT_MEMORY = 128  # MB, Lambda's default
DEFAULT_TIMEOUT = 3  # seconds, Lambda's default
INIT_LIMIT = 10.0  # seconds Lambda allows the init phase of an on-demand function
LOG_TAIL = 4096  # bytes of log Lambda returns with LogType=Tail
KEEP_EXTRACTED = 4  # cached task roots (and /opt folders) kept besides the one in use
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}

ZipSource = Path | bytes  # a zip on disk, or its bytes (the emulator's stored code)
# how a log event begins: the runtime's timestamped line, or Lambda's own lines
_EVENT_START = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z\t|(START|END|REPORT) RequestId: )")


@dataclass(frozen=True)
class Code:
    """A zip to run from, and its SHA-256 (hex): the cache key of its extraction."""

    source: ZipSource = field(repr=False)
    sha256: str


@dataclass(frozen=True)
class Invocation:
    """What one run needs: the function's code, settings, and where it pretends to be."""

    name: str
    handler: str
    runtime: str
    code: Code
    layers: tuple[Code, ...] = ()
    memory: int = DEFAULT_MEMORY
    timeout: int = DEFAULT_TIMEOUT
    environment: dict[str, str] = field(default_factory=dict, repr=False)
    architecture: str = "x86_64"
    region: str = "us-east-1"
    account: str = "123456789012"
    version: str = "$LATEST"
    # AWS settings the handler's SDK sees (credentials, endpoint); none by default
    aws: dict[str, str] = field(default_factory=dict, repr=False)
    home: str | None = None  # HOME for the handler; a private folder when None
    who: str = ""

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"


@dataclass(frozen=True)
class InvokeResult:
    """How one invocation ended. ``payload`` is the JSON Lambda would answer: the
    handler's result, or the error shape ``{"errorType", "errorMessage", "trace"}``."""

    request_id: str
    ok: bool
    payload: str
    duration_ms: float
    init_ms: float | None
    memory_mb: int
    max_memory_mb: int
    timed_out: bool = False
    node_version: str | None = None
    logs: str | None = None  # the handler's output, when captured

    @property
    def error(self) -> dict[str, Any] | None:
        return None if self.ok else json.loads(self.payload)

    def report_line(self) -> str:
        """Lambda's REPORT line."""
        init = f"\tInit Duration: {self.init_ms:.2f} ms" if self.init_ms is not None else ""
        return (f"REPORT RequestId: {self.request_id}\tDuration: {self.duration_ms:.2f} ms"
                f"\tMemory Size: {self.memory_mb} MB\tMax Memory Used: {self.max_memory_mb} MB{init}")

    def log_text(self, version: str = "$LATEST") -> str:
        """What Lambda logs for this request: START, the handler's lines, END, REPORT."""
        return (f"START RequestId: {self.request_id} Version: {version}\n{self.logs or ''}"
                f"END RequestId: {self.request_id}\n{self.report_line()}\n")

    def tail(self, version: str = "$LATEST") -> str:
        """The last 4 KB of the log Lambda shows for this request (LogType=Tail)."""
        return self.log_text(version).encode()[-LOG_TAIL:].decode(errors="replace")

    def log_events(self, version: str = "$LATEST") -> list[str]:
        """``log_text`` as CloudWatch Logs events: one per line the runtime wrote (a
        message over several lines stays one event), START, END and REPORT."""
        events: list[str] = []
        for line in self.log_text(version).splitlines():
            if events and not _EVENT_START.match(line):
                events[-1] += "\n" + line
            else:
                events.append(line)
        return events


# -- the extraction cache ------------------------------------------------------------


def _extract(source: ZipSource, dest: Path) -> None:
    """Unpack a zip into ``dest`` atomically (a reader never sees half of it)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
            for info in zf.infolist():
                path = Path(zf.extract(info, tmp))  # zipfile drops '..' and leading '/'
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    os.chmod(path, mode | 0o400)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not another process winning the same race
                raise
    except zipfile.BadZipFile as exc:
        raise DodoLambdaError(f"cannot read the code zip ({exc}); rebuild it") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cached(folder: Path, key: str, fill: Callable[[Path], None]) -> Path:
    dest = folder / key[:32]
    if not dest.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        fill(dest)
    os.utime(dest)  # most recently used: kept by the eviction below
    _evict(folder, keep=dest)
    return dest


def _evict(folder: Path, keep: Path) -> None:
    """Drop old extractions (beyond the few most recent, and unused for 10 minutes)."""
    try:
        found = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    now = time.time()
    for old in found[KEEP_EXTRACTED + 1:]:
        if old != keep and now - old.stat().st_mtime > 600:
            shutil.rmtree(old, ignore_errors=True)


def task_root(code: Code, build_dir: str | Path) -> Path:
    """The function's code, extracted (Lambda's /var/task)."""
    return _cached(BuildDir(Path(build_dir)).invoke_task, code.sha256,
                   lambda dest: _extract(code.source, dest))


def opt_root(layers: tuple[Code, ...], build_dir: str | Path) -> Path | None:
    """The layers, extracted in order into one folder (Lambda's /opt), or None."""
    if not layers:
        return None
    import hashlib

    key = hashlib.sha256(" ".join(c.sha256 for c in layers).encode()).hexdigest()

    def fill(dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.layers")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for layer in layers:  # later layers win, as on Lambda
                with zipfile.ZipFile(io.BytesIO(layer.source) if isinstance(layer.source, bytes)
                                     else layer.source) as zf:
                    zf.extractall(tmp)
            try:
                os.rename(tmp, dest)
            except OSError:
                if not dest.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return _cached(BuildDir(Path(build_dir)).invoke_opt, key, fill)


# -- the environment -----------------------------------------------------------------


def runtime_major(runtime: str) -> int | None:
    digits = runtime.removeprefix("nodejs").split(".")[0]
    return int(digits) if digits.isdigit() else None


def environment(inv: Invocation, task: Path, opt: Path | None, home: Path) -> dict[str, str]:
    """What the node process sees: the function's variables, then Lambda's own (which
    the function cannot override), then the few a local process needs."""
    major = runtime_major(inv.runtime)
    opt_path = str(opt) if opt else str(home / "no-layers")
    node_path = [f"{opt_path}/nodejs/node{major}/node_modules", f"{opt_path}/nodejs/node_modules",
                 str(task)]
    libs = [p for p in (task / "lib", Path(opt_path) / "lib") if p.is_dir()]
    now = datetime.now(timezone.utc)
    env = {
        "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:{opt_path}/bin",
        "LANG": "en_US.UTF-8",
        **inv.environment,
        "HOME": inv.home or str(home),
        "TZ": ":UTC",
        "_HANDLER": inv.handler,
        "LAMBDA_TASK_ROOT": str(task),
        "LAMBDA_RUNTIME_DIR": str(BOOTSTRAP.parent),
        "NODE_PATH": ":".join(node_path),
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{inv.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": inv.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(inv.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": inv.version,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{inv.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{now:%Y/%m/%d}/[{inv.version}]{uuid.uuid4().hex}",
        "AWS_REGION": inv.region,
        "AWS_DEFAULT_REGION": inv.region,
        "AWS_NODEJS_CONNECTION_REUSE_ENABLED": "1",
    }
    if libs:
        env["LD_LIBRARY_PATH"] = ":".join(str(p) for p in libs)
    if inv.aws:
        env.update(inv.aws)
    else:
        # No credentials: the SDK must not find the developer's own (files, instance metadata).
        env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                   AWS_EC2_METADATA_DISABLED="true")
    return env


def caller_credentials() -> dict[str, str]:
    """The caller's AWS settings, for a handler allowed to use them (opt-in)."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("AWS_")
            and k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    return keep


# -- running ---------------------------------------------------------------------------


def node_executable() -> str:
    found = shutil.which("node")
    if not found:
        raise DodoLambdaError("node not found on PATH; install Node.js (the function's runtime"
                              " version) to run functions locally")
    return found


def _check_platform(inv: Invocation, node_version: str) -> None:
    major = runtime_major(inv.runtime)
    local = node_version.split(".")[0]
    if major is not None and local != str(major):
        log.warning("%s runs on %s in Lambda but the local node is v%s; results may differ"
                    " (use Node.js %s locally, e.g. `nvm use %s`)", inv.who or inv.name,
                    inv.runtime, node_version, major, major)
    machine = _MACHINES.get(platform.machine().lower())
    if machine and machine != inv.architecture:
        log.warning("%s is built for %s, this machine is %s: native addons may not load",
                    inv.who or inv.name, inv.architecture, machine)


def run(inv: Invocation, event: str, build_dir: str | Path, *, capture_logs: bool = False,
        client_context: Any = None, identity: Any = None) -> InvokeResult:
    """Run one invocation of ``inv`` with ``event`` (JSON text) and wait for it.

    The handler's output goes to this process's stderr, or into ``logs`` when
    ``capture_logs``. Never raises for the handler's own failures: they are an
    ``InvokeResult`` with ``ok`` False, as Lambda answers them.
    """
    node = node_executable()
    task = task_root(inv.code, build_dir).resolve()
    opt = opt_root(inv.layers, build_dir)
    opt = opt.resolve() if opt else None
    home = BuildDir(Path(build_dir)).invoke_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    request_id = str(uuid.uuid4())
    invocation = json.dumps({
        "event": event, "requestId": request_id, "timeoutMs": inv.timeout * 1000,
        "functionArn": inv.arn, "callbacks": (runtime_major(inv.runtime) or 0) < 24,
        "clientContext": client_context, "identity": identity,
    })
    read_fd, write_fd = os.pipe()
    out: Any = subprocess.PIPE if capture_logs else 2
    try:
        proc = subprocess.Popen(
            [node, str(BOOTSTRAP), str(write_fd)], cwd=task, env=environment(inv, task, opt, home),
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT if capture_logs else 2,
            pass_fds=(write_fd,), start_new_session=True)
    except OSError as exc:
        os.close(read_fd)
        raise DodoLambdaError(f"{inv.who or inv.name}: cannot start node ({exc})") from exc
    finally:
        os.close(write_fd)
    logs: list[bytes] = []
    reader = None
    if capture_logs:
        assert proc.stdout is not None
        stream = proc.stdout
        reader = threading.Thread(target=lambda: logs.extend(iter(lambda: stream.read(65536), b"")),
                                  daemon=True)
        reader.start()
    try:
        return _supervise(inv, proc, read_fd, invocation, request_id, reader, logs,
                          capture_logs)
    finally:
        os.close(read_fd)
        if proc.returncode is None:  # interrupted (Ctrl-C): take the handler down too
            _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, 9)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _supervise(inv: Invocation, proc: subprocess.Popen[bytes], read_fd: int, invocation: str,
               request_id: str, reader: threading.Thread | None, logs: list[bytes],
               capture_logs: bool) -> InvokeResult:
    assert proc.stdin is not None
    try:
        proc.stdin.write(invocation.encode())
        proc.stdin.close()
    except OSError:
        pass  # node ended early; its exit is reported below
    messages: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    deadline = started + INIT_LIMIT + inv.timeout
    ready_at = None
    buffer = b""
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(read_fd, selectors.EVENT_READ)
        while "done" not in messages:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(left):
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break  # node exited
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                messages[message["t"]] = message
                if message["t"] == "start":
                    _check_platform(inv, message["node"])
                elif message["t"] == "ready":
                    ready_at = time.monotonic()
                    deadline = ready_at + inv.timeout
    ended = time.monotonic()
    if timed_out:
        os.killpg(proc.pid, 9)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(OSError):  # what the handler started goes too, as on Lambda
        os.killpg(proc.pid, 9)
    if reader is not None:
        reader.join(timeout=10)
    node_version = messages.get("start", {}).get("node")
    init_ms = messages["ready"]["init_ms"] if "ready" in messages else None
    done = messages.get("done")
    if timed_out:  # the function's timeout, as Lambda words it (REPORT has the measure)
        payload = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage":
                              f"RequestId: {request_id} Error: Task timed out after"
                              f" {inv.timeout:.2f} seconds"})
        ok, duration = False, (ended - (ready_at or started)) * 1000
    elif done is None:
        reason = f"exit status {proc.returncode}" if proc.returncode >= 0 else \
            f"signal {-proc.returncode}"
        payload = json.dumps({"errorType": "Runtime.ExitError", "errorMessage":
                              f"RequestId: {request_id} Error: Runtime exited with error: {reason}"})
        ok, duration = False, (ended - (ready_at or started)) * 1000
    else:
        ok = bool(done["ok"])
        payload = done["payload"] if ok else json.dumps(done["error"])
        duration = float(done.get("ms") or 0.0)
    # node's own peak when it said (a child forked from a big server counts the
    # parent's pages in ru_maxrss), else the kernel's; KiB, rounded up to MB
    max_kib = int((done or {}).get("rss") or usage.ru_maxrss)
    max_mb = -(-max_kib // 1024)
    return InvokeResult(
        request_id=request_id, ok=ok, payload=payload, duration_ms=duration,
        init_ms=init_ms, memory_mb=inv.memory, max_memory_mb=max_mb, timed_out=timed_out,
        node_version=node_version,
        logs=b"".join(logs).decode(errors="replace") if capture_logs else None)


# -- a Function of this project ----------------------------------------------------------


def for_function(fn: Function, ctx: RunContext, *, aws: dict[str, str] | None = None
                 ) -> Invocation:
    """The invocation of a project's Function from its built zip and its layers' zips.

    The region and account come from the function's deploy record when there is
    one, else from the project's region=, the environment (AWS_REGION) and moto's
    account.
    """
    from .config import Layer, label
    from .desired import manifest
    from .files import read_json

    who = label(fn)
    built = manifest(fn, ctx)
    layers = []
    for layer in fn.layers:
        if isinstance(layer, Layer):
            layers.append(Code(ctx.layout(layer).zip, manifest(layer, ctx)["sha256"]))
        else:
            log.warning("%s: layer %s is not built by this project and is left out locally;"
                        " modules from it will not be found", who, layer)
    account = "123456789012"
    region = ctx.target.region or os.environ.get("AWS_REGION") \
        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    deployed = read_json(ctx.layout(fn).deployed) or {}
    arn = str(deployed.get("arn") or "").split(":")
    if len(arn) >= 7 and arn[2] == "lambda":
        region, account = arn[3], arn[4]
    return Invocation(
        name=fn.name, handler=fn.handler, runtime=fn.runtime,
        code=Code(ctx.layout(fn).zip, built["sha256"]), layers=tuple(layers),
        memory=fn.memory or DEFAULT_MEMORY, timeout=fn.timeout or DEFAULT_TIMEOUT,
        # as deploy sets it (bundle's enable_source_maps adds NODE_OPTIONS)
        environment={str(k): str(v) for k, v in _variables(fn).items()},
        architecture=fn.architecture, region=region, account=account, aws=aws or {}, who=who,
    )


def _variables(fn: Function) -> dict[str, Any]:
    env = fn.settings().get("Environment")
    return dict(env.get("Variables") or {}) if isinstance(env, dict) else {}


def read_event(spec: str, stdin: Any, who: str) -> str:
    """The event as JSON text: ``{}`` for "", stdin for "-", else a file's contents."""
    if spec in ("", None):
        return "{}"
    where = "standard input" if spec == "-" else spec
    try:
        text = stdin.read() if spec == "-" else Path(spec).read_text(encoding="utf-8")
    except OSError as exc:
        raise DodoLambdaError(f"{who}: cannot read the event file {spec} ({exc.strerror});"
                              " pass --event FILE with a JSON event, or --event - for stdin") from exc
    try:
        json.loads(text)
    except ValueError as exc:
        raise DodoLambdaError(f"{who}: the event in {where} is not JSON ({exc}); fix it") from exc
    return text
