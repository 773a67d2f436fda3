"""Production dependencies: ``npm ci --omit=dev`` for the target platform, in a
staging folder under the build dir (the developer's own node_modules, with its
dev dependencies, is never touched).

The *install key* is everything that decides what npm installs: package.json,
the lock file, .npmrc, node and npm major versions, target os/cpu/libc and the
flags. A JSON record beside the staging folder holds the key and a digest of
the installed tree.

The staged tree is ours: only this step writes it. So "still installed" does
not stat every file: the *cheap check* compares the stamps (mtime, ctime) of
its folders with those taken when it was last checked, which move when a file
is added, removed or renamed anywhere in it (npm, an editor's save-by-rename,
``sed -i``, ``cp`` of a new file). A file rewritten in place keeps its folder's
stamps; the *full check* (every file's stats, the changed ones hashed) finds
that, and runs when the cheap check moves, when asked (``RunContext.verify_staging``:
``doit ... verify_staging=1``, ``DODO_LAMBDA_VERIFY_STAGING=1``, or ``CI`` set),
and when the last full check is older than ``FULL_CHECK_AGE``.

An item in an npm workspaces monorepo installs its closure from the root's lock
(workspaces.py, wslock.py); the workspace packages it uses are folders in the
staged tree that follow their source (localpkgs.py).
"""

from __future__ import annotations

import functools
import json
import logging
import marshal
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import digest, localpkgs, npmpolicy, workspaces
from .config import Function, Layer, label
from .context import RunContext
from .errors import DodoLambdaError
from .files import locked, read_json, write_atomic, write_json
from .layout import Layout
from .rules import ARCHITECTURES
from .selection import Entry, Root, walk

LOCK_FILES = ("package-lock.json", "npm-shrinkwrap.json")
RECORD_FORMAT = 2
PACKED = ".workspace-packages"  # in the install folder, while npm runs (workspaces)
# the longest a file rewritten in place in the staged tree goes unnoticed without a
# full check asked for (a day: a full check costs a stat per file, once a day)
FULL_CHECK_AGE = 24 * 3600
_STATE_MAGIC = b"dodo_lambda-staged-1\n"

log = logging.getLogger("dodo_lambda")


def staged_root(item: Function | Layer, layout: Layout) -> Root:
    """The installed tree as the zip sees it (npm's .bin and bookkeeping left out)."""
    prefix = "nodejs/node_modules/" if isinstance(item, Layer) else "node_modules/"
    return Root(layout.node_modules, prefix, staged=True)


def has_dependencies(item: Function | Layer) -> bool:
    """Whether package.json declares production dependencies, so that there is an npm
    step. Without package.json (the plain index.js case), or with one that only sets
    ``"type": "module"``, there is nothing to install and no lock file is needed.
    A package.json that cannot be read counts as having them: the npm step says
    what is wrong with it."""
    path = Path(item.source) / "package.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    if not isinstance(data, dict):
        return True
    return any(data.get(k) for k in ("dependencies", "optionalDependencies",
                                     "bundleDependencies", "bundledDependencies"))


def dependency_names(item: Function | Layer) -> list[str]:
    """The production dependencies package.json names (none when it cannot be read)."""
    try:
        data = json.loads((Path(item.source) / "package.json").read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    return [name for key in ("dependencies", "optionalDependencies")
            if isinstance(data.get(key), dict) for name in data[key]]


def lock_file(source: Path) -> Path | None:
    for name in LOCK_FILES:
        if (source / name).is_file():
            return source / name
    return None


def input_files(item: Function | Layer, ctx: RunContext | None = None) -> list[Path]:
    """The files npm's result depends on (those that exist). None for a workspace:
    a root lock change matters only to the items whose closure it touches, which
    the uptodate check (the install key) decides."""
    src = Path(item.source)
    if workspaces.of(item, ctx) is not None:
        return []
    names = ("package.json", *LOCK_FILES, ".npmrc")
    return [src / n for n in names if (src / n).is_file()]


def flags(item: Function | Layer) -> list[str]:
    cpu = ARCHITECTURES[item.architecture]
    return ["--omit=dev", "--os=linux", f"--cpu={cpu}", "--libc=glibc", "--install-links",
            "--no-audit", "--no-fund", "--no-update-notifier",
            *npmpolicy.script_flags(item.scripts)]


# -- tool versions, known by the executables' identity (running them costs ~0.3 s)


def _tool_stamp() -> list[list[Any]]:
    """Which node and npm run, by their real path, size and mtime."""
    stamp = []
    for tool in ("node", "npm"):
        exe = shutil.which(tool)
        if exe is None:
            raise DodoLambdaError(f"{tool} not found on PATH; install Node.js (with npm 10 or"
                                  " newer) to build functions that have package.json")
        real = os.path.realpath(exe)
        stat = os.stat(real)
        stamp.append([real, stat.st_size, stat.st_mtime_ns])
    return stamp


def _tools(ctx: RunContext, *known: dict[str, Any] | None) -> dict[str, Any]:
    """``{"stamp": ..., "versions": {"node": major, "npm": major}}``; the versions are
    asked only when the executables differ from those the ``known`` tools saw (the
    check state's, the install record's)."""
    # looked up once per run and PATH (a PATH search per function adds up in a monorepo)
    stamp = ctx.once(("tool stamp", os.environ.get("PATH", "")), _tool_stamp)
    for tools in known:
        if tools and tools.get("stamp") == stamp:
            return tools
    return ctx.once(("tools", json.dumps(stamp)),
                    lambda: {"stamp": stamp, "versions": _versions()})


def _versions() -> dict[str, str]:
    return {tool: tool_major(tool) for tool in ("node", "npm")}


def tool_major(tool: str) -> str:
    """``node``'s or ``npm``'s major version, as it answers ``--version`` ("?" when it
    says nothing)."""
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False,
                         env=npmpolicy.child_env(os.environ))
    return out.stdout.strip().lstrip("v").split(".")[0] or "?"


def install_key(item: Function | Layer, versions: dict[str, str],
                ctx: RunContext | None = None) -> dict[str, Any]:
    src = Path(item.source)
    key = {
        "format": RECORD_FORMAT,
        "files": {p.name: digest.file_sha256(p) for p in input_files(item, ctx)},
        "node": versions["node"],
        "npm": versions["npm"],
        "flags": flags(item),
        "source": src.as_posix(),
    }
    ws = workspaces.of(item, ctx)
    if ws is not None:  # the root's .npmrc, the closure, the workspace packages' package.json
        key.update(_workspace_key(item, ws, ctx))
    return key


def _workspace_key(item: Function | Layer, ws: workspaces.Workspace,
                   ctx: RunContext | None) -> dict[str, Any]:
    """``wslock.install_key``, kept beside the install state while the files it reads
    keep their stats: the closure costs about 0.4 ms a function, and a monorepo's
    no-op checks every function. The stats are taken before the files are read, so
    an edit made meanwhile is never hidden."""
    from . import wslock  # the root lock's reader: only in a monorepo

    base = [ws.lock, ws.root / ".npmrc", ws.root / ws.member / "package.json"]
    layout = ctx.layout(item) if ctx is not None else None
    kept = _read_state(layout).get("workspace_key") if layout is not None else None
    where = [RECORD_FORMAT, ws.root.as_posix(), ws.member, ws.lock.as_posix()]
    if isinstance(kept, dict) and kept.get("where") == where:
        files = [Path(f) for f in kept.get("files", ())]
        before = _stats(files)
        if before == kept.get("stats"):
            return kept["key"]
    else:
        files = base
        before = _stats(files)
    key = wslock.install_key(ws, item, ctx)
    needed = [*base, *(ws.root / src / "package.json" for src in key["workspace"]["packages"])]
    if layout is not None:  # files read but not stat'ed before: stat'ed before the next read
        _update_state(layout, workspace_key={
            "where": where, "files": [f.as_posix() for f in needed],
            "stats": before if needed == files else None, "key": key})
    return key


def _stats(files: list[Path]) -> list[tuple[int, int, int, int] | None]:
    out: list[tuple[int, int, int, int] | None] = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out


def _tree(item: Function | Layer, ctx: RunContext) -> list[Entry]:
    return list(walk(staged_root(item, ctx.layout(item)), label(item)))


def read_record(layout: Layout) -> dict[str, Any] | None:
    record = read_json(layout.install_record)
    return record if isinstance(record, dict) else None


def _read_state(layout: Layout) -> dict[str, Any]:
    """How the staged tree was last checked (empty when never, or unreadable)."""
    try:
        data = layout.install_state.read_bytes()
        state = marshal.loads(data[len(_STATE_MAGIC):]) if data.startswith(_STATE_MAGIC) else {}
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    return state if isinstance(state, dict) else {}


def _update_state(layout: Layout, **changes: Any) -> None:
    state = {**_read_state(layout), **changes}
    write_atomic(layout.install_state, _STATE_MAGIC + marshal.dumps(state))


def is_installed(item: Function | Layer, ctx: RunContext) -> bool:
    """True when the staged tree is what the current inputs would install (in a
    workspace: and its copies of workspace packages match their source)."""
    return _tree_installed(item, ctx) and _local_unchanged(item, ctx)


def _tree_installed(item: Function | Layer, ctx: RunContext) -> bool:
    layout = ctx.layout(item)
    record = read_record(layout)
    if record is None or not layout.node_modules.is_dir() and record.get("tree_files"):
        return False
    state = _read_state(layout)
    try:
        tools = _tools(ctx, state.get("tools"), record.get("tools"))
        key = install_key(item, tools["versions"], ctx)
    except (DodoLambdaError, OSError):
        return False
    if record.get("key") != key or staged_tree(item, ctx) is None:
        return False
    if state.get("tools") != tools:
        # node or npm changed within a major: remember them, or every later check
        # would run both again to learn the same majors
        _update_state(layout, tools=tools)
    return True


def staged_tree(item: Function | Layer, ctx: RunContext) -> str | None:
    """The content digest of the staged tree when it is still what the install record
    says (the record's ``tree_content``), else None. Checked once per run and record:
    the cheap check, or the full one when it is due (see the module's docstring)."""
    layout = ctx.layout(item)
    try:
        st = os.stat(layout.install_record)  # before reading it: a newer record, a new key
    except OSError:
        return None
    record = read_record(layout)
    if record is None:
        return None
    return ctx.once(("staged", item.kind, item.name, st.st_size, st.st_mtime_ns),
                    lambda: _check_tree(item, ctx, record))


def _check_tree(item: Function | Layer, ctx: RunContext, record: dict[str, Any]) -> str | None:
    layout = ctx.layout(item)
    content = record.get("tree_content")
    if not isinstance(content, str):
        return None
    top = layout.node_modules
    if not top.is_dir():
        return None if record.get("tree_files") else content
    state = _read_state(layout)
    due = (ctx.verify_staging or state.get("content") != content
           or not time.time() - FULL_CHECK_AGE < state.get("checked", 0) <= time.time())
    if not due and state.get("stamps") == digest.restamp(top, state.get("names", ())):
        return content
    # the full check; folders first, so that a change made during the walk moves a stamp
    names, stamps = digest.folder_stamps(top)
    tree = _tree(item, ctx)
    stat = digest.stat_digest(tree)
    if stat not in (state.get("tree_stat"), record.get("tree_stat")) and _content(tree) != content:
        log.info("%s: the staged dependencies in %s were changed since npm installed them;"
                 " installing again", label(item), layout.staging)
        return None
    _update_state(layout, content=content, names=names, stamps=stamps, tree_stat=stat,
                  checked=time.time())
    return content


def _content(tree: list[Entry]) -> str:
    return digest.content_digest(digest.entry_hashes(tree))


def _write_record(item: Function | Layer, ctx: RunContext, record: dict[str, Any]) -> None:
    """The install record of the staged tree as it is now, and the state the cheap
    check compares with (its folder stamps, checked now)."""
    layout = ctx.layout(item)
    names, stamps = digest.folder_stamps(layout.node_modules)  # first: see _check_tree
    tree = _tree(item, ctx)
    stat, content = digest.stat_digest(tree), _content(tree)
    record.update(tree_stat=stat, tree_content=content, tree_files=len(tree))
    write_json(layout.install_record, record)
    _update_state(layout, content=content, names=names, stamps=stamps, tree_stat=stat,
                  checked=time.time(), tools=record.get("tools"))


# -- workspace packages in the staged tree (see localpkgs) -----------------------------


def _local_unchanged(item: Function | Layer, ctx: RunContext) -> bool:
    """True unless the source of a workspace package copied into the staged tree
    changed since. Moved mtimes alone are remembered beside the record (whose bytes
    the package step depends on), not acted on."""
    layout = ctx.layout(item)
    record = read_record(layout) or {}
    local = record.get("local")
    if not local:
        return True
    stats = read_json(layout.local_stats)
    stats = stats if isinstance(stats, dict) else {}
    moved = False
    try:
        ws = workspaces.of(item, ctx)
        if ws is None:
            return False
        for src, content in local["sources"].items():
            folder = ws.root / src
            # one walk per run of a package that many functions use
            stat = ctx.once(("workspace package stat", str(folder)),
                            functools.partial(_walk_stat, folder, label(item)))
            if stats.get(src) == [stat, content]:
                continue
            found = localpkgs.files(folder, label(item))
            stat = localpkgs.stat(found)
            if localpkgs.content(localpkgs.select(folder, label(item), found)) != content:
                return False
            stats[src] = [stat, content]
            moved = True
    except (DodoLambdaError, OSError):
        return False
    if moved:
        write_json(layout.local_stats, stats)
    return True


def _walk_stat(folder: Path, who: str) -> str:
    return localpkgs.stat(localpkgs.files(folder, who))


def _copy_local(placed: dict[str, str], ws: workspaces.Workspace, staging: Path,
                stats_path: Path, who: str) -> dict[str, Any]:
    """Make the staged copies of workspace packages hold their source's files; the
    install record's ``local`` part (placed: staged folder -> source; sources:
    source -> content digest)."""
    found = {src: localpkgs.files(ws.root / src, who) for src in sorted(set(placed.values()))}
    chosen = {src: localpkgs.select(ws.root / src, who, f) for src, f in found.items()}
    for spot, src in sorted(placed.items()):
        if (staging / spot).is_dir():  # an optional one npm skipped stays out
            localpkgs.sync(chosen[src], staging / spot)
    contents = {src: localpkgs.content(e) for src, e in chosen.items()}
    write_json(stats_path, {src: [localpkgs.stat(f), contents[src]] for src, f in found.items()})
    return {"placed": placed, "sources": contents}


def _refresh_local(item: Function | Layer, ctx: RunContext, ws: workspaces.Workspace) -> None:
    """Only workspace packages' sources changed: copy them again, no npm."""
    layout = ctx.layout(item)
    record = read_record(layout) or {}
    placed, before = record["local"]["placed"], record["local"]["sources"]
    layout.install_record.unlink(missing_ok=True)  # from here on, nothing counts as installed
    record["local"] = _copy_local(placed, ws, layout.staging, layout.local_stats,
                                  label(item))
    _write_record(item, ctx, record)
    changed = [src for src, c in record["local"]["sources"].items() if before.get(src) != c]
    log.info("%s: workspace package %s copied again (its source changed; npm not run)",
             label(item), ", ".join(changed))


def _read_package_json(item: Function | Layer) -> dict[str, Any]:
    path = Path(item.source) / "package.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DodoLambdaError(f"{label(item)}: {path} is not valid JSON ({exc}); fix the file"
                              " (check it with `npm pkg get name`)") from exc
    if not isinstance(data, dict):
        raise DodoLambdaError(f"{label(item)}: {path} must hold a JSON object; fix the file")
    return data


def _read_lock(item: Function | Layer) -> tuple[Path, dict[str, Any]]:
    src = Path(item.source)
    lock = lock_file(src)
    if lock is None:
        raise DodoLambdaError(
            f"{label(item)}: {src / 'package-lock.json'} not found; run"
            f" `npm install --package-lock-only` in {src} and commit package-lock.json"
        )
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DodoLambdaError(f"{label(item)}: {lock} is not valid JSON ({exc}); recreate it"
                              f" with `npm install --package-lock-only` in {src}") from exc
    shape = [k for k in ("packages", "dependencies") if k in data and
             not isinstance(data[k], dict)] if isinstance(data, dict) else ["the top level"]
    if shape:
        raise DodoLambdaError(
            f"{label(item)}: {lock} is not an npm lock file ({shape[0]} should be an object);"
            f" recreate it with `npm install --package-lock-only` in {src}")
    return lock, data


def _relocate(spec: str, source: Path, dest: Path) -> str:
    """A relative path spec as seen from ``source``, rewritten for ``dest``."""
    if spec.startswith("file:"):
        return "file:" + _relocate(spec[5:], source, dest)
    if spec.startswith(("/", "~")) or ":" in spec.split("/")[0]:
        return spec
    return Path(os.path.relpath(source / spec, dest)).as_posix()


def _is_path_spec(spec: Any) -> bool:
    return isinstance(spec, str) and (spec.startswith(("file:", ".", "/")))


def relocate_manifests(pkg: dict[str, Any], lock: dict[str, Any], source: Path,
                       dest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """package.json and the lock with relative ``file:``/link paths resolved as
    they are from ``source``, for an install run in ``dest``."""
    src, dst = source.resolve(), dest.resolve()

    def fix_deps(deps: Any) -> Any:
        if not isinstance(deps, dict):
            return deps
        return {k: _relocate(v, src, dst) if _is_path_spec(v) else v for k, v in deps.items()}

    dep_fields = ("dependencies", "optionalDependencies", "devDependencies", "peerDependencies")
    pkg = dict(pkg)
    for f in dep_fields:
        if f in pkg:
            pkg[f] = fix_deps(pkg[f])
    lock = dict(lock)
    packages = {}
    for key, meta in (lock.get("packages") or {}).items():
        if key and not key.startswith("node_modules/"):
            key = _relocate(key, src, dst)  # a linked folder, named by its path
        if isinstance(meta, dict):
            meta = dict(meta)
            if key == "":
                for f in dep_fields:
                    if f in meta:
                        meta[f] = fix_deps(meta[f])
            resolved = meta.get("resolved")
            if isinstance(resolved, str) and (resolved.startswith("file:") or meta.get("link")):
                meta["resolved"] = _relocate(resolved, src, dst)
        packages[key] = meta
    if "packages" in lock:
        lock["packages"] = packages
    deps = lock.get("dependencies")  # lockfile v1
    if isinstance(deps, dict):
        lock["dependencies"] = {
            k: {**v, "version": _relocate(v["version"], src, dst)}
            if isinstance(v, dict) and _is_path_spec(v.get("version")) else v
            for k, v in deps.items()
        }
    return pkg, lock


def install(item: Function | Layer, ctx: RunContext) -> None:
    """Install production dependencies into the staging folder, atomically:
    on failure nothing is left that a later run would take as installed."""
    who = label(item)
    layout = ctx.layout(item)
    src = Path(item.source)
    ws = workspaces.of(item, ctx)
    pkg = _read_package_json(item)
    lock_path, lock = (ws.lock, {}) if ws is not None else _read_lock(item)
    tools = _tools(ctx, _read_state(layout).get("tools"), (read_record(layout) or {}).get("tools"))
    versions = tools["versions"]
    if versions["npm"].isdigit() and int(versions["npm"]) < 10:
        raise DodoLambdaError(f"{who}: npm {versions['npm']} cannot pick platform binaries"
                              " (--os/--cpu); install npm 10 or newer (`npm i -g npm@10`)")
    key = install_key(item, versions, ctx)
    # two doit processes must not install into the same staging folder at once; npm
    # holds the lock too (see _run_npm): the npm of a killed run is waited for
    with locked(layout.install_lock, on_wait=lambda: _say_waiting(who, layout)) as lock_fd:
        tree_installed = _tree_installed(item, ctx)
        if tree_installed and _local_unchanged(item, ctx):
            return  # another run installed the same thing while we waited
        if ws is not None and tree_installed:
            _refresh_local(item, ctx, ws)
            return
        layout.install_record.unlink(missing_ok=True)  # from here on, nothing counts as installed
        work = layout.install_work
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            placed: dict[str, str] = {}
            if ws is None:
                pkg, lock = relocate_manifests(pkg, lock, src, work)
            else:
                pkg, lock, placed = _workspace_manifests(item, ctx, ws, work)
            pkg = npmpolicy.staged_package_json(pkg)
            (work / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
            (work / lock_path.name).write_text(json.dumps(lock, indent=2) + "\n")
            project = src if ws is None else ws.root  # where npm reads the project's .npmrc
            env = npm_env(project)
            try:  # the .npmrc may hold a token: it lives only as long as npm runs
                if (project / ".npmrc").is_file():
                    npmpolicy.stage_npmrc(project / ".npmrc", work / ".npmrc")
                _run_npm(["npm", "ci", *flags(item)], work, who, lock_path, env, lock_fd)
            finally:
                (work / ".npmrc").unlink(missing_ok=True)
            shutil.rmtree(work / PACKED, ignore_errors=True)
            local = _copy_local(placed, ws, work, layout.local_stats, who) \
                if ws is not None else None
            old = layout.install_old
            shutil.rmtree(old, ignore_errors=True)
            if layout.staging.exists():
                os.replace(layout.staging, old)
            os.replace(work, layout.staging)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        skipped = [] if item.scripts else sorted(
            {npmpolicy.package_name(f) for f in npmpolicy.skipped_scripts(layout.node_modules)})
        if skipped:
            log.info("%s: install scripts not run (scripts=False): %s", who,
                     ", ".join(skipped[:8]) + (f" and {len(skipped) - 8} more"
                                               if len(skipped) > 8 else ""))
        record = {"key": key, "tools": tools}
        if local is not None:
            record["local"] = local
        _write_record(item, ctx, record)


def _workspace_manifests(item: Function | Layer, ctx: RunContext, ws: workspaces.Workspace,
                         work: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """package.json and lock of the item's closure from the root lock, for ``work``,
    and where its workspace packages land (staged folder -> root-relative source)."""
    who = label(item)
    own = [n for n in LOCK_FILES if (Path(item.source) / n).is_file()]
    if own:
        log.warning("%s: %s is not used: %s is a workspace of %s, whose %s governs it", who,
                    (Path(item.source) / own[0]).as_posix(), item.source, ws.root.as_posix(),
                    ws.lock.name)
    from . import wslock

    c = wslock.closure(ws, who, ctx)
    # npm packs each workspace package from a copy of its files, never from the
    # checkout, and without its `prepare` script (npm runs it where it packs a folder
    # when scripts=True: a build step, not an install step)
    packed = {}
    for i, src in enumerate(c.sources()):
        folder = work / PACKED / str(i)
        localpkgs.sync(localpkgs.select(ws.root / src, who), folder)
        manifest = json.loads((folder / "package.json").read_text(encoding="utf-8"))
        if isinstance(manifest.get("scripts"), dict):
            manifest["scripts"].pop("prepare", None)
        (folder / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        packed[src] = folder
    pkg, lock = wslock.relocate(c, ws, work, packed)
    return pkg, lock, c.local


def npm_env(source: Path) -> dict[str, str]:
    """The scrubbed environment npm runs in for ``source`` (see npmpolicy): the
    allow-list, and the variables its npmrc files reference."""
    files = npmpolicy.npmrc_files(source, os.environ)
    return npmpolicy.child_env(os.environ, npmpolicy.npmrc_variables(files))


def _say_waiting(who: str, layout: Layout) -> None:
    log.info("%s: waiting for %s: another run is installing there, or the npm of a killed run"
             " still is", who, layout.install_work)


def _run_npm(cmd: list[str], cwd: Path, who: str, lock_path: Path,
             env: dict[str, str], lock_fd: int | None = None) -> None:
    """Run npm; it inherits the install lock (``lock_fd``), so that when this process
    is killed the lock stays held until the orphaned npm exits and a rerun waits for
    it rather than clearing a folder npm still writes into."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          pass_fds=() if lock_fd is None else (lock_fd,))
    if proc.returncode == 0:
        return
    tail = _npm_reason(proc.stderr or proc.stdout) or f"exit code {proc.returncode}"
    raise DodoLambdaError(
        f"{who}: `{' '.join(cmd)}` failed for {lock_path}: {tail}; fix package.json or the lock"
        f" file (`npm install` in {lock_path.parent} updates it) and run again"
    )


def _npm_reason(output: str) -> str:
    """npm's own explanation, without its usage text and log-file hints."""
    code, reasons = "", []
    for line in output.splitlines():
        text = line.removeprefix("npm error").removeprefix("npm ERR!").strip()
        if not text or line == text:
            continue
        if text.startswith(("Usage:", "Clean install a project")):
            break
        if text.startswith("code "):
            code = text[5:]
            code = f"exit code {code}" if code.isdigit() else code
        elif not text.startswith(("A complete log", "errno ", "syscall ", "at ", "path ")) \
                and "log of this run" not in text:
            reasons.append(text)
    return ": ".join(x for x in (code, " | ".join(reasons[:4])) if x)
