"""npm workspaces: which root governs an item's folder.

A Function or Layer whose folder is a workspace of an npm workspaces root (the
nearest package.json above it whose ``workspaces`` globs match it) is installed
from the root's package-lock.json, not from a lock of its own: npm keeps none in
a workspace. ``find`` says which root, or why none can be used (a pnpm, yarn or
bun lock governs the folder; the folder sits inside a workspaces root without
being one of its workspaces; the root has no lock), as one line. What the item
installs from the root lock is wslock.py's job.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DodoLambdaError
from .files import read_manifest

if TYPE_CHECKING:
    from .config import Function, Layer
    from .context import RunContext

LOCKS = ("npm-shrinkwrap.json", "package-lock.json")  # npm's order: a shrinkwrap wins
# Lock files of the package managers dodo_lambda does not drive.
OTHER_MANAGERS = (("pnpm-lock.yaml", "pnpm"), ("pnpm-workspace.yaml", "pnpm"),
                  ("yarn.lock", "yarn"), ("bun.lock", "bun"), ("bun.lockb", "bun"))


@dataclass(frozen=True)
class Workspace:
    """An item's folder as a workspace of an npm workspaces root."""

    root: Path  # the folder whose package.json lists the workspaces (as found from cwd)
    lock: Path  # its package-lock.json (or npm-shrinkwrap.json)
    member: str  # the item's folder relative to root, posix ("functions/orders")


# -- which root governs a folder ----------------------------------------------------


def _globs(manifest: dict[str, Any]) -> list[str] | None:
    """The ``workspaces`` patterns (an array, or ``{"packages": [...]}``), or None."""
    value = manifest.get("workspaces")
    if isinstance(value, dict):
        value = value.get("packages")
    if not isinstance(value, list):
        return None
    return [v for v in value if isinstance(v, str)]


def _segment(part: str) -> str:
    out, i = "", 0
    while i < len(part):
        c = part[i]
        close = part.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif close > 0:
            body = part[i + 1:close]
            out += "[" + ("^" + body[1:] if body[:1] in "!^" and body else body) + "]"
            i = close
        else:
            out += re.escape(c)
        i += 1
    return out


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A workspaces glob (minimatch's common subset: ``*``, ``?``, ``[...]``, ``**``)."""
    parts = [p for p in pattern.strip().split("/") if p not in ("", ".")]
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment(part) + ("" if last else "/")
    return re.compile(f"^{regex}$")


def matches(globs: list[str], rel: str) -> bool:
    """Whether the folder ``rel`` (posix, relative to the root) is a workspace:
    patterns in order, ``!pattern`` taking back what came before."""
    found = False
    for pattern in globs:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern[1:] if negated else pattern)
        if regex.match(rel):
            found = not negated
    return found


def _other_manager(folder: Path) -> tuple[str, Path] | None:
    for name, manager in OTHER_MANAGERS:
        if (folder / name).is_file():
            return manager, folder / name
    return None


def _shown(path: Path) -> str:
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def _unsupported(who: str, src: Path, manager: str, file: Path) -> DodoLambdaError:
    return DodoLambdaError(
        f"{who}: {_shown(file)} says {manager} manages {_shown(src)}, and dodo_lambda installs"
        " with npm only (a package-lock.json in the folder, or npm workspaces with the root's"
        f" package-lock.json); create one with `npm install --package-lock-only` in"
        f" {_shown(file.parent)}, or give the {'function' if 'function' in who else 'layer'}"
        " its own with `npm install --package-lock-only` in its folder")


def find(source: Path, who: str) -> Workspace | None:
    """The workspaces root that governs ``source`` — as npm finds it, the nearest
    folder above whose package.json ``workspaces`` match it — or None when the folder
    stands alone (its own package-lock.json, or no workspaces root above it).

    Raises when a pnpm/yarn/bun lock governs it instead, when it sits inside an npm
    workspaces root without being one of its workspaces and has no lock of its own,
    or when the root has no lock file."""
    src = source.resolve()
    if not (src / "package.json").is_file():
        return None
    own_lock = any((src / name).is_file() for name in LOCKS)
    outside = None  # the nearest workspaces root whose globs leave the folder out
    for folder in src.parents:
        pnpm = folder / "pnpm-workspace.yaml"
        if pnpm.is_file() and not own_lock and outside is None:
            raise _unsupported(who, src, "pnpm", pnpm)
        manifest = read_manifest(folder / "package.json")
        globs = _globs(manifest) if manifest is not None else None
        if globs is None:
            continue
        rel = src.relative_to(folder).as_posix()
        if not matches(globs, rel):
            outside = outside or folder
            continue
        lock = next((folder / n for n in LOCKS if (folder / n).is_file()), None)
        if lock is None:
            other = _other_manager(folder)
            if other is not None:
                raise _unsupported(who, src, *other)
            raise DodoLambdaError(
                f"{who}: {_shown(src)} is a workspace of {_shown(folder)}, which has no"
                f" package-lock.json; run `npm install` in {_shown(folder)} and commit the lock"
                " file")
        root = Path(os.path.relpath(folder))
        return Workspace(root, root / lock.name, rel)
    if own_lock:
        return None  # a project of its own, inside a monorepo's tree or not
    if outside is not None:
        rel = src.relative_to(outside).as_posix()
        raise DodoLambdaError(
            f"{who}: {_shown(src)} is inside the npm workspaces root {_shown(outside)} but is"
            f" not one of its workspaces, and has no package-lock.json of its own; add"
            f" \"{rel}\" (or a glob that matches it) to \"workspaces\" in"
            f" {_shown(outside / 'package.json')} and run `npm install` in {_shown(outside)},"
            f" or give it its own lock with `npm install --package-lock-only` in {_shown(src)}")
    other = _other_manager(src)
    if other is not None:
        raise _unsupported(who, src, *other)
    return None


def problem(item: Function | Layer, ctx: RunContext | None = None) -> str | None:
    """What keeps the item's dependencies from being installed, as one line."""
    try:
        of(item, ctx)
    except DodoLambdaError as exc:
        return exc.message
    return None


def of(item: Function | Layer, ctx: RunContext | None = None) -> Workspace | None:
    """``find`` for an item, once per run when a context is given."""
    from .config import label

    src = Path(item.source)
    if ctx is None:
        return find(src, label(item))
    return ctx.once(("workspace", item.source), lambda: find(src, label(item)))
