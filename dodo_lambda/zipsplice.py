"""A zip rewritten for a few changed entries, for the watch's save-to-zip path.

The watch keeps an item's zip in memory between saves (its entries, their zip
records and central directory entries) and, when the watcher names the files
that changed, writes the new zip by copying the
unchanged runs of the old one (in the kernel where it can), compressing only
the changed files, patching the offsets of the entries that moved, and hashing
only from the last checkpoint before the first change. No tree walk, no
per-entry work for what did not move. The staged dependencies' block (the
``Segment`` that starts the zip, and its run of central directory records) is
only ever copied: an edit to the item's own files never moves it. The bytes are
exactly those of ``archive.write_zip`` for the same entries (the tests hold both
to a cold build).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import archive
from .digest import same_stat, zip_content_digest
from .entrycache import CachedEntry, Segment
from .errors import DodoLambdaError
from .selection import Entry

MARK = 1 << 20  # a SHA-256 checkpoint of the zip every MiB
_OFFSET = struct.Struct("<I")
_CD_OFFSET_AT = 42  # where a central directory entry keeps its local header's offset


class Fallback(Exception):
    """The change needs a full build (a large file, an unexpected zip)."""


@dataclass
class ZipState:
    """An item's zip as the watch remembers it."""

    path: Path
    entries: list[Entry]  # the item's own files, sorted by zip path
    names: list[str]
    records: dict[str, CachedEntry]  # their records (``ZipResult.records``)
    central: list[bytes]  # the central directory entry of each
    cd_offset: int  # where the central directory starts (the end of the entries)
    dostime: tuple[int, int]
    segment: Segment | None = None  # the staged tree's block, first in the zip
    staged_cd: bytes = b""  # its central directory records, as they are
    stat: tuple[int, int] = (0, 0)  # (size, mtime_ns) of the zip this state describes
    marks: list[tuple[int, Any]] = field(default_factory=list)  # (offset, sha256 so far)
    unzipped: int = 0  # bytes, all entries (the segment's too)
    old: Path | None = None  # the previous zip, until ``discard``

    @property
    def base(self) -> int:
        """Where the own files' entries start: after the segment."""
        return self.segment.end if self.segment is not None else 0


def discard(state: ZipState) -> None:
    """Drop the previous zip (kept so that the new one is in place sooner)."""
    if state.old is not None:
        state.old.unlink(missing_ok=True)
        state.old = None


def _central(arcname: str, rec: CachedEntry, dostime: tuple[int, int]) -> bytes:
    name, flags = archive._name_bytes(arcname)
    return archive.central_record(name, flags, rec.method, dostime, rec.crc, rec.csize, rec.size,
                                  rec.mode, rec.offset)


def _safe(arcname: str) -> bool:
    """A zip path ``archive.write_zip`` accepts: relative, no '..' or '\\', UTF-8."""
    if arcname.startswith("/") or "\\" in arcname or ".." in arcname.split("/"):
        return False
    try:
        arcname.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in a file name, as surrogates
        return False
    return True


def _stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def load(path: Path, entries: list[Entry], records: dict[str, CachedEntry],
         dostime: tuple[int, int], segment: Segment | None = None) -> ZipState:
    """The state of the zip at ``path``, written by ``archive.write_zip`` for ``entries``
    (the item's own files) with ``records`` (the state keeps and updates that dict) and
    the staged ``segment``. Raises Fallback when they do not describe it."""
    names = [e.arcname for e in entries]
    if names != sorted(records) or any(
            not same_stat(r, e) or r.mode != e.mode
            for e, r in ((e, records[e.arcname]) for e in entries)):
        raise Fallback("the records do not describe these files")
    central = [_central(n, records[n], dostime) for n in names]
    state = ZipState(path, list(entries), names, records, central, 0, dostime,
                     segment=segment, unzipped=sum(r.size for r in records.values()))
    try:
        size = _stat(path)[0]
        if segment is not None:
            with open(path, "rb") as f:
                f.seek(segment.cd_start)
                state.staged_cd = f.read(segment.cd_end - segment.cd_start)
    except OSError as exc:
        raise Fallback(str(exc)) from exc
    if segment is not None:
        state.unzipped += segment.unzipped
        if segment.start != 0 or len(state.staged_cd) != segment.cd_end - segment.cd_start \
                or (names and records[names[0]].offset != segment.end):
            raise Fallback("the segment does not describe this zip")
    state.cd_offset = size - sum(len(c) for c in central) - len(state.staged_cd) \
        - archive._END.size
    state.marks = _hash_from(path, hashlib.sha256(), 0, [])[1]
    state.stat = _stat(path)
    return state


def _hash_from(path: Path, h: Any, start: int, marks: list[tuple[int, Any]]
               ) -> tuple[Any, list[tuple[int, Any]]]:
    """Hash ``path`` from ``start`` (``h`` holds the hash of what comes before),
    leaving a checkpoint every MARK bytes."""
    marks = [m for m in marks if m[0] <= start] or [(0, hashlib.sha256())]
    pos = start
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            want = MARK - pos % MARK
            chunk = f.read(want)
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
            if pos % MARK == 0:
                marks.append((pos, h.copy()))
    return h, marks


def _copy(src: int, dst: int, start: int, length: int, at: int) -> None:
    """Copy ``length`` bytes of ``src`` from ``start`` to ``dst`` at ``at``."""
    while length > 0:
        try:
            n = os.copy_file_range(src, dst, length, start, at)
        except (AttributeError, OSError):  # not Linux, or not between these files
            n = 0
        if n <= 0:
            data = os.pread(src, min(length, 1 << 20), start)
            if not data:
                raise DodoLambdaError("the zip changed while it was rewritten; run again")
            n = os.pwrite(dst, data, at)
        start, at, length = start + n, at + n, length - n


def splice(state: ZipState, changes: dict[str, Entry | None], who: str, *,
           before_write: Callable[[], None] | None = None) -> archive.ZipResult | None:
    """Rewrite the zip for ``changes`` (zip path -> its new entry, or None when it is
    gone). Returns None when no byte of the zip changes (a save of the same content).
    ``before_write`` runs once the zip is certain to change (the caller drops what
    describes the old zip)."""
    if _stat(state.path) != state.stat:
        raise Fallback("the zip was rewritten by someone else")
    packed: dict[str, archive.Packed | None] = {}
    for arcname in sorted(changes):
        entry = changes[arcname]
        rec = state.records.get(arcname)
        if entry is None:
            if rec is not None:
                packed[arcname] = None
            continue
        if entry.size > archive.STREAM_THRESHOLD:
            raise Fallback("a large file: streamed by the full build")
        if not _safe(arcname):
            raise Fallback("a zip path the full build refuses, saying why")
        if state.segment is not None and arcname.startswith(state.segment.prefix):
            raise Fallback("a file among the staged dependencies: the full build refuses it")
        same_mode = rec is not None and rec.mode == entry.mode
        # The watcher says it changed: read it, even when size and mtime look the same
        # (two saves within one tick of the file system's clock); equal bytes are reused.
        p = archive._pack(entry, rec._replace(mtime_ns=-1) if rec is not None and same_mode
                          else None)
        if p.old_offset is not None and rec is not None:  # same bytes: only its stats moved
            state.records[arcname] = rec._replace(size=entry.size, mtime_ns=entry.mtime_ns,
                                                  ctime_ns=entry.ctime_ns)
            state.entries[bisect.bisect_left(state.names, arcname)] = entry
            continue
        packed[arcname] = p
    if not packed:
        return None
    total = state.unzipped + sum((p.size if p else 0) - (state.records[a].size
                                                         if a in state.records else 0)
                                 for a, p in packed.items())
    if total > archive.UNZIPPED_LIMIT:
        raise Fallback("over Lambda's size limit: the full build says how")
    staged_files = state.segment.files if state.segment is not None else 0
    if len(state.names) + staged_files + sum(a not in state.records for a in packed) \
            > archive.MAX_ENTRIES:
        raise Fallback("too many entries")
    if before_write is not None:
        before_write()
    return _write(state, packed, who)


def _write(state: ZipState, packed: dict[str, archive.Packed | None], who: str
           ) -> archive.ZipResult:
    names, recs, old_cd = state.names, state.records, state.cd_offset
    new_names: list[str] = []
    new_entries: list[Entry] = []
    new_central: list[bytes] = []
    tmp = state.path.with_name(f".{state.path.name}.{os.getpid()}.tmp")
    first_change: int | None = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with open(state.path, "rb") as old:
            src = old.fileno()
            pos = state.base  # the staged segment, before the own files, never moves
            if pos:
                _copy(src, fd, 0, pos, 0)
            i = 0  # next old entry not yet copied
            for arcname, p in packed.items():  # sorted by zip path
                j = bisect.bisect_left(names, arcname)
                pos = _run(state, src, fd, i, j, pos, new_names, new_entries, new_central)
                if first_change is None:
                    first_change = pos
                i = j + 1 if j < len(names) and names[j] == arcname else j
                gone = recs.pop(arcname, None) if j < len(names) and names[j] == arcname else None
                state.unzipped -= gone.size if gone else 0
                if p is None:
                    continue
                name, flags = archive._name_bytes(arcname)
                header = archive.local_header(name, flags, p.method, state.dostime, p.crc,
                                              p.csize, p.size)
                os.pwrite(fd, header + (p.data or b""), pos)
                e = p.entry
                state.unzipped += p.size
                recs[arcname] = CachedEntry(e.size, e.mtime_ns, e.ctime_ns, p.mode, p.sha256,
                                            p.crc, p.method, p.csize, pos)
                new_names.append(arcname)
                new_entries.append(e)
                new_central.append(_central(arcname, recs[arcname], state.dostime))
                pos += len(header) + p.csize
            pos = _run(state, src, fd, i, len(names), pos, new_names, new_entries, new_central,
                       end=old_cd)
        # the central directory in path order: the segment's records where its prefix sorts
        seg = state.segment
        split = bisect.bisect_right(new_names, seg.prefix) if seg is not None else len(new_names)
        before = b"".join(new_central[:split])
        directory = before + state.staged_cd + b"".join(new_central[split:])
        n = len(new_names) + (seg.files if seg is not None else 0)
        os.pwrite(fd, directory + archive._END.pack(0x06054B50, 0, 0, n, n, len(directory), pos, 0),
                  pos)
        if seg is not None:
            seg = seg._replace(cd_start=pos + len(before),
                               cd_end=pos + len(before) + len(state.staged_cd))
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    start = max((m for m in state.marks if m[0] <= (first_change or 0)), key=lambda m: m[0])
    h, marks = _hash_from(tmp, start[1].copy(), start[0], state.marks)
    # Freeing the old zip's blocks costs milliseconds: keep a link to it, so that the
    # new zip is in place first and the old one is dropped later (``discard``). Named
    # like a temporary zip: the next build removes it if this process is killed first.
    state.old = state.path.with_name(f".{state.path.name}.{os.getpid()}.old.tmp")
    try:
        state.old.unlink(missing_ok=True)
        os.link(state.path, state.old)
    except OSError:
        state.old = None
    os.replace(tmp, state.path)
    state.names, state.entries, state.central = new_names, new_entries, new_central
    state.cd_offset, state.marks, state.stat = pos, marks, _stat(state.path)
    state.segment = seg
    return archive.ZipResult(
        sha256=h.hexdigest(), code_sha256=b64encode(h.digest()).decode(),
        zip_size=state.stat[0], unzipped_size=state.unzipped, files=n,
        content_digest=zip_content_digest(((n, r.mode, r.sha256) for n, r in recs.items()), seg),
        records=recs, segment=seg)


def _run(state: ZipState, src: int, dst: int, i: int, j: int, pos: int, names: list[str],
         entries: list[Entry], central: list[bytes], end: int | None = None) -> int:
    """Copy old entries i..j-1 (contiguous in the old zip) to ``pos``; returns the new end.
    Offsets are read before the run's own records move (entry j's is not touched yet)."""
    if j <= i:
        return pos
    old = state.names
    start = state.records[old[i]].offset
    stop = state.records[old[j]].offset if j < len(old) else (
        end if end is not None else state.cd_offset)
    _copy(src, dst, start, stop - start, pos)
    delta = pos - start
    run_names = state.names[i:j]
    names.extend(run_names)
    entries.extend(state.entries[i:j])
    if delta == 0:
        central.extend(state.central[i:j])
    else:
        recs = state.records
        for k, name in enumerate(run_names, start=i):
            offset = recs[name].offset + delta
            recs[name] = recs[name]._replace(offset=offset)
            cd = state.central[k]
            central.append(cd[:_CD_OFFSET_AT] + _OFFSET.pack(offset) + cd[_CD_OFFSET_AT + 4:])
    return pos + (stop - start)
