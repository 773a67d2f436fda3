"""The one place that fingerprints files and trees.

Three kinds of fingerprint: a cheap *stat* digest (paths, sizes, mtimes, inode
change times, modes: one stat walk, nothing read) that says "maybe changed"; a
*content* digest (paths, modes, file SHA-256s) that says "changed" independently
of mtimes and of the compressor; and the *folder stamps* of a tree that only our
own npm step writes (each folder's mtime and ctime: a file added, removed or
renamed anywhere moves one), which say "maybe changed" without a stat per file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .selection import Entry

if TYPE_CHECKING:
    from .entrycache import CachedEntry, Segment

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stat_digest(entries: Iterable[Entry]) -> str:
    """Changes when any path, size, mtime, ctime or mode changes (order-independent)."""
    text = "".join(sorted(f"{e.arcname}\0{e.size}\0{e.mtime_ns}\0{e.ctime_ns}\0{e.mode:o}\n"
                          for e in entries))
    return hashlib.sha256(text.encode()).hexdigest()


class ContentDigest:
    """``content_digest`` fed one file at a time, in zip-path order (as a zip is
    written), so that a tree's digest never needs its list held."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, arcname: str, mode: int, sha: str) -> None:
        self._sha.update(f"{arcname}\0{mode:o}\0{sha}\n".encode())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def content_digest(files: Iterable[tuple[str, int, str]]) -> str:
    """Digest of (zip path, mode, sha256 hex) triples, sorted by path: the same
    files give the same digest whatever the compressor or the timestamps. A block
    of the zip known by its own digest (the staged dependencies) is one triple:
    ``segment_line``."""
    d = ContentDigest()
    for arcname, mode, sha in sorted(files):
        d.add(arcname, mode, sha)
    return d.hexdigest()


def segment_line(prefix: str, content: str) -> tuple[str, int, str]:
    """The triple that stands for every file under ``prefix`` in ``content_digest``
    (mode 0: no file has it). The block's files sort together, where its prefix
    sorts, so the digest is the same however the zip was written."""
    return prefix, 0, content


def zip_content_digest(files: Iterable[tuple[str, int, str]], segment: Segment | None) -> str:
    """A zip's ``content_digest``: its own files' triples and, when it has one, the line
    of the staged block (``segment_line``)."""
    lines = list(files)
    if segment is not None:
        lines.append(segment_line(segment.prefix, segment.content))
    return content_digest(lines)


def same_stat(rec: CachedEntry, e: Entry) -> bool:
    """Whether a file still has the stats it had when ``rec`` was made (then it is
    not read again)."""
    return rec.size == e.size and rec.mtime_ns == e.mtime_ns and rec.ctime_ns == e.ctime_ns


def entry_hashes(entries: Iterable[Entry], known: Mapping[str, CachedEntry] | None = None
                 ) -> list[tuple[str, int, str]]:
    """(zip path, mode, sha256) per entry. ``known`` holds the entry cache's
    records: a file whose size, mtime and ctime match its record is not read again."""
    known = known or {}
    out = []
    for e in entries:
        rec = known.get(e.arcname)
        if rec and same_stat(rec, e):
            sha = rec.sha256
        else:
            sha = file_sha256(e.path)
        out.append((e.arcname, e.mode, sha))
    return out


def value_digest(value: Any) -> str:
    """Digest of a JSON-able value (settings, option sets)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def folder_stamps(top: str | Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Every real folder under ``top`` (``top`` itself as "", symlinks not followed),
    and their mtimes and ctimes, flat: the fingerprint ``restamp`` checks again."""
    names: list[str] = []
    stamps: list[int] = []
    pending = [("", os.fspath(top))]
    while pending:
        rel, path = pending.pop()
        try:
            st = os.stat(path, follow_symlinks=False)
            with os.scandir(path) as it:
                subs = [e for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        names.append(rel)
        stamps += (st.st_mtime_ns, st.st_ctime_ns)
        pending.extend((f"{rel}{e.name}/", e.path) for e in subs)
    return tuple(names), tuple(stamps)


def restamp(top: str | Path, names: Iterable[str]) -> tuple[int, ...] | None:
    """The stamps of the folders ``folder_stamps`` named, now (None when one is gone)."""
    stamps: list[int] = []
    try:
        # relative to the open top folder: a quarter faster than whole paths (the
        # kernel does not walk the prefix again for each of a thousand folders)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        stat = os.stat
        for rel in names:
            st = stat(rel or ".", dir_fd=fd, follow_symlinks=False)
            stamps += (st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        return None
    finally:
        os.close(fd)
    return tuple(stamps)
