"""Watch: rebuild and redeploy a package on each saved change, in one process.

On every batch of changes the watcher reports, each affected function or layer
is rebuilt and (unless told not to) deployed again: a source file changed ->
the zip is spliced (``zipsplice``: only what changed is read and compressed);
package.json, the lock file or .npmrc changed -> npm and a full build; a layer
changed -> the layer is published and the watched functions using it move to
the new version. Bursts (an editor's temporary files, a ``git checkout``) come
as one batch: the watcher waits until the files stop changing.

File events come from ``watchfiles`` (inotify, FSEvents, ...: the ``watch``
extra) or, without it or with ``poll=True``, from a stat walk of the watched
folders every half second. The core reports each change as a ``Change``; the
adapter prints it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import archive, build, deploy, npm, zipsplice
from .config import Function, Layer, label
from .errors import DodoLambdaError
from .files import locked, read_json
from .select import IGNORE_FILE, Entry, Root, select, walk_roots

STEP_MS = 5  # a batch ends when the files have not changed for this long
DEBOUNCE_MS = 1600  # ... or after this long, whatever keeps changing
POLL_SECONDS = 0.5
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
    npm_inputs: set[Path]
    state: zipsplice.ZipState | None = None
    matcher: Any = None
    options: str = ""  # the options digest the zip was built with
    pending: Any = None  # a change whose entry cache is not written yet


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


class Watch:
    """The watched items of a project and what to do when their files change."""

    def __init__(self, items: Iterable[Item], build_dir: str | Path, opts: deploy.Options, *,
                 deploy_changes: bool = True) -> None:
        self.items = list(items)
        self.build_dir = str(build_dir)
        self.opts = opts
        self.deploy_changes = deploy_changes
        self.watched = [self._watched(i) for i in self.items]

    def _watched(self, item: Item) -> _Watched:
        roots = [Root(_resolved(r.path), r.prefix, r.prune, r.staged)
                 for r in build.roots(item, self.build_dir) if not r.staged]
        return _Watched(item, _resolved(item.source), roots,
                        {_resolved(p) for p in npm.input_files(item)})

    @property
    def folders(self) -> list[Path]:
        return sorted({w.source for w in self.watched})

    def prepare(self) -> None:
        """Bring every watched package up to date and remember its zip."""
        for w in self.watched:
            if not build.is_packaged(w.item, self.build_dir):
                build.package(w.item, self.build_dir)
            self._load(w)

    def _load(self, w: _Watched) -> None:
        p = build.paths(w.item, self.build_dir)
        cache = build._read_cache(p.cache) or {}
        everything = walk_roots(build.roots(w.item, self.build_dir), label(w.item))
        patterns = build.patterns(w.item, self.build_dir)
        entries = select(everything, patterns, label(w.item))
        w.matcher = patterns.matcher()
        w.options = build.options_digest(w.item, self.build_dir)
        w.pending = None
        try:
            w.state = zipsplice.load(p.zip, entries, cache.get("entries") or {},
                                     archive.dos_timestamp())
        except zipsplice.Fallback:
            w.state = None  # the next change builds in full

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

    def handle(self, paths: Iterable[str]) -> list[Change]:
        """Rebuild (and deploy) what ``paths`` affect; one Change per affected item."""
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
                elif kind == "full" and how == "splice":
                    how = "full"
                elif kind == "file":
                    changes[arcname] = self._entry(w, path, arcname)
                plan[n] = (how, changes, shown)
                saved.extend(_mtime_ns(path))
        since = min(saved) / 1e9 if saved else time.time()
        if plan and self.deploy_changes and not self.opts.emulator:
            # a long-lived process: what was listed before may have changed since
            from . import lambdas

            with contextlib.suppress(DodoLambdaError):  # the deploy below reports it
                lambdas.invalidate(deploy.clients(self.opts, "watch"))
        results = []
        republished: list[Layer] = []
        # layers first: a function changed in the same batch then deploys with the new version
        order = sorted(plan, key=lambda n: (isinstance(self.watched[n].item, Function), n))
        for n in order:
            how, changes, shown = plan[n]
            w = self.watched[n]
            change = Change(label(w.item), sorted(set(shown)))
            results.append(change)
            try:
                change.unchanged = not self._rebuild(w, how, changes)
                change.build_ms = (time.time() - since) * 1000
                self.flush()
                if self.deploy_changes and not change.unchanged:
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
        for layer in republished:  # its watched users move to the new version
            for w in self.watched:
                fn = w.item
                if isinstance(fn, Function) and layer in fn.layers and \
                        not any(c.item == label(fn) for c in results):
                    change = Change(label(fn), [f"layer '{layer.name}'"], build_ms=0.0)
                    results.append(change)
                    try:
                        started = time.monotonic()
                        self._deploy(fn, change)
                        change.deploy_ms = (time.monotonic() - started) * 1000
                    except DodoLambdaError as exc:
                        change.error = str(exc)
        return results

    def _classify(self, w: _Watched, path: Path) -> tuple[str, str]:
        """("ignore" | "npm" | "full" | "file", zip path) for a changed path."""
        real = _resolved(path)
        if real in w.npm_inputs:
            return "npm", ""
        try:
            rel_source = real.relative_to(w.source).as_posix()
        except ValueError:
            return "ignore", ""
        if rel_source == IGNORE_FILE:
            return "full", ""  # the selection rules changed
        if not any(r.path == w.source or w.source in r.path.parents for r in w.roots):
            # packed from elsewhere (a bundler's output, say): any source edit means a build
            top = rel_source.split("/")[0]
            inner = build._inside(Path(self.build_dir), w.source)
            skipped = top in ("node_modules", ".git") or (inner and (rel_source + "/").startswith(
                inner + "/"))
            return ("ignore", "") if skipped else ("full", "")
        for root in w.roots:
            try:
                rel = real.relative_to(root.path).as_posix()
            except ValueError:
                continue
            parts = rel.split("/")
            if any("/".join(parts[:k]) in root.prune for k in range(1, len(parts))) or \
                    rel in root.prune:
                return "ignore", ""
            arcname = root.prefix + rel
            if os.path.islink(path) or os.path.isdir(real):
                return "full", ""  # a folder or a link: the walk's rules decide
            if w.state is not None and not os.path.exists(real) and any(
                    n.startswith(arcname + "/") for n in w.state.names):
                return "full", ""  # a folder went away
            if not os.path.exists(real) and (w.state is None or arcname not in w.state.records):
                return "ignore", ""  # a temporary file that came and went
            if os.path.exists(real) and not w.matcher.selected(arcname) and (
                    w.state is None or arcname not in w.state.records):
                return "ignore", ""  # not packed (excluded), and was not
            return "file", arcname
        return "ignore", ""

    def _entry(self, w: _Watched, path: Path, arcname: str) -> Entry | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode) or not w.matcher.selected(arcname):
            return None
        return Entry(arcname, str(path), st.st_size, st.st_mtime_ns,
                     0o755 if st.st_mode & 0o111 else 0o644)

    def _rebuild(self, w: _Watched, how: str, changes: dict[str, Entry | None]) -> bool:
        """The new package; False when its bytes did not change."""
        item = w.item
        if how == "npm":
            if npm.has_dependencies(item) and not npm.is_installed(item, self.build_dir):
                npm.install(item, self.build_dir)
            how = "full"
        if how == "splice" and w.state is not None:
            p = build.paths(item, self.build_dir)
            with locked(p.cache.with_suffix(".lock")):
                try:
                    result = zipsplice.splice(w.state, changes, label(item))
                except zipsplice.Fallback:
                    result = None
                    how = "full"
                except BaseException:
                    w.state = None  # half-updated: the next change builds in full
                    raise
                else:
                    self._record(item, w, result, changes)
                    if result is None:
                        return False
            if how == "splice":
                return True
        before = read_json(build.paths(item, self.build_dir).manifest) or {}
        result = build.package(item, self.build_dir)
        self._load(w)
        return bool(result.sha256 != before.get("sha256"))

    def _record(self, item: Item, w: _Watched, result: archive.ZipResult | None,
                changes: dict[str, Entry | None]) -> None:
        """The manifest now; the entry cache once the change is reported (``flush``).
        The stat digest is left out: the next ``doit package`` walks once and fills it in."""
        p = build.paths(item, self.build_dir)
        assert w.state is not None
        if result is not None:
            packages = None  # the npm packages' sizes change only with node_modules
            if not any("node_modules/" in a for a in changes):
                packages = (read_json(p.manifest) or {}).get("packages")
            build._record(item, p, w.options, "", w.state.entries, result, packages=packages,
                          cache=False)
        w.pending = result or True

    def flush(self) -> None:
        """Write the entry caches the last changes left pending."""
        for w in self.watched:
            if w.state is not None:
                zipsplice.discard(w.state)
            if w.pending is None or w.state is None:
                continue
            p = build.paths(w.item, self.build_dir)
            with locked(p.cache.with_suffix(".lock")):
                if zipsplice._stat(p.zip) == w.state.stat:  # still the zip we wrote
                    build._write_cache(p.cache, {"options": w.options, "zip": list(w.state.stat),
                                                 "stat": "", "entries": w.state.records})
            w.pending = None

    def _deploy(self, fn: Function, change: Change) -> None:
        deploy.upload(fn, self.build_dir, self.opts)  # only with a bucket (or too big: says so)
        plan = deploy.deploy_function(fn, self.build_dir, self.opts)
        change.notes.append("created" if plan.create else
                            ("deployed" if plan.changes else "already deployed"))

    def _publish(self, layer: Layer, change: Change) -> None:
        users = tuple(w.item for w in self.watched if isinstance(w.item, Function)
                      and layer in w.item.layers)
        plan = deploy.publish_layer(layer, self.build_dir, self.opts, users)
        change.notes.append("published" if plan.publish else "already published")


def _mtime_ns(path: Path) -> list[int]:
    try:
        return [os.stat(path).st_mtime_ns]
    except OSError:
        return []


# -- where the changes come from ----------------------------------------------------------


def notify_batches(folders: list[Path], stop: threading.Event, on_ready: Callable[[str], None]
                   ) -> Iterator[set[str]]:
    """Batches of changed paths from the OS's file events (watchfiles)."""
    from watchfiles._rust_notify import RustNotify

    notify = RustNotify([str(f) for f in folders], False, False, 300, True, True)
    on_ready("file events (watchfiles)")
    while not stop.is_set():
        raw = notify.watch(DEBOUNCE_MS, STEP_MS, 1000, stop)
        if raw == "signal":
            raise KeyboardInterrupt
        if isinstance(raw, str):  # "stop" or "timeout"
            continue
        yield {path for _, path in raw}


def _snapshot(folders: list[Path], skip: set[str]) -> dict[str, tuple[int, int, int]]:
    found = {}
    for top in folders:
        for folder, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if d not in ("node_modules", ".git")
                       and os.path.join(folder, d) not in skip]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                found[path] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


def poll_batches(folders: list[Path], stop: threading.Event, on_ready: Callable[[str], None],
                 skip: set[str], interval: float = POLL_SECONDS) -> Iterator[set[str]]:
    """Batches of changed paths from stat walks of the folders (no watchfiles); the
    folders in ``skip`` (the build dir) are not walked."""
    before = _snapshot(folders, skip)
    on_ready(f"polling every {interval:g} s")
    while not stop.wait(interval):
        now = _snapshot(folders, skip)
        changed: set[str] = set()
        while now != before:  # wait for the burst to end
            changed |= {p for p in before.keys() | now.keys() if before.get(p) != now.get(p)}
            before = now
            if stop.wait(STEP_MS / 1000 * 5):
                return
            now = _snapshot(folders, skip)
        if changed:
            yield changed


def batches(folders: list[Path], stop: threading.Event, on_ready: Callable[[str], None], *,
            poll: bool = False, skip: Iterable[str | Path] = ()) -> Iterator[set[str]]:
    """Batches of changed paths under ``folders``, from file events or polling."""
    if not poll:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            poll = True
    if poll:
        return poll_batches(folders, stop, on_ready, {str(_resolved(p)) for p in skip})
    return notify_batches(folders, stop, on_ready)
