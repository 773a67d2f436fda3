"""The entry cache: what the last zip of an item holds, so that a rebuild copies
the bytes of what did not change and a no-op check is one stat walk of the
item's own files.

The item's own files have one record each. The staged dependencies (thousands of
files that only the npm step changes) are one *segment*: where their block of
local entries and of central directory records sits in the zip, and what it
holds in sum; a rebuild copies the block whole while the npm step's record says
the tree is the same, so an edit never stats, hashes or holds a record per
dependency file.

Read and written on every build and never by people: marshal, several times
faster than JSON. An unreadable file (another Python version, a torn write)
simply means a cold build. Records are plain tuples on disk and ``CachedEntry`` /
``Segment`` in memory; this module is the only place that converts.
"""

from __future__ import annotations

import marshal
import os
from pathlib import Path
from typing import Any, NamedTuple

from .files import write_atomic

_MAGIC = b"dodo_lambda-cache-4\n"


class CachedEntry(NamedTuple):
    """One entry of the zip as written: the file's stats when it was read, its
    content hash, and where its compressed bytes sit in the zip."""

    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    sha256: str  # hex, of the uncompressed content
    crc: int
    method: int  # 0 stored, 8 deflated
    csize: int
    offset: int  # of the local header in the zip


class Segment(NamedTuple):
    """The block of the zip written from the staged tree: every entry under
    ``prefix``, first in the file, and contiguous in the central directory (which
    is in path order)."""

    prefix: str  # "node_modules/" (layers: "nodejs/node_modules/")
    key: str  # the tree's content and the packaging options it was selected with
    start: int  # offset of its first local header (0)
    end: int  # offset just past its last entry's data
    cd_start: int  # offset of its first central directory record
    cd_end: int
    files: int
    unzipped: int  # bytes, uncompressed
    content: str  # content digest of its files (see digest.segment_line)
    packages: dict[str, int]  # top-level package -> unzipped bytes (for the manifest)
    notable: list[tuple[str, str]]  # (zip path, file) of .node and binding.gyp files


class HandlerMemo(NamedTuple):
    """A handler check that passed, and what it depended on: a rebuild whose file names
    and read files are the same need not read and parse the handler again."""

    key: str  # the handler, runtime, source and every selected zip path
    reads: tuple[tuple[str, int, int, int], ...]  # (zip path, size, mtime_ns, ctime_ns)
    warnings: tuple[str, ...]  # shown again when the check is skipped


class SelectionMemo(NamedTuple):
    """What the selection rules made of a walk (its picks are the records' names): a
    rebuild whose walk has the same names, paths and problems under the same options
    need not match them again."""

    key: str  # the options and every walked file's zip path, path and problem
    dropped: tuple[str, ...]
    restored: tuple[str, ...]


class EntryCache(NamedTuple):
    """The record of one zip: how it was made and what is in it."""

    options: str  # the packaging options' digest it was built with
    zip: tuple[int, int] | None  # (size, mtime_ns) of the zip it describes
    stat: str  # the stat digest of the walk of the item's own files it was built from
    records: dict[str, CachedEntry]  # the item's own files
    segment: Segment | None  # the staged tree's block
    # the selection's compiled regexes (selection.Patterns.sources), for the same options
    sources: tuple[str | None, str | None, str | None] | None = None
    handler: HandlerMemo | None = None  # the handler check this zip passed
    selection: SelectionMemo | None = None  # the selection its files came from


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
        options, zip_, stat, records, segment, sources, handler, selection = marshal.loads(
            data[len(_MAGIC):])
        return EntryCache(options, (zip_[0], zip_[1]) if zip_ else None, stat,
                          {name: CachedEntry._make(rec) for name, rec in records.items()},
                          Segment._make(segment) if segment else None,
                          (sources[0], sources[1], sources[2]) if sources else None,
                          HandlerMemo._make(handler) if handler else None,
                          SelectionMemo._make(selection) if selection else None)
    except (OSError, ValueError, EOFError, TypeError, AttributeError):
        return None


def write(path: Path, cache: EntryCache) -> None:
    records = {name: tuple(rec) for name, rec in cache.records.items()}
    segment = tuple(cache.segment) if cache.segment else None
    handler = tuple(cache.handler) if cache.handler else None
    selection = tuple(cache.selection) if cache.selection else None
    data: Any = (cache.options, cache.zip, cache.stat, records, segment, cache.sources, handler,
                 selection)
    write_atomic(path, _MAGIC + marshal.dumps(data))
