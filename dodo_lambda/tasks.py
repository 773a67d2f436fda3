"""The doit adapter: turns Functions and Layers into plain task dicts.

Actions and uptodate checks are module-level callables with plain arguments so
that ``doit -n 2 -P process`` can pickle them. A user's mistake comes back as
doit's ``TaskFailed`` (one line, no traceback).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import npm, rules
from .aws import AwsTarget
from .config import Function, Layer, label
from .context import RunContext
from .errors import DodoLambdaError, NextStep
from .lambdas import DIRECT_UPLOAD_LIMIT

Item = Function | Layer
TaskDict = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _Deferred:
    """A core function, imported when first called (picklable, for -P process)."""

    module: str
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module = importlib.import_module(f"{__package__}.{self.module}")
        return getattr(module, self.name)(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class _Later:
    """Stands for a core module here: ``build.package`` is a ``_Deferred``, so that
    `doit list` and a no-op run never load the zip writer, the deploy and AWS code or
    esbuild's driver when they do not run them (Python start-up is most of a no-op)."""

    module: str

    def __getattr__(self, name: str) -> _Deferred:
        return _Deferred(self.module, name)


build, bundle, deploy = _Later("build"), _Later("bundle"), _Later("deploy")

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


def _plan(items: list[Item], ctx: RunContext, problems: tuple[str, ...] = ()) -> None:
    for line in build.left_out_lines(items, ctx):
        print(line)
    report = deploy.plan_report(items, ctx)
    for line in [*(f"{p} (deploy would refuse)" for p in problems), *report.lines]:
        print(line)
    refused = [*problems, *report.refused]
    if refused:
        raise DodoLambdaError(f"plan: deploy would refuse {len(refused)} item(s): "
                              + " | ".join(refused))


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
    layout.install_state.unlink(missing_ok=True)


def _npm_task(item: Item, ctx: RunContext) -> TaskDict:
    layout = ctx.layout(item)
    return {
        "basename": "npm",
        "name": item.name,
        "doc": f"{label(item)}: npm ci --omit=dev {' '.join(npm.flags(item)[1:4])}"
               f" into {layout.staging}",
        "actions": [(run_step, ["npm", (item, ctx)])],
        "file_dep": [str(p) for p in npm.input_files(item)],
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
    if npm.has_dependencies(item):
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


def _yes(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def verify_staging() -> bool:
    """Whether this run checks every staged file (not only the staged trees' folder
    stamps): ``doit ... verify_staging=1``, ``DODO_LAMBDA_VERIFY_STAGING=1``, or a CI
    run (``CI`` set, as GitHub Actions, GitLab CI, CircleCI and others set it)."""
    from doit import get_var

    return any(_yes(v) for v in (get_var("verify_staging"),
                                 os.environ.get("DODO_LAMBDA_VERIFY_STAGING"),
                                 os.environ.get("CI")))


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
                     list_functions=sum(isinstance(i, Function) for i in items) > 2,
                     verify_staging=verify_staging())
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
            tasks.append(_npm_task(item, ctx))
        if isinstance(item, Function) and item.bundle_options is not None:
            tasks.append(_bundle_task(item, ctx))
        tasks.append(_package_task(item, ctx))
        if isinstance(item, Layer):
            tasks.append(_layer_task(item, ctx, _users(item, items)))
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
        "actions": [(run_step, ["plan", (valid, ctx, tuple(problems))])],
        "task_dep": [f"package:{i.name}" for i in valid],
        "uptodate": [False],
        "verbosity": 2,
    }
