"""An item's production closure from its workspaces root's lock file, laid out
as a lock file of its own.

``closure`` takes from the root lock exactly what the item needs at run time
(its dependencies and, recursively, those of the workspace packages it uses, no
devDependencies, nothing only another workspace needs), places it the way Node
resolves it from the item's folder and writes it as a package.json and
package-lock.json that ``npm ci`` installs as usual in the staging folder
(integrity checks and platform filtering included). Workspace packages become
real folders (``resolved: file:...``, installed with ``--install-links``);
localpkgs.py then makes their content follow the source.

Running ``npm ci --workspace`` at the root instead was tried (npm 11): it
installs into the root's node_modules, links workspaces as symlinks whatever
``--install-links`` says, and writes nested dependencies into the workspace
source folders; a pruned lock keeps npm out of the checkout.

Why a placement of our own: the root lock hoists for every workspace at once.
From a function's folder Node sees ``functions/a/node_modules`` first, then the
root's ``node_modules``; the staging folder has one level where the checkout had
two, so two packages of the same name can meet there. ``_place`` rebuilds the
tree from the resolved graph: a package goes to the top level when the name is
free, else under the package that needs it.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import digest
from .errors import DodoLambdaError
from .files import read_manifest
from .workspaces import Workspace

if TYPE_CHECKING:
    from .config import Function, Layer
    from .context import RunContext

DEP_FIELDS = ("dependencies", "optionalDependencies", "peerDependencies")
# Lock entry flags npm computes for the whole workspace; ours are set afresh.
_FLAGS = ("dev", "devOptional", "optional", "peer", "extraneous", "link")
_NM = "node_modules"
MAX_DEPTH = 40  # nesting levels before a placement is taken for a loop


# -- the root lock ----------------------------------------------------------------


def read_lock(ws: Workspace, who: str, ctx: RunContext | None = None) -> dict[str, Any]:
    """The root lock's ``packages``; parsed once per run per version of the file (a
    monorepo's lock can be megabytes, and every item's check needs it)."""
    st = os.stat(ws.lock)
    key = ("workspace-lock", ws.lock.resolve().as_posix(), st.st_size, st.st_mtime_ns)
    if ctx is None:
        return _parse_lock(ws, who)
    return ctx.once(key, lambda: _parse_lock(ws, who))


def _parse_lock(ws: Workspace, who: str) -> dict[str, Any]:
    fix = f"run `npm install` in {ws.root.as_posix()} (npm 7 or newer) to rewrite it"
    try:
        data = json.loads(ws.lock.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DodoLambdaError(f"{who}: {ws.lock.as_posix()} is not valid JSON ({exc}); {fix}"
                              ) from exc
    packages = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(packages, dict):
        raise DodoLambdaError(f"{who}: {ws.lock.as_posix()} has no \"packages\" section (a"
                              f" lockfileVersion 1 file, from npm 6); {fix}")
    return packages


# -- the closure ------------------------------------------------------------------


@dataclass
class Closure:
    """What the item installs, as the staged package.json and lock file would hold
    it with every path relative to the workspaces root (``relocate`` makes them
    relative to the staging folder)."""

    package: dict[str, Any]
    lock: dict[str, Any]
    # staged folder ("node_modules/@acme/shared") -> workspace package folder, root-relative
    local: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        return digest.value_digest([self.package, self.lock])

    def sources(self) -> list[str]:
        return sorted(set(self.local.values()))


def _is_local(key: str) -> bool:
    """A lock key naming a folder of the checkout rather than an installed package."""
    return not (key.startswith(_NM + "/") or f"/{_NM}/" in key)


def _lookup(key: str, name: str) -> Iterator[str]:
    """Node's lookup of ``name`` from the folder ``key`` (lock keys; "" is the root)."""
    parts = key.split("/") if key else []
    while True:
        if not parts or parts[-1] != _NM:
            yield "/".join([*parts, _NM, name])
        if not parts:
            return
        parts.pop()


def _is_path_spec(spec: str) -> bool:
    return spec.startswith(("file:", "./", "../", "/", "~/")) or spec in (".", "..")


def _root_relative(spec: str, folder: str) -> str:
    """A path spec written in ``folder`` (root-relative), as ``file:`` + root-relative."""
    path = spec[5:] if spec.startswith("file:") else spec
    if path.startswith(("/", "~")):
        return "file:" + path
    return "file:" + posixpath.normpath(posixpath.join(folder, path))


@dataclass
class _Graph:
    """The resolved dependency graph of one item, nodes named by root lock keys."""

    ws: Workspace
    packages: dict[str, Any]
    who: str
    edges: dict[str, dict[str, tuple[str, bool]]] = field(default_factory=dict)  # name -> (node, optional)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # local folders' package.json

    def manifest(self, key: str) -> dict[str, Any]:
        """A node's dependency fields: a local folder's from its package.json on disk
        (what npm checks the lock against), an installed package's from the lock."""
        if not _is_local(key):
            meta = self.packages.get(key)
            return meta if isinstance(meta, dict) else {}
        if key not in self.manifests:
            path = self.ws.root / key / "package.json"
            data = read_manifest(path)
            if data is None:
                raise DodoLambdaError(f"{self.who}: {path.as_posix()} is missing or not valid JSON;"
                                      " fix it and run `npm install` in"
                                      f" {self.ws.root.as_posix()}")
            self.manifests[key] = data
        return self.manifests[key]

    def resolve(self, key: str) -> dict[str, tuple[str, bool]]:
        if key in self.edges:
            return self.edges[key]
        meta = self.manifest(key)
        wanted: dict[str, bool] = {}
        peer_meta = meta.get("peerDependenciesMeta") or {}
        for name in meta.get("peerDependencies") or {}:
            wanted[name] = bool((peer_meta.get(name) or {}).get("optional"))
        for name in meta.get("dependencies") or {}:
            wanted[name] = False
        for name in meta.get("optionalDependencies") or {}:
            wanted[name] = True
        out: dict[str, tuple[str, bool]] = {}
        for name in sorted(wanted):
            found = next((k for k in _lookup(key, name) if k in self.packages), None)
            peer = name in (meta.get("peerDependencies") or {}) and \
                name not in (meta.get("dependencies") or {})
            if found is None:
                if wanted[name] or peer:
                    continue  # an optional dependency npm skipped; a peer left to the user
                raise DodoLambdaError(
                    f"{self.who}: {self.ws.lock.as_posix()} has no entry for {name!r}, which"
                    f" {key or 'the root'} depends on (the lock is out of date); run `npm install`"
                    f" in {self.ws.root.as_posix()} and commit the lock file")
            entry = self.packages[found]
            if isinstance(entry, dict) and entry.get("link"):
                found = str(entry.get("resolved") or "")
                if found not in self.packages:
                    raise DodoLambdaError(
                        f"{self.who}: {self.ws.lock.as_posix()} links {name!r} to {found!r}, which"
                        f" it does not list; run `npm install` in {self.ws.root.as_posix()}")
            out[name] = (found, wanted[name])
        self.edges[key] = out
        return out


def _place(graph: _Graph, top: str) -> dict[str, str]:
    """Staged folder -> node, so that Node's lookup from each placed package (and the
    staging root, standing for ``top``) finds exactly the node the root lock gave it.
    Breadth first: a package goes to the top level when the name is free there, else
    under the package that needs it (a peer beside it: npm refuses a peer below its
    dependent)."""
    placed: dict[str, str] = {}
    queue: deque[tuple[str, str]] = deque([("", top)])
    while queue:
        at, node = queue.popleft()
        peers = graph.manifest(node).get("peerDependencies") or {}
        for name, (target, _optional) in graph.resolve(node).items():
            found = next((k for k in _lookup(at, name) if k in placed), None)
            if found is not None and placed[found] == target:
                continue
            spot = f"{_NM}/{name}"
            if found is not None:
                if name in peers and at:
                    parent = at.rsplit(f"/{_NM}/", 1)
                    spot = f"{parent[0]}/{_NM}/{name}" if len(parent) == 2 else spot
                else:
                    spot = f"{at}/{_NM}/{name}" if at else spot
            if spot in placed or spot.count(f"{_NM}/") > MAX_DEPTH:
                raise DodoLambdaError(
                    f"{graph.who}: cannot lay out {name!r} (needed by {node}) from"
                    f" {graph.ws.lock.as_posix()} in a tree of the item's own; run `npm dedupe`"
                    f" in {graph.ws.root.as_posix()}, or give the item its own package-lock.json")
            placed[spot] = target
            queue.append((spot, target))
    for at, node in placed.items():  # every lookup finds what the root lock resolved
        for name, (target, _optional) in graph.resolve(node).items():
            found = next((k for k in _lookup(at, name) if k in placed), None)
            if found is None or placed[found] != target:
                raise DodoLambdaError(
                    f"{graph.who}: cannot lay out {name!r} (needed by {node}) from"
                    f" {graph.ws.lock.as_posix()} in a tree of the item's own; run `npm dedupe`"
                    f" in {graph.ws.root.as_posix()}, or give the item its own package-lock.json")
    return placed


def _required(graph: _Graph, top: str) -> set[str]:
    """Nodes reachable through non-optional edges: the others get npm's optional flag
    (so that a platform package for another os/cpu is skipped, not an error)."""
    seen = {top}
    todo = [top]
    while todo:
        node = todo.pop()
        for target, optional in graph.resolve(node).values():
            if not optional and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _fix_specs(deps: Any, node: str, graph: _Graph) -> Any:
    """Dependency specs of ``node`` with workspace packages named by folder and
    path specs made root-relative."""
    if not isinstance(deps, dict):
        return deps
    resolved = graph.resolve(node)
    out = {}
    for name, spec in deps.items():
        target = resolved.get(name, (None, False))[0]
        if target is not None and _is_local(target):
            out[name] = "file:" + target
        elif isinstance(spec, str) and _is_path_spec(spec):
            out[name] = _root_relative(spec, node)
        else:
            out[name] = spec
    return out


def _entry(graph: _Graph, node: str, optional: bool) -> dict[str, Any]:
    if _is_local(node):
        manifest = graph.manifest(node)
        meta: dict[str, Any] = {k: manifest[k] for k in ("name", "version", "license", "bin",
                                                        "engines", "os", "cpu")
                                if k in manifest}
        meta["resolved"] = "file:" + node
    else:
        meta = {k: v for k, v in graph.packages[node].items() if k not in _FLAGS}
        resolved = meta.get("resolved")
        if isinstance(resolved, str) and resolved.startswith("file:"):
            meta["resolved"] = _root_relative(resolved, "")
        manifest = meta
    for f in (*DEP_FIELDS, "peerDependenciesMeta"):
        if f in manifest:
            meta[f] = _fix_specs(manifest[f], node, graph) if f in DEP_FIELDS else manifest[f]
    if optional:
        meta["optional"] = True
    return dict(sorted(meta.items()))


def closure(ws: Workspace, who: str, ctx: RunContext | None = None) -> Closure:
    """The item's production closure from the root lock (see the module's doc)."""
    packages = read_lock(ws, who, ctx)
    if ws.member not in packages:
        raise DodoLambdaError(
            f"{who}: {ws.lock.as_posix()} does not list the workspace {ws.member} (the lock is"
            f" out of date); run `npm install` in {ws.root.as_posix()} and commit the lock file")
    graph = _Graph(ws, packages, who)
    top = ws.member
    placed = _place(graph, top)
    required = _required(graph, top)
    manifest = graph.manifest(top)
    package = {k: v for k, v in manifest.items()
               if k not in ("devDependencies", "workspaces", "scripts")}
    for f in DEP_FIELDS:
        if f in package:
            package[f] = _fix_specs(package[f], top, graph)
    root_entry = {k: package[k] for k in ("name", "version", *DEP_FIELDS, "peerDependenciesMeta")
                  if k in package}
    entries = {"": root_entry}
    for spot in sorted(placed):
        entries[spot] = _entry(graph, placed[spot], placed[spot] not in required)
    lock = {"name": package.get("name", ""), "lockfileVersion": 3, "requires": True,
            "packages": entries}
    if "version" in package:
        lock["version"] = package["version"]
    local = {spot: node for spot, node in placed.items() if _is_local(node)}
    return Closure(package, lock, local)


def relocate(c: Closure, ws: Workspace, dest: Path, moved: dict[str, Path] | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The closure's package.json and lock with root-relative paths rewritten for an
    install in ``dest``: a dependency spec relative to the folder of the package that
    declares it, ``resolved`` relative to ``dest`` (as npm reads them). ``moved`` names
    folders to use instead of workspace packages (root-relative -> elsewhere)."""
    root, dest = ws.root.resolve(), dest.resolve()
    moved = moved or {}

    def _relocate(spec: str, base: Path) -> str:
        path = spec[5:]
        if path.startswith(("/", "~")):
            return spec
        where = moved[path].resolve() if path in moved else root / path
        return "file:" + Path(os.path.relpath(where, base)).as_posix()

    def specs(deps: Any, base: Path) -> Any:
        if not isinstance(deps, dict):
            return deps
        return {k: _relocate(v, base) if isinstance(v, str) and v.startswith("file:")
                else v for k, v in deps.items()}

    package = dict(c.package)
    for f in DEP_FIELDS:
        if f in package:
            package[f] = specs(package[f], dest)
    entries = {}
    for spot, meta in c.lock["packages"].items():
        meta = dict(meta)
        for f in DEP_FIELDS:
            if f in meta:
                meta[f] = specs(meta[f], dest / spot)
        resolved = meta.get("resolved")
        if isinstance(resolved, str) and resolved.startswith("file:"):
            meta["resolved"] = _relocate(resolved, dest)
        entries[spot] = meta
    return package, {**c.lock, "packages": entries}


def install_key(ws: Workspace, item: Function | Layer, ctx: RunContext | None) -> dict[str, Any]:
    """The workspace part of the npm step's install key: the closure (the root lock's
    entries the item needs, placed) and each workspace package's package.json."""
    from .config import label

    c = closure(ws, label(item), ctx)
    npmrc = ws.root / ".npmrc"
    return {
        "files": {".npmrc": digest.file_sha256(npmrc)} if npmrc.is_file() else {},
        "workspace": {
            "root": ws.root.as_posix(),
            "member": ws.member,
            "closure": c.digest(),
            "packages": {src: digest.file_sha256(ws.root / src / "package.json")
                         for src in c.sources()},
        },
    }
