"""An item's package: which roots and rules make it, where it is written, and
whether it must be rebuilt. Ties selection, npm, digest and archive together.

The staged dependencies are one *segment* of the zip (see entrycache): while the
npm step's check says the tree is what it installed, a rebuild copies their block
from the previous zip, and the up-to-date check walks only the item's own files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import archive, digest, entrycache, npm, npmpolicy
from .config import Function, Layer, bundled, label
from .context import RunContext
from .entrycache import EntryCache, HandlerMemo, Segment, SelectionMemo, zip_stat
from .errors import DodoLambdaError, NextStep
from .files import locked, read_json, spare_path, write_json
from .layout import Layout
from .selection import (
    CODE_SUFFIXES,
    Entry,
    Patterns,
    Root,
    Selection,
    Sources,
    choose,
    default_pattern,
    folder_clash,
    patterns_for,
    select,
    stream_staged,
    walk,
    walk_roots,
    with_sources,
)

log = logging.getLogger("dodo_lambda")


def _inside(child: Path, parent: Path) -> str | None:
    """``child`` relative to ``parent`` (posix), or None when it is elsewhere."""
    try:
        return child.resolve().relative_to(parent.resolve()).as_posix()
    except ValueError:
        return None


def source_root(fn: Function, build_dir: Path) -> Root:
    """A function's source folder as a root: its node_modules, .git and a build dir
    inside it pruned."""
    src = Path(fn.source)
    prune = {"node_modules", ".git"}
    inner = _inside(Path(build_dir), src)
    if inner:
        prune.add(inner)
    return Root(src, "", frozenset(prune))


def roots(item: Function | Layer, build_dir: Path) -> list[Root]:
    if bundled(item):
        from . import bundle  # imported where needed: a run that bundles nothing never loads it

        return bundle.roots(item, build_dir)  # the bundle's output stands in for the source
    src = Path(item.source)
    staged = npm.staged_root(item, Layout.of(build_dir, item))
    if isinstance(item, Layer):
        return [Root(src / "nodejs", "nodejs/", frozenset({"node_modules"})), staged]
    out = [source_root(item, build_dir)]
    if npm.has_dependencies(item):
        out.append(staged)
    return out


def patterns(item: Function | Layer, build_dir: Path) -> Patterns:
    extra = []
    inner = _inside(Path(build_dir), Path(item.source))
    if inner:
        extra.append(f"/{inner}/")
    staged = npm.staged_root(item, Layout.of(build_dir, item)).prefix
    return patterns_for(Path(item.source), item.exclude, item.include, extra, (staged,),
                        label(item))


def _rules(item: Function | Layer, build_dir: Path, options: str, cache: EntryCache | None
           ) -> Patterns:
    """The patterns, with the regexes the entry cache kept when they are the same."""
    rules = patterns(item, build_dir)
    if cache is not None and cache.options == options and cache.sources is not None:
        rules = replace(rules, sources=cache.sources)
    return rules


def options_digest(item: Function | Layer, build_dir: Path) -> str:
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


def segment_root(item: Function | Layer, build_dir: Path) -> Root | None:
    """The staged tree packed as one segment: the npm step's tree, for an item that
    has one (a bundle ships its few externals file by file)."""
    if bundled(item):
        return None
    if not npm.has_dependencies(item):
        return None
    return npm.staged_root(item, Layout.of(build_dir, item))


def _segment_key(options: str, tree: str, prefix: str) -> str:
    return digest.value_digest([options, tree, prefix])


def _segment_content(tree: str | None, rules: Patterns, prefix: str) -> str | None:
    """The content digest of the staged files a zip holds, from what decides them: the
    tree's content (hashed by the npm step, checked since) and the patterns that pick
    from it (the default excludes do not apply there). None when the tree is not
    trusted: then each file is hashed as it is packed."""
    if not tree:
        return None
    return digest.value_digest(["segment", tree, prefix, rules.excludes, rules.includes])


@dataclass
class Scan:
    """What an uptodate check learnt, handed to the build that follows it in the
    same run (``caches.scans``) so the tree is not walked, matched and read twice."""

    options: str
    own: list[Entry]  # the item's own files (every root's but the segment's)
    stat: str  # their stat digest
    tree: str | None  # the staged tree's content as checked (None: no segment, or altered)
    selection: Selection | None = None
    cache: EntryCache | None = None
    choice: SelectionMemo | None = None  # the selection's memo, to keep with the zip


def _choose(item: Function | Layer, build_dir: Path, scan: Scan, cache: EntryCache | None
            ) -> Selection:
    """``choose`` over the scan's walk, or, when the last zip was chosen from a walk
    with the same names, paths and problems under the same options, its choice again
    (its records' names) without compiling and matching the patterns (2 ms of an edit)."""
    key = digest.value_digest([scan.options, "\0".join(
        f"{e.arcname}\0{e.path}\0{e.problem or ''}" for e in scan.own)])
    if cache is not None and cache.selection is not None and cache.selection.key == key:
        kept, memo = cache.records, cache.selection  # the key holds the options
        chosen = Selection(sorted((e for e in scan.own if e.arcname in kept),
                                  key=lambda e: e.arcname),
                           list(memo.dropped), list(memo.restored))
    else:
        chosen = choose(scan.own, _rules(item, build_dir, scan.options, cache), label(item),
                        roots(item, build_dir))
    scan.selection = chosen
    scan.choice = SelectionMemo(key, tuple(chosen.dropped), tuple(chosen.restored))
    return chosen


def _key(item: Function | Layer) -> tuple[str, str]:
    return (item.kind, item.name)


def _scan(item: Function | Layer, ctx: RunContext, options: str) -> Scan:
    seg = segment_root(item, ctx.build_dir)
    if bundled(item):
        from . import bundle

        own = bundle.walk(item, ctx)
    else:
        own = walk_roots([r for r in roots(item, ctx.build_dir) if r != seg], label(item))
    tree = npm.staged_tree(item, ctx) if seg is not None else None
    return Scan(options, own, digest.stat_digest(own), tree)


def package(item: Function | Layer, ctx: RunContext) -> archive.ZipResult:
    """The package step: with a shared build cache (lambda_tasks(cache_bucket=...)),
    fetched from it or built and put there (buildcache); else built here."""
    if ctx.cache is not None:
        from . import buildcache  # it builds on this module

        return buildcache.package(item, ctx, write_package)
    return write_package(item, ctx)


def write_package(item: Function | Layer, ctx: RunContext) -> archive.ZipResult:
    """Build the item's zip and manifest (incrementally when a previous one exists)."""
    who = label(item)
    problem = item.problem
    if problem:
        raise DodoLambdaError(problem)
    layout = ctx.layout(item)
    if npm.has_dependencies(item) and not layout.install_record.is_file():
        raise DodoLambdaError(f"{who}: dependencies are not installed",
                              next_step=NextStep("npm", item.name))
    if bundled(item):
        from . import bundle

        bundle.check_bundled(item, layout)
    options = options_digest(item, ctx.build_dir)
    scan = ctx.caches.scans.pop(_key(item), None)
    if scan is None or scan.options != options:
        scan = _scan(item, ctx, options)
        scan.cache = entrycache.read(layout.entries)
    rules = with_sources(_rules(item, ctx.build_dir, options, scan.cache), who)
    chosen = scan.selection or _choose(item, ctx.build_dir, scan, scan.cache)
    entries = chosen.entries
    seg = segment_root(item, ctx.build_dir)
    known = scan.cache.handler if scan.cache and scan.cache.options == options else None
    memo = check_entries(item, ctx.build_dir, entries, seg, known)
    _warn_defaults(item, chosen)
    with locked(layout.package_lock):  # one writer of this zip at a time
        remove_stale_temps(layout)
        cache = entrycache.read(layout.entries)
        # checked under the lock: another run may have replaced the zip meanwhile
        if not (cache and cache.options == options and cache.zip == zip_stat(layout.zip)):
            cache = None
        staged: archive.Staged | Segment | None = None
        if seg is not None:
            key = _segment_key(options, scan.tree, seg.prefix) if scan.tree else ""
            old = cache.segment if cache and key else None
            staged = old if old and old.prefix == seg.prefix and old.key == key else \
                archive.Staged(seg.prefix, key, stream_staged(seg, rules, who),
                               _segment_content(scan.tree, rules, seg.prefix))
        layout.entries.unlink(missing_ok=True)  # stale the moment the zip changes
        result = archive.write_zip(entries, layout.zip, who=who, staged=staged,
                                   previous=cache.records if cache else None)
        _record(item, layout, options, scan.stat, chosen, result, rules.sources, memo,
                scan.choice)
    _warn_native(item, layout, entries, result.segment)
    return result


def _warn_native(item: Function | Layer, layout: Layout, entries: list[Entry],
                 segment: Segment | None) -> None:
    for warning in native_warnings(item, layout, entries, segment):
        log.warning("%s", warning)


def native_warnings(item: Function | Layer, layout: Layout, entries: list[Entry],
                    segment: Segment | None) -> list[str]:
    """Native addons that cannot load, and packages whose skipped install script
    would have built one (from the staged segment's notable files, remembered)."""
    who = label(item)
    notable = [*entries, *(Entry(arcname, path, 0, 0, 0o644)
                           for arcname, path in (segment.notable if segment else ()))]
    out = [f"{who}: {problem}" for problem in native_mismatches(notable, item.architecture)]
    if not item.scripts and npm.has_dependencies(item):
        for name, why in npmpolicy.unbuilt_packages(notable, npm.staged_root(item, layout)):
            out.append(f"{who}: package {name} looks unbuilt ({why}): its install script did"
                       f" not run (scripts are off by default); if the {item.kind} needs it,"
                       f" set scripts=True on the {item.kind}")
    return out


def remove_stale_temps(layout: Layout) -> None:
    """Remove the temporary zip and manifest a killed run left beside them. Call
    with ``layout.package_lock`` held: a writer holds it for as long as its temporary
    files exist, so whatever is found under the lock has no live writer (a pid check
    could not tell a reused pid from a live run; the lock can)."""
    for target in (layout.zip, layout.manifest):
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def clean_package(item: Function | Layer, ctx: RunContext) -> None:
    """`doit clean`: the zip, the spare it is written over, its manifest and any
    temporary file a killed run left (under the package lock, so a build running now
    finishes first)."""
    layout = ctx.layout(item)
    if not layout.zip.parent.is_dir():
        return
    with locked(layout.package_lock):
        remove_stale_temps(layout)
        for path in (layout.zip, spare_path(layout.zip), layout.manifest):
            path.unlink(missing_ok=True)


def left_out_lines(items: list[Function | Layer], ctx: RunContext) -> list[str]:
    """For `doit plan`: one line per item naming the files its default excludes
    left out of the zip (from the manifest), so that nothing is dropped silently."""
    lines = []
    for item in items:
        manifest = read_json(ctx.layout(item).manifest)
        names = manifest.get("excluded_by_default") if isinstance(manifest, dict) else None
        if names:
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more (see the manifest)"
                                             if len(names) > 20 else "")
            lines.append(f"{label(item)}: not packed (default excludes): {shown}")
    return lines


def _warn_defaults(item: Function | Layer, chosen: Selection) -> None:
    for warning in default_warnings(item, chosen):
        log.warning("%s", warning)


def default_warnings(item: Function | Layer, chosen: Selection) -> list[str]:
    """Name the files the default excludes changed where it may matter: a dropped
    file that looks like code, and a default-excluded file include= brings back."""
    who = label(item)
    out = [f"{who}: {name} is not packed: the default excludes leave it out ({_why(name)});"
           f" if it is code the {item.kind} needs, add it to include="
           for name in chosen.dropped if name.lower().endswith(CODE_SUFFIXES)]
    out.extend(f"{who}: include= brings back {name}, which the default excludes leave out"
               f" ({_why(name)}); make sure it holds no secret" for name in chosen.restored)
    return out


def _why(name: str) -> str:
    pattern = default_pattern(name)
    return f"it matches {pattern}" if pattern else "it links to such a file"


def check_entries(item: Function | Layer, build_dir: Path, entries: list[Entry],
                  staged: Root | None = None, known: HandlerMemo | None = None
                  ) -> HandlerMemo | None:
    """What must hold of the selected files before a zip is written: no file where
    the package needs a folder, nothing from the build dir, and (functions) a
    handler that Lambda can load. ``staged`` is the staged tree when it is packed
    as a segment (its files are not in ``entries``). Raises DodoLambdaError;
    warnings are logged. Returns the handler check's memo to keep with the zip
    (``known``: the previous zip's, which spares the check when it still holds)."""
    who = label(item)
    clash = folder_clash(entries, [r.prefix for r in roots(item, build_dir)],
                         [staged.prefix] if staged is not None else [])
    if clash:
        raise DodoLambdaError(f"{who}: {clash}")
    if staged is not None:
        inside = next((e for e in entries if e.arcname.startswith(staged.prefix)), None)
        if inside is not None:
            raise DodoLambdaError(
                f"{who}: {inside.path} would be packed as {inside.arcname}, among the installed"
                f" dependencies ({staged.prefix} holds npm's staged tree); rename or exclude it")
    build = os.path.realpath(build_dir) + os.sep
    # roots that live in the build dir by design: the staged tree, a bundle's output
    ours = tuple(path + os.sep for path in (os.path.realpath(r.path) for r in
                                            roots(item, build_dir)) if path.startswith(build))
    for e in entries:
        if e.path.startswith(build) and not e.path.startswith(ours):
            raise DodoLambdaError(
                f"{who}: {e.arcname} is {e.path}, inside the build dir {build_dir}; the zip"
                " would pack its own build output: exclude it (exclude=) or move build_dir="
                " outside the source")
    if isinstance(item, Function):
        return _check_handler(item, build_dir, entries, staged, known)
    return None


def _handler_key(fn: Function, entries: list[Entry]) -> str:
    return digest.value_digest([fn.handler, fn.runtime, fn.source,
                                "\0".join(e.arcname for e in entries)])


def _check_handler(fn: Function, build_dir: Path, entries: list[Entry],
                   staged: Root | None = None, known: HandlerMemo | None = None
                   ) -> HandlerMemo | None:
    """The handler check, spared when ``known`` was made for the same handler and file
    names and the files it read are unchanged (an edit elsewhere: most rebuilds)."""
    who = label(fn)
    by_name = {e.arcname: e for e in entries}
    key = _handler_key(fn, entries)
    if known is not None and known.key == key and all(
            (e := by_name.get(read[0])) is not None and (e.size, e.mtime_ns, e.ctime_ns) == read[1:]
            for read in known.reads):
        for warning in known.warnings:
            log.warning("%s: %s", who, warning)
        return known
    from . import handlers  # with its JavaScript reader: only when a package is built

    files = {e.arcname: e.path for e in entries}
    own = handlers.in_package(files, fn.handler)  # then neither node_modules nor layers count
    if staged is not None and not own:
        # a handler loaded from node_modules (or missing): the staged tree's names count
        files.update((e.arcname, e.path) for e in stream_staged(staged, patterns(fn, build_dir),
                                                                 who))

    reads: list[str] = []

    def read(arcname: str) -> bytes:
        reads.append(arcname)
        with open(files[arcname], "rb") as f:
            return f.read(handlers.MAX_READ + 1)

    layers: list[set[str] | None] = []
    if fn.layers and not own:
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
    if not own or any(name not in by_name for name in reads):
        return None  # it looked into node_modules or layers: checked on every build
    return HandlerMemo(key, tuple(
        (name, by_name[name].size, by_name[name].mtime_ns, by_name[name].ctime_ns)
        for name in dict.fromkeys(reads)), tuple(verdict.warnings))


def _record(item: Function | Layer, layout: Layout, options: str, stat: str,
            chosen: Selection, result: archive.ZipResult, sources: Sources | None = None,
            handler: HandlerMemo | None = None, selection: SelectionMemo | None = None
            ) -> None:
    """The manifest (for people and the deploy steps) and the entry cache."""
    write_manifest(item, layout, chosen, result)
    entrycache.write(layout.entries, EntryCache(options, zip_stat(layout.zip), stat,
                                                result.records, result.segment, sources,
                                                handler, selection))


def write_manifest(item: Function | Layer, layout: Layout, chosen: Selection,
                   result: archive.ZipResult, *, packages: dict[str, int] | None = None
                   ) -> dict[str, Any]:
    """The manifest alone, as written. The watch writes it right after a splice (with
    the package sizes when it knows them unchanged) and the entry cache later."""
    manifest = {
        "name": item.name,
        "kind": item.kind,
        "sha256": result.sha256,
        "code_sha256": result.code_sha256,
        "zip_size": result.zip_size,
        "unzipped_size": result.unzipped_size,
        "files": result.files,
        "content_digest": result.content_digest,
        "compressor": archive.COMPRESSOR_ID,
        "packages": _packages(chosen.entries, result.segment) if packages is None else packages,
        "excluded_by_default": chosen.dropped,
    }
    write_json(layout.manifest, manifest)
    return manifest


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


def _packages(entries: list[Entry], segment: Segment | None = None) -> dict[str, int]:
    """Top-level npm packages in the zip (``name`` or ``@scope/name``) and their
    unzipped sizes, nested node_modules counted toward their top-level package."""
    out = dict(segment.packages) if segment else {}
    for e in entries:
        package = archive.package_of(e.arcname)
        if package is not None:
            out[package] = out.get(package, 0) + e.size
    return out


def is_packaged(item: Function | Layer, ctx: RunContext) -> bool:
    """True when the zip on disk is what ``package`` would write now.

    One stat walk of the item's own files when nothing changed (the staged tree is
    the npm step's to check); when only their stats moved, the files whose stats
    changed are hashed and compared with the recorded content.
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
    scan = _scan(item, ctx, options)
    scan.cache = cache
    seg = segment_root(item, ctx.build_dir)
    if seg is not None and not (scan.tree and cache.segment and (
            cache.segment.prefix, cache.segment.key) == (
            seg.prefix, _segment_key(options, scan.tree, seg.prefix))):
        ctx.caches.scans[_key(item)] = scan  # the build that follows starts from here
        return False
    if scan.stat == cache.stat:
        return True
    chosen = _choose(item, ctx.build_dir, scan, cache)
    entries = chosen.entries
    old = cache.records
    files = digest.entry_hashes(entries, old)
    # the manifest lists what the defaults left out: a new .env means a new manifest
    if digest.zip_content_digest(files, cache.segment) != manifest.get("content_digest") \
            or chosen.dropped != manifest.get("excluded_by_default"):
        ctx.caches.scans[_key(item)] = scan  # the build that follows starts from here
        return False
    # same content, new stats: remember them so the next check is one walk again
    records = dict(old)
    for e, (_, _, sha) in zip(entries, files, strict=True):
        rec = old.get(e.arcname)
        if rec:
            records[e.arcname] = rec._replace(size=e.size, mtime_ns=e.mtime_ns,
                                              ctime_ns=e.ctime_ns, mode=e.mode, sha256=sha)
    entrycache.write(layout.entries, EntryCache(cache.options, cache.zip, scan.stat, records,
                                                cache.segment, cache.sources, cache.handler,
                                                cache.selection))
    return True
