"""The doit adapter: turns Functions and Layers into plain task dicts.

Actions and uptodate checks are module-level callables with plain arguments so
that ``doit -n 2 -P process`` can pickle them. A user's mistake comes back as
doit's ``TaskFailed`` (one line, no traceback).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import build, npm
from .config import Function, Layer, label
from .errors import DodoLambdaError

Item = Function | Layer
TaskDict = dict[str, Any]

GROUP_DOCS = {
    "npm": "install production dependencies (npm ci --omit=dev) for the target platform",
    "package": "build the deterministic deployment zips",
}


def _install(item: Item, build_dir: str) -> None:
    npm.install(item, build_dir)


def _package(item: Item, build_dir: str) -> None:
    result = build.package(item, build_dir)
    print(f"{label(item)}: {build.paths(item, build_dir).zip} {result.zip_size:,} bytes,"
          f" {result.files} files, {result.unzipped_size:,} bytes unzipped")


_STEPS: dict[str, Callable[..., Any]] = {"npm": _install, "package": _package}


def run_step(step: str, *args: Any) -> TaskFailed | None:
    """The one doit action: run a step, turning a user's mistake into TaskFailed."""
    try:
        _STEPS[step](*args)
    except DodoLambdaError as exc:
        return TaskFailed(str(exc))
    return None


def fail(message: str) -> TaskFailed:
    return TaskFailed(message)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    Path(path).with_suffix(".json").unlink(missing_ok=True)


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
        "clean": [(_remove_tree, [str(st.folder)])],
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


def _failing(basename: str, item: Item, message: str) -> TaskDict:
    return {
        "basename": basename,
        "name": item.name,
        "doc": f"{label(item)}: cannot be built: {message}",
        "actions": [(fail, [message])],
        "uptodate": [False],
    }


def lambda_tasks(*items: Item, build_dir: str = ".dodo_lambda") -> Iterator[TaskDict]:
    """doit tasks for the given Functions and Layers::

        def task_lambda():
            yield from lambda_tasks(orders, shared)

    gives ``npm:<name>``, ``package:<name>`` and the groups ``npm`` and
    ``package``. Paths are relative to the directory doit runs in.
    """
    build_dir = str(build_dir)
    seen: dict[tuple[str, str], Item] = {}
    for basename, doc in GROUP_DOCS.items():
        yield {"basename": basename, "name": None, "doc": doc}
    for item in items:
        if not isinstance(item, (Function, Layer)):
            message = f"lambda_tasks() takes Function and Layer objects, not {item!r}"
            yield {"basename": "package", "name": "invalid", "actions": [(fail, [message])],
                   "uptodate": [False], "doc": message}
            continue
        key = (item.kind, item.name)
        problem = item.problem
        if key in seen and seen[key] != item:
            problem = f"{label(item)} is defined twice with different settings; rename one"
        seen[key] = item
        if problem:
            yield _failing("package", item, problem)
            continue
        if isinstance(item, Layer) or npm.has_dependencies(item):
            yield _npm_task(item, build_dir)
        yield _package_task(item, build_dir)
