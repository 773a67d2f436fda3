"""Helpers the test modules share (test modules never import each other): what a
fresh checkout or another runner looks like, the write requests a deploy sent, an
in-process lab for the planner and executor, and a `doit watch` read line by line."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from awsfixtures import AwsEnv, Request
from projects import Project, npm_env

from dodo_lambda import Function, Layer, build, executor, npm, planner
from dodo_lambda.context import RunContext

CACHE = "build-cache"  # the shared build cache's bucket in the cache tests


def reset_state(project: Project) -> None:
    """A fresh checkout: no doit state, no build dir."""
    shutil.rmtree(project.root / ".dodo_lambda")
    for db in project.root.glob(".doit.db*"):
        db.unlink()


def fresh_copy(project: Project, where: Path) -> Project:
    """Another runner's checkout of the same project: no build dir, no doit state."""
    root = where / "project"
    shutil.copytree(project.root, root, symlinks=True,
                    ignore=shutil.ignore_patterns(".dodo_lambda", ".doit.db*"))
    return Project(root)


def without_npm(where: Path) -> dict[str, str]:
    """The environment of a runner with node but no npm on its PATH."""
    folder = where / "bin-without-npm"
    folder.mkdir(parents=True)
    node = shutil.which("node")
    assert node is not None
    os.symlink(node, folder / "node")
    env = {**npm_env(), "PATH": str(folder)}
    assert shutil.which("npm", path=env["PATH"]) is None
    return env


# The write request each kind of step makes (method, path regex with {n} = the item).
WRITES = {
    "create": ("POST", r"^/2015-03-31/functions/?$"),
    "update_code": ("PUT", r"^/2015-03-31/functions/{n}/code$"),
    "update_settings": ("PUT", r"^/2015-03-31/functions/{n}/configuration$"),
    "publish_version": ("POST", r"^/2015-03-31/functions/{n}/versions$"),
    "point_alias": ("PUT|POST", r"^/2015-03-31/functions/{n}/aliases(/[^/?]+)?$"),
    "delete_version": ("DELETE", r"^/2015-03-31/functions/{n}\?Qualifier=\d+$"),
    "publish_layer_version": ("POST", r"^/2018-10-31/layers/{n}/versions$"),
    "delete_layer_version": ("DELETE", r"^/2018-10-31/layers/{n}/versions/\d+$"),
}


def writes(aws_env: AwsEnv, since: int) -> list[Request]:
    """Requests that change something (STS GetCallerIdentity is a POST that does not)."""
    return [r for r in aws_env.requests(since)
            if r.method not in ("GET", "HEAD") and not (r.method == "POST" and r.path == "/")]


def assert_sent_exactly(steps: list[dict], sent: list[Request], name: str) -> None:
    assert len(sent) == len(steps), (steps, sent)
    for step, request in zip(steps, sent, strict=True):
        method, path = WRITES[step["step"]]
        assert re.fullmatch(method, request.method) and re.search(path.format(n=name),
                                                                    request.path), (step, request)


@dataclass
class Lab:
    """Functions whose source is one index.js (no npm), built and deployed in-process."""

    root: Path
    aws: AwsEnv

    def function(self, name: str = "orders", code: str = "v1", **settings) -> Function:
        src = self.root / name
        src.mkdir(exist_ok=True)
        (src / "index.js").write_text(f"exports.handler = async () => '{code}';\n")
        return Function(name, source=str(src), handler="index.handler",
                        role=self.aws.role_arn(), **settings)

    def run(self, *items: Function | Layer, verify: bool = False) -> RunContext:
        """A new doit run: a fresh context, the packages built."""
        ctx = RunContext(self.root / ".dodo_lambda", items=items, verify=verify)
        for item in items:
            if npm.has_dependencies(item) and not npm.is_installed(item, ctx):
                npm.install(item, ctx)
            build.package(item, ctx)
        return ctx

    def plan(self, *items: Function | Layer, verify: bool = False) -> list[dict]:
        ctx = self.run(*items, verify=verify)
        plans = planner.plan_items(list(items), ctx, ctx.clients())
        return json.loads(json.dumps([p.to_json() for p in plans]))

    def deploy(self, fn: Function, verify: bool = False) -> executor.Outcome:
        return executor.deploy_function(fn, self.run(fn, verify=verify))

    def plan_then_deploy(self, fn: Function, verify: bool = False) -> list[dict]:
        """Plan, then deploy: the deploy executes exactly the planned steps, and sends
        one write request per step, in that order. The plan's steps."""
        (planned,) = self.plan(fn, verify=verify)
        mark = self.aws.mark()
        outcome = self.deploy(fn, verify=verify)
        assert [s.to_json() for s in outcome.executed] == planned["steps"]
        assert_sent_exactly(planned["steps"], writes(self.aws, mark), fn.name)
        return planned["steps"]

    def config(self, name: str = "orders") -> dict:
        return self.aws.boto("lambda").get_function_configuration(FunctionName=name)

    def alias(self, name: str = "orders", alias: str = "live") -> str:
        return self.aws.boto("lambda").get_alias(FunctionName=name, Name=alias)["FunctionVersion"]

    def versions(self, name: str = "orders") -> list[str]:
        listed = self.aws.boto("lambda").list_versions_by_function(FunctionName=name)["Versions"]
        return sorted((v["Version"] for v in listed if v["Version"] != "$LATEST"), key=int)


class Watcher:
    """`doit watch ...` in its own process group, its output read line by line."""

    def __init__(self, project: Project, *args: str, env: dict[str, str] | None = None
                 ) -> None:
        env = {**(env or npm_env()), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The next output line matching ``pattern`` (regex)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line like {pattern!r}; output:\n" +
                                     "\n".join(self.seen)) from None
            if line is None:
                raise AssertionError(f"watch ended before {pattern!r}; output:\n" +
                                     "\n".join(self.seen))
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def interrupt(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        self.wait_for(r"^watch: stopped")
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
