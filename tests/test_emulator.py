"""The emulator that remembers: one moto server per project, kept between doit runs,
shared by parallel workers, stopped by `doit emulator-stop` (or when idle), and able
to run functions for Lambda's Invoke without Docker.

Every test that may start a server uses the ``emu`` fixture, whose finalizer stops
it and fails the test if any server process of the project is left."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from projects import LAYER, Project

from dodo_lambda import emulator
from dodo_lambda.files import pid_alive

HANDLERS = {
    "hello/index.js": """
exports.handler = async (event, context) => {
  console.log("hello log line");
  return { hello: event.name || "world", endpoint: process.env.AWS_ENDPOINT_URL || null,
           key: process.env.AWS_ACCESS_KEY_ID || null, fn: context.functionName };
};
""",
    "boom/index.js": "exports.handler = async () => { throw new RangeError('out of range'); };\n",
    "layered/index.js": """
const { excl } = require("greet-util");
exports.handler = async () => excl("layer");
""",
}


def _server_pids(build_dir: Path) -> list[int]:
    """Live server processes started for this build dir (found by their --build-dir
    argument)."""
    wanted = str(emulator.paths(build_dir).path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"dodo_lambda.emulator_server" in argv and wanted.encode() in argv \
                and stat.split(")")[-1].split()[0] != "Z":
            found.append(int(entry.name))
    return found


def _wait_until(done, timeout: float = 30.0) -> bool:
    """Poll for an event of another process (its exit) with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return False


def _wait_gone(pids: list[int], timeout: float = 30.0) -> bool:
    return _wait_until(lambda: not any(pid_alive(p) for p in pids), timeout)


@pytest.fixture
def emu(template: Path, tmp_path: Path) -> Iterator[Project]:
    """A project deploying to its own emulator; no server of it survives the test."""
    root = tmp_path / "project"
    shutil.copytree(template, root, symlinks=True)
    for rel, text in HANDLERS.items():
        (root / "fns" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "fns" / rel).write_text(text)
    project = Project(root)
    project.configure([_fn("hello")], options={"emulator": True})
    build_dir = project.build_dir
    try:
        yield project
    finally:
        emulator.stop(build_dir)
        left = _server_pids(build_dir)
        for pid in left:
            os.kill(pid, 9)
        assert not left, f"emulator servers left running: {left}"


def _fn(name: str, **extra: object) -> dict:
    return {"name": name, "source": f"fns/{name}", "handler": "index.handler",
            "role": emulator.ROLE_ARN, **extra}


def _client(url: str, service: str = "lambda"):
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="y", aws_session_token="z")


def test_state_kept_across_runs_until_emulator_stop(emu: Project) -> None:
    build_dir = emu.build_dir
    first = emu.doit("deploy")
    assert first.rc == 0, first.text
    assert "LOCAL EMULATOR" in first.err and "NOT to AWS" in first.err
    assert "function 'hello': created" in first.out
    server = emulator.running(build_dir)
    assert server is not None and _server_pids(build_dir) == [server.pid]

    second = emu.doit("deploy")
    assert second.rc == 0 and "deploy:hello" in second.skipped, second.text
    plan = emu.doit("plan")
    assert "function 'hello': nothing to do (unchanged)" in plan.out, plan.text
    # not the records: the server itself remembers the function
    emu.layout("hello").deployed.unlink()
    third = emu.doit("deploy")
    assert "function 'hello': unchanged, version $LATEST" in third.out, third.text
    assert emulator.running(build_dir) == server  # the same server throughout

    stop = emu.doit("emulator-stop")
    assert stop.rc == 0 and f"stopped the server at {server.url}" in stop.out, stop.text
    assert _wait_gone([server.pid]) and not emu.paths.emulator_state.exists()
    assert "no server running" in emu.doit("emulator-stop").out
    again = emu.doit("deploy")  # a new server is a new target: deploy runs and creates
    assert "function 'hello': created" in again.out, again.text


def test_parallel_workers_share_one_server(emu: Project) -> None:
    emu.configure([_fn("layered", layers=["shared"]), _fn("hello"), _fn("boom")], [LAYER],
                  options={"emulator": True})
    run = emu.doit("-n", "2", "-P", "process", "deploy")
    assert run.rc == 0, run.text
    build_dir = emu.build_dir
    server = emulator.running(build_dir)
    assert server is not None and _server_pids(build_dir) == [server.pid]
    deployed = [emu.record("deployed", n) for n in ("layered", "hello", "boom")]
    where = {"account": emulator.ACCOUNT, "region": emulator.REGION, "endpoint": server.url}
    assert all(r["target"] == where for r in deployed)
    assert all(r["seen_as"][0] == f"emulator-{server.id}" for r in deployed)  # target_key
    lam = _client(server.url)
    layers = lam.get_function_configuration(FunctionName="layered")["Layers"]
    assert [x["Arn"] for x in layers] == [
        emu.record("published", "shared")["arn"]]
    answer = lam.invoke(FunctionName="layered")
    assert json.loads(answer["Payload"].read()) == "layer!"  # the layer's module, in the emulator


def test_boto3_invoke_runs_the_deployed_code(emu: Project) -> None:
    emu.configure([_fn("hello"), _fn("boom")], options={"emulator": True})
    assert emu.doit("deploy").rc == 0
    server = emulator.running(emu.build_dir)
    assert server is not None
    lam = _client(server.url)
    answer = lam.invoke(FunctionName="hello", Payload=b'{"name": "Ann"}', LogType="Tail")
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
    out = json.loads(answer["Payload"].read())
    # the handler's own SDK would reach the emulator, with its dummy credentials
    assert out == {"hello": "Ann", "endpoint": server.url, "key": "local", "fn": "hello"}
    tail = base64.b64decode(answer["LogResult"]).decode()
    assert tail.startswith("START RequestId: ") and "\tINFO\thello log line" in tail
    assert "REPORT RequestId: " in tail

    # what the function printed is in CloudWatch Logs, as on Lambda: `doit logs` shows it
    logs = emu.doit("logs:hello")
    assert logs.rc == 0, logs.text
    assert "\tINFO\thello log line" in logs.out and "REPORT RequestId: " in logs.out, logs.text

    failed = lam.invoke(FunctionName="boom")
    assert failed["StatusCode"] == 200 and failed["FunctionError"] == "Unhandled"
    error = json.loads(failed["Payload"].read())
    assert (error["errorType"], error["errorMessage"]) == ("RangeError", "out of range")
    assert "LogResult" not in failed

    assert lam.invoke(FunctionName="hello", InvocationType="Event")["StatusCode"] == 202
    assert lam.invoke(FunctionName="hello", InvocationType="DryRun")["StatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="nowhere")
    # an edit deployed again is what the next invoke runs
    (emu.root / "fns" / "hello" / "index.js").write_text(
        "exports.handler = async () => 'edited';\n")
    assert emu.doit("deploy").rc == 0
    assert json.loads(lam.invoke(FunctionName="hello")["Payload"].read()) == "edited"


def test_failed_start_leaves_no_server(emu: Project, monkeypatch) -> None:
    build_dir = emu.build_dir
    monkeypatch.setattr(emulator, "START_TIMEOUT", 0.3)  # gives up while moto still loads
    with pytest.raises(emulator.DodoLambdaError, match="the local AWS emulator did not start"):
        emulator.ensure_running(build_dir)
    assert _wait_until(lambda: _server_pids(build_dir) == [], timeout=10)
    assert not emu.paths.emulator_state.exists()


def test_idle_server_stops_itself(emu: Project) -> None:
    build_dir = emu.build_dir
    server = emulator.ensure_running(build_dir, idle=0.5)
    assert server.started and emulator.status(server.url) is not None
    assert _wait_gone([server.pid]), "the idle server did not stop"
    assert not emu.paths.emulator_state.exists()
    assert emulator.target_key(build_dir) == "emulator-none"


def test_a_watch_keeps_its_server_awake(emu: Project) -> None:
    import threading

    build_dir = emu.build_dir
    server = emulator.ensure_running(build_dir, idle=1.0)
    stop = threading.Event()
    emulator.keep_awake(build_dir, stop, every=0.1)
    try:
        # three idle times with the watch's status requests: the server is still there
        assert not _wait_until(lambda: not pid_alive(server.pid), timeout=3.0)
        found = emulator.running(build_dir)
        assert found is not None and (found.id, found.pid) == (server.id, server.pid)
    finally:
        stop.set()
    assert _wait_gone([server.pid]), "the idle server did not stop once the watch ended"
