"""The doit adapter: turns Functions and Layers into plain task dicts.

Actions and uptodate checks are module-level callables with plain arguments so
that ``doit -n 2 -P process`` can pickle them. A user's mistake comes back as
doit's ``TaskFailed`` (one line, no traceback).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import build, deploy, npm, rules
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


def _plan(items: list[Item], build_dir: str, opts: deploy.Options,
          problems: tuple[str, ...] = ()) -> None:
    report = deploy.plan_report(items, build_dir, opts)
    for line in [*(f"{p} (deploy would refuse)" for p in problems), *report.lines]:
        print(line)
    refused = [*problems, *report.refused]
    if refused:
        raise DodoLambdaError(f"plan: deploy would refuse {len(refused)} item(s): "
                              + " | ".join(refused))


_STEPS: dict[str, Callable[..., Any]] = {
    "npm": npm.install, "package": _package, "upload": _upload, "deploy": _deploy,
    "layer": _layer, "plan": _plan,
}


def record_matches(path: str, expected: dict[str, Any]) -> bool:
    """uptodate: the JSON record at ``path`` holds these values."""
    record = read_json(Path(path))
    return isinstance(record, dict) and all(record.get(k) == v for k, v in expected.items())


def deploy_uptodate(fn: Function, build_dir: str, target: str) -> bool:
    path = deploy.record_paths(fn, build_dir)["deployed"]
    return record_matches(str(path), {"target": target,
                                      "settings_digest": deploy.settings_digest(fn, build_dir)})


class _StderrHandler(logging.Handler):
    """The core's log lines on stderr (looked up at each line: doit swaps it while
    capturing), warnings marked as such."""

    def emit(self, record: logging.LogRecord) -> None:
        mark = "warning: " if record.levelno >= logging.WARNING else ""
        try:
            print(mark + record.getMessage(), file=sys.stderr)
        except Exception:
            self.handleError(record)


def show_log() -> None:
    """Show dodo_lambda's INFO and WARNING lines (once per process)."""
    logger = logging.getLogger("dodo_lambda")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def run_step(step: str, *args: Any) -> TaskFailed | None:
    """The one doit action: run a step, turning a user's mistake into TaskFailed."""
    show_log()
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
    if npm.has_dependencies(item):
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


def _users(layer: Layer, items: tuple[Any, ...]) -> tuple[Function, ...]:
    return tuple(f for f in items if isinstance(f, Function) and layer in f.layers)


def _fit(layer: Layer, items: tuple[Any, ...]) -> rules.LayerFit:
    # a user with an invalid architecture reports that itself
    users = [(f.name, f.runtime, f.architecture) for f in _users(layer, items)
             if rules.architecture_problem(f.architecture) is None]
    return rules.layer_fit(layer.name, layer.runtimes, layer.architectures, users)


def _built_for_users(layer: Layer, items: tuple[Any, ...]) -> Layer:
    """The layer as it is built: without architectures= it takes its users' one."""
    if layer.architectures:
        return layer
    built = dataclasses.replace(layer)
    object.__setattr__(built, "_users_architecture", _fit(layer, items).architecture)
    return built


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _problem(item: Any, items: tuple[Any, ...], valid: list[Item],
             build_dir: str = ".dodo_lambda") -> str | None:
    """Why the item cannot be built, as one line (or None)."""
    if not isinstance(item, (Function, Layer)):
        return f"lambda_tasks() takes Function and Layer objects, not {item!r}"
    own = item.problem
    if own:
        return own
    if _same_folder(build_dir, item.source):
        return (f"{label(item)}: build_dir={build_dir!r} is its source folder, so the zip"
                " would pack its own build output; use a folder inside it (the default"
                " '.dodo_lambda') or outside it")
    if isinstance(item, Layer):
        fit = _fit(item, items)
        if fit.problem:
            return fit.problem
    else:
        for layer in item.layers:
            if isinstance(layer, Layer) and not layer.problem:
                fit = _fit(layer, items)
                if fit.problem:
                    return f"{label(item)}: {fit.problem}"
                if item.name in fit.misfits:
                    return f"{label(item)} {fit.misfits[item.name]}"
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
    return None


def _failing(basename: str, item: Any, message: str) -> TaskDict:
    name = getattr(item, "name", None)
    return {
        "basename": basename,
        # a name that is not a string (None) would make doit take this for a group
        "name": name if isinstance(name, str) and name else "invalid",
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
    opts = deploy.Options(AwsTarget(profile, region, endpoint), direct_upload_limit,
                          many=sum(isinstance(i, Function) for i in items) > 2,
                          emulator=emulator)
    target = deploy.target_key(opts)
    valid: list[Item] = []
    tasks: list[TaskDict] = []
    problems: list[str] = []
    for item in items:
        if any(item is v or item == v for v in valid):
            continue  # the same item passed twice
        problem = _problem(item, items, valid, build_dir)
        if problem:
            problems.append(problem)
            for step in _steps(item):
                failing = _failing(step, item, problem)
                while any((t["basename"], t["name"]) == (step, failing["name"]) for t in tasks):
                    failing["name"] += "-again"  # a name clash must not become doit's error
                tasks.append(failing)
            continue
        if isinstance(item, Layer):
            item = _built_for_users(item, items)
        valid.append(item)
        if npm.has_dependencies(item):
            tasks.append(_npm_task(item, build_dir))
        tasks.append(_package_task(item, build_dir))
        if isinstance(item, Layer):
            tasks.append(_layer_task(item, build_dir, opts, target, _users(item, items)))
        else:
            if item.bucket:
                tasks.append(_upload_task(item, build_dir, opts, target))
            tasks.append(_deploy_task(item, build_dir, opts, target))
    used = {t["basename"] for t in tasks}
    for basename, doc in GROUP_DOCS.items():
        if basename in used:
            yield {"basename": basename, "name": None, "doc": doc}
    yield from tasks
    yield {
        "basename": "plan",
        "doc": "show what deploy would change for each function and layer, and why (read-only)",
        "actions": [(run_step, ["plan", valid, build_dir, opts, tuple(problems)])],
        "task_dep": [f"package:{i.name}" for i in valid],
        "uptodate": [False],
        "verbosity": 2,
    }
