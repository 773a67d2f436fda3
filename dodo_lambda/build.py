"""An item's package: which roots and rules make it, where it is written, and
whether it must be rebuilt. Ties selection, npm, digest and archive together."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import archive, bundle, digest, entrycache, npm
from .config import Function, Layer, label
from .context import RunContext
from .entrycache import EntryCache, zip_stat
from .errors import DodoLambdaError, NextStep
from .files import locked, read_json, write_json
from .layout import Layout
from .selection import Entry, Patterns, Root, patterns_for, select, walk_roots

log = logging.getLogger("dodo_lambda")


def _inside(child: Path, parent: Path) -> str | None:
    """``child`` relative to ``parent`` (posix), or None when it is elsewhere."""
    try:
        return child.resolve().relative_to(parent.resolve()).as_posix()
    except ValueError:
        return None


def roots(item: Function | Layer, build_dir: Path) -> list[Root]:
    if isinstance(item, Function) and item.bundle_options is not None:
        return bundle.roots(item, build_dir)  # the bundle's output stands in for the source
    src = Path(item.source)
    staged = npm.staged_root(item, Layout.of(build_dir, item))
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


def patterns(item: Function | Layer, build_dir: Path) -> Patterns:
    extra = []
    inner = _inside(Path(build_dir), Path(item.source))
    if inner:
        extra.append(f"/{inner}/")
    return patterns_for(Path(item.source), item.exclude, item.include, extra)


def options_digest(item: Function | Layer, build_dir: Path) -> str:
    """Everything besides the files that changes the zip's bytes."""
    return digest.value_digest({
        "format": archive.FORMAT,
        "compressor": archive.COMPRESSOR_ID,
        "time": archive.dos_timestamp(),
        "patterns": patterns(item, build_dir),
        "roots": [(r.path.as_posix(), r.prefix, sorted(r.prune), r.staged)
                  for r in roots(item, build_dir)],
    })


@dataclass
class Scan:
    """What an uptodate check learnt, handed to the build that follows it in the
    same run (``caches.scans``) so the tree is not walked, matched and read twice."""

    options: str
    everything: list[Entry]
    stat: str
    entries: list[Entry] | None = None
    cache: EntryCache | None = None


def _key(item: Function | Layer) -> tuple[str, str]:
    return (item.kind, item.name)


def _walk(item: Function | Layer, ctx: RunContext) -> list[Entry]:
    if isinstance(item, Function) and item.bundle_options is not None:
        return bundle.walk(item, ctx)
    return walk_roots(roots(item, ctx.build_dir), label(item), ctx.caches.walks)


def package(item: Function | Layer, ctx: RunContext) -> archive.ZipResult:
    """Build the item's zip and manifest (incrementally when a previous one exists)."""
    who = label(item)
    problem = item.problem
    if problem:
        raise DodoLambdaError(problem)
    layout = ctx.layout(item)
    if npm.has_dependencies(item) and not layout.install_record.is_file():
        raise DodoLambdaError(f"{who}: dependencies are not installed",
                              next_step=NextStep("npm", item.name))
    if isinstance(item, Function) and item.bundle_options is not None:
        bundle.check_bundled(item, layout)
    options = options_digest(item, ctx.build_dir)
    scan = ctx.caches.scans.pop(_key(item), None)
    if scan is None or scan.options != options:
        everything = _walk(item, ctx)
        scan = Scan(options, everything, digest.stat_digest(everything))
    entries = scan.entries
    if entries is None:
        entries = select(scan.everything, patterns(item, ctx.build_dir), who)
    for problem in native_mismatches(entries, item.architecture):
        log.warning("%s: %s", who, problem)
    with locked(layout.package_lock):  # one writer of this zip at a time
        cache = scan.cache or entrycache.read(layout.entries)
        previous = None
        # checked under the lock: another run may have replaced the zip meanwhile
        if cache and cache.options == options and cache.zip == zip_stat(layout.zip):
            previous = cache.records
        layout.entries.unlink(missing_ok=True)  # stale the moment the zip changes
        result = archive.write_zip(entries, layout.zip, who=who, previous=previous)
        _record(item, layout, options, scan.stat, entries, result)
    return result


def _record(item: Function | Layer, layout: Layout, options: str, stat: str,
            entries: list[Entry], result: archive.ZipResult) -> None:
    """The manifest (for people and the deploy steps) and the entry cache."""
    write_json(layout.manifest, {
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
    entrycache.write(layout.entries,
                     EntryCache(options, zip_stat(layout.zip), stat, result.records))


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
            number = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
            machine = _ELF_MACHINES.get(number, "another CPU")
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


def is_packaged(item: Function | Layer, ctx: RunContext) -> bool:
    """True when the zip on disk is what ``package`` would write now.

    One stat walk when nothing changed; when only mtimes moved, the files whose
    stats changed are hashed and compared with the recorded content.
    """
    try:
        return _is_packaged(item, ctx)
    except (DodoLambdaError, OSError):
        return False  # let the action run and report it


def _is_packaged(item: Function | Layer, ctx: RunContext) -> bool:
    if item.problem:
        return False
    layout = ctx.layout(item)
    cache = entrycache.read(layout.entries)
    manifest = read_json(layout.manifest)
    if not cache or not manifest or cache.zip != zip_stat(layout.zip):
        return False
    options = options_digest(item, ctx.build_dir)
    if cache.options != options:
        return False
    everything = _walk(item, ctx)
    scan = Scan(options, everything, digest.stat_digest(everything), cache=cache)
    if scan.stat == cache.stat:
        return True
    scan.entries = entries = select(everything, patterns(item, ctx.build_dir), label(item))
    old = cache.records
    files = digest.entry_hashes(entries, old)
    if digest.content_digest(files) != manifest.get("content_digest"):
        ctx.caches.scans[_key(item)] = scan  # the build that follows starts from here
        return False
    # same content, new stats: remember them so the next check is one walk again
    records = dict(old)
    for e, (_, _, sha) in zip(entries, files, strict=True):
        rec = old.get(e.arcname)
        if rec:
            records[e.arcname] = rec._replace(size=e.size, mtime_ns=e.mtime_ns, mode=e.mode,
                                              sha256=sha)
    entrycache.write(layout.entries, EntryCache(cache.options, cache.zip, scan.stat, records))
    return True
