"""A package's cache key: the digest of everything that decides its bytes, computed
from the checkout alone (no npm, no staged tree), so that a fresh runner can ask the
shared build cache (buildcache) before it installs anything.

What the key holds is listed in ``compute`` and in the README ("CI and teams"). The
source walk's stat digest and what it stood for, and the tool versions, are kept in
``Computed.memory`` (the fetched record keeps them), so that checking a fetched
package again is one stat walk.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import (
    archive,
    build,
    bundle,
    bundle_options,
    digest,
    esbuild,
    localpkgs,
    npm,
    workspaces,
    wslock,
)
from .config import Function, Layer, bundled, label
from .context import RunContext
from .entrycache import CachedEntry
from .errors import DodoLambdaError
from .selection import choose, walk

T = TypeVar("T")

FORMAT = 1  # bump whenever ``compute`` changes what it holds


@dataclass(frozen=True)
class Computed:
    """An item's inputs and their digest (the key), and what the next computation
    may reuse (``memory``: the source walk's stat digest and what it stood for)."""

    key: str
    inputs: dict[str, Any]
    memory: dict[str, Any]


# -- the key ---------------------------------------------------------------------------


def _npm_version(package_json: Path) -> str | None:
    try:
        data = json.loads(package_json.read_bytes())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("name") == "npm" and isinstance(data.get("version"),
                                                                            str):
        return str(data["version"]).split(".")[0]
    return None


def tool_versions(ctx: RunContext, known: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Node's and npm's major versions, without running npm: npm's own package.json
    says its version (the npm on PATH; without one, a deploy-only runner, the npm that
    came with node). ``node --version`` runs once per node executable, then the
    answer is remembered (``known``: a fetched record's)."""
    node = shutil.which("node")
    if node is None:
        raise DodoLambdaError("node not found on PATH; install Node.js to build functions that"
                              " have package.json")
    real = os.path.realpath(node)
    st = os.stat(real)
    stamp = [real, st.st_size, st.st_mtime_ns]
    if known and known.get("stamp") == stamp and isinstance(known.get("node"), str):
        node_major = known["node"]
    else:
        node_major = ctx.once(("node major", *stamp), lambda: npm.tool_major("node"), wait=False)
    exe = shutil.which("npm")
    if exe is not None:
        places = [Path(os.path.realpath(exe)).parent.parent / "package.json"]  # bin/npm-cli.js
    else:
        prefix = Path(real).parent
        places = [prefix.parent / "lib" / "node_modules" / "npm" / "package.json",
                  prefix / "node_modules" / "npm" / "package.json"]  # (Windows' layout)
    npm_major = next((v for v in map(_npm_version, places) if v), None)
    if npm_major is None and exe is not None:  # a wrapper script: ask it
        npm_major = ctx.once(("npm major", os.path.realpath(exe)), lambda: npm.tool_major("npm"),
                             wait=False)
    return {"stamp": stamp, "node": node_major, "npm": npm_major}


def _source(item: Function | Layer, ctx: RunContext, known: Mapping[str, Any] | None,
            hashes: Mapping[str, CachedEntry] | None) -> dict[str, Any]:
    """The item's own files (not the staged tree) as a content digest: those the zip
    takes, or for a bundled function every file of its source folder. One stat walk
    when nothing moved since ``known``; else the changed files are hashed
    (``hashes``: a zip's records, whose files are not read again)."""
    who = label(item)
    if bundled(item):
        assert isinstance(item, Function)
        own = [build.source_root(item, ctx.build_dir)]  # esbuild may read any of it
    else:
        own = [r for r in build.roots(item, ctx.build_dir) if not r.staged]
    entries = [e for r in own for e in walk(r, who)]
    stat = digest.stat_digest(entries)
    if known and known.get("stat") == stat and "digest" in known:
        return dict(known)
    if bundled(item):
        bad = next((e for e in entries if e.problem), None)
        if bad is not None:
            raise DodoLambdaError(f"{who}: {bad.problem}")
        chosen, dropped = entries, None
    else:
        selection = choose(entries, build.patterns(item, ctx.build_dir), who, own)
        chosen, dropped = selection.entries, selection.dropped
    files = digest.entry_hashes(chosen, hashes)
    return {"stat": stat, "digest": digest.content_digest(files), "dropped": dropped}


def _workspace_packages(item: Function | Layer, ctx: RunContext,
                        known: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The content of each workspace package the item's closure uses (npm's install
    key covers their package.json only; localpkgs copies their files)."""
    ws = workspaces.of(item, ctx)
    if ws is None:
        return None
    who = label(item)
    out = {}
    for src in wslock.closure(ws, who, ctx).sources():
        found = localpkgs.files(ws.root / src, who)
        stat = localpkgs.stat(found)
        old = (known or {}).get(src)
        if isinstance(old, list) and old[0] == stat:
            out[src] = old
        else:
            out[src] = [stat, localpkgs.content(localpkgs.select(ws.root / src, who, found))]
    return out


def _bundle_part(fn: Function) -> dict[str, Any]:
    opts = fn.bundle_options
    assert opts is not None
    src = Path(fn.source)
    found = bundle_options.entry(src, fn.handler.rpartition(".")[0])
    tool = esbuild.locate(src)  # else bundle obtains the pinned version
    return {"options": asdict(opts), "target": bundle_options.target(fn.runtime),
            "entry": found.as_posix() if found else None,
            "esbuild": tool.version if tool is not None else esbuild.VERSION,
            "runner": digest.file_sha256(bundle.RUNNER)}


def compute(item: Function | Layer, ctx: RunContext, memory: Mapping[str, Any] | None = None,
            hashes: Mapping[str, CachedEntry] | None = None) -> Computed:
    """Everything that decides the package's bytes, and its digest.

    The archive format and compressor, the timestamp; the kind, build name,
    architecture and, for a function, handler, runtime and layer names (the handler
    check's inputs); the selection rules; the content digest of the selected files
    (paths, modes, SHA-256s); with dependencies, npm's install key (digests of
    package.json, the lock and .npmrc, node and npm majors, the flags; in a
    workspace the closure and its packages' contents); with bundle=, the options,
    target, entry and esbuild version, and the whole source folder.
    """
    memory = memory or {}
    versions = tool_versions(ctx, memory.get("tools")) if npm.has_dependencies(item) else None
    inputs: dict[str, Any] = {
        "format": FORMAT, "kind": item.kind, "name": item.build_name,
        "archive": [archive.FORMAT, archive.COMPRESSOR_ID, list(archive.dos_timestamp())],
        "architecture": item.architecture,
    }
    if isinstance(item, Function):
        inputs["handler"] = [item.handler, item.runtime, [
            x if isinstance(x, str) else x.build_name for x in item.layers]]
    if bundled(item):
        assert isinstance(item, Function)
        inputs["bundle"] = _bundle_part(item)
        inputs["include"] = list(item.include)
    else:
        inputs["roots"] = [[r.prefix, sorted(r.prune), r.staged]
                           for r in build.roots(item, ctx.build_dir)]
        inputs["patterns"] = repr(build.patterns(item, ctx.build_dir))
    source = _source(item, ctx, memory.get("source"), hashes)
    inputs["source"] = [source["digest"], source["dropped"]]
    remembered: dict[str, Any] = {"source": source}
    if versions is not None:
        key = npm.install_key(item, {"node": versions["node"], "npm": versions["npm"]}, ctx)
        inputs["npm"] = json.loads(json.dumps(key))  # as the install record keeps it
        remembered["tools"] = versions
        local = _workspace_packages(item, ctx, memory.get("workspace"))
        if local is not None:
            inputs["workspace"] = {src: content for src, (_, content) in local.items()}
            remembered["workspace"] = local
    return Computed(digest.value_digest(inputs), inputs, remembered)
