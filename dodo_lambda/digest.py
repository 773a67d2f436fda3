"""The one place that fingerprints files and trees.

Two kinds of digest: a cheap *stat* digest (paths, sizes, mtimes, modes: one
stat walk, nothing read) that says "maybe changed", and a *content* digest
(paths, modes, file SHA-256s) that says "changed" independently of mtimes and
of the compressor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .selection import Entry

if TYPE_CHECKING:
    from .entrycache import CachedEntry

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stat_digest(entries: Iterable[Entry]) -> str:
    """Changes when any path, size, mtime or mode changes (order-independent)."""
    text = "".join(sorted(f"{e.arcname}\0{e.size}\0{e.mtime_ns}\0{e.mode:o}\n" for e in entries))
    return hashlib.sha256(text.encode()).hexdigest()


def content_digest(files: Iterable[tuple[str, int, str]]) -> str:
    """Digest of (zip path, mode, sha256 hex) triples, sorted by path: the same
    files give the same digest whatever the compressor or the timestamps."""
    text = "".join(sorted(f"{arcname}\0{mode:o}\0{sha}\n" for arcname, mode, sha in files))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_hashes(entries: Iterable[Entry], known: Mapping[str, CachedEntry] | None = None
                 ) -> list[tuple[str, int, str]]:
    """(zip path, mode, sha256) per entry. ``known`` holds the entry cache's
    records: a file whose size and mtime match its record is not read again."""
    known = known or {}
    out = []
    for e in entries:
        rec = known.get(e.arcname)
        if rec and rec.size == e.size and rec.mtime_ns == e.mtime_ns:
            sha = rec.sha256
        else:
            sha = file_sha256(e.path)
        out.append((e.arcname, e.mode, sha))
    return out


def value_digest(value: Any) -> str:
    """Digest of a JSON-able value (settings, option sets)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
