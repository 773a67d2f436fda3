"""The doit adapter: turns Functions and Layers into plain task dicts.

Actions and uptodate checks are module-level callables with plain arguments so
that ``doit -n 2 -P process`` can pickle them. A user's mistake comes back as
doit's ``TaskFailed`` (one line, no traceback).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import build, deploy, npm
from .aws import AwsTarget
from .config import Function, Layer, label
from .errors import DodoLambdaError
from .files import read_json

Item = Function | Layer
TaskDict = dict[str, Any]

GROUP_DOCS = {
    "npm": "install production dependencies (npm ci --omit=dev) for the target platform",
    "package": "build the deterministic deployment zips",
    "upload": "put zips in S3 under content-addressed keys (skipped when already there)",
    "layer": "publish layer versions whose content differs from the latest published one",
    "deploy": "update (or create) the Lambda functions whose deployed code or settings differ",
    "invoke": "run a function's built zip locally in node, as Lambda would (no Docker)",
}


def _package(item: Item, build_dir: str) -> None:
    result = build.package(item, build_dir)
    print(f"{label(item)}: {build.paths(item, build_dir).zip} {result.zip_size:,} bytes,"
          f" {result.files} files, {result.unzipped_size:,} bytes unzipped")


def say(message: str) -> None:
    """Status that must be seen whatever doit's verbosity (doit captures stdout)."""
    print(message, file=sys.stderr)


def _upload(fn: Function, build_dir: str, opts: deploy.Options) -> None:
    sent = deploy.upload(fn, build_dir, opts)
    record = read_json(deploy.record_paths(fn, build_dir)["uploaded"]) or {}
    where = f"s3://{record.get('bucket')}/{record.get('key')}"
    say(f"{label(fn)}: {'uploaded to' if sent else 'already in'} {where}")


def _deploy(fn: Function, build_dir: str, opts: deploy.Options) -> None:
    plan = deploy.deploy_function(fn, build_dir, opts)
    record = read_json(deploy.record_paths(fn, build_dir)["deployed"]) or {}
    if plan.create:
        say(f"{label(fn)}: created")
    else:
        say(f"{label(fn)}: " + ("; ".join(plan.reasons) or "already up to date, nothing changed"))
    say(f"{label(fn)}: deployed {record.get('arn')} version {record.get('version')}"
        f" CodeSha256 {record.get('code_sha256')}")


def _layer(layer: Layer, build_dir: str, opts: deploy.Options, users: tuple[Function, ...]
           ) -> None:
    plan = deploy.publish_layer(layer, build_dir, opts, users)
    record = read_json(deploy.record_paths(layer, build_dir)["published"]) or {}
    verb = "published" if plan.publish else "unchanged, using"
    say(f"{label(layer)}: {verb} {record.get('arn')}")


def _plan(items: list[Item], build_dir: str, opts: deploy.Options) -> None:
    for line in deploy.plan_lines(items, build_dir, opts):
        print(line)


_STEPS: dict[str, Callable[..., Any]] = {
    "npm": npm.install, "package": _package, "upload": _upload, "deploy": _deploy,
    "layer": _layer, "plan": _plan,
    "emulator-stop": lambda build_dir: _emulator_stop(build_dir),
}


def record_matches(path: str, expected: dict[str, Any]) -> bool:
    """uptodate: the JSON record at ``path`` holds these values."""
    record = read_json(Path(path))
    return isinstance(record, dict) and all(record.get(k) == v for k, v in expected.items())


def deploy_uptodate(fn: Function, build_dir: str, target: str) -> bool:
    path = deploy.record_paths(fn, build_dir)["deployed"]
    return record_matches(str(path), {"target": target,
                                      "settings_digest": deploy.settings_digest(fn, build_dir)})


def run_step(step: str, *args: Any) -> TaskFailed | None:
    """The one doit action: run a step, turning a user's mistake into TaskFailed."""
    try:
        _STEPS[step](*args)
    except DodoLambdaError as exc:
        return TaskFailed(str(exc))
    except OSError as exc:  # disk full, permissions: the machine's problem, said plainly
        who = label(args[0]) if isinstance(args[0], (Function, Layer)) else step
        where = f" ({exc.filename})" if exc.filename else ""
        return TaskFailed(f"{who}: {exc.strerror or exc}{where}; fix that and run again")
    return None


def fail(message: str) -> TaskFailed:
    return TaskFailed(message)


def _remove_staging(item: Item, build_dir: str) -> None:
    st = npm.staging(item, build_dir)
    shutil.rmtree(st.folder, ignore_errors=True)
    st.record.unlink(missing_ok=True)


def _npm_task(item: Item, build_dir: str) -> TaskDict:
    st = npm.staging(item, build_dir)
    return {
        "basename": "npm",
        "name": item.name,
        "doc": f"{label(item)}: npm ci --omit=dev {' '.join(npm.flags(item)[1:4])}"
               f" into {st.folder}",
        "actions": [(run_step, ["npm", item, build_dir])],
        "file_dep": [str(p) for p in npm.input_files(item)],
        "targets": [str(st.record)],
        "uptodate": [(npm.is_installed, [item, build_dir])],
        "clean": [(_remove_staging, [item, build_dir])],
    }


def _package_task(item: Item, build_dir: str) -> TaskDict:
    p = build.paths(item, build_dir)
    file_dep = []
    if isinstance(item, Layer) or npm.has_dependencies(item):
        file_dep.append(str(npm.staging(item, build_dir).record))
    return {
        "basename": "package",
        "name": item.name,
        "doc": f"{label(item)}: zip {item.source} into {p.zip}",
        "actions": [(run_step, ["package", item, build_dir])],
        "file_dep": file_dep,
        "targets": [str(p.zip), str(p.manifest)],
        "uptodate": [(build.is_packaged, [item, build_dir])],
        "clean": True,
    }


def _upload_task(fn: Function, build_dir: str, opts: deploy.Options, target: str) -> TaskDict:
    p = build.paths(fn, build_dir)
    record = deploy.record_paths(fn, build_dir)["uploaded"]
    return {
        "basename": "upload",
        "name": fn.name,
        "doc": f"{label(fn)}: put {p.zip} in s3://{fn.bucket}/{fn.bucket_prefix}{fn.name}/",
        "actions": [(run_step, ["upload", fn, build_dir, opts])],
        "file_dep": [str(p.zip), str(p.manifest)],
        "targets": [str(record)],
        "uptodate": [(record_matches, [str(record), {"target": target, "bucket": fn.bucket,
                                                   "prefix": fn.bucket_prefix}])],
    }


def _layer_task(layer: Layer, build_dir: str, opts: deploy.Options, target: str,
                users: tuple[Function, ...]) -> TaskDict:
    p = build.paths(layer, build_dir)
    record = deploy.record_paths(layer, build_dir)["published"]
    return {
        "basename": "layer",
        "name": layer.name,
        "doc": f"{label(layer)}: publish {p.zip} when it differs from the latest version",
        "actions": [(run_step, ["layer", layer, build_dir, opts, users])],
        "file_dep": [str(p.zip), str(p.manifest)] + [
            str(build.paths(fn, build_dir).manifest) for fn in users],
        "targets": [str(record)],
        "uptodate": [(record_matches, [str(record), {"target": target}])],
    }


def _deploy_task(fn: Function, build_dir: str, opts: deploy.Options, target: str) -> TaskDict:
    p = build.paths(fn, build_dir)
    records = deploy.record_paths(fn, build_dir)
    file_dep = [str(p.zip), str(p.manifest)]
    if fn.bucket:
        file_dep.append(str(records["uploaded"]))
    for layer in fn.layers:
        if isinstance(layer, Layer):
            file_dep.append(str(deploy.record_paths(layer, build_dir)["published"]))
    return {
        "basename": "deploy",
        "name": fn.name,
        "doc": f"{label(fn)}: update the function when its code or settings differ",
        "actions": [(run_step, ["deploy", fn, build_dir, opts])],
        "file_dep": file_dep,
        "targets": [str(records["deployed"])],
        "uptodate": [(deploy_uptodate, [fn, build_dir, target])],
    }


def _steps(item: Any) -> tuple[str, str]:
    return ("package", "layer" if isinstance(item, Layer) else "deploy")


def _problem(item: Any, items: tuple[Any, ...], valid: list[Item]) -> str | None:
    """Why the item cannot be built, as one line (or None)."""
    if not isinstance(item, (Function, Layer)):
        return f"lambda_tasks() takes Function and Layer objects, not {item!r}"
    twin = next((v for v in valid if v.name == item.name), None)
    if twin is not None and twin.kind == item.kind:
        return f"{label(item)} is defined twice with different settings; rename one"
    if twin is not None:
        return (f"{label(item)} and {label(twin)} share a name (task names must be unique);"
                " rename one")
    if isinstance(item, Function):
        missing = [x.name for x in item.layers if isinstance(x, Layer) and x not in items]
        if missing:
            return (f"{label(item)} uses layer '{missing[0]}', which is not passed to"
                    " lambda_tasks; pass the Layer too")
    return item.problem


def _failing(basename: str, item: Any, message: str) -> TaskDict:
    return {
        "basename": basename,
        "name": getattr(item, "name", "invalid"),
        "doc": f"cannot be built: {message}",
        "actions": [(fail, [message])],
        "uptodate": [False],
    }


def lambda_tasks(*items: Item, build_dir: str = ".dodo_lambda", profile: str | None = None,
                 region: str | None = None, endpoint: str | None = None, emulator: bool = False,
                 direct_upload_limit: int = deploy.DIRECT_UPLOAD_LIMIT) -> Iterator[TaskDict]:
    """doit tasks for the given Functions and Layers::

        def task_lambda():
            yield from lambda_tasks(orders, shared)

    gives ``npm:<name>``, ``package:<name>``, ``upload:<name>`` (functions with a
    bucket), ``layer:<name>``, ``deploy:<name>``, their groups, and ``plan``.
    Paths are relative to the directory doit runs in. AWS access follows boto3's
    standard chain; ``profile``, ``region`` and ``endpoint`` override it for
    this project. ``emulator=True`` deploys to a local moto server started for
    the run instead of AWS (needs the ``local`` extra).
    """
    build_dir = str(build_dir)
    show_logs()
    opts = deploy.Options(AwsTarget(profile, region, endpoint), direct_upload_limit,
                          many=sum(isinstance(i, Function) for i in items) > 2,
                          emulator=emulator, build_dir=build_dir)
    target = deploy.target_key(opts)
    valid: list[Item] = []
    tasks: list[TaskDict] = []
    for item in items:
        if any(item is v or item == v for v in valid):
            continue  # the same item passed twice
        problem = _problem(item, items, valid)
        if problem:
            for step in _steps(item):
                failing = _failing(step, item, problem)
                while any((t["basename"], t["name"]) == (step, failing["name"]) for t in tasks):
                    failing["name"] += "-again"  # a name clash must not become doit's error
                tasks.append(failing)
            continue
        valid.append(item)
        if isinstance(item, Layer) or npm.has_dependencies(item):
            tasks.append(_npm_task(item, build_dir))
        tasks.append(_package_task(item, build_dir))
        if isinstance(item, Layer):
            users = tuple(f for f in items if isinstance(f, Function) and item in f.layers)
            tasks.append(_layer_task(item, build_dir, opts, target, users))
        else:
            if item.bucket:
                tasks.append(_upload_task(item, build_dir, opts, target))
            tasks.append(_deploy_task(item, build_dir, opts, target))
            tasks.append(_invoke_task(item, build_dir, opts))
    if emulator:
        tasks.append(_emulator_stop_task(build_dir))
    if valid:
        tasks.extend(_watch_tasks(valid, build_dir, opts))
    used = {t["basename"] for t in tasks}
    for basename, doc in GROUP_DOCS.items():
        if basename in used:
            yield {"basename": basename, "name": None, "doc": doc}
    yield from tasks
    yield {
        "basename": "plan",
        "doc": "show what deploy would change for each function and layer, and why (read-only)",
        "actions": [(run_step, ["plan", valid, build_dir, opts])],
        "task_dep": [f"package:{i.name}" for i in valid],
        "uptodate": [False],
        "verbosity": 2,
    }


# -- the local loop: invoke, the emulator, watch ------------------------------------------


class _WarningFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def show_logs() -> None:
    """The core's warnings and notes (logger "dodo_lambda") on stderr, once per process."""
    logger = logging.getLogger("dodo_lambda")
    if not any(getattr(h, "_dodo_lambda", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_WarningFormatter())
        handler._dodo_lambda = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run_invoke(fn: Function, build_dir: str, opts: deploy.Options, event: str = "",
               aws_credentials: bool = False) -> TaskFailed | None:
    """``doit invoke:<name>``: the result (or error shape) as the last line on stdout, the
    handler's logs and Lambda's REPORT line on stderr."""
    from . import invoke

    show_logs()
    who = label(fn)
    try:
        text = invoke.read_event(event, sys.stdin, who)
        aws = invoke.caller_credentials() if aws_credentials else None
        inv = invoke.for_function(fn, build_dir, region=opts.target.region, aws=aws)
        sys.stdout.flush()
        sys.stderr.flush()
        result = invoke.run(inv, text, build_dir)
    except DodoLambdaError as exc:
        return TaskFailed(str(exc))
    say(result.report_line())
    if result.ok:
        print(result.payload, flush=True)
        return None
    # doit prints a failure's message last, after "TaskFailed - taskid:invoke:NAME": the
    # error shape itself, so that the last line of stdout is Lambda's answer either way
    return TaskFailed(result.payload)


def _invoke_task(fn: Function, build_dir: str, opts: deploy.Options) -> TaskDict:
    deps = [f"package:{fn.name}"] + [f"package:{x.name}" for x in fn.layers if isinstance(x, Layer)]
    return {
        "basename": "invoke",
        "name": fn.name,
        "doc": f"{label(fn)}: run the built zip locally in node, as Lambda would"
               " (--event FILE, --event - for stdin; --aws-credentials)",
        "actions": [(run_invoke, [fn, build_dir, opts])],
        "task_dep": deps,
        "uptodate": [False],
        "verbosity": 2,
        "params": [
            {"name": "event", "long": "event", "type": str, "default": "",
             "help": "the event: a JSON file, or - to read it from stdin (default {})"},
            {"name": "aws_credentials", "long": "aws-credentials", "type": bool,
             "default": False,
             "help": "let the handler use this shell's AWS credentials (off: it gets none)"},
        ],
    }


def _emulator_stop(build_dir: str) -> None:
    from . import emulator

    stopped = emulator.stop(build_dir)
    say(f"emulator: stopped the server at {stopped.url} (pid {stopped.pid})" if stopped
        else "emulator: no server running for this project")


def _emulator_stop_task(build_dir: str) -> TaskDict:
    return {
        "basename": "emulator-stop",
        "doc": "stop this project's local AWS emulator (it forgets everything deployed to it)",
        "actions": [(run_step, ["emulator-stop", build_dir])],
        "uptodate": [False],
        "verbosity": 2,
    }


def _change_line(change: Any) -> str:
    when = time.strftime("%H:%M:%S")
    shown = ", ".join(change.paths[:3]) + (f" and {len(change.paths) - 3} more"
                                           if len(change.paths) > 3 else "")
    if change.error:
        return f"{when} {change.item}: {shown}: {change.error}"
    parts = []
    if change.unchanged:
        parts.append("zip unchanged")
    elif change.build_ms:
        parts.append(f"rebuilt in {change.build_ms:.0f} ms")
    if change.deploy_ms is not None:
        parts.append(f"{' and '.join(change.notes) or 'deployed'} in {change.deploy_ms / 1000:.2f} s")
    return f"{when} {change.item}: {shown}: {', '.join(parts)}"


def run_watch(items: tuple[Item, ...], build_dir: str, opts: deploy.Options,
              deploy: bool = True, poll: bool = False) -> TaskFailed | None:
    """``doit watch`` / ``watch:<name>``: rebuild (and redeploy) on every save, until Ctrl-C."""
    import threading

    from . import watch

    show_logs()
    stop = threading.Event()
    try:
        w = watch.Watch(items, build_dir, opts, deploy_changes=deploy)
        w.prepare()
        if deploy:  # start from what is deployed: layers first, then the functions
            for change in w.deploy_all():
                say(_change_line(change))
        names = ", ".join(label(i) for i in items)

        def ready(how: str) -> None:
            say(f"watch: watching {names} through {how}; Ctrl-C to stop")

        for batch in watch.batches(w.folders, stop, ready, poll=poll, skip=[build_dir]):
            for change in w.handle(batch):
                say(_change_line(change))
    except KeyboardInterrupt:
        say("watch: stopped")
    except DodoLambdaError as exc:
        return TaskFailed(str(exc))
    finally:
        stop.set()
    return None


_WATCH_PARAMS = [
    {"name": "deploy", "long": "deploy", "inverse": "no-deploy", "type": bool, "default": True,
     "help": "deploy each rebuilt package (--no-deploy: only rebuild the zips)"},
    {"name": "poll", "long": "poll", "type": bool, "default": False,
     "help": "poll the folders instead of using file events (network drives, containers)"},
]


def _watch_tasks(valid: list[Item], build_dir: str, opts: deploy.Options) -> list[TaskDict]:
    """``watch`` (everything) and ``watch:<name>`` (a function and its layers): plain tasks,
    not a doit group, so that ``doit watch`` is one watcher, not each in turn."""
    out = [{
        "basename": "watch",
        "doc": "rebuild and redeploy functions and layers on every save (Ctrl-C to stop)",
        "actions": [(run_watch, [tuple(valid), build_dir, opts])],
        "task_dep": [f"package:{i.name}" for i in valid],
        "uptodate": [False], "verbosity": 2, "params": _WATCH_PARAMS,
    }]
    for fn in valid:
        if isinstance(fn, Function):
            mine: tuple[Item, ...] = (fn, *[x for x in fn.layers if isinstance(x, Layer)])
            out.append({
                "basename": f"watch:{fn.name}",
                "doc": f"{label(fn)}: rebuild and redeploy on every save (Ctrl-C to stop)",
                "actions": [(run_watch, [mine, build_dir, opts])],
                "task_dep": [f"package:{i.name}" for i in mine],
                "uptodate": [False], "verbosity": 2, "params": _WATCH_PARAMS,
            })
    return out
