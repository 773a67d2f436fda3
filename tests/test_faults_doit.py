"""Faults converge, end to end: real doit processes killed by process group at a
point the fault proxy holds, then one clean rerun; an orphaned npm waited for; a
hung AWS that `doit plan` cannot read; temp files of killed runs; doit's backend."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from projects import DODO, FUNCTION, Project, lock, make_package, npm_env, pack

CODE = r"^/2015-03-31/functions/demo/code$"
VERSIONS = r"^/2015-03-31/functions/demo/versions$"


def _plain(project: Project, code: str) -> None:
    """A function source without dependencies (no npm step)."""
    src = project.root / "plain"
    src.mkdir(exist_ok=True)
    (src / "index.js").write_text(f"exports.handler = async () => '{code}';\n")


def _start(project: Project, *args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    """doit in its own process group (a kill reaches it and its children)."""
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root, env=env,
                            start_new_session=True, **kwargs)


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _config(aws_env, name: str = "demo") -> dict:
    return aws_env.boto("lambda").get_function_configuration(FunctionName=name)


@pytest.fixture
def plain(project: Project, aws_env) -> dict:
    _plain(project, "v1")
    return {**FUNCTION, "source": "plain", "role": aws_env.role_arn()}


@pytest.mark.slow
def test_killed_after_update_code_reached_aws_then_reverted(
        project: Project, aws_env, fault_proxy: FaultProxy, plain: dict) -> None:
    project.configure([plain])
    env = aws_env.env()
    assert project.doit("deploy", env=env).rc == 0
    v1 = project.manifest()["code_sha256"]
    _plain(project, "v2")
    held = fault_proxy.add("PUT", CODE, hold="after")
    proc = _start(project, "deploy", env=env, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    try:
        held.wait_arrived()  # UpdateFunctionCode reached AWS; its answer is held
    finally:
        _kill(proc)
        held.release()
    assert _config(aws_env)["CodeSha256"] != v1  # the abandoned code runs
    assert "in_progress" in project.record("deployed")

    _plain(project, "v1")  # the change is reverted: the local source is as last deployed
    run = project.doit("deploy", env=env)
    assert run.rc == 0, run.text
    assert "deploy:demo" in run.executed
    assert _config(aws_env)["CodeSha256"] == v1 == project.manifest()["code_sha256"]
    assert "in_progress" not in project.record("deployed")
    again = project.doit("deploy", env=env)
    assert again.rc == 0 and "deploy:demo" in again.skipped


@pytest.mark.slow
def test_killed_after_publish_version_reached_aws(project: Project, aws_env,
                                                  fault_proxy: FaultProxy, plain: dict) -> None:
    """A memory-only change, killed once PublishVersion reached AWS: the rerun finds the
    version with this code and these settings, moves the alias there, publishes nothing."""
    fn = {**plain, "publish": True, "alias": "live", "memory": 128}
    project.configure([fn])
    env = aws_env.env()
    assert project.doit("deploy", env=env).rc == 0
    project.configure([{**fn, "memory": 256}])
    held = fault_proxy.add("POST", VERSIONS, hold="after")
    proc = _start(project, "deploy", env=env, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    try:
        held.wait_arrived()
    finally:
        _kill(proc)
        held.release()
    lam = aws_env.boto("lambda")
    assert lam.get_alias(FunctionName="demo", Name="live")["FunctionVersion"] == "1"

    run = project.doit("deploy", env=env)
    assert run.rc == 0, run.text
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName="demo")[
        "Versions"] if v["Version"] != "$LATEST"]
    assert versions == ["1", "2"]  # nothing published twice
    assert lam.get_alias(FunctionName="demo", Name="live")["FunctionVersion"] == "2"
    assert _config(aws_env)["MemorySize"] == 256
    assert lam.get_function_configuration(FunctionName="demo", Qualifier="2")["MemorySize"] == 256
    record = project.record("deployed")
    assert "in_progress" not in record
    assert record["alias"] == {"name": "live", "version": "2", "previous": "1"}


@pytest.mark.slow
def test_plan_fails_when_aws_cannot_be_read(project: Project, aws_env, fault_proxy: FaultProxy,
                                            plain: dict) -> None:
    project.configure([plain])
    fault_proxy.add("GET", r"^/2015-03-31/functions/demo/configuration$", hold="before",
                    times=99)
    run = project.doit("plan", env=aws_env.env(DODO_LAMBDA_AWS_TIMEOUT="0.04"))
    assert run.rc != 0 and "Traceback" not in run.text
    assert ("function 'demo': no answer from AWS at" in run.text
            and "(GetFunctionConfiguration, 3 attempts)" in run.text), run.text


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_temp_files_of_killed_runs_are_removed(project: Project, plain: dict) -> None:
    project.configure([plain])
    layout = project.layout()
    npm_folder = layout.install_record.parent
    for folder in (layout.deployed.parent, layout.entries.parent, npm_folder):
        folder.mkdir(parents=True, exist_ok=True)

    def leave() -> list[Path]:
        pid = _dead_pid()
        paths = [layout.deployed.with_name(f".{layout.deployed.name}.{pid}.tmp"),
                 layout.entries.parent / f".summary.json.{pid}.tmp",
                 npm_folder / f".demo.json.{pid}.tmp"]
        for path in paths:
            path.write_text("half")
        return paths

    live = layout.deployed.with_name(f".{layout.deployed.name}.{os.getpid()}.tmp")
    live.write_text("being written")
    dead = leave()
    assert project.doit("list").rc == 0  # any run
    assert [p for p in dead if p.exists()] == [] and live.exists()
    dead = leave()
    assert project.doit("clean").rc == 0
    assert [p for p in dead if p.exists()] == [] and live.exists()


# ------------------------------------------------------------------ an orphaned npm


def _lines(stream) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue, needle: str, seen: list[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"no line with {needle!r}; got:\n{''.join(seen)}")


def _until(check, what: str) -> None:
    deadline = time.monotonic() + 120
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)  # polling a condition, not a guess at how long it takes


@pytest.fixture
def slow_install(project: Project, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A dependency whose install script says it began, then waits for a file."""
    began, go = tmp_path / "began", tmp_path / "go"
    script = (f"const fs = require('fs');\nfs.appendFileSync({json.dumps(str(began))}, 'x');\n"
              f"const t = setInterval(() => {{ if (fs.existsSync({json.dumps(str(go))}))"
              " clearInterval(t); }, 50);\n")
    pkg = make_package(tmp_path / "src", "slowdep", {"index.js": "", "install.js": script})
    manifest = json.loads((pkg / "package.json").read_text())
    manifest["scripts"] = {"install": "node install.js"}
    (pkg / "package.json").write_text(json.dumps(manifest))
    tarball = pack(pkg, project.root / "pkgs")
    src = project.root / "slow"
    src.mkdir()
    (src / "index.js").write_text("exports.handler = async () => 'slow';\n")
    (src / "package.json").write_text(json.dumps({
        "name": "slow", "version": "1.0.0", "private": True,
        "dependencies": {"slowdep": f"file:../pkgs/{tarball}"}}))
    lock(src)
    project.configure([{**FUNCTION, "source": "slow", "scripts": True}])
    yield began, go
    go.touch()  # never leave an npm waiting


@pytest.mark.slow
def test_rerun_waits_for_the_npm_of_a_killed_run(project: Project,
                                                 slow_install: tuple[Path, Path]) -> None:
    began, go = slow_install
    layout = project.layout()
    first = _start(project, "npm:demo", env=npm_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    rerun = None
    try:
        _until(began.exists, "npm's install script to begin")
        os.kill(first.pid, signal.SIGKILL)  # doit only: its npm goes on, orphaned
        first.wait(timeout=60)
        rerun = _start(project, "npm:demo", env=npm_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
        assert rerun.stdout is not None
        seen: list[str] = []
        work = layout.install_work.relative_to(project.root)
        _wait_for_line(_lines(rerun.stdout), f"waiting for {work}: another run is installing"
                       " there, or the npm of a killed run still is", seen)
        assert layout.install_work.is_dir()  # the orphan's folder, untouched
        go.touch()  # the orphaned npm ends; the rerun installs
        assert rerun.wait(timeout=120) == 0, "".join(seen)
    finally:
        go.touch()
        for proc in (first, rerun):
            if proc is not None:
                _kill(proc)
    assert began.read_text() == "xx"  # the orphan's install and the rerun's own
    assert (layout.node_modules / "slowdep" / "install.js").is_file()
    assert not layout.install_work.exists() and not layout.install_old.exists()
    assert project.doit("npm:demo").skipped == {"npm:demo"}


# ------------------------------------------------------------------ doit's backend


HOLD_TASK = '''

def task_hold():
    """Keeps this doit process running until the test creates ``release``."""
    def hold():
        import os, time
        open("holding", "w").close()
        while not os.path.exists("release"):
            time.sleep(0.05)
    return {"actions": [hold], "uptodate": [False]}
'''


def _backend(project: Project, backend: str, more: str = "") -> None:
    for state in project.root.glob(".doit.db*"):
        state.unlink()  # another backend's file
    (project.root / "dodo.py").write_text(DODO.replace('"sqlite3"', f'"{backend}"') + more)


@pytest.mark.slow
def test_warns_once_about_a_backend_that_concurrent_doit_corrupts(
        project: Project, plain: dict) -> None:
    project.configure([plain])
    warning = "warning: doit keeps its state with the"
    run = project.doit("-n", "2", "package")  # sqlite3 (the test projects' backend)
    assert run.rc == 0 and warning not in run.text, run.text

    _backend(project, "json")
    run = project.doit("-n", "2", "package")
    assert run.rc == 0, run.text
    assert run.err.count(warning) == 1
    assert "'json' backend and -n 2" in run.err and '{"backend": "sqlite3"}' in run.err
    assert warning not in project.doit("package").text  # one process, one job: fine

    _backend(project, "dbm", HOLD_TASK)
    holder = _start(project, "hold", env=npm_env(), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    try:
        _until((project.root / "holding").exists, "the first doit to run")
        run = project.doit("package")
        assert run.rc == 0, run.text
        assert run.err.count(warning) == 1
        assert "'dbm' backend and another doit process runs in this project" in run.err
    finally:
        (project.root / "release").touch()
        holder.wait(timeout=60)
    assert warning not in project.doit("package").text  # alone again


def test_every_example_and_the_readme_set_sqlite3() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme[readme.index("```python\n# dodo.py"):]
    sources = {"README.md": block[:block.index("```", 3)]}
    sources.update({str(p.relative_to(root)): p.read_text()
                    for p in sorted((root / "examples").glob("*/dodo.py"))})
    assert len(sources) >= 3
    for name, text in sources.items():
        at = text.index("DOIT_CONFIG = {")
        assert '"backend": "sqlite3"' in text[at:text.index("}", at)], name
        assert "corrupt .doit.db" in text[:at].rsplit("\n\n", 1)[-1], name  # the reason
