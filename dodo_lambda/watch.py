"""Watch: rebuild and redeploy a package on each saved change, in one process.

On every batch of changes the watcher reports, each affected function or layer
is rebuilt and (unless told not to) deployed again:

- a source file changed -> the zip is spliced (``zipsplice``: only what changed is
  read and compressed), after the same checks the package step makes (the handler
  check on the new selection, its warnings); the result equals a cold build;
- a change the splice cannot stand for (the selection rules, a folder, a link, a
  file the default excludes leave out coming or going, a native addon, a large
  file) -> the package step itself (``build.package``, incremental);
- package.json, the lock file or .npmrc changed -> npm, then the package step; for
  a workspace of an npm workspaces root, the root's package.json, lock and .npmrc
  and the sources of the workspace packages copied into its staged tree count too
  (the npm step copies those again, without npm, when only they changed);
- a function with ``bundle=``: any change in its folder -> the bundle step when
  its up-to-date check says so (esbuild read that file), then the package step;
- a layer changed -> the layer is published and the watched functions using it
  move to the new version.

Bursts (an editor's temporary files, a ``git checkout``) come as one batch: the
watcher waits until the files stop changing (``filewatch``: file events or
polling). The core reports each change as a ``Change``; the adapter prints it.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import archive, build, bundle, deploy, entrycache, executor, npm, workspaces, zipsplice
from .config import Function, Layer, bundled, label
from .context import RunContext
from .errors import DodoLambdaError
from .files import locked, read_json
from .selection import (
    IGNORE_FILE,
    Entry,
    Matcher,
    Root,
    Selection,
    Sources,
    choose,
    with_sources,
    zip_mode,
)

log = logging.getLogger("dodo_lambda")

Item = Function | Layer


@dataclass
class Change:
    """What one batch of changes did to one item: one line of output."""

    item: str  # label
    paths: list[str]
    build_ms: float | None = None  # from the save to the new package
    deploy_ms: float | None = None
    unchanged: bool = False  # saved, but the zip's bytes are the same
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Watched:
    item: Item
    source: Path  # resolved
    roots: list[Root]  # the item's own files (not the staged dependencies)
    npm_inputs: set[Path]  # files whose change may need the npm step
    workspace: workspaces.Workspace | None = None
    local: list[Path] = field(default_factory=list)  # workspace packages' sources it copies
    bundled: bool = False  # bundle=: the zip holds esbuild's output, not the sources
    state: zipsplice.ZipState | None = None  # None: the next change builds in full
    matcher: Matcher | None = None
    options: str = ""  # the options digest the zip was built with
    sources: Sources | None = None  # the selection's compiled regexes (for the entry cache)
    segment_root: Root | None = None  # the staged tree, when the zip holds it as a segment
    selection: Selection | None = None  # of the zip as it is (dropped, restored)
    warnings: list[str] = field(default_factory=list)  # the package step's, for it
    packages: dict[str, int] | None = None  # the manifest's package sizes
    linked: frozenset[str] = frozenset()  # real paths packed through a symlink
    pending: bool = False  # a splice whose entry cache is not written yet


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


class Watch:
    """The watched items of a project and what to do when their files change."""

    def __init__(self, items: Iterable[Item], ctx: RunContext, *,
                 deploy_changes: bool = True, deploys: Iterable[Item] | None = None) -> None:
        """``deploys``: what a stage deploys of the items (``stages.staged``: built under
        the item's name, deployed under the stage's); the items themselves by default."""
        self.items = list(items)
        self.ctx = ctx
        self.deploy_changes = deploy_changes
        self.deploys = {(d.kind, d.build_name): d for d in (self.items if deploys is None
                                                              else deploys)}
        self.watched = [self._watched(i) for i in self.items]

    def _watched(self, item: Item) -> _Watched:
        is_bundled = bundled(item)
        roots = [] if is_bundled else [
            Root(_resolved(r.path), r.prefix, r.prune, r.staged)
            for r in build.roots(item, self.ctx.build_dir) if not r.staged]
        inputs = {_resolved(p) for p in npm.input_files(item, self.ctx)}
        try:
            ws = workspaces.of(item, self.ctx)
        except DodoLambdaError:
            ws = None  # the npm step says why
        if ws is not None:  # installed from the root's lock, with the root's .npmrc
            src = Path(item.source)
            inputs |= {_resolved(p) for p in (src / "package.json", ws.root / "package.json",
                                              ws.lock, ws.root / ".npmrc")}
        return _Watched(item, _resolved(item.source), roots, inputs, workspace=ws,
                        bundled=is_bundled)

    @property
    def folders(self) -> list[Path]:
        """The folders to watch, none inside another."""
        found = {w.source for w in self.watched} | {p for w in self.watched for p in w.local}
        return sorted(f for f in found if not any(p in found for p in f.parents))

    @property
    def files(self) -> list[Path]:
        """Single files outside those folders (a workspace root's package.json and lock):
        their stats are checked along with the folders' events."""
        folders = self.folders
        return sorted({p for w in self.watched for p in w.npm_inputs
                       if not any(f in p.parents for f in folders)})

    def prepare(self) -> None:
        """Bring every watched package up to date and remember its zip."""
        ctx = self.ctx
        for w in self.watched:
            if w.bundled and isinstance(w.item, Function) and not bundle.is_bundled(w.item, ctx):
                bundle.bundle(w.item, ctx)
            if not build.is_packaged(w.item, ctx):
                build.package(w.item, ctx)
            self._load(w)

    def _load(self, w: _Watched) -> None:
        """Remember the item's zip as the package step left it: its entries, its
        selection and the package step's warnings about them."""
        w.state, w.pending = None, False
        if w.workspace is not None:
            record = npm.read_record(self.ctx.layout(w.item)) or {}
            sources = (record.get("local") or {}).get("sources") or {}
            w.local = [_resolved(w.workspace.root / src) for src in sorted(sources)]
        if w.bundled:
            return  # rebuilt by the bundle and package steps, never spliced
        item, ctx = w.item, self.ctx
        who = label(item)
        layout = ctx.layout(item)
        w.options = options = build.options_digest(item, ctx.build_dir)
        cache = entrycache.read(layout.entries)
        # as the package step selects: the own files (the staged tree is one segment)
        rules = with_sources(build._rules(item, ctx.build_dir, options, cache), who)
        w.matcher, w.sources = rules.matcher(who), rules.sources
        w.segment_root = build.segment_root(item, ctx.build_dir)
        own = build._scan(item, ctx, options).own
        w.selection = chosen = choose(own, rules, who, build.roots(item, ctx.build_dir))
        segment = cache.segment if cache is not None else None
        w.warnings = [*build.default_warnings(item, chosen),
                      *build.native_warnings(item, layout, chosen.entries, segment)]
        w.linked = _linked(chosen.entries, w.roots)
        manifest = read_json(layout.manifest)
        w.packages = manifest.get("packages") if isinstance(manifest, dict) else None
        if cache is None or cache.options != options or \
                cache.zip != entrycache.zip_stat(layout.zip):
            return
        with contextlib.suppress(zipsplice.Fallback):  # else the next change builds in full
            w.state = zipsplice.load(layout.zip, chosen.entries, cache.records,
                                     archive.dos_timestamp(), cache.segment)

    def deploy_all(self) -> list[Change]:
        """Deploy every watched item as it is now (layers first): where watching starts."""
        results = []
        for w in sorted(self.watched, key=lambda w: isinstance(w.item, Function)):
            change = Change(label(w.item), ["start"])
            started = time.monotonic()
            try:
                if isinstance(w.item, Layer):
                    self._publish(w.item, change)
                else:
                    self._deploy(w.item, change)
            except DodoLambdaError as exc:
                change.error = str(exc)
            change.deploy_ms = (time.monotonic() - started) * 1000
            results.append(change)
        return results

    # -- one batch of changes -------------------------------------------------------

    def handle(self, paths: Iterable[str]) -> Iterator[Change]:
        """Rebuild (and deploy) what ``paths`` affect; one Change per affected item, each
        as soon as it is done. The entry caches are written once all are reported."""
        self.ctx.next_round()  # what the last round learnt about files is stale now
        plan: dict[int, tuple[str, dict[str, Entry | None], list[str]]] = {}
        saved: list[int] = []
        for raw in paths:
            path = Path(os.path.abspath(raw))
            for n, w in enumerate(self.watched):
                kind, arcname = self._classify(w, path)
                if kind == "ignore":
                    continue
                how, changes, shown = plan.get(n, ("splice", {}, []))
                shown.append(os.path.relpath(path, w.source))
                if kind == "npm":
                    how = "npm"
                elif kind == "bundle" and how != "npm":
                    how = "bundle"
                elif kind == "full" and how == "splice":
                    how = "full"
                elif kind == "file":
                    changes[arcname] = self._entry(w, path, arcname)
                plan[n] = (how, changes, shown)
                saved.extend(_mtime_ns(path))
        since = min(saved) / 1e9 if saved else time.time()
        if plan and self.deploy_changes:
            # a long-lived process: what was listed before may have changed since
            from . import lambdas

            with contextlib.suppress(DodoLambdaError):  # the deploy below reports it
                lambdas.invalidate(deploy.clients(self.ctx, "watch"))
        done: list[str] = []
        republished: list[Layer] = []
        # layers first: a function changed in the same batch then deploys with the new version
        order = sorted(plan, key=lambda n: (isinstance(self.watched[n].item, Function), n))
        for n in order:
            how, changes, shown = plan[n]
            w = self.watched[n]
            change = Change(label(w.item), sorted(set(shown)))
            done.append(change.item)
            try:
                change.unchanged = not self._rebuild(w, how, changes)
                change.build_ms = (time.time() - since) * 1000
                if self.deploy_changes and not change.unchanged:
                    self.flush()  # a deploy takes longer than this: not worth a stale cache
                    started = time.monotonic()
                    if isinstance(w.item, Layer):
                        self._publish(w.item, change)
                        republished.append(w.item)
                    else:
                        self._deploy(w.item, change)
                    change.deploy_ms = (time.monotonic() - started) * 1000
            except (DodoLambdaError, OSError) as exc:
                change.error = str(exc) if isinstance(exc, DodoLambdaError) else \
                    f"{exc.strerror or exc} ({exc.filename})"
            yield change
        for layer in republished:  # its watched users move to the new version
            for w in self.watched:
                fn = w.item
                if isinstance(fn, Function) and layer in fn.layers and label(fn) not in done:
                    change = Change(label(fn), [f"layer '{layer.name}'"], build_ms=0.0)
                    done.append(change.item)
                    try:
                        started = time.monotonic()
                        self._deploy(fn, change)
                        change.deploy_ms = (time.monotonic() - started) * 1000
                    except DodoLambdaError as exc:
                        change.error = str(exc)
                    yield change
        self.flush()

    def _classify(self, w: _Watched, path: Path) -> tuple[str, str]:
        """("ignore" | "npm" | "bundle" | "full" | "file", zip path) for a changed path."""
        real = _resolved(path)
        if real in w.npm_inputs:
            return "npm", ""
        for folder in w.local:  # a workspace package whose files the staged tree copies
            if folder == real or folder in real.parents:
                inside = real.relative_to(folder).parts
                pruned = bool(inside) and inside[0] in ("node_modules", ".git")
                return ("ignore", "") if pruned else ("npm", "")
        try:
            rel_source = real.relative_to(w.source).as_posix()
        except ValueError:
            return "ignore", ""
        if w.bundled or not any(r.path == w.source or w.source in r.path.parents
                                for r in w.roots):
            # packed from elsewhere (a bundler's output): the bundle's own check decides
            top = rel_source.split("/")[0]
            inner = build._inside(Path(self.ctx.build_dir), w.source)
            skipped = top in ("node_modules", ".git") or (inner and (rel_source + "/").startswith(
                inner + "/"))
            return ("ignore", "") if skipped else ("bundle" if w.bundled else "full", "")
        if rel_source == IGNORE_FILE or str(real) in w.linked:
            return "full", ""  # the selection rules changed, or a link's target
        for root in w.roots:
            try:
                rel = real.relative_to(root.path).as_posix()
            except ValueError:
                continue
            parts = rel.split("/")
            if any("/".join(parts[:k]) in root.prune for k in range(1, len(parts))) or \
                    rel in root.prune:
                return "ignore", ""
            return self._classify_file(w, path, real, root.prefix + rel)
        return "ignore", ""

    def _classify_file(self, w: _Watched, path: Path, real: Path, arcname: str
                       ) -> tuple[str, str]:
        """How a changed file under one of the item's roots is packed, in the order
        ``selection.choose`` decides it."""
        exists = os.path.exists(real)
        known = w.state is not None and arcname in w.state.records
        if os.path.islink(path) or os.path.isdir(real):
            return "full", ""  # a folder or a link: the walk's rules decide
        if w.state is not None and not exists and any(
                n.startswith(arcname + "/") for n in w.state.names):
            return "full", ""  # a folder went away
        matcher, chosen = w.matcher, w.selection
        if matcher is None or chosen is None:
            return "full", ""
        kept = matcher.keep is not None and matcher.keep(arcname)
        if not kept and matcher.ignore(arcname):
            return "ignore", ""  # excluded: neither packed nor listed
        if matcher.by_default(arcname):
            if kept:
                return "full", ""  # include= brings it back: the package step warns
            # the manifest lists what the default excludes leave out: the package step
            # lists it when one comes or goes (and warns when it looks like code)
            if any(arcname.startswith(d) for d in chosen.dropped if d.endswith("/")):
                return ("ignore", "") if exists else ("full", "")  # maybe its folder's last
            return ("full", "") if exists != (arcname in chosen.dropped) else ("ignore", "")
        if not exists and not known:
            return "ignore", ""  # a temporary file that came and went
        if arcname.endswith(".node"):
            return "full", ""  # a native addon: the package step checks its architecture
        return "file", arcname

    def _entry(self, w: _Watched, path: Path, arcname: str) -> Entry | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode) or w.matcher is None or not w.matcher.selected(arcname):
            return None
        return Entry(arcname, str(path), st.st_size, st.st_mtime_ns, zip_mode(st.st_mode),
                     st.st_ctime_ns)

    def _rebuild(self, w: _Watched, how: str, changes: dict[str, Entry | None]) -> bool:
        """The new package; False when its bytes did not change."""
        try:
            return self._build(w, how, changes)
        except BaseException:
            # this batch's changes are not all in the zip: the next one builds in full
            w.state = None
            raise

    def _build(self, w: _Watched, how: str, changes: dict[str, Entry | None]) -> bool:
        item, ctx = w.item, self.ctx
        if how == "npm":
            if npm.has_dependencies(item) and not npm.is_installed(item, ctx):
                npm.install(item, ctx)
            how = "bundle" if w.bundled else "full"
        if how == "bundle":
            if isinstance(item, Function) and not bundle.is_bundled(item, ctx):
                bundle.bundle(item, ctx)
            how = "full"
        if how == "splice" and w.state is not None:
            spliced = self._splice(w, w.state, changes)
            if spliced is not None:
                return spliced
        layout = ctx.layout(item)
        before = read_json(layout.manifest) or {}
        result = build.package(item, ctx)
        self._load(w)
        return bool(result.sha256 != before.get("sha256"))

    def _splice(self, w: _Watched, state: zipsplice.ZipState,
                changes: dict[str, Entry | None]) -> bool | None:
        """The package step for a few changed files, through a splice of the zip: True
        when the zip changed, False when not, None when a full build must do it."""
        item, ctx = w.item, self.ctx
        assert w.selection is not None
        layout = ctx.layout(item)
        entries = _updated(state, changes)
        # the package step's checks, on the selection as it will be
        build.check_entries(item, ctx.build_dir, entries, w.segment_root)
        for warning in w.warnings:
            log.warning("%s", warning)
        with locked(layout.package_lock):  # one writer of this zip at a time
            try:
                result = zipsplice.splice(state, changes, label(item),
                                          before_write=layout.entries.unlink)
            except zipsplice.Fallback:
                return None
            w.pending = True
            if result is None:
                return False
            # the npm packages' sizes: from the staged segment, and from own files under
            # a node_modules/ folder (counted again only when one of those changed)
            known = None if any("node_modules/" in a for a in changes) else w.packages
            chosen = w.selection._replace(entries=entries)
            w.packages = build.write_manifest(item, layout, chosen, result,
                                              packages=known)["packages"]
            w.selection = chosen
        return True

    def flush(self) -> None:
        """Write the entry caches the last splices left pending (and drop the old zips).
        Their stat digest is left empty: the next ``doit package`` walks once and fills
        it in. Until then a build finds no entry cache and starts cold."""
        for w in self.watched:
            if w.state is not None:
                zipsplice.discard(w.state)
            if not w.pending or w.state is None:
                continue
            layout = self.ctx.layout(w.item)
            with locked(layout.package_lock):
                if entrycache.zip_stat(layout.zip) == w.state.stat:  # still the zip we wrote
                    entrycache.write(layout.entries, entrycache.EntryCache(
                        w.options, w.state.stat, "", w.state.records, w.state.segment,
                        w.sources))
            w.pending = False

    def _deployed(self, item: Item) -> Item:
        found = self.deploys.get((item.kind, item.build_name))
        if found is None:
            raise DodoLambdaError(f"{label(item)} cannot be deployed to this stage; run"
                                  " `doit deploy` to see why")
        return found

    def _deploy(self, fn: Function, change: Change) -> None:
        dep = self._deployed(fn)
        assert isinstance(dep, Function)
        executor.upload(dep, self.ctx)  # only with a bucket (or too big: says so)
        action = executor.deploy_function(dep, self.ctx).action
        change.notes.append({"create": "created", "none": "already deployed"}.get(action,
                                                                                 "deployed"))

    def _publish(self, layer: Layer, change: Change) -> None:
        dep = self._deployed(layer)
        assert isinstance(dep, Layer)
        users = tuple(d for d in (self.deploys.get(("function", w.item.build_name))
                                  for w in self.watched if isinstance(w.item, Function)
                                  and layer in w.item.layers) if isinstance(d, Function))
        action = executor.publish_layer(dep, self.ctx, users).action
        change.notes.append("already published" if action == "none" else "published")


def _updated(state: zipsplice.ZipState, changes: dict[str, Entry | None]) -> list[Entry]:
    """The zip's entries (sorted by zip path) once ``changes`` are applied."""
    names, entries = list(state.names), list(state.entries)
    for arcname, entry in sorted(changes.items()):
        i = bisect.bisect_left(names, arcname)
        there = i < len(names) and names[i] == arcname
        if entry is None:
            if there:
                del names[i], entries[i]
        elif there:
            entries[i] = entry
        else:
            names.insert(i, arcname)
            entries.insert(i, entry)
    return entries


def _linked(entries: list[Entry], roots: list[Root]) -> frozenset[str]:
    """The real paths of the files packed through a symlink (their zip path is not
    where they are): a change to one of them is a change to another entry."""
    out = set()
    for root in roots:
        top, prefix = os.path.realpath(root.path) + os.sep, root.prefix
        pruned = tuple(p + "/" for p in root.prune)  # another root's files (node_modules/)
        for e in entries:
            if not e.arcname.startswith(prefix):
                continue
            rel = e.arcname[len(prefix):]
            if e.path != top + rel and not rel.startswith(pruned):
                out.add(os.path.realpath(e.path))
    return frozenset(out)


def _mtime_ns(path: Path) -> list[int]:
    try:
        return [os.stat(path).st_mtime_ns]
    except OSError:
        return []
