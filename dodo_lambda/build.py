"""An item's package: which roots and rules make it, where it is written, and
whether it must be rebuilt. Ties select, npm, digest and archive together."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import archive, digest, handlers, npm
from .config import Function, Layer, label
from .errors import DodoLambdaError
from .files import locked, read_json, write_atomic, write_json
from .select import Entry, Patterns, Root, folder_clash, patterns_for, select, walk, walk_roots

log = logging.getLogger("dodo_lambda")


@dataclass(frozen=True)
class Paths:
    """Everything the package step writes for one item."""

    zip: Path
    manifest: Path
    cache: Path


def paths(item: Function | Layer, build_dir: str | Path) -> Paths:
    b = Path(build_dir)
    sub = "layers/" if isinstance(item, Layer) else ""
    return Paths(
        zip=b / "dist" / f"{sub}{item.name}.zip",
        manifest=b / "dist" / f"{sub}{item.name}.manifest.json",
        cache=b / "cache" / f"{sub}{item.name}.entries",
    )


def _inside(child: Path, parent: Path) -> str | None:
    """``child`` relative to ``parent`` (posix), or None when it is elsewhere."""
    try:
        return child.resolve().relative_to(parent.resolve()).as_posix()
    except ValueError:
        return None


def roots(item: Function | Layer, build_dir: str | Path) -> list[Root]:
    src = Path(item.source)
    staged = npm.staged_root(item, build_dir)
    if isinstance(item, Layer):
        return [Root(src / "nodejs", "nodejs/", frozenset({"node_modules"})), staged]
    prune = {"node_modules", ".git"}
    inner = _inside(Path(build_dir), src)
    if inner:
        prune.add(inner)
    out = [Root(src, "", frozenset(prune))]
    if npm.has_dependencies(item):
        out.append(staged)
    return out


def patterns(item: Function | Layer, build_dir: str | Path) -> Patterns:
    extra = []
    inner = _inside(Path(build_dir), Path(item.source))
    if inner:
        extra.append(f"/{inner}/")
    return patterns_for(Path(item.source), item.exclude, item.include, extra, label(item))


def options_digest(item: Function | Layer, build_dir: str | Path) -> str:
    """Everything besides the files that changes the zip's bytes."""
    return digest.value_digest({
        "format": archive.FORMAT,
        "compressor": archive.COMPRESSOR_ID,
        "time": archive.dos_timestamp(),
        "patterns": patterns(item, build_dir),
        "roots": [(r.path.as_posix(), r.prefix, sorted(r.prune), r.staged)
                  for r in roots(item, build_dir)],
        # the handler check runs when the package is built: a new handler or runtime
        # must run it again
        "handler": [item.handler, item.runtime, [x if isinstance(x, str) else x.name
                                                  for x in item.layers]]
        if isinstance(item, Function) else None,
    })


@dataclass
class _Scan:
    """What an uptodate check learnt, handed to the build that follows it in the
    same run so the tree is not walked, matched and read twice."""

    options: str
    everything: list[Entry]
    stat: str
    entries: list[Entry] | None = None
    cache: dict[str, Any] | None = None


_SCANS: dict[tuple[str, str, str], _Scan] = {}


def _key(item: Function | Layer, build_dir: str | Path) -> tuple[str, str, str]:
    return (item.kind, item.name, str(build_dir))


def package(item: Function | Layer, build_dir: str | Path) -> archive.ZipResult:
    """Build the item's zip and manifest (incrementally when a previous one exists)."""
    who = label(item)
    problem = item.problem
    if problem:
        raise DodoLambdaError(problem)
    if npm.has_dependencies(item) and not npm.staging(item, build_dir).record.is_file():
        raise DodoLambdaError(f"{who}: dependencies are not installed; run `doit npm:{item.name}`"
                              " (or `doit package`, which runs it first)")
    p = paths(item, build_dir)
    options = options_digest(item, build_dir)
    scan = _SCANS.pop(_key(item, build_dir), None)
    if scan is None or scan.options != options:
        everything = walk_roots(roots(item, build_dir), who)
        scan = _Scan(options, everything, digest.stat_digest(everything))
    entries = scan.entries
    if entries is None:
        entries = select(scan.everything, patterns(item, build_dir), who)
    check_entries(item, build_dir, entries)
    for problem in native_mismatches(entries, item.architecture):
        print(f"warning: {who}: {problem}", file=sys.stderr)
    with locked(p.cache.with_suffix(".lock")):  # one writer of this zip at a time
        cache = scan.cache if scan.cache is not None else _read_cache(p.cache) or {}
        previous = None
        # checked under the lock: another run may have replaced the zip meanwhile
        if cache.get("options") == options and cache.get("zip") == _stat(p.zip):
            previous = cache.get("entries")
        p.cache.unlink(missing_ok=True)  # stale the moment the zip changes
        result = archive.write_zip(entries, p.zip, who=who, previous=previous)
        _record(item, p, options, scan.stat, entries, result)
    return result


def check_entries(item: Function | Layer, build_dir: str | Path, entries: list[Entry]) -> None:
    """What must hold of the selected files before a zip is written: no file where
    the package needs a folder, nothing from the build dir, and (functions) a
    handler that Lambda can load. Raises DodoLambdaError; warnings are logged."""
    who = label(item)
    clash = folder_clash(entries, [r.prefix for r in roots(item, build_dir)])
    if clash:
        raise DodoLambdaError(f"{who}: {clash}")
    build = os.path.realpath(build_dir) + os.sep
    staged = os.path.realpath(npm.staging(item, build_dir).folder) + os.sep
    for e in entries:
        if e.path.startswith(build) and not e.path.startswith(staged):
            raise DodoLambdaError(
                f"{who}: {e.arcname} is {e.path}, inside the build dir {build_dir}; the zip"
                " would pack its own build output: exclude it (exclude=) or move build_dir="
                " outside the source")
    if isinstance(item, Function):
        _check_handler(item, build_dir, entries)


def _check_handler(fn: Function, build_dir: str | Path, entries: list[Entry]) -> None:
    who = label(fn)
    files = {e.arcname: e.path for e in entries}

    def read(arcname: str) -> bytes:
        with open(files[arcname], "rb") as f:
            return f.read(handlers.MAX_READ + 1)

    layers: list[set[str] | None] = []
    if fn.layers and not handlers.in_package(files, fn.handler):
        for layer in fn.layers:
            if isinstance(layer, str):
                layers.append(None)
                continue
            found = [e for r in roots(layer, build_dir) for e in walk(r, label(layer))]
            names = {e.arcname for e in select(found, patterns(layer, build_dir), label(layer))}
            # its dependencies may not be installed yet: they will be there
            names.update(f"nodejs/node_modules/{dep}/package.json"
                         for dep in npm.dependency_names(layer))
            layers.append(names)
    verdict = handlers.check_handler(files, read, fn.handler, fn.runtime, source=fn.source,
                                     layers=layers)
    for warning in verdict.warnings:
        log.warning("%s: %s", who, warning)
    if verdict.error:
        raise DodoLambdaError(f"{who}: {verdict.error}")


def _record(item: Function | Layer, p: Paths, options: str, stat: str, entries: list[Entry],
            result: archive.ZipResult) -> None:
    """The manifest (for people and the deploy steps) and the entry cache."""
    write_json(p.manifest, {
        "name": item.name,
        "kind": item.kind,
        "sha256": result.sha256,
        "code_sha256": result.code_sha256,
        "zip_size": result.zip_size,
        "unzipped_size": result.unzipped_size,
        "files": result.files,
        "content_digest": result.content_digest,
        "compressor": archive.COMPRESSOR_ID,
        "packages": _packages(entries),
    })
    _write_cache(p.cache, {
        "options": options,
        "zip": _stat(p.zip),
        "stat": stat,
        "entries": result.records,
    })


_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}


def native_mismatches(entries: list[Entry], architecture: str) -> list[str]:
    """Native addons (.node) that cannot load on Lambda's ``architecture``.

    Packages that ship prebuilt binaries for several platforms and pick one at
    run time make this a warning, not an error.
    """
    found = []
    for e in entries:
        if not e.arcname.endswith(".node"):
            continue
        try:
            with open(e.path, "rb") as f:
                head = f.read(20)
        except OSError:
            continue
        if head[:4] != b"\x7fELF":
            found.append(f"{e.arcname} is not a Linux binary; Lambda cannot load it")
        else:
            order = "little" if head[5] == 1 else "big"
            machine = _ELF_MACHINES.get(int.from_bytes(head[18:20], order), "another CPU")
            if machine != architecture:
                found.append(f"{e.arcname} is built for {machine}, the function runs on"
                             f" {architecture}; check architecture= or reinstall that package")
    return found


def _packages(entries: list[Entry]) -> dict[str, int]:
    """Top-level npm packages in the zip (``name`` or ``@scope/name``) and their
    unzipped sizes, nested node_modules counted toward their top-level package."""
    out: dict[str, int] = {}
    for e in entries:
        i = e.arcname.find("node_modules/")
        if i < 0:
            continue
        parts = e.arcname[i + 13:].split("/", 2)
        if len(parts) < 2:
            continue  # a file directly in node_modules
        name = parts[0] if not parts[0].startswith("@") else "/".join(parts[:2])
        out[name] = out.get(name, 0) + e.size
    return out


# The entry cache: thousands of records, read and written on every build, never
# by people: marshal is several times faster than JSON. Unreadable (another
# Python version, a torn file) simply means a cold build.
_CACHE_MAGIC = b"dodo_lambda-cache-1\n"


def _read_cache(path: Path) -> dict[str, Any] | None:
    import marshal

    try:
        data = path.read_bytes()
        if not data.startswith(_CACHE_MAGIC):
            return None
        value = marshal.loads(data[len(_CACHE_MAGIC):])
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _write_cache(path: Path, value: dict[str, Any]) -> None:
    import marshal

    write_atomic(path, _CACHE_MAGIC + marshal.dumps(value))


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def is_packaged(item: Function | Layer, build_dir: str | Path) -> bool:
    """True when the zip on disk is what ``package`` would write now.

    One stat walk when nothing changed; when only mtimes moved, the files whose
    stats changed are hashed and compared with the recorded content.
    """
    try:
        return _is_packaged(item, build_dir)
    except (DodoLambdaError, OSError):
        return False  # let the action run and report it


def _is_packaged(item: Function | Layer, build_dir: str | Path) -> bool:
    if item.problem:
        return False
    p = paths(item, build_dir)
    cache = _read_cache(p.cache)
    manifest = read_json(p.manifest)
    if not cache or not manifest or cache.get("zip") != _stat(p.zip):
        return False
    options = options_digest(item, build_dir)
    if cache.get("options") != options:
        return False
    everything = walk_roots(roots(item, build_dir), label(item))
    scan = _Scan(options, everything, digest.stat_digest(everything), cache=cache)
    if scan.stat == cache.get("stat"):
        return True
    scan.entries = entries = select(everything, patterns(item, build_dir), label(item))
    old = cache.get("entries") or {}
    files = digest.entry_hashes(entries, old)
    if digest.content_digest(files) != manifest.get("content_digest"):
        _SCANS[_key(item, build_dir)] = scan  # the build that follows starts from here
        return False
    # same content, new stats: remember them so the next check is one walk again
    new_entries = dict(old)
    for e, (_, _, sha) in zip(entries, files, strict=False):
        rec = old.get(e.arcname)
        if rec:
            new_entries[e.arcname] = [e.size, e.mtime_ns, e.mode, sha, *rec[4:]]
    _write_cache(p.cache, {**cache, "stat": scan.stat, "entries": new_entries})
    return True
