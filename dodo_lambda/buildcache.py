"""The shared build cache in the package step: packages kept in S3 and found by their
inputs, so that a fresh CI runner or a teammate fetches a package instead of running
npm and the zip writer again.

The key is ``cachekey``'s, the bucket ``cachestore``'s. Here: the package step with
a cache (``package``: fetch and install a hit, else build and store), and the
uptodate checks that let doit skip what a hit makes unnecessary: the npm and bundle
steps when the package will come from the cache (``covered``), the package step when
the zip on disk is the one a hit installed for the current inputs (``is_fetched``,
from the record at ``Layout.fetched``; there is no entry cache to say so).

Any trouble with the cache (unreachable, no permission, a corrupt entry) is a
warning and a local build, never a failure.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from . import archive, build, bundle, cachestore, digest, npm
from .cachekey import Computed, compute
from .cachestore import CacheSettings, Found, settings
from .config import Function, Layer, bundled, label
from .context import RunContext
from .entrycache import zip_stat
from .errors import DodoLambdaError
from .files import locked, read_json, write_json

__all__ = ["CacheSettings", "settings", "package", "covered", "npm_is_current",
           "bundle_is_current", "is_packaged", "is_fetched", "forget", "computed"]

log = logging.getLogger("dodo_lambda")
DEFAULT_PREFIX = cachestore.DEFAULT_PREFIX
RECORD_FORMAT = 1


def computed(item: Function | Layer, ctx: RunContext) -> Computed:
    """The item's key, computed once per run (the npm, bundle and package checks and
    the package step all ask), from what the last fetch remembered."""
    return ctx.once(("build cache key", item.kind, item.build_name),
                    lambda: compute(item, ctx, _memory(item, ctx)), wait=False)


def lookup(item: Function | Layer, ctx: RunContext) -> Found | None:
    """The cache entry for the item's current inputs, or None (a miss, or a cache that
    cannot be used). Once per run and item."""
    if ctx.cache is None or cachestore.down(ctx, "read"):
        return None
    key = computed(item, ctx).key

    def read() -> Found | None:
        found = cachestore.read_entry(item, ctx, key)
        # a bundle that read other files outside its folder than these: a miss
        return found if found is not None and _extras_match(found.extras) else None

    return ctx.once(("build cache entry", key), read, wait=False)


def _extras_match(extras: Mapping[str, str]) -> bool:
    return all(os.path.isfile(rel) and digest.file_sha256(rel) == sha
               for rel, sha in extras.items())


# -- the local record of a fetched package ------------------------------------------------


def _memory(item: Function | Layer, ctx: RunContext) -> dict[str, Any] | None:
    record = read_json(ctx.layout(item).fetched)
    memory = record.get("memory") if isinstance(record, dict) else None
    return memory if isinstance(memory, dict) else None


def is_fetched(item: Function | Layer, ctx: RunContext) -> bool:
    """True when the zip on disk is the one a cache hit installed for the current
    inputs: one stat walk of the item's files when nothing moved."""
    try:
        return _is_fetched(item, ctx)
    except (DodoLambdaError, OSError, ValueError, TypeError, KeyError):
        return False


def _is_fetched(item: Function | Layer, ctx: RunContext) -> bool:
    if item.problem:
        return False
    layout = ctx.layout(item)
    record = read_json(layout.fetched)
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return False
    if list(zip_stat(layout.zip) or ()) != record.get("zip") or not layout.manifest.is_file():
        return False
    if computed(item, ctx).key != record.get("key"):
        return False
    extras = record.get("extras") or {}
    moved = False
    for rel, (size, mtime, sha) in list(extras.items()):
        st = os.stat(rel)
        if (st.st_size, st.st_mtime_ns) == (size, mtime):
            continue
        if digest.file_sha256(rel) != sha:
            return False
        extras[rel], moved = [st.st_size, st.st_mtime_ns, sha], True
    if moved:  # same content, new stats: the next check is stats only again
        write_json(layout.fetched, record)
    return True


def forget(item: Function | Layer, ctx: RunContext) -> None:
    """`doit clean`: the record of a fetched package."""
    ctx.layout(item).fetched.unlink(missing_ok=True)


# -- the uptodate checks (tasks.py uses them when a cache is set) -------------------------


def covered(item: Function | Layer, ctx: RunContext) -> bool:
    """True when the package step will not need the npm and bundle steps: its zip
    came from the cache for these inputs, or the cache holds it."""
    try:
        return is_fetched(item, ctx) or lookup(item, ctx) is not None
    except (DodoLambdaError, OSError):
        return False  # the steps run and say what is wrong


def npm_is_current(item: Function | Layer, ctx: RunContext) -> bool:
    """uptodate for npm with a cache: installed, or not needed."""
    return npm.is_installed(item, ctx) or covered(item, ctx)


def bundle_is_current(fn: Function, ctx: RunContext) -> bool:
    """uptodate for bundle with a cache: bundled, or not needed."""
    return bundle.is_bundled(fn, ctx) or covered(fn, ctx)


def is_packaged(item: Function | Layer, ctx: RunContext) -> bool:
    """uptodate for package with a cache: built here and current, or fetched and current."""
    return build.is_packaged(item, ctx) or is_fetched(item, ctx)


# -- the package step -----------------------------------------------------------------------


def package(item: Function | Layer, ctx: RunContext,
            write: Callable[[Function | Layer, RunContext], archive.ZipResult]
            ) -> archive.ZipResult:
    """The package step with a cache: fetch the package for these inputs, or build it
    (``write``: build.write_package) and put it in the cache."""
    problem = item.problem
    if problem:
        raise DodoLambdaError(problem)
    try:
        done = computed(item, ctx)
    except DodoLambdaError:
        done = None  # the build says what is wrong, in its own words
    if done is not None:
        found = lookup(item, ctx)
        result = _install(item, ctx, found, done) if found is not None else None
        if result is not None:
            return result
    ctx.layout(item).fetched.unlink(missing_ok=True)
    _prepare(item, ctx)
    result = write(item, ctx)
    if done is not None:
        _store(item, ctx, done, result)
    return result


def _prepare(item: Function | Layer, ctx: RunContext) -> None:
    """The npm and bundle steps, when doit skipped them for a hit that then failed."""
    if npm.has_dependencies(item) and not npm.is_installed(item, ctx):
        npm.install(item, ctx)
    if bundled(item) and not bundle.is_bundled(item, ctx):
        bundle.bundle(item, ctx)


def _install(item: Function | Layer, ctx: RunContext, found: Found, done: Computed
             ) -> archive.ZipResult | None:
    """Download the entry's zip, check it, and make it the item's package."""
    layout, m = ctx.layout(item), found.manifest
    with locked(layout.package_lock):  # one writer of this zip at a time
        build.remove_stale_temps(layout)
        layout.zip.parent.mkdir(parents=True, exist_ok=True)
        tmp = layout.zip.with_name(f".{layout.zip.name}.{os.getpid()}.tmp")
        try:
            if not cachestore.download(item, ctx, found, tmp):
                return None
            layout.fetched.unlink(missing_ok=True)
            layout.entries.unlink(missing_ok=True)  # it describes the zip being replaced
            os.replace(tmp, layout.zip)
        finally:
            tmp.unlink(missing_ok=True)
        write_json(layout.manifest, m)
        extras = {}
        for rel, sha in found.extras.items():
            st = os.stat(rel)
            extras[rel] = [st.st_size, st.st_mtime_ns, sha]
        write_json(layout.fetched, {
            "format": RECORD_FORMAT, "key": done.key, "zip": list(zip_stat(layout.zip) or ()),
            "sha256": m["sha256"], "entry": found.url, "memory": done.memory, "extras": extras})
    log.info("%s: fetched from the build cache (%s); npm and the zip writer did not run",
             label(item), found.url)
    return archive.ZipResult(m["sha256"], m["code_sha256"], m["zip_size"], m["unzipped_size"],
                             m["files"], m["content_digest"], {})


def _vouch(item: Function | Layer, ctx: RunContext, done: Computed,
           result: archive.ZipResult) -> str | None:
    """Why the package just built cannot be stored under ``done.key``, or None: its
    inputs moved while it was built, or the staged tree (or bundle) it packed is not
    what those inputs install."""
    again = compute(item, ctx, None, hashes=result.records)  # the zipped files' hashes
    if again.key != done.key:
        return "its files changed while it was built"
    layout = ctx.layout(item)
    installed = npm.read_record(layout) or {}
    if "npm" in done.inputs and installed.get("key") != done.inputs["npm"]:
        return ("its staged dependencies were installed from other inputs (or by another"
                " node or npm version than the cache key names)")
    if bundled(item):
        key = (read_json(layout.bundle_record) or {}).get("key") or {}
        if key.get("esbuild") != done.inputs["bundle"]["esbuild"]:
            return "it was bundled by another esbuild version than the cache key names"
        if "npm" in done.inputs and key.get("staged") != [
                (installed.get("key") or {}).get("files"), installed.get("tree_content")]:
            return "its bundle was made from another install of the dependencies"
    return None


def _extras(item: Function | Layer, ctx: RunContext) -> dict[str, str]:
    """The files a bundle read outside the function's source folder (and outside the
    staged tree): a config file above it, shared code. The key cannot hold them (only
    esbuild knows them); the entry does, and a hit needs them unchanged."""
    if not bundled(item):
        return {}
    record = read_json(ctx.layout(item).bundle_record) or {}
    src = os.path.realpath(item.source) + os.sep
    return {rel: rec[2] for rel, rec in sorted((record.get("inputs") or {}).items())
            if not os.path.realpath(rel).startswith(src)}


def _store(item: Function | Layer, ctx: RunContext, done: Computed,
           result: archive.ZipResult) -> None:
    cache = ctx.cache
    assert cache is not None
    if cache.read_only or cachestore.down(ctx, "write"):
        return
    who, layout = label(item), ctx.layout(item)
    why = _vouch(item, ctx, done, result)
    if why:
        log.info("%s: not put in the build cache: %s", who, why)
        return
    if cachestore.put(item, ctx, done.key, layout.zip, result.sha256,
                      read_json(layout.manifest), _extras(item, ctx)):
        log.info("%s: put in the build cache (%s)", who, cache.url(cache.entry_key(done.key)))
