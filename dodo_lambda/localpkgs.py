"""Workspace packages in the staged tree: real folders whose content follows the
source.

npm installs a workspace package the item uses as a folder packed from its
source (``--install-links``), with its own dependencies below it or hoisted. From
then on the source is the truth: ``sync`` makes each staged copy hold exactly
the package's files, so that an edit reaches the zip (and the bundle) by a copy,
without running npm again, and only for the items that use that package.

Which files: what npm would install, with one deliberate difference.

- ``node_modules`` (its dependencies come from the lock) and ``.git`` never;
- when package.json has ``files``, those paths, plus package.json, README,
  LICENSE, the ``main`` file and the ``bin`` files, as npm always adds them;
  otherwise everything, less what the package's ``.npmignore`` names;
- never the default excludes (``.env*``, keys, ``.npmrc``, ...): a workspace
  package is the team's own code, and the staged tree is not filtered again;
- unlike npm, ``.gitignore`` is not read: build output (``dist/``) is usually
  ignored by git and is exactly what must ship.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from . import digest
from .errors import DodoLambdaError
from .files import read_manifest
from .selection import DEFAULT_EXCLUDES, Entry, Patterns, Root, walk

ALWAYS = ("package.json", "readme*", "license*", "licence*")  # matched in any case
NEVER = ("package-lock.json", "npm-debug.log", ".npmignore")
_KEEP = "node_modules"  # the staged copy's own dependencies: npm's, never touched
PRUNE = frozenset({"node_modules", ".git"})


def _spec(lines: list[str]) -> Any:
    import pathspec  # imported late, as in selection.py

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _anchored(path: str) -> str:
    """A ``files`` entry as a gitignore line rooted at the package folder."""
    path = path.strip()
    if path.startswith("!"):
        return "!" + _anchored(path[1:])
    path = path.removeprefix("./").lstrip("/")
    return path if path.startswith("**") else "/" + path


def files(folder: Path, who: str) -> list[Entry]:
    """Every file of the package's folder (its node_modules and .git aside), before
    any selection: one stat walk, whose digest says "maybe changed" (no pattern is
    compiled on a no-op)."""
    return list(walk(Root(folder, "", PRUNE), who))


def select(folder: Path, who: str, found: list[Entry] | None = None) -> list[Entry]:
    """The files of the workspace package in ``folder`` (``found`` by ``files``), as
    installed (see the module's doc), by path relative to the folder, sorted."""
    manifest = read_manifest(folder / "package.json") or {}
    entries = found if found is not None else files(folder, who)
    defaults = Patterns((), (), DEFAULT_EXCLUDES).matcher()
    listed = manifest.get("files")
    keep = None
    if isinstance(listed, list) and listed:
        lines = [_anchored(f) for f in listed if isinstance(f, str)]
        extra = [manifest.get("main")]
        bins = manifest.get("bin")
        extra += list(bins.values()) if isinstance(bins, dict) else [bins]
        lines += [_anchored(x) for x in extra if isinstance(x, str) and x]
        keep = _spec(lines)
        ignore = None
    else:
        ignore_file = folder / ".npmignore"
        ignore = _spec(ignore_file.read_text(encoding="utf-8").splitlines()) \
            if ignore_file.is_file() else None
    always = _spec(["/" + x for x in ALWAYS])
    out = []
    for e in entries:
        name = e.arcname
        if name in NEVER or defaults.by_default(name):
            continue
        if keep is not None and not keep.match_file(name) and not always.match_file(name.lower()):
            continue
        if ignore is not None and ignore.match_file(name) and not always.match_file(name.lower()):
            continue
        if e.problem:
            raise DodoLambdaError(f"{who}: {e.problem}")
        out.append(e)
    return sorted(out)


def stat(entries: list[Entry]) -> str:
    """Changes when a file's path, size, mtime or mode does: "maybe changed"."""
    return digest.stat_digest(entries)


def content(entries: list[Entry]) -> str:
    """Changes when a file's path, mode or bytes do: "changed"."""
    return digest.content_digest(digest.entry_hashes(entries))


def sync(entries: list[Entry], dest: Path) -> None:
    """Make ``dest`` hold exactly ``entries`` (its own node_modules aside): copy what
    is new or changed (size or mtime; copies keep the source's mtime), remove the rest."""
    wanted = {e.arcname: e for e in entries}
    for dirpath, dirnames, filenames in os.walk(dest, topdown=True):
        rel = os.path.relpath(dirpath, dest)
        if rel == ".":
            rel = ""
            dirnames[:] = [d for d in dirnames if d != _KEEP]
        for name in filenames:
            arc = f"{rel}/{name}" if rel else name
            path = os.path.join(dirpath, name)
            e = wanted.get(arc)
            st = os.lstat(path)
            if e is not None and not os.path.islink(path) and st.st_size == e.size \
                    and st.st_mtime_ns == e.mtime_ns and (st.st_mode & 0o111) == (e.mode & 0o111):
                del wanted[arc]
            else:
                os.unlink(path)
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                os.unlink(os.path.join(dirpath, name))
                dirnames.remove(name)
    for arc, e in wanted.items():
        target = dest / arc
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(e.path, target)
        os.chmod(target, e.mode)
    for dirpath, _dirnames, _filenames in sorted(os.walk(dest), reverse=True):
        rel = os.path.relpath(dirpath, dest)
        if rel != "." and rel.split(os.sep)[0] != _KEEP and not os.listdir(dirpath):
            os.rmdir(dirpath)
