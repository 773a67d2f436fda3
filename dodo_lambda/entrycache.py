"""The entry cache: what the last zip of an item holds, entry by entry, so that a
rebuild copies the bytes of unchanged entries and a no-op check is one stat walk.

Thousands of records, read and written on every build and never by people:
marshal is several times faster than JSON. An unreadable file (another Python
version, a torn write) simply means a cold build. Records are plain tuples on
disk and ``CachedEntry`` in memory; this module is the only place that converts.
"""

from __future__ import annotations

import marshal
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .files import write_atomic

_MAGIC = b"dodo_lambda-cache-2\n"


class CachedEntry(NamedTuple):
    """One entry of the zip as written: the file's stats when it was read, its
    content hash, and where its compressed bytes sit in the zip."""

    size: int
    mtime_ns: int
    mode: int
    sha256: str  # hex, of the uncompressed content
    crc: int
    method: int  # 0 stored, 8 deflated
    csize: int
    offset: int  # of the local header in the zip


@dataclass
class EntryCache:
    """The record of one zip: how it was made and what is in it."""

    options: str  # the packaging options' digest it was built with
    zip: tuple[int, int] | None  # (size, mtime_ns) of the zip it describes
    stat: str  # the stat digest of the walk it was built from
    records: dict[str, CachedEntry]


def zip_stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def read(path: Path) -> EntryCache | None:
    try:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            return None
        options, zip_, stat, records = marshal.loads(data[len(_MAGIC):])
        return EntryCache(options, (zip_[0], zip_[1]) if zip_ else None, stat,
                          {name: CachedEntry._make(rec) for name, rec in records.items()})
    except (OSError, ValueError, EOFError, TypeError, AttributeError):
        return None


def write(path: Path, cache: EntryCache) -> None:
    records = {name: tuple(rec) for name, rec in cache.records.items()}
    write_atomic(path, _MAGIC + marshal.dumps((cache.options, cache.zip, cache.stat, records)))
