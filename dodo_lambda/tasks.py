"""The doit adapter: turns Functions and Layers into plain task dicts.

Actions and uptodate checks are module-level callables with plain arguments so
that ``doit -n 2 -P process`` can pickle them. A user's mistake comes back as
doit's ``TaskFailed`` (one line, no traceback).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import build, bundle, deploy, npm, workspaces
from .aws import AwsTarget
from .config import Function, Layer, label
from .context import RunContext
from .errors import DodoLambdaError, NextStep
from .lambdas import DIRECT_UPLOAD_LIMIT

Item = Function | Layer
TaskDict = dict[str, Any]

GROUP_DOCS = {
    "npm": "install production dependencies (npm ci --omit=dev) for the target platform",
    "bundle": "bundle TypeScript/JavaScript handlers with esbuild (functions with bundle=)",
    "package": "build the deterministic deployment zips",
    "upload": "put zips in S3 under content-addressed keys (skipped when already there)",
    "layer": "publish layer versions whose content differs from the latest published one",
    "deploy": "update (or create) the Lambda functions whose deployed code or settings differ",
}
# What each step was doing, for a machine's error (disk full, permissions).
_DOING = {"npm": "installing dependencies", "bundle": "bundling", "package": "writing the package",
          "upload": "uploading", "deploy": "deploying", "layer": "publishing the layer",
          "plan": "planning"}


# -- output: the core reports (results, logging), the adapter prints -----------------


def _bundle(fn: Function, ctx: RunContext) -> None:
    result = bundle.bundle(fn, ctx)
    out = ctx.layout(fn).bundle_out
    files = ", ".join(f"{out / rel} {size:,} bytes" for rel, size in result.outputs.items())
    shipped = ", ".join(f.removeprefix("node_modules/") for f in result.externals) or "none"
    print(f"{label(fn)}: bundled {result.entry} with esbuild {result.esbuild.version}"
          f" ({result.esbuild.origin}): {files}; shipped in node_modules: {shipped}")


def say(message: str) -> None:
    """Status that must be seen whatever doit's verbosity (doit captures stdout)."""
    print(message, file=sys.stderr)


class _Stderr(logging.Handler):
    """The core's warnings and progress, on the stderr doit gives the running action
    (looked up per line: doit swaps it to capture a task's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"warning: {text}"
            print(text, file=sys.stderr, flush=True)
        except Exception:  # a broken stream must not fail the task
            self.handleError(record)


def show_core_messages() -> None:
    logger = logging.getLogger("dodo_lambda")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _doit_command(step: NextStep) -> str:
    return f"`doit {step.step}:{step.name}`"


def _package(item: Item, ctx: RunContext) -> None:
    result = build.package(item, ctx)
    print(f"{label(item)}: {ctx.layout(item).zip} {result.zip_size:,} bytes,"
          f" {result.files} files, {result.unzipped_size:,} bytes unzipped")


def _upload(fn: Function, ctx: RunContext) -> None:
    result = deploy.upload(fn, ctx)
    if result is not None:
        where = f"s3://{result.bucket}/{result.key}"
        say(f"{label(fn)}: {'uploaded to' if result.sent else 'already in'} {where}")


def _deploy(fn: Function, ctx: RunContext) -> None:
    result = deploy.deploy_function(fn, ctx)
    plan = result.plan
    if plan.create:
        say(f"{label(fn)}: created")
    else:
        say(f"{label(fn)}: " + ("; ".join(plan.reasons) or "already up to date, nothing changed"))
    say(f"{label(fn)}: deployed {result.arn} version {result.version}"
        f" CodeSha256 {result.code_sha256}")


def _layer(layer: Layer, ctx: RunContext, users: tuple[Function, ...]) -> None:
    result = deploy.publish_layer(layer, ctx, users)
    verb = "published" if result.plan.publish else "unchanged, using"
    say(f"{label(layer)}: {verb} {result.arn}")


def _plan(items: list[Item], ctx: RunContext) -> None:
    for line in build.left_out_lines(items, ctx):
        print(line)
    for line in deploy.plan_lines(items, ctx):
        print(line)


_STEPS: dict[str, Callable[..., Any]] = {
    "npm": npm.install, "bundle": _bundle, "package": _package, "upload": _upload,
    "deploy": _deploy, "layer": _layer, "plan": _plan,
}


def run_step(step: str, args: tuple[Any, ...], task: Any) -> TaskFailed | None:
    """The one doit action: run a step, turning a user's mistake into TaskFailed (one
    line; DODO_LAMBDA_DEBUG=1 adds the traceback). ``task`` is doit's (unused but
    named, so doit passes it)."""
    show_core_messages()
    try:
        _STEPS[step](*args)
    except DodoLambdaError as exc:
        _debug(exc)
        return TaskFailed(exc.render(_doit_command))
    except OSError as exc:  # disk full, permissions: the machine's problem, said plainly
        _debug(exc)
        who = label(args[0]) if isinstance(args[0], (Function, Layer)) else step
        where = f" ({exc.filename})" if exc.filename else ""
        return TaskFailed(f"{who}: {_DOING[step]} failed: {exc.strerror or exc}{where};"
                          " fix that and run again")
    return None


def _debug(exc: BaseException) -> None:
    if os.environ.get("DODO_LAMBDA_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)


def fail(message: str) -> TaskFailed:
    return TaskFailed(message)


def _remove_staging(item: Item, ctx: RunContext) -> None:
    layout = ctx.layout(item)
    # a killed install's folders too: they may hold the project's .npmrc
    for folder in (layout.staging, layout.install_work, layout.install_old):
        shutil.rmtree(folder, ignore_errors=True)
    layout.install_record.unlink(missing_ok=True)
    layout.local_stats.unlink(missing_ok=True)


def _npm_task(item: Item, ctx: RunContext) -> TaskDict:
    layout = ctx.layout(item)
    return {
        "basename": "npm",
        "name": item.name,
        "doc": f"{label(item)}: npm ci --omit=dev {' '.join(npm.flags(item)[1:4])}"
               f" into {layout.staging}",
        "actions": [(run_step, ["npm", (item, ctx)])],
        "file_dep": [str(p) for p in npm.input_files(item, ctx)],
        "targets": [str(layout.install_record)],
        "uptodate": [(npm.is_installed, [item, ctx])],
        "clean": [(_remove_staging, [item, ctx])],
    }


def _remove_bundle(fn: Function, ctx: RunContext) -> None:
    layout = ctx.layout(fn)
    shutil.rmtree(layout.bundle_folder, ignore_errors=True)
    layout.bundle_record.unlink(missing_ok=True)


def _bundle_task(fn: Function, ctx: RunContext) -> TaskDict:
    layout = ctx.layout(fn)
    return {
        "basename": "bundle",
        "name": fn.name,
        "doc": f"{label(fn)}: esbuild {fn.handler} from {fn.source} into {layout.bundle_out}",
        "actions": [(run_step, ["bundle", (fn, ctx)])],
        # the npm step first; whether its result changed is the bundle's own check
        "task_dep": [f"npm:{fn.name}"] if npm.has_dependencies(fn) else [],
        "targets": [str(layout.bundle_record)],
        "uptodate": [(bundle.is_bundled, [fn, ctx])],
        "clean": [(_remove_bundle, [fn, ctx])],
    }


def _bundled(item: Any) -> bool:
    return isinstance(item, Function) and item.bundle_options is not None


def _package_task(item: Item, ctx: RunContext) -> TaskDict:
    layout = ctx.layout(item)
    file_dep = []
    if isinstance(item, Layer) or npm.has_dependencies(item):
        file_dep.append(str(layout.install_record))
    return {
        "basename": "package",
        "name": item.name,
        "doc": f"{label(item)}: zip {'the bundle of ' if _bundled(item) else ''}{item.source}"
               f" into {layout.zip}",
        "actions": [(run_step, ["package", (item, ctx)])],
        "file_dep": file_dep,
        "targets": [str(layout.zip), str(layout.manifest)],
        "uptodate": [(build.is_packaged, [item, ctx])],
        "clean": [(build.clean_package, [item, ctx])],
        "task_dep": [f"bundle:{item.name}"] if _bundled(item) else [],
    }


def _upload_task(fn: Function, ctx: RunContext) -> TaskDict:
    layout = ctx.layout(fn)
    return {
        "basename": "upload",
        "name": fn.name,
        "doc": f"{label(fn)}: put {layout.zip} in s3://{fn.bucket}/{fn.bucket_prefix}{fn.name}/",
        "actions": [(run_step, ["upload", (fn, ctx)])],
        "file_dep": [str(layout.zip), str(layout.manifest)],
        "targets": [str(layout.uploaded)],
        "uptodate": [(deploy.upload_is_recorded, [fn, ctx])],
    }


def _layer_task(layer: Layer, ctx: RunContext, users: tuple[Function, ...]) -> TaskDict:
    layout = ctx.layout(layer)
    return {
        "basename": "layer",
        "name": layer.name,
        "doc": f"{label(layer)}: publish {layout.zip} when it differs from the latest version",
        "actions": [(run_step, ["layer", (layer, ctx, users)])],
        "file_dep": [str(layout.zip), str(layout.manifest)] + [
            str(ctx.layout(fn).manifest) for fn in users],
        "targets": [str(layout.published)],
        "uptodate": [(deploy.layer_is_recorded, [layer, ctx])],
    }


def _deploy_task(fn: Function, ctx: RunContext) -> TaskDict:
    layout = ctx.layout(fn)
    file_dep = [str(layout.zip), str(layout.manifest)]
    if fn.bucket:
        file_dep.append(str(layout.uploaded))
    for layer in fn.layers:
        if isinstance(layer, Layer):
            file_dep.append(str(ctx.layout(layer).published))
    return {
        "basename": "deploy",
        "name": fn.name,
        "doc": f"{label(fn)}: update the function when its code or settings differ",
        "actions": [(run_step, ["deploy", (fn, ctx)])],
        "file_dep": file_dep,
        "targets": [str(layout.deployed)],
        "uptodate": [(deploy.deploy_is_recorded, [fn, ctx])],
    }


def _steps(item: Any) -> tuple[str, ...]:
    if isinstance(item, Function) and item.bundle is not None and item.bundle is not False:
        return ("bundle", "package", "deploy")
    return ("package", "layer" if isinstance(item, Layer) else "deploy")


def _problem(item: Any, items: tuple[Any, ...], valid: list[Item],
             ctx: RunContext | None = None) -> str | None:
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
    # a pnpm/yarn lock, or a folder inside a workspaces root that is not a workspace:
    # said before anything is built
    return item.problem or workspaces.problem(item, ctx)


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
                 direct_upload_limit: int = DIRECT_UPLOAD_LIMIT) -> Iterator[TaskDict]:
    """doit tasks for the given Functions and Layers::

        def task_lambda():
            yield from lambda_tasks(orders, shared)

    gives ``npm:<name>``, ``bundle:<name>`` (functions with ``bundle=``),
    ``package:<name>``, ``upload:<name>`` (functions with a bucket), ``layer:<name>``,
    ``deploy:<name>``, their groups, and ``plan``.
    Paths are relative to the directory doit runs in. AWS access follows boto3's
    standard chain; ``profile``, ``region`` and ``endpoint`` override it for
    this project. ``emulator=True`` deploys to a local moto server started for
    the run instead of AWS (needs the ``local`` extra).
    """
    show_core_messages()
    ctx = RunContext(Path(build_dir), AwsTarget(profile, region, endpoint), emulator=emulator,
                     direct_limit=direct_upload_limit,
                     list_functions=sum(isinstance(i, Function) for i in items) > 2)
    valid: list[Item] = []
    tasks: list[TaskDict] = []
    for item in items:
        if any(item is v or item == v for v in valid):
            continue  # the same item passed twice
        problem = _problem(item, items, valid, ctx)
        if problem:
            for step in _steps(item):
                failing = _failing(step, item, problem)
                while any((t["basename"], t["name"]) == (step, failing["name"]) for t in tasks):
                    failing["name"] += "-again"  # a name clash must not become doit's error
                tasks.append(failing)
            continue
        valid.append(item)
        if isinstance(item, Layer) or npm.has_dependencies(item):
            tasks.append(_npm_task(item, ctx))
        if isinstance(item, Function) and item.bundle_options is not None:
            tasks.append(_bundle_task(item, ctx))
        tasks.append(_package_task(item, ctx))
        if isinstance(item, Layer):
            users = tuple(f for f in items if isinstance(f, Function) and item in f.layers)
            tasks.append(_layer_task(item, ctx, users))
        else:
            if item.bucket:
                tasks.append(_upload_task(item, ctx))
            tasks.append(_deploy_task(item, ctx))
    used = {t["basename"] for t in tasks}
    for basename, doc in GROUP_DOCS.items():
        if basename in used:
            yield {"basename": basename, "name": None, "doc": doc}
    yield from tasks
    yield {
        "basename": "plan",
        "doc": "show what deploy would change for each function and layer, and why (read-only)",
        "actions": [(run_step, ["plan", (valid, ctx)])],
        "task_dep": [f"package:{i.name}" for i in valid],
        "uptodate": [False],
        "verbosity": 2,
    }
