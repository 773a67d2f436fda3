"""The adapter's actions: each doit step runs the core and prints what it did.

The core returns typed results and logs progress and warnings; here they become
output: results on stdout, progress and ``warning:`` lines on stderr. ``STEPS``
maps a step's name to its action; tasks.py (the only module importing doit) runs
them through ``run_step`` and turns a user's mistake into doit's TaskFailed. A step
that fails without raising (an invoked handler that threw) returns the message doit
must end with.

Core modules are loaded when a step first calls them (``_Later``): a no-op run
never loads the zip writer, the deploy and AWS code or esbuild's driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import npm
from .config import Function, Layer, label
from .context import RunContext
from .errors import DodoLambdaError

if TYPE_CHECKING:
    from .records import Done

Item = Function | Layer


@dataclasses.dataclass(frozen=True)
class Deferred:
    """A core function, imported when first called (picklable, for -P process)."""

    module: str
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module = importlib.import_module(f"{__package__}.{self.module}")
        return getattr(module, self.name)(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Later:
    """Stands for a core module here: ``build.package`` is a ``_Deferred``, so that
    `doit list` and a no-op run never load the zip writer, the deploy and AWS code or
    esbuild's driver when they do not run them (Python start-up is most of a no-op)."""

    module: str

    def __getattr__(self, name: str) -> Deferred:
        return Deferred(self.module, name)


build, bundle, deploy = Later("build"), Later("bundle"), Later("deploy")
buildcache, executor, planner = Later("buildcache"), Later("executor"), Later("planner")
records = Later("records")

# What each step was doing, for a machine's error (disk full, permissions).
DOING = {"npm": "installing dependencies", "bundle": "bundling", "package": "writing the package",
         "upload": "uploading", "deploy": "deploying", "layer": "publishing the layer",
         "plan": "planning", "rollback": "rolling back", "summary": "summing up",
         "logs": "reading logs", "invoke": "invoking", "watch": "watching",
         "emulator-stop": "stopping the emulator"}
_ACTED = {"create": "created", "update": "updated", "publish": "published", "none": "unchanged",
          "rollback": "rolled back"}


# -- output: the core reports (results, logging), the adapter prints -----------------


def _bundle(fn: Function, ctx: RunContext) -> None:
    bundled = bundle.bundle(fn, ctx)
    out = ctx.layout(fn).bundle_out
    files = ", ".join(f"{out / rel} {size:,} bytes" for rel, size in bundled.outputs.items())
    shipped = ", ".join(f.removeprefix("node_modules/") for f in bundled.externals) or "none"
    result(f"{label(fn)}: bundled {bundled.entry} with esbuild {bundled.esbuild.version}"
           f" ({bundled.esbuild.origin}): {files}; shipped in node_modules: {shipped}")


def _write(stream: Any, text: str) -> None:
    """``text`` and a newline on ``stream``, which the caller holds. Never print() to
    sys.stdout or sys.stderr themselves: under ``doit -P thread`` other threads swap
    them for each task, and print() holds no reference to the stream it writes to, so
    a stream dropped meanwhile is freed under it (seen: a segmentation fault)."""
    stream.write(text + "\n")
    stream.flush()


def say(message: str) -> None:
    """Status that must be seen whatever doit's verbosity (doit captures stdout)."""
    _write(sys.stderr, message)


def result(message: str) -> None:
    """A result (sizes, what was deployed, log events): on stdout, so it can be piped.
    The tasks that print results set ``"verbosity": 2`` (doit captures a task's stdout
    below that)."""
    _write(sys.stdout, message)


class _Stderr(logging.Handler):
    """The core's warnings and progress, on the stderr doit gives the running action
    (looked up per line: doit swaps it to capture a task's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"warning: {text}"
            _write(sys.stderr, text)
        except Exception:  # a broken stream must not fail the task
            self.handleError(record)


def show_core_messages() -> None:
    logger = logging.getLogger("dodo_lambda")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _package(item: Item, ctx: RunContext) -> None:
    built = build.package(item, ctx)
    result(f"{label(item)}: {ctx.layout(item).zip} {built.zip_size:,} bytes,"
           f" {built.files} files, {built.unzipped_size:,} bytes unzipped")


def _upload(fn: Function, ctx: RunContext) -> None:
    done = executor.upload(fn, ctx)
    if done is not None:
        where = f"s3://{done.bucket}/{done.key}"
        result(f"{label(fn)}: {'uploaded to' if done.sent else 'already in'} {where}")


def _deploy(fn: Function, ctx: RunContext) -> None:
    executor.deploy_function(fn, ctx)  # its summary line comes at the end of the run


def _layer(layer: Layer, ctx: RunContext, users: tuple[Function, ...]) -> None:
    executor.publish_layer(layer, ctx, users)


def summary_line(done: Done) -> str:
    """One line per deployed item: what was done, version, CodeSha256 prefix, time."""
    parts = [_ACTED.get(done.action, done.action)]
    kinds = [k for k in ("update_code", "update_settings") if k in done.steps]
    if kinds:
        parts[0] += f" ({' and '.join(k.removeprefix('update_') for k in kinds)})"
    if "create_role" in done.steps:
        parts[0] += " with a new execution role"
    if done.version is not None:
        parts.append(f"version {done.version}")
    if done.alias:
        parts.append(f"alias {done.alias['name']} {done.alias.get('previous') or '(new)'}"
                     f" → {done.alias['version']}")
    parts.append(f"CodeSha256 {done.code_sha256[:12]}…")
    if done.action != "none":
        parts.append(f"{done.seconds:.1f} s")
    return f"{label(done.item)}: {', '.join(parts)}"


def _summary(items: tuple[Item, ...], ctx: RunContext, whole: bool) -> None:
    """The end of a run (teardowns of the deploy group and of each deploy and layer
    task, run by whichever process ran the task): one line per item deployed in this
    run, each said once; with ``whole`` (the group) one line when nothing changed."""
    changed = False
    for item in sorted(items, key=lambda i: isinstance(i, Function)):  # layers went first
        done = records.done_in_this_run(item, ctx)
        if done is None:
            continue
        changed = changed or done.action != "none"
        if records.first_to_report(ctx, f"{item.kind} {item.name}"):
            result(summary_line(done))
    if whole and not changed and records.first_to_report(ctx, "nothing changed"):
        where = f" in stage {ctx.stage}" if ctx.stage else ""
        result(f"deploy: nothing changed{where} ({_count(items)} up to date)")


def _count(items: tuple[Item, ...]) -> str:
    n_fn = sum(isinstance(i, Function) for i in items)
    n_layer = len(items) - n_fn
    out = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in ((n_fn, "function"),
                                                                 (n_layer, "layer")) if n]
    return " and ".join(out) or "nothing"


def _plan(items: list[Item], ctx: RunContext, problems: tuple[tuple[str, str, str], ...],
          options: dict[str, Any]) -> None:
    """Print the plan (or its JSON, alone on stdout); fail when deploy would be refused
    (``problems``: items lambda_tasks could not take, as (kind, name, why)), and with
    --check when anything would change."""
    plans = planner.plan_items(items, ctx, deploy.clients(ctx, "plan")) if items else []
    if options.get("json"):
        objects = [{"name": name, "kind": kind, "action": "refused", "steps": [],
                    "drift": False, "refused": why} for kind, name, why in problems]
        result(json.dumps(objects + [p.to_json() for p in plans], indent=1,
                         ensure_ascii=False))
    else:
        for line in build.left_out_lines(items, ctx):
            result(line)
        for _, _, why in problems:
            result(f"deploy would be refused: {why}")
        for plan in plans:
            for line in planner.describe(plan):
                result(line)
    refused = [f"{kind} '{name}'" for kind, name, _ in problems] + [
        label(p.item) for p in plans if p.refused is not None]
    if refused:
        raise DodoLambdaError(f"plan: deploy would refuse {len(refused)} item(s):"
                              f" {', '.join(refused)}")
    acting = [label(p.item) for p in plans if p.action != "none"]
    if options.get("check") and acting:
        raise DodoLambdaError(f"plan --check: deploy would change {', '.join(acting)}")


def _rollback(fn: Function, ctx: RunContext) -> None:
    done = executor.rollback(fn, ctx)
    result(f"{label(fn)}: alias {done.alias} rolled back from version {done.came_from} to"
        f" version {done.to}")


def _logs(fn: Function, ctx: RunContext, options: dict[str, Any]) -> None:
    """Print the function's recent log events, one line each, newest last; with
    --follow keep printing new ones until Ctrl-C (which ends the task cleanly)."""
    from . import logs

    since_text = str(options.get("since") or "10m")
    since = logs.parse_since(since_text)
    follow = bool(options.get("follow"))
    c = deploy.clients(ctx, label(fn))
    shown = 0
    missing = False
    try:
        if follow:
            say(f"{label(fn)}: following {logs.group_name(fn.name)} (Ctrl-C to stop)")
        for event in logs.tail(c, fn.name, since=since, follow=follow, who=label(fn)):
            if isinstance(event, logs.NoGroup):
                missing = True
                say(f"{label(fn)}: no logs yet: log group {event.group} does not exist (Lambda"
                    " creates it the first time the function runs)"
                    + ("; waiting for it" if follow else ""))
                continue
            shown += 1  # before printing: Ctrl-C may come as soon as the line is out
            result(event.line())
    except KeyboardInterrupt:
        say(f"{label(fn)}: stopped following ({shown} event{'s' if shown != 1 else ''} shown)")
        return
    if shown == 0 and not missing:
        say(f"{label(fn)}: no log events in the last {since_text}")


# -- the local loop: invoke, the emulator, watch ----------------------------------------


def _invoke(fn: Function, ctx: RunContext, options: dict[str, Any]) -> str | None:
    """``doit invoke:<name>`` (``--event FILE``/``-``, ``--aws-credentials``): the result
    (or error shape) as the last line on stdout, the handler's logs and Lambda's REPORT
    line on stderr."""
    from . import invoke

    text = invoke.read_event(options.get("event") or "", sys.stdin, label(fn))
    credentials = invoke.caller_credentials() if options.get("aws_credentials") else None
    inv = invoke.for_function(fn, ctx, aws=credentials)
    sys.stdout.flush()
    sys.stderr.flush()
    outcome = invoke.run(inv, text, ctx.build_dir)
    say(outcome.report_line())
    if outcome.ok:
        result(outcome.payload)
        return None
    # doit prints a failure's message last, after "TaskFailed - taskid:invoke:NAME": the
    # error shape itself, so that the last line of stdout is Lambda's answer either way
    return str(outcome.payload)


def _emulator_stop(ctx: RunContext) -> None:
    from . import emulator

    stopped = emulator.stop(ctx.build_dir)
    result(f"emulator: stopped the server at {stopped.url} (pid {stopped.pid})" if stopped
           else "emulator: no server running for this project")


def _change_line(change: Any) -> str:
    when = time.strftime("%H:%M:%S")
    shown = ", ".join(change.paths[:3]) + (f" and {len(change.paths) - 3} more"
                                           if len(change.paths) > 3 else "")
    if change.error:  # the core's message names the item too: once is enough
        return f"{when} {change.item}: {shown}: {change.error.removeprefix(change.item + ': ')}"
    parts = []
    if change.unchanged:
        parts.append("zip unchanged")
    elif change.build_ms:
        parts.append(f"rebuilt in {change.build_ms:.0f} ms")
    if change.deploy_ms is not None:
        parts.append(f"{' and '.join(change.notes) or 'deployed'} in"
                     f" {change.deploy_ms / 1000:.2f} s")
    return f"{when} {change.item}: {shown}: {', '.join(parts)}"


def _watch(items: tuple[Item, ...], ctx: RunContext, deploys: tuple[Item, ...],
           options: dict[str, Any]) -> None:
    """``doit watch`` / ``watch:<name>`` (``--no-deploy``, ``--poll``): rebuild (and
    redeploy) on every save, until Ctrl-C. ``deploys``: what the stage deploys of the
    items (the items themselves without stages)."""
    import threading

    from . import filewatch, watch

    stop = threading.Event()
    logger = logging.getLogger("dodo_lambda")
    w = watch.Watch(items, ctx, deploy_changes=options.get("deploy", True), deploys=deploys)
    try:
        w.prepare()
        if w.deploy_changes:  # start from what is deployed: layers first, then the functions
            for change in w.deploy_all():
                result(_change_line(change))
        # from here on one line per change: the steps' progress notes would interleave
        # (warnings still show)
        logger.setLevel(logging.WARNING)
        if ctx.emulator and w.deploy_changes:
            from . import emulator

            emulator.keep_awake(ctx.build_dir, stop)
        names = ", ".join(label(i) for i in items)

        def ready(how: str) -> None:
            say(f"watch: watching {names} through {how}; Ctrl-C to stop")

        for batch in filewatch.batches(w.folders, stop, ready, poll=bool(options.get("poll")),
                                       skip=[ctx.build_dir], files=w.files):
            for change in w.handle(batch):
                result(_change_line(change))
    except KeyboardInterrupt:
        say("watch: stopped")
    finally:
        stop.set()
        logger.setLevel(logging.INFO)
        with contextlib.suppress(OSError):  # a round interrupted before its end
            w.flush()


STEPS: dict[str, Callable[..., Any]] = {
    "npm": npm.install, "bundle": _bundle, "package": _package, "upload": _upload,
    "deploy": _deploy, "layer": _layer, "plan": _plan, "rollback": _rollback,
    "summary": _summary, "logs": _logs, "invoke": _invoke, "watch": _watch,
    "emulator-stop": _emulator_stop,
}
# steps given the task's command-line options (doit params)
WITH_OPTIONS = {"plan", "logs", "invoke", "watch"}
