"""The local AWS emulator that remembers: one moto server per project, running in
the background between doit runs, for trying dodo_lambda without an AWS account.

Only used when a project asks for it (``lambda_tasks(..., emulator=True)``):
nothing ever falls back to it on its own. The server is found through a state
file in the build dir (``emulator/state.json``: pid, url, id, who started it);
a starter reuses a live one and starts one otherwise, under a lock, so that
parallel doit workers (``-n 2 -P process``) end up with one server. The server
stops itself after an idle time, or on ``doit emulator-stop``. It answers
Lambda's Invoke by running the function's stored code with the local invoker
(moto itself would need Docker): see ``emulator_server``.

Clients for it carry their own endpoint and dummy credentials; the process's
AWS settings are neither read nor changed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DodoLambdaError
from .files import locked, pid_alive, read_json
from .layout import BuildDir

if TYPE_CHECKING:
    from .aws import Clients

log = logging.getLogger("dodo_lambda")

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
ROLE_NAME = "dodo-lambda-local"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
               "AWS_SESSION_TOKEN": "local"}
IDLE_SECONDS = 30 * 60  # a server nobody asked anything for this long stops itself
START_TIMEOUT = 60.0
STATUS_PATH = "/_dodo_lambda/status"
STOP_PATH = "/_dodo_lambda/stop"


def paths(build_dir: str | Path) -> BuildDir:
    """The build dir's paths, absolute: the server runs in another folder."""
    return BuildDir(Path(build_dir).resolve())


def _open(request: str | urllib.request.Request, timeout: float) -> Any:
    # The server is on loopback: never through an HTTP proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(request, timeout=timeout)


@dataclass(frozen=True)
class Emulator:
    """A running server: where it is and which one (``id`` changes with every start)."""

    url: str
    pid: int
    id: str
    started: bool = False  # True when this call started it


def status(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The server's own answer about itself, or None when nothing answers there."""
    try:
        with _open(url + STATUS_PATH, timeout) as resp:
            value = json.loads(resp.read())
    except (OSError, ValueError, http.client.HTTPException):  # e.g. a server going away
        return None
    return value if isinstance(value, dict) else None


def running(build_dir: str | Path) -> Emulator | None:
    """The project's live server, or None (a stale state file is ignored)."""
    state = read_json(paths(build_dir).emulator_state)
    if not isinstance(state, dict) or not pid_alive(int(state.get("pid", 0) or 0)):
        return None
    answer = status(str(state.get("url")))
    if not answer or answer.get("id") != state.get("id"):
        return None
    return Emulator(str(state["url"]), int(state["pid"]), str(state["id"]))


def target_key(build_dir: str | Path) -> str:
    """Which server deploys go to, without a request: its id from the state file. A
    new server is a new target, so deploy tasks run again (and find it empty)."""
    state = read_json(paths(build_dir).emulator_state)
    if isinstance(state, dict) and pid_alive(int(state.get("pid", 0) or 0)):
        return f"emulator-{state.get('id')}"
    return "emulator-none"


def _moto_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("moto") is None or importlib.util.find_spec("werkzeug") is None


def ensure_running(build_dir: str | Path, *, idle: float = IDLE_SECONDS) -> Emulator:
    """The project's server: the running one, or a new one started in the background."""
    if _moto_missing():
        raise DodoLambdaError(
            "the local AWS emulator needs moto's server; install it in the environment that"
            " runs doit with `pip install 'moto[server]>=5'` (or install dodo_lambda with its"
            " local extra, `pip install -e '.[local]'` in its checkout), or drop"
            " emulator=True to deploy to AWS")
    f = paths(build_dir)
    with locked(f.emulator_lock):  # one starter at a time: parallel workers share one server
        found = running(build_dir)
        if found:
            return found
        return _start(f, idle)


def _start(f: BuildDir, idle: float) -> Emulator:
    f.emulator.mkdir(parents=True, exist_ok=True)
    started_by = f"pid {os.getpid()}: {' '.join(sys.argv)}"[:300]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONUNBUFFERED"] = "1"
    # AWS-managed policies (AWSLambdaBasicExecutionRole, for the execution roles
    # dodo_lambda creates) exist in moto only when it is asked to load them
    env["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    with open(f.emulator_log, "wb") as logfile:  # one log per server: never past one life
        proc = subprocess.Popen(
            [sys.executable, "-m", "dodo_lambda.emulator_server", "--build-dir", str(f.path),
             "--idle", str(idle), "--started-by", started_by],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logfile, env=env,
            start_new_session=True, cwd=f.emulator)
    assert proc.stdout is not None
    line = b""
    try:
        # The server forks itself into the background (so that no doit process
        # has to reap it) and says "ready URL ID PID" once it answers.
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    line += chunk
        parts = line.decode(errors="replace").split()
        if len(parts) != 4 or parts[0] != "ready":
            raise DodoLambdaError(
                f"the local AWS emulator did not start"
                f" ({_last_line(f.emulator_log) or 'no answer'}); see {f.emulator_log}")
        return Emulator(parts[1], int(parts[3]), parts[2], started=True)
    except BaseException:
        _kill_start(proc, line)  # no server left behind by a failed start
        raise
    finally:
        proc.stdout.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _kill_start(proc: subprocess.Popen[bytes], line: bytes) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, 9)  # the forked server stays in the starter's session
    parts = line.decode(errors="replace").split()
    if len(parts) == 4 and parts[3].isdigit():
        with contextlib.suppress(OSError):
            os.kill(int(parts[3]), 9)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def stop(build_dir: str | Path, *, timeout: float = 15.0) -> Emulator | None:
    """Stop the project's server, if one runs; returns the one stopped."""
    f = paths(build_dir)
    with locked(f.emulator_lock):
        found = running(build_dir)
        if found is None:
            f.emulator_state.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError, http.client.HTTPException):
            request = urllib.request.Request(found.url + STOP_PATH, method="POST", data=b"")
            with _open(request, 5) as resp:
                resp.read()
        deadline = time.monotonic() + timeout
        while pid_alive(found.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # a foreign process: nothing to wait on but its pid
        if pid_alive(found.pid):
            with contextlib.suppress(OSError):
                os.kill(found.pid, 9)
        f.emulator_state.unlink(missing_ok=True)
    return found


def banner(emu: Emulator) -> str:
    return f"LOCAL EMULATOR: deploying to moto at {emu.url}, NOT to AWS (emulator=True)"


def clients(server: Emulator, who: str, *, loader: Any = None) -> Clients:
    """S3 and Lambda clients for ``server`` (see ``ensure_running``), with its endpoint
    and dummy credentials given to the session itself: AWS_PROFILE, AWS_* variables
    and ~/.aws of this process play no part. ``loader``: botocore's service models,
    shared with the run's other sessions (``aws.data_loader``). A run makes them once
    per server (``deploy.clients``), and says then, loudly, that this is not AWS."""
    import botocore.session

    from . import aws

    log.warning("%s", banner(server))
    # No profile, no config or credentials files: nothing of the developer's AWS setup.
    session = botocore.session.Session(session_vars={
        "profile": (None, None, None, None),
        "config_file": (None, None, os.devnull, None),
        "credentials_file": (None, None, os.devnull, None),
    })
    if loader is not None:
        session.register_component("data_loader", loader)
    session.set_credentials(CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            CREDENTIALS["AWS_SESSION_TOKEN"])
    target = aws.AwsTarget(region=REGION, endpoint=server.url)
    kwargs = aws._client_kwargs(server.url, REGION)
    with aws.translating(who):
        # guarded as aws.connect's are: writes that must not be repeated blindly
        return aws.Clients(session=session, s3=aws.guard(session.create_client("s3", **kwargs)),
                           lam=aws.guard(session.create_client("lambda", **kwargs)),
                           region=REGION, endpoint=server.url, profile=None, target=target)


def keep_awake(build_dir: str | Path, stop: threading.Event, every: float = 60.0
               ) -> threading.Thread:
    """A status request every minute until ``stop``: the server counts it as activity,
    so it does not stop itself for idleness (and forget what was deployed) under a
    ``doit watch`` whose user is not saving for a while."""

    def run() -> None:
        while not stop.wait(every):
            running(build_dir)  # asks the server itself when one is running

    thread = threading.Thread(target=run, name="dodo_lambda-emulator-awake", daemon=True)
    thread.start()
    return thread
