"""The doit adapter: turns Functions and Layers into plain task dicts.

Actions and uptodate checks are module-level callables with plain arguments so
that ``doit -n 2 -P process`` can pickle them. A user's mistake comes back as
doit's ``TaskFailed`` (one line, no traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import npm, rules, workspaces
from . import stages as staging
from .config import Function, Layer, bundled, label
from .context import AwsTarget, RunContext
from .errors import DodoLambdaError, NextStep
from .files import locked, remove_dead_temps
from .layout import BuildDir, written_folders
from .rules import DIRECT_UPLOAD_LIMIT
from .stages import Stage
from .steps import (
    DOING,
    STEPS,
    WITH_OPTIONS,
    build,
    buildcache,
    bundle,
    records,
    say,
    show_core_messages,
)

Item = Function | Layer
TaskDict = dict[str, Any]


GROUP_DOCS = {
    "npm": "install production dependencies (npm ci --omit=dev) for the target platform",
    "bundle": "bundle TypeScript/JavaScript handlers with esbuild (functions with bundle=)",
    "package": "build the deterministic deployment zips",
    "upload": "put zips in S3 under content-addressed keys (skipped when already there)",
    "layer": "publish layer versions whose content differs from the latest published one",
    "deploy": "update (or create) the Lambda functions whose deployed code or settings differ",
    "rollback": "point each function's alias back at the version before the last deploy that"
                " moved it",
    "logs": "show each function's recent log events from CloudWatch Logs (logs:NAME --since 1h"
            " --follow for one)",
    "invoke": "run a function's built zip locally in node, as Lambda would (no Docker)",
}




def _doit_command(step: NextStep) -> str:
    return f"`doit {step.step}:{step.name}`"


def run_step(step: str, args: tuple[Any, ...], task: Any) -> TaskFailed | None:
    """The one doit action: run a step, turning a user's mistake into TaskFailed (one
    line; DODO_LAMBDA_DEBUG=1 adds the traceback). ``task`` is doit's: its options (the
    task's params, e.g. ``doit plan --json``) go to the steps in WITH_OPTIONS; a step
    that returns a message failed with it."""
    show_core_messages()
    try:
        if step in WITH_OPTIONS:
            args = (*args, dict(getattr(task, "options", None) or {}))
        failed = STEPS[step](*args)
    except DodoLambdaError as exc:
        _debug(exc)
        return TaskFailed(exc.render(_commands(args)))
    except OSError as exc:  # disk full, permissions: the machine's problem, said plainly
        _debug(exc)
        who = label(args[0]) if isinstance(args[0], (Function, Layer)) else step
        where = f" ({exc.filename})" if exc.filename else ""
        return TaskFailed(f"{who}: {DOING[step]} failed: {exc.strerror or exc}{where};"
                          " fix that and run again")
    return TaskFailed(failed) if isinstance(failed, str) else None


def _debug(exc: BaseException) -> None:
    if os.environ.get("DODO_LAMBDA_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)


def _commands(args: tuple[Any, ...]) -> Callable[[NextStep], str]:
    """How a next step is said: a stage's Lambda name (orders-prod) goes by its task's
    name (``doit package:orders``)."""
    ctx = next((a for a in args if isinstance(a, RunContext)), None)
    names = ctx.task_names if ctx is not None else {}
    return lambda step: _doit_command(NextStep(step.step, names.get(step.name, step.name)))


def fail(message: str) -> TaskFailed:
    return TaskFailed(message)


def _remove_staging(item: Item, ctx: RunContext) -> None:
    layout = ctx.layout(item)
    if not layout.install_record.parent.is_dir():
        return
    # under the install lock: the npm of a killed run still writing there is waited for
    with locked(layout.install_lock, on_wait=lambda: say(
            f"{label(item)}: waiting for {layout.install_work}: another run is installing"
            " there, or the npm of a killed run still is")):
        # a killed install's folders too: they may hold the project's .npmrc
        for folder in (layout.staging, layout.install_work, layout.install_old):
            shutil.rmtree(folder, ignore_errors=True)
        layout.install_record.unlink(missing_ok=True)
        layout.local_stats.unlink(missing_ok=True)
        layout.install_state.unlink(missing_ok=True)


# a zip's and manifest's temporary files: the package step's (build.remove_stale_temps)
PACKAGE_STEPS_OWN = (".zip", ".manifest.json")


def _remove_temps(item: Item, ctx: RunContext) -> None:
    """`doit clean` of an AWS step: the temporary files killed runs left (the records,
    what happened in AWS, stay)."""
    remove_dead_temps(*written_folders(ctx.build_dir), skip=PACKAGE_STEPS_OWN)


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


def _bundle_task(fn: Function, ctx: RunContext, deps: bool) -> TaskDict:
    layout = ctx.layout(fn)
    return {
        "basename": "bundle",
        "name": fn.name,
        "doc": f"{label(fn)}: esbuild {fn.handler} from {fn.source} into {layout.bundle_out}",
        "actions": [(run_step, ["bundle", (fn, ctx)])],
        # the npm step first; whether its result changed is the bundle's own check
        "task_dep": [f"npm:{fn.name}"] if deps else [],
        "targets": [str(layout.bundle_record)],
        "uptodate": [(bundle.is_bundled, [fn, ctx])],
        "clean": [(_remove_bundle, [fn, ctx])],
        "verbosity": 2,  # its result line (see result())
    }


def _package_task(item: Item, ctx: RunContext, deps: bool) -> TaskDict:
    layout = ctx.layout(item)
    file_dep = []
    if deps:
        file_dep.append(str(layout.install_record))
    return {
        "basename": "package",
        "name": item.name,
        "doc": f"{label(item)}: zip {'the bundle of ' if bundled(item) else ''}{item.source}"
               f" into {layout.zip}",
        "actions": [(run_step, ["package", (item, ctx)])],
        "file_dep": file_dep,
        "targets": [str(layout.zip), str(layout.manifest)],
        "uptodate": [(build.is_packaged, [item, ctx])],
        "clean": [(build.clean_package, [item, ctx])],
        "task_dep": [f"bundle:{item.name}"] if bundled(item) else [],
        "verbosity": 2,  # its size and file count (see result())
    }


def _upload_task(fn: Function, ctx: RunContext) -> TaskDict:
    layout = ctx.layout(fn)
    return {
        "basename": "upload",
        "name": fn.build_name,
        "doc": f"{label(fn)}: put {layout.zip} in s3://{fn.bucket}/{fn.bucket_prefix}{fn.build_name}/",
        "actions": [(run_step, ["upload", (fn, ctx)])],
        "file_dep": [str(layout.zip), str(layout.manifest)],
        "targets": [str(layout.uploaded)],
        "uptodate": [(records.upload_is_recorded, [fn, ctx])],
        "verbosity": 2,
        "clean": [(_remove_temps, [fn, ctx])],
    }


def _layer_task(layer: Layer, ctx: RunContext, users: tuple[Function, ...]) -> TaskDict:
    layout = ctx.layout(layer)
    return {
        "basename": "layer",
        "name": layer.build_name,
        "doc": f"{label(layer)}: publish {layout.zip} when it differs from the latest version",
        "actions": [(run_step, ["layer", (layer, ctx, users)])],
        "file_dep": [str(layout.zip), str(layout.manifest)] + [
            str(ctx.layout(fn).manifest) for fn in users],
        "targets": [str(layout.published)],
        "uptodate": [(records.layer_is_recorded, [layer, ctx])],
        "teardown": [(run_step, ["summary", ((layer,), ctx, False)])],
        "verbosity": 2,  # the summary line its teardown prints
        "clean": [(_remove_temps, [layer, ctx])],
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
        "name": fn.build_name,
        "doc": f"{label(fn)}: update the function when its code or settings differ",
        "actions": [(run_step, ["deploy", (fn, ctx)])],
        "file_dep": file_dep,
        "targets": [str(layout.deployed)],
        "uptodate": [(records.deploy_is_recorded, [fn, ctx])],
        "teardown": [(run_step, ["summary", ((fn,), ctx, False)])],
        "verbosity": 2,  # the summary line its teardown prints
        "clean": [(_remove_temps, [fn, ctx])],
    }


def _rollback_task(fn: Function, ctx: RunContext) -> TaskDict:
    return {
        "basename": "rollback",
        "name": fn.build_name,
        "doc": f"{label(fn)}: point alias {fn.alias} back at the version before the last deploy"
        if fn.alias else f"{label(fn)}: has no alias to roll back",
        "actions": [(run_step, ["rollback", (fn, ctx)])],
        "uptodate": [False],
        "verbosity": 2,
    }


def _logs_task(fn: Function, ctx: RunContext) -> TaskDict:
    return {
        "basename": "logs",
        "name": fn.name,
        "doc": f"{label(fn)}: its recent log events ({rules.log_group(fn.name)}); --since 10m"
               " (s, m, h, d), --follow",
        "actions": [(run_step, ["logs", (fn, ctx)])],
        "uptodate": [False],
        "verbosity": 2,  # events as they come, on stdout
        "params": [
            {"name": "since", "long": "since", "type": str, "default": "10m",
             "help": "how far back to start: a number and a unit (s, m, h, d), e.g. 30s, 2h"},
            {"name": "follow", "long": "follow", "short": "f", "type": bool, "default": False,
             "help": "keep printing new events as they arrive (polling; Ctrl-C to stop)"},
        ],
    }


def _invoke_task(fn: Function, ctx: RunContext) -> TaskDict:
    deps = [f"package:{fn.build_name}"] + [f"package:{x.build_name}" for x in fn.layers
                                           if isinstance(x, Layer)]
    return {
        "basename": "invoke",
        "name": fn.build_name,
        "doc": f"{label(fn)}: run the built zip locally in node, as Lambda would"
               " (--event FILE, --event - for stdin; --aws-credentials)",
        "actions": [(run_step, ["invoke", (fn, ctx)])],
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


def _emulator_stop_task(ctx: RunContext) -> TaskDict:
    return {
        "basename": "emulator-stop",
        "doc": "stop this project's local AWS emulator (it forgets everything deployed to it)",
        "actions": [(run_step, ["emulator-stop", (ctx,)])],
        "uptodate": [False],
        "verbosity": 2,
    }


_WATCH_PARAMS = [
    {"name": "deploy", "long": "deploy", "inverse": "no-deploy", "type": bool, "default": True,
     "help": "deploy each rebuilt package (--no-deploy: only rebuild the zips)"},
    {"name": "poll", "long": "poll", "type": bool, "default": False,
     "help": "poll the folders instead of using file events (network drives, containers)"},
]


def _watch_tasks(valid: list[Item], deploys: list[Item], ctx: RunContext) -> list[TaskDict]:
    """``watch`` (everything) and ``watch:<name>`` (a function and its layers): plain tasks,
    not a doit group, so that ``doit watch`` is one watcher, not each in turn. The items
    are built as they are and deployed as the stage's ``deploys``."""
    out = [{
        "basename": "watch",
        "doc": "rebuild and redeploy functions and layers on every save (Ctrl-C to stop)",
        "actions": [(run_step, ["watch", (tuple(valid), ctx, tuple(deploys))])],
        "task_dep": [f"package:{i.name}" for i in valid],
        "uptodate": [False], "verbosity": 2, "params": _WATCH_PARAMS,
    }]
    # the layers as built (lambda_tasks gives a layer its users' architecture)
    layers = {i.name: i for i in valid if isinstance(i, Layer)}
    for fn in valid:
        if isinstance(fn, Function):
            mine: tuple[Item, ...] = (fn, *[layers[x.name] for x in fn.layers
                                            if isinstance(x, Layer)])
            out.append({
                "basename": f"watch:{fn.name}",
                "doc": f"{label(fn)}: rebuild and redeploy on every save (Ctrl-C to stop)",
                "actions": [(run_step, ["watch", (mine, ctx, tuple(deploys))])],
                "task_dep": [f"package:{i.name}" for i in mine],
                "uptodate": [False], "verbosity": 2, "params": _WATCH_PARAMS,
            })
    return out


def _steps(item: Any) -> tuple[str, ...]:
    if isinstance(item, Layer):
        return ("package", "layer")
    if isinstance(item, Function) and item.bundle is not None and item.bundle is not False:
        return ("bundle", "package", "deploy", "rollback", "logs")
    return ("package", "deploy", "rollback", "logs")


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
             ctx: RunContext) -> str | None:
    """Why the item cannot be built, as one line (or None)."""
    if not isinstance(item, (Function, Layer)):
        return f"lambda_tasks() takes Function and Layer objects, not {item!r}"
    own = item.problem
    if own:
        return own
    build_dir = str(ctx.build_dir)
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
    # a pnpm/yarn lock, or a folder inside a workspaces root that is not a workspace:
    # said before anything is built
    return workspaces.problem(item, ctx)


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


def _role_name_problem(role_name: object) -> str | None:
    if role_name is None or (isinstance(role_name, str) and rules.ROLE_RE.fullmatch(role_name)
                             and not role_name.startswith("arn:")):
        return None
    return (f"lambda_tasks(role_name={role_name!r}) is not an IAM role name (1-64 letters,"
            " digits and +=,.@_-); fix role_name=")


def _lambda_group(name: str, used: set[str]) -> TaskDict:
    """``doit lambda``: what the README's ``task_lambda`` promises, packaging and
    deploying everything (doit names groups after the tasks' basenames, not after the
    task_ function that yields them, so without this ``doit lambda`` is not a task)."""
    return {
        "basename": name,
        "doc": "package and deploy every function and layer (like `doit deploy`, and layers"
               " no function uses)",
        "actions": None,
        "task_dep": [b for b in ("package", "upload", "layer", "deploy") if b in used],
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


def _cached(task: TaskDict, item: Item, ctx: RunContext, deps: bool) -> TaskDict:
    """With a shared build cache the npm, bundle and package steps are decided by their
    uptodate checks alone (which cover the files doit would watch): a fresh checkout
    whose package is in the cache has no install record, bundle or doit state to
    look at, and must not run npm to get one (see buildcache)."""
    step = task["basename"]
    if step == "npm":
        task.update(file_dep=[], targets=[], uptodate=[(buildcache.npm_is_current, [item, ctx])])
    elif step == "bundle":
        task.update(targets=[], uptodate=[(buildcache.bundle_is_current, [item, ctx])])
    elif step == "package":
        if deps and not bundled(item):
            task["task_dep"] = [*task["task_dep"], f"npm:{item.name}"]  # was the file_dep's
        task.update(file_dep=[], uptodate=[(buildcache.is_packaged, [item, ctx])],
                    clean=[*task["clean"], (buildcache.forget, [item, ctx])])
    return task


def _project(ctx: RunContext, chosen: Sequence[Stage] | None, cache: tuple[Any, Any, Any]
             ) -> tuple[Stage | None, str | None]:
    """Set the run's stage (from ``doit ... stage=NAME``, the first by default) and
    build cache on ``ctx``; what is wrong with them, as one line."""
    from doit import get_var

    base = ctx.target
    stage = None
    if chosen is not None:
        problem = staging.problem(chosen)
        if problem:
            return None, problem
        stage, problem = staging.choose(list(chosen), get_var("stage"))
        if stage is None:
            return None, problem
        ctx.stage = stage.name
        ctx.target = AwsTarget(stage.profile or base.profile, stage.region or base.region,
                               stage.endpoint or base.endpoint)
    if cache[0] is None:
        return stage, None
    from . import cachestore  # only with a cache: it is not small to load

    ctx.cache, problem = cachestore.settings(*cache, base)
    return stage, problem


def lambda_tasks(*items: Item, build_dir: str = ".dodo_lambda", profile: str | None = None,
                 region: str | None = None, endpoint: str | None = None, emulator: bool = False,
                 direct_upload_limit: int = DIRECT_UPLOAD_LIMIT, verify: bool = False,
                 role_name: str | None = None, group: str | None = "lambda",
                 stages: Sequence[Stage] | None = None, cache_bucket: str | None = None,
                 cache_prefix: str | None = None, cache_read_only: bool = False,
                 ) -> Iterator[TaskDict]:
    """doit tasks for the given Functions and Layers::

        def task_lambda():
            yield from lambda_tasks(orders, shared)

    gives ``npm:<name>``, ``bundle:<name>`` (functions with ``bundle=``),
    ``package:<name>``, ``upload:<name>`` (functions with a bucket), ``layer:<name>``,
    ``deploy:<name>``, ``rollback:<name>``, ``logs:<name>`` (``--since``, ``--follow``),
    ``invoke:<name>`` (``--event``), their groups, ``plan`` (``--json``, ``--check``),
    ``watch`` and ``watch:<name>`` (``--no-deploy``, ``--poll``), ``emulator-stop`` (with
    ``emulator=True``) and ``group`` (default ``lambda``: ``doit lambda`` packages and
    deploys everything; None for no such task).
    Paths are relative to the directory doit runs in. AWS access follows boto3's
    standard chain; ``profile``, ``region`` and ``endpoint`` override it for
    this project. ``emulator=True`` deploys to the project's local moto server
    instead of AWS (started when needed and kept running between runs; needs the
    ``local`` extra). ``verify=True`` (or
    DODO_LAMBDA_VERIFY=1) makes every deploy task compare with AWS and repair what
    differs, even when the local records say up to date (for CI). A function to create
    without ``role=`` runs as a role dodo_lambda creates: ``dodo-lambda-<function>``, or
    ``role_name`` for all of them (see iam.py).

    ``stages=[Stage(...), ...]``: deploy targets, chosen with ``doit deploy
    stage=NAME`` (the first by default); the build is shared, the upload, layer and
    deploy records are kept per stage. ``cache_bucket=`` (with ``cache_prefix=``, by default
    ``dodo-lambda-cache/``,
    ``cache_read_only=``): a shared build cache in S3, asked before anything is built
    and filled after (see README, "CI and teams").
    """
    show_core_messages()
    ctx = RunContext(Path(build_dir), AwsTarget(profile, region, endpoint), emulator=emulator,
                     direct_limit=direct_upload_limit, verify=verify, role_name=role_name,
                     verify_staging=verify_staging())
    stage, project_problem = _project(ctx, stages, (cache_bucket, cache_prefix, cache_read_only))
    role_name_problem = _role_name_problem(role_name)
    _check_doit_backend(ctx)
    # what killed runs left half-written
    remove_dead_temps(*written_folders(ctx.build_dir), skip=PACKAGE_STEPS_OWN)
    deployed: list[Item] = []  # what the stage deploys of each valid item (the item itself)
    valid: list[Item] = []
    tasks: list[TaskDict] = []
    problems: list[tuple[str, str, str]] = []  # (kind, name, why) of items not taken
    for item in items:
        if any(item is v or item == v for v in valid):
            continue  # the same item passed twice
        problem = project_problem or _problem(item, items, valid, ctx)
        if problem is None and isinstance(item, Function) and role_name_problem:
            problem = f"{label(item)}: {role_name_problem}"
        if problem:
            problems.append((getattr(item, "kind", "item"), str(getattr(item, "name", "?")),
                             problem))
            for step in _steps(item):
                failing = _failing(step, item, problem)
                while any((t["basename"], t["name"]) == (step, failing["name"]) for t in tasks):
                    failing["name"] += "-again"  # a name clash must not become doit's error
                tasks.append(failing)
            continue
        if isinstance(item, Layer):
            item = _built_for_users(item, items)
        valid.append(item)
        built = []
        deps = npm.has_dependencies(item)  # package.json read once for the item's tasks
        if deps:
            built.append(_npm_task(item, ctx))
        if bundled(item):
            built.append(_bundle_task(item, ctx, deps))
        built.append(_package_task(item, ctx, deps))
        tasks += [_cached(t, item, ctx, deps) for t in built] if ctx.cache is not None else built
        dep = staging.staged(item, stage)  # the item itself without stages
        problem = staging.staged_problem(item, dep, stage)
        if problem:
            problems.append((item.kind, dep.name, problem))
            tasks += [_failing(step, item, problem) for step in _steps(item)
                      if step not in ("bundle", "package")]
            continue
        deployed.append(dep)
        ctx.task_names[dep.name] = item.name
        if isinstance(dep, Layer) and isinstance(item, Layer):
            users = tuple(f for f in (staging.staged(u, stage) for u in _users(item, items))
                          if isinstance(f, Function))
            tasks.append(_layer_task(dep, ctx, users))
        elif isinstance(dep, Function):
            if dep.bucket:
                tasks.append(_upload_task(dep, ctx))
            tasks.append(_deploy_task(dep, ctx))
            tasks.append(_rollback_task(dep, ctx))
            tasks.append(_logs_task(dep, ctx))
            tasks.append(_invoke_task(dep, ctx))
    if emulator:
        tasks.append(_emulator_stop_task(ctx))
    if valid:
        tasks.extend(_watch_tasks(valid, deployed, ctx))
    ctx.items = tuple(deployed)
    used = {t["basename"] for t in tasks}
    for basename, doc in GROUP_DOCS.items():
        if basename in used:
            group_task: TaskDict = {"basename": basename, "name": None, "doc": doc}
            if basename == "deploy":  # the run's summary, after every other task
                group_task["teardown"] = [(run_step, ["summary", (tuple(deployed), ctx, True)])]
                group_task["verbosity"] = 2
            yield group_task
    if group and group not in used | {"plan"}:
        yield _lambda_group(group, used)
    yield from tasks
    yield {
        "basename": "plan",
        "doc": "show what deploy would change for each function and layer, and why (read-only;"
               " --json: as JSON on stdout; --check: exit nonzero when anything would change)",
        "actions": [(run_step, ["plan", (deployed, ctx, tuple(problems))])],
        "task_dep": [f"package:{i.name}" for i in valid],
        "uptodate": [False],
        "verbosity": 2,
        "params": [
            {"name": "json", "long": "json", "type": bool, "default": False,
             "help": "print the plan as JSON (one object per function and layer) on stdout"},
            {"name": "check", "long": "check", "type": bool, "default": False,
             "help": "exit nonzero when deploy would change anything (a CI gate)"},
        ],
    }


# -- doit's own state: only its sqlite3 backend survives concurrent use -------------


def _doit_run() -> tuple[Any, str | None, int]:
    """doit's dependency manager, backend name and -n of the command loading this
    dodo.py: the command's options as doit resolved them (command line over
    DOIT_CONFIG), found on the stack, with doit's Globals registry for the manager.
    (None, None, 0) when not loaded by a doit command."""
    from doit import Globals

    frame = sys._getframe(1)
    while frame is not None:
        params = frame.f_locals.get("params")
        if frame.f_code.co_name == "execute" and isinstance(params, dict) and "backend" in params:
            return Globals.dep_manager, str(params["backend"]), int(params.get("num_process") or 0)
        frame = frame.f_back  # type: ignore[assignment]
    return None, None, 0


def _check_doit_backend(ctx: RunContext) -> None:
    """Warn once per doit command when doit's state is kept by a backend other than
    sqlite3 while doit runs in parallel (-n > 1) or another doit process of this project
    runs: dbm and json lose or corrupt .doit.db then (seen in testing)."""
    manager, backend, jobs = _doit_run()
    if manager is None or backend in (None, "sqlite3") or \
            getattr(manager, "_dodo_lambda_checked", False):
        return
    manager._dodo_lambda_checked = True
    others = _other_doit_running(BuildDir(ctx.build_dir).doit_processes_lock)
    if jobs > 1 or others:
        why = f"-n {jobs}" if jobs > 1 else "another doit process runs in this project"
        logging.getLogger("dodo_lambda").warning(
            "doit keeps its state with the %r backend and %s: only sqlite3 survives concurrent"
            " use (dbm and json lose or corrupt the state file); set DOIT_CONFIG ="
            ' {"backend": "sqlite3"} in dodo.py', backend, why)


def _other_doit_running(path: Path) -> bool:
    """Whether another process holds ``path``'s presence lock, which this process then
    holds (shared) until it exits. POSIX record locks belong to the process, so calls
    in the same process never see each other; the descriptor stays open on purpose."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        others = False
    except OSError:
        others = True
    with contextlib.suppress(OSError):  # busy: another process checking right now
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return others
