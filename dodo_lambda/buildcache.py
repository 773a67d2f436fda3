"""The shared build cache: packages kept in S3 and found by their inputs, so that a
fresh CI runner or a teammate fetches a package instead of running npm and the zip
writer again.

Two kinds of object under the prefix (as Bazel's action cache and content store):

    entries/<key>.json   what the inputs ``key`` gave: the package's manifest, the zip's
                         key, and the files outside the source folder that a bundle
                         read (path -> SHA-256), which must still match for a hit
    zips/<sha256>.zip    the zips, content-addressed: the same bytes are stored once

``key`` is the SHA-256 of ``inputs``: everything that decides a package's bytes,
computed from the checkout alone (no npm, no staged tree; see README, "CI and
teams"). A zip is put before its entry, so an entry only names a complete zip; a
fetched zip is checked against the entry's SHA-256 and size before it is used. A
cache that cannot be reached, a missing permission or a corrupt entry is a warning
and a local build, never a failure.

The package step goes through ``package`` (build.package); with a cache, the npm
and bundle steps are up to date when the package will come from the cache
(``covered``), and the package step when the zip on disk is the one a hit installed
(``is_fetched``, from the record ``Layout.fetched``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
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
    npmpolicy,
    records,
    rules,
    s3,
    workspaces,
    wslock,
)
from .aws import USER_AGENT, AwsTarget, Clients, translating
from .config import Function, Layer, label
from .context import RunContext
from .entrycache import CachedEntry, zip_stat
from .errors import DodoLambdaError
from .files import locked, read_json, write_json
from .selection import Root, choose, walk

log = logging.getLogger("dodo_lambda")
T = TypeVar("T")

FORMAT = 1  # bump whenever ``inputs`` or an entry's shape changes
DEFAULT_PREFIX = "dodo-lambda-cache/"
CONNECT_TIMEOUT = 5  # seconds: an unreachable cache must not hold the build up for long
ATTEMPTS = 3  # botocore's attempts per request (the deploy's clients make 8)


@dataclass(frozen=True)
class CacheSettings:
    """``lambda_tasks(cache_bucket=, cache_prefix=, cache_read_only=)``; ``target`` is
    lambda_tasks' own profile, region and endpoint (never a stage's: every stage
    shares one build)."""

    bucket: str
    prefix: str = DEFAULT_PREFIX
    read_only: bool = False
    target: AwsTarget = AwsTarget()

    def entry_key(self, key: str) -> str:
        return f"{self.prefix}entries/{key}.json"

    def zip_key(self, sha256_hex: str) -> str:
        return f"{self.prefix}zips/{sha256_hex}.zip"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def settings(bucket: Any, prefix: Any, read_only: Any, target: AwsTarget
             ) -> tuple[CacheSettings | None, str | None]:
    """The cache lambda_tasks was given (None: no cache), or what is wrong with it."""
    if bucket is None:
        return None, None
    problem = rules.bucket_problem(bucket)
    if problem:
        return None, f"lambda_tasks(cache_bucket=...): {problem.replace('bucket=', 'cache_bucket=')}"
    if not isinstance(prefix, str) or rules.bucket_prefix_problem(prefix):
        return None, (f"lambda_tasks(cache_prefix={prefix!r}) must be a plain key prefix such"
                      f" as '{DEFAULT_PREFIX}' (no leading '/', no '..')")
    if not isinstance(read_only, bool):
        return None, f"lambda_tasks(cache_read_only={read_only!r}) must be True or False"
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return CacheSettings(bucket, prefix, read_only, target), None


@dataclass(frozen=True)
class Found:
    """A cache entry for the item's inputs, not yet fetched."""

    key: str
    manifest: dict[str, Any]
    zip_key: str
    extras: dict[str, str]
    url: str  # of the entry, for messages


@dataclass(frozen=True)
class Computed:
    """An item's inputs and their digest (the key), and what the next computation
    may reuse (``memory``: the source walk's stat digest and what it stood for)."""

    key: str
    inputs: dict[str, Any]
    memory: dict[str, Any]


def _memo(ctx: RunContext, key: tuple[Any, ...], make: Callable[[], T]) -> T:
    """``make()`` once per run for ``key``. Unlike ``ctx.once`` the lock is not held
    while making (S3 requests and file hashing): threads do not wait on each other,
    and at worst two of them make the same value."""
    caches = ctx.caches
    with caches.lock:
        if key in caches.made:
            return caches.made[key]
    value = make()
    with caches.lock:
        return caches.made.setdefault(key, value)


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


def _run_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False,
                         env=npmpolicy.child_env(os.environ))
    return out.stdout.strip().lstrip("v").split(".")[0] or "?"


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
        node_major = _memo(ctx, ("node major", *stamp), lambda: _run_version("node"))
    exe = shutil.which("npm")
    if exe is not None:
        places = [Path(os.path.realpath(exe)).parent.parent / "package.json"]  # bin/npm-cli.js
    else:
        prefix = Path(real).parent
        places = [prefix.parent / "lib" / "node_modules" / "npm" / "package.json",
                  prefix / "node_modules" / "npm" / "package.json"]  # (Windows' layout)
    npm_major = next((v for v in map(_npm_version, places) if v), None)
    if npm_major is None and exe is not None:  # a wrapper script: ask it
        npm_major = _memo(ctx, ("npm major", os.path.realpath(exe)), lambda: _run_version("npm"))
    return {"stamp": stamp, "node": node_major, "npm": npm_major}


def _bundled(item: Function | Layer) -> bool:
    return isinstance(item, Function) and item.bundle_options is not None


def _source_root(item: Function, ctx: RunContext) -> Root:
    """A bundled function's whole source folder (esbuild may read any of it)."""
    src = Path(item.source)
    prune = {"node_modules", ".git"}
    with contextlib.suppress(ValueError):  # the build dir inside the source
        prune.add(ctx.build_dir.resolve().relative_to(src.resolve()).as_posix())
    return Root(src, "", frozenset(prune))


def _source(item: Function | Layer, ctx: RunContext, known: Mapping[str, Any] | None,
            hashes: Mapping[str, CachedEntry] | None) -> dict[str, Any]:
    """The item's own files (not the staged tree) as a content digest: those the zip
    takes, or for a bundled function every file of its source folder. One stat walk
    when nothing moved since ``known``; else the changed files are hashed
    (``hashes``: a zip's records, whose files are not read again)."""
    who = label(item)
    if _bundled(item):
        assert isinstance(item, Function)
        own = [_source_root(item, ctx)]
    else:
        own = [r for r in build.roots(item, ctx.build_dir) if not r.staged]
    entries = [e for r in own for e in walk(r, who)]
    stat = digest.stat_digest(entries)
    if known and known.get("stat") == stat and "digest" in known:
        return dict(known)
    if _bundled(item):
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
    if _bundled(item):
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


def computed(item: Function | Layer, ctx: RunContext,
             memory: Mapping[str, Any] | None = None) -> Computed:
    """``compute`` once per run (the npm, bundle and package checks and the package
    step all ask)."""
    return _memo(ctx, ("build cache key", item.kind, item.build_name),
                 lambda: compute(item, ctx, memory))


# -- S3 ----------------------------------------------------------------------------------


def _clients(ctx: RunContext) -> Clients:
    """The cache's clients: lambda_tasks' target, and an S3 client that gives up
    sooner than the deploy's (a cache is worth a few seconds, not minutes)."""
    cache = ctx.cache
    assert cache is not None

    def make() -> Clients:
        from botocore.config import Config

        base = ctx.clients("build cache", cache.target)
        config = Config(region_name=base.region, connect_timeout=CONNECT_TIMEOUT,
                        read_timeout=60, user_agent_extra=USER_AGENT, max_pool_connections=16,
                        retries={"mode": "standard", "total_max_attempts": ATTEMPTS})
        kwargs: dict[str, Any] = {"config": config, "region_name": base.region}
        if cache.target.endpoint:
            kwargs["endpoint_url"] = cache.target.endpoint
        return dataclasses.replace(base, s3=base.session.create_client("s3", **kwargs))

    return _memo(ctx, ("build cache clients", cache.target), make)


def _down_file(ctx: RunContext) -> Path:
    return ctx.build_dir / "cache" / "buildcache-down.json"


def _down(ctx: RunContext, op: str) -> bool:
    """Whether the cache was given up for ``op`` ("read" or "write") in this run, in
    this process or another one (doit -P process)."""
    with ctx.caches.lock:
        said = ctx.caches.made.get(("build cache down",))
    if said is None:
        record = read_json(_down_file(ctx))
        if not isinstance(record, dict) or record.get("run") != ctx.run_id:
            return False
        said = record.get("ops") or []
    return op in said


def _give_up(ctx: RunContext, why: str, ops: tuple[str, ...] = ("read", "write")) -> None:
    """Stop using the cache for the rest of the run, with one warning (across
    processes)."""
    with ctx.caches.lock:
        ctx.caches.made[("build cache down",)] = list(ops)
    write_json(_down_file(ctx), {"run": ctx.run_id, "ops": list(ops), "why": why})
    if records.first_to_report(ctx, f"build cache down: {' '.join(ops)}"):
        what = "used" if "read" in ops else "written to"
        log.warning("build cache: %s; it is not %s for the rest of this run (the packages are"
                    " built here)", why, what)


def _status(exc: Any) -> tuple[Any, str]:
    response = getattr(exc, "response", None) or {}
    return (response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            str(response.get("Error", {}).get("Code", "")))


def _problem(exc: BaseException, cache: CacheSettings, what: str) -> str:
    status, code = _status(exc)
    if code == "NoSuchBucket":
        return f"bucket {cache.bucket!r} does not exist (cache_bucket=)"
    if status == 403 or code in ("AccessDenied", "Forbidden", "403"):
        verbs = "s3:GetObject and s3:ListBucket" if what == "read" else "s3:PutObject"
        return (f"access denied to s3://{cache.bucket}/{cache.prefix} ({code or status}); the"
                f" credentials need {verbs} there")
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot {what} s3://{cache.bucket}/{cache.prefix} ({text})"


def lookup(item: Function | Layer, ctx: RunContext) -> Found | None:
    """The cache entry for the item's current inputs, or None (a miss, or a cache that
    cannot be used). Once per run and item."""
    cache = ctx.cache
    if cache is None or _down(ctx, "read"):
        return None
    k = computed(item, ctx, _memory(item, ctx)).key
    return _memo(ctx, ("build cache entry", k), lambda: _read_entry(item, ctx, cache, k))


def _read_entry(item: Function | Layer, ctx: RunContext, cache: CacheSettings, k: str
                ) -> Found | None:
    from botocore.exceptions import BotoCoreError, ClientError

    url = cache.url(cache.entry_key(k))
    try:
        c = _clients(ctx)
        body = c.s3.get_object(Bucket=cache.bucket, Key=cache.entry_key(k))["Body"].read()
    except ClientError as exc:
        status, code = _status(exc)
        if code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket"):
            return None  # a miss
        _give_up(ctx, _problem(exc, cache, "read"))
        return None
    except (BotoCoreError, DodoLambdaError) as exc:
        _give_up(ctx, _problem(exc, cache, "read"))
        return None
    found = _parse(body, item, cache, k, url)
    if found is None or not _extras_match(found.extras):
        return None  # not trusted (said), or a bundle that read other files
    return found


def _parse(body: bytes, item: Function | Layer, cache: CacheSettings, k: str, url: str
           ) -> Found | None:
    """The entry, when it is one for these inputs and well formed; else a warning."""
    why = None
    try:
        entry = json.loads(body)
    except ValueError:
        entry, why = None, "it is not JSON"
    if why is None:
        m = entry.get("manifest") if isinstance(entry, dict) else None
        extras = entry.get("extras") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            why = "it is not an entry of this dodo_lambda's format"
        elif entry.get("key") != k or (entry.get("kind"), entry.get("name")) != (
                item.kind, item.build_name):
            why = f"it describes other inputs ({entry.get('kind')} {entry.get('name')!r})"
        elif not _manifest_ok(m):
            why = "its manifest is incomplete"
        elif entry.get("zip") != cache.zip_key(m["sha256"]):  # type: ignore[index]
            why = "its zip key does not match the manifest's SHA-256"
        elif not isinstance(extras, dict) or not all(
                isinstance(p, str) and isinstance(s, str) for p, s in extras.items()):
            why = "its list of extra inputs is malformed"
        else:
            assert isinstance(m, dict)
            return Found(k, m, entry["zip"], dict(extras), url)
    log.warning("%s: build cache entry %s is not used: %s; building here", label(item), url, why)
    return None


def _manifest_ok(m: Any) -> bool:
    if not isinstance(m, dict):
        return False
    sha = m.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(ch not in "0123456789abcdef"
                                                          for ch in sha):
        return False
    ints = all(isinstance(m.get(k), int) for k in ("zip_size", "unzipped_size", "files"))
    return ints and m.get("code_sha256") == s3.b64_sha256(sha) and isinstance(
        m.get("content_digest"), str)


def _extras_match(extras: Mapping[str, str]) -> bool:
    for rel, sha in extras.items():
        path = Path(rel)
        if not path.is_file() or digest.file_sha256(path) != sha:
            return False
    return True


# -- the local record of a fetched package ------------------------------------------------


def _memory(item: Function | Layer, ctx: RunContext) -> dict[str, Any] | None:
    record = read_json(ctx.layout(item).fetched)
    memory = record.get("memory") if isinstance(record, dict) else None
    return memory if isinstance(memory, dict) else None


def is_fetched(item: Function | Layer, ctx: RunContext) -> bool:
    """True when the zip on disk is the one a cache hit installed for the current
    inputs: the package step is up to date (there is no entry cache to say so)."""
    try:
        return _is_fetched(item, ctx)
    except (DodoLambdaError, OSError, ValueError, TypeError, KeyError):
        return False


def _is_fetched(item: Function | Layer, ctx: RunContext) -> bool:
    if item.problem:
        return False
    layout = ctx.layout(item)
    record = read_json(layout.fetched)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return False
    if list(zip_stat(layout.zip) or ()) != record.get("zip") or not layout.manifest.is_file():
        return False
    if computed(item, ctx, record.get("memory")).key != record.get("key"):
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
    if moved:
        write_json(layout.fetched, record)
    return True


def forget(item: Function | Layer, ctx: RunContext) -> None:
    """`doit clean`: the record of a fetched package."""
    ctx.layout(item).fetched.unlink(missing_ok=True)


# -- the steps -----------------------------------------------------------------------------


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


def package(item: Function | Layer, ctx: RunContext,
            write: Callable[[Function | Layer, RunContext], archive.ZipResult]
            ) -> archive.ZipResult:
    """The package step with a cache: fetch the package for these inputs, or build it
    (``write``: build.write_package) and put it in the cache."""
    problem = item.problem
    if problem:
        raise DodoLambdaError(problem)
    try:
        done = computed(item, ctx, _memory(item, ctx))
    except DodoLambdaError:
        done = None  # the build says what is wrong, in its own words
    if done is not None:
        found = lookup(item, ctx)
        if found is not None:
            result = _install(item, ctx, found, done)
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
    if isinstance(item, Function) and _bundled(item) and not bundle.is_bundled(item, ctx):
        bundle.bundle(item, ctx)


def _install(item: Function | Layer, ctx: RunContext, found: Found, done: Computed
             ) -> archive.ZipResult | None:
    """Download the entry's zip, check it, and make it the item's package."""
    from botocore.exceptions import BotoCoreError, ClientError

    cache = ctx.cache
    assert cache is not None
    who, layout, m = label(item), ctx.layout(item), found.manifest
    url = cache.url(found.zip_key)
    with locked(layout.package_lock):  # one writer of this zip at a time
        build.remove_stale_temps(layout)
        layout.zip.parent.mkdir(parents=True, exist_ok=True)
        tmp = layout.zip.with_name(f".{layout.zip.name}.{os.getpid()}.tmp")
        try:
            h, size = hashlib.sha256(), 0
            try:
                body = _clients(ctx).s3.get_object(Bucket=cache.bucket, Key=found.zip_key)["Body"]
                with open(tmp, "wb") as f:
                    for chunk in body.iter_chunks(1 << 20):
                        h.update(chunk)
                        f.write(chunk)
                        size += len(chunk)
            except ClientError as exc:
                status, code = _status(exc)
                if code in ("NoSuchKey", "404") or status == 404:
                    log.warning("%s: build cache entry %s names %s, which is missing (a partial"
                                " entry); building here", who, found.url, url)
                else:
                    _give_up(ctx, _problem(exc, cache, "read"))
                return None
            except (BotoCoreError, DodoLambdaError) as exc:
                _give_up(ctx, _problem(exc, cache, "read"))
                return None
            if h.hexdigest() != m["sha256"] or size != m["zip_size"]:
                log.warning("%s: build cache entry %s is not used: %s has SHA-256 %s (%s bytes),"
                            " the entry says %s (%s bytes); building here", who, found.url, url,
                            h.hexdigest(), f"{size:,}", m["sha256"], f"{m['zip_size']:,}")
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
            "format": FORMAT, "key": done.key, "zip": list(zip_stat(layout.zip) or ()),
            "sha256": m["sha256"], "entry": found.url, "memory": done.memory, "extras": extras})
    log.info("%s: fetched from the build cache (%s); npm and the zip writer did not run", who,
             found.url)
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
    if "npm" in done.inputs:
        record = npm.read_record(layout) or {}
        if record.get("key") != done.inputs["npm"]:
            return ("its staged dependencies were installed from other inputs (or by another"
                    " node or npm version than the cache key names)")
    if _bundled(item):
        record = read_json(layout.bundle_record) or {}
        key = record.get("key") or {}
        if key.get("esbuild") != done.inputs["bundle"]["esbuild"]:
            return "it was bundled by another esbuild version than the cache key names"
        if "npm" in done.inputs:
            installed = npm.read_record(layout) or {}
            if key.get("staged") != [(installed.get("key") or {}).get("files"),
                                     installed.get("tree_content")]:
                return "its bundle was made from another install of the dependencies"
    return None


def _extras(item: Function | Layer, ctx: RunContext) -> dict[str, str]:
    """The files a bundle read outside the function's source folder (and outside
    the staged tree): a config file above it, shared code. The key cannot hold them
    (only esbuild knows them); the entry does, and a hit needs them unchanged."""
    if not isinstance(item, Function) or not _bundled(item):
        return {}
    record = read_json(ctx.layout(item).bundle_record) or {}
    src = os.path.realpath(item.source) + os.sep
    return {rel: rec[2] for rel, rec in sorted((record.get("inputs") or {}).items())
            if not os.path.realpath(rel).startswith(src)}


def _store(item: Function | Layer, ctx: RunContext, done: Computed,
           result: archive.ZipResult) -> None:
    """Put the package in the cache: the zip (content-addressed; nothing sent when it
    is there), then its entry."""
    cache = ctx.cache
    assert cache is not None
    if cache.read_only or _down(ctx, "write"):
        return
    who, layout = label(item), ctx.layout(item)
    why = _vouch(item, ctx, done, result)
    if why:
        log.info("%s: not put in the build cache: %s", who, why)
        return
    manifest = read_json(layout.manifest)
    zip_key = cache.zip_key(result.sha256)
    entry = {"format": FORMAT, "key": done.key, "kind": item.kind, "name": item.build_name,
             "zip": zip_key, "manifest": manifest, "extras": _extras(item, ctx),
             "made": {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "by": "dodo_lambda"}}
    data = json.dumps(entry, indent=1, sort_keys=True).encode()
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        c = _clients(ctx)
        s3.upload_zip(c, who=who, bucket=cache.bucket, key=zip_key, zip_path=layout.zip,
                      sha256_hex=result.sha256)
        with translating(who, bucket=cache.bucket, c=c):
            c.s3.put_object(
                Bucket=cache.bucket, Key=cache.entry_key(done.key), Body=data,
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                ServerSideEncryption="AES256", ContentType="application/json")
    except (DodoLambdaError, BotoCoreError, ClientError) as exc:
        cause = exc.__cause__ if isinstance(exc, DodoLambdaError) and exc.__cause__ else exc
        _give_up(ctx, _problem(cause, cache, "write"), ("write",))
        return
    log.info("%s: put in the build cache (%s)", who, cache.url(cache.entry_key(done.key)))
