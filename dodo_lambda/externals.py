"""Which installed packages a bundle leaves out, and which of them the zip ships.

Read from the staged production tree (``npm ci --omit=dev`` for the target
platform): its package graph comes from npm's hidden lockfile
(``node_modules/.package-lock.json``, falling back to the lock file copied beside
it), paths as npm writes them (``node_modules/a/node_modules/b``).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DodoLambdaError

_NM = "node_modules/"


@dataclass(frozen=True)
class Graph:
    """The installed packages: folder (relative to the staging folder) -> its name and
    the names it depends on (dependencies, optional and peer)."""

    packages: dict[str, tuple[str, tuple[str, ...]]]

    def resolve(self, importer: str, name: str) -> str | None:
        """Node's lookup of ``name`` from the package folder ``importer`` ("" = the root)."""
        base = importer
        while True:
            candidate = f"{base}/{_NM}{name}" if base else f"{_NM}{name}"
            if candidate in self.packages:
                return candidate
            if not base:
                return None
            cut = base.rfind("/" + _NM)
            base = base[:cut] if cut >= 0 else ""

    def closure(self, folders: Iterable[str], skip: tuple[str, ...] = ()) -> set[str]:
        """The folders and everything they need at run time, minus packages whose
        name matches a ``skip`` pattern (provided by the runtime or a layer)."""
        seen: set[str] = set()
        todo = [f for f in folders if f in self.packages]
        while todo:
            folder = todo.pop()
            if folder in seen:
                continue
            seen.add(folder)
            for dep in self.packages[folder][1]:
                if _matches(dep, skip):
                    continue
                found = self.resolve(folder, dep)
                if found is not None and found not in seen:
                    todo.append(found)
        return seen


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def package_name(spec: str) -> str:
    """``@scope/pkg/sub/path`` -> ``@scope/pkg``; ``pkg/sub`` -> ``pkg``."""
    parts = spec.split("/")
    return "/".join(parts[:2]) if spec.startswith("@") else parts[0]


def read_graph(staging_folder: Path, who: str) -> Graph:
    """The staged tree's packages (empty when nothing is installed)."""
    if not (staging_folder / "node_modules").is_dir():
        return Graph({})
    data = None
    for lock in (staging_folder / "node_modules" / ".package-lock.json",
                 staging_folder / "package-lock.json", staging_folder / "npm-shrinkwrap.json"):
        try:
            data = json.loads(lock.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("packages"), dict):
            break
        data = None
    if data is None:
        raise DodoLambdaError(
            f"{who}: cannot tell the staged packages' dependencies: {staging_folder} has no"
            " lock file with a \"packages\" section (lockfile v1); upgrade it with"
            " `npm install --package-lock-only` (npm 7 or newer) and commit it")
    packages = {}
    for folder, meta in data["packages"].items():
        if not folder.startswith(_NM) or not isinstance(meta, dict):
            continue
        if not (staging_folder / folder).is_dir():
            continue  # dev, or optional for another platform: not installed here
        deps: list[str] = []
        for field in ("dependencies", "optionalDependencies", "peerDependencies"):
            value = meta.get(field)
            if isinstance(value, dict):
                deps.extend(value)
        name = meta.get("name") or folder[folder.rfind(_NM) + len(_NM):]
        packages[folder] = (str(name), tuple(dict.fromkeys(deps)))
    return Graph(packages)


def _package_folder(rel: str) -> str | None:
    """The package folder a file belongs to: the last node_modules/<name> in its path."""
    cut = rel.rfind(_NM)
    if cut < 0:
        return None
    parts = rel[cut + len(_NM):].split("/")
    n = 2 if parts[0].startswith("@") else 1
    if len(parts) <= n:
        return None
    return rel[:cut + len(_NM)] + "/".join(parts[:n])


def native_folders(staging_folder: Path) -> set[str]:
    """Package folders holding a compiled addon (``*.node``) or a ``binding.gyp``:
    esbuild cannot bundle them, and they load their binary from their own folder."""
    found = set()
    top = staging_folder / "node_modules"
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != ".bin"]
        for name in files:
            if name.endswith(".node") or name == "binding.gyp":
                rel = Path(folder, name).relative_to(staging_folder).as_posix()
                pkg = _package_folder(rel)
                if pkg is not None:
                    found.add(pkg)
    return found


def native_externals(graph: Graph, natives: set[str]) -> set[str]:
    """Top-level package names that are native, need one at run time (sharp needs
    @img/sharp-linux-x64 and finds it by a computed name) or carry one in their own
    node_modules: bundling any of them breaks."""
    dependents: dict[str, set[str]] = {}
    for folder, (_, deps) in graph.packages.items():
        for dep in deps:
            found = graph.resolve(folder, dep)
            if found is not None:
                dependents.setdefault(found, set()).add(folder)
    reached, todo = set(), list(natives)
    while todo:
        folder = todo.pop()
        if folder not in reached:
            reached.add(folder)
            todo.extend(dependents.get(folder, ()))
    tops = {_top(f) for f in reached}
    return {graph.packages[t][0] for t in tops if t in graph.packages}


def _top(folder: str) -> str:
    """node_modules/a/node_modules/b -> node_modules/a (scoped names kept whole)."""
    parts = folder[len(_NM):].split("/")
    n = 2 if parts[0].startswith("@") else 1
    return _NM + "/".join(parts[:n])


def shipped_folders(graph: Graph, names: Iterable[str], provided: tuple[str, ...]) -> list[str]:
    """The top-level folders to put in the zip's node_modules for the external
    ``names``: each with its dependency closure (nested folders go with their
    top-level one), minus what matches a ``provided`` pattern."""
    starts = [f"{_NM}{n}" for n in names if not _matches(n, provided)]
    closure = graph.closure(starts, provided)
    return sorted(f for f in closure if f.count(_NM) == 1)
