"""A staged tree packed by two processes, into the bytes one writer would write.

For thousands of sub-kilobyte files the per-file Python work (open, read, headers,
records) holds the GIL, so two threads overlap only part of it: measured on the
benchmark's 7,000-file tree, the zip phase reached about 78 % of two cores. Here the
build forks once. Parent and child continue the same walk (a generator over folder
listings read whole, so nothing of it is shared with the other process), cut it into
the same batches, and take batches from a shared counter, each writing its batches'
local entries to a part file of its own. The parent then copies the batches into the
zip in order and moves their directory records to where they landed, so the bytes
do not depend on who packed which batch (tests/test_splitpack.py compares them with
the threaded writer's).

Only on Linux (fork without exec is unsafe where system frameworks keep threads),
only from a process with no other thread, and only for a tree whose content the npm
step already hashed (a tree hashed while packed keeps one writer).
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import os
import signal
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import archive
from .errors import DodoLambdaError
from .selection import Entry

FORK_AFTER = 512  # files walked before forking: a smaller tree is not worth a process

_NEXT = struct.Struct("<qq")  # the next batch to take, and whether to stop
_NAME_LEN = struct.Struct("<H")  # in a central directory record, at byte 28
_OFFSET = struct.Struct("<I")  # in a central directory record, at byte 42
_RECORD = 46  # a central directory record without its name (no extra, no comment)

# one packed batch: (index, part, start, end, records, files, unzipped, packages, notable)
_Batch = tuple[int, int, int, int, bytes, int, int, dict[str, int], list[tuple[str, str]]]


def usable() -> bool:
    return sys.platform == "linux" and archive.WORKERS >= 2 and threading.active_count() == 1


class _Counter:
    """The next batch to take, in memory both processes see, behind a one-token pipe
    (taking the token is the lock; a stop is one aligned store and needs none)."""

    def __init__(self) -> None:
        self.shm = mmap.mmap(-1, _NEXT.size)
        self.r, self.w = os.pipe()
        os.write(self.w, b"x")

    def take(self) -> int | None:
        os.read(self.r, 1)
        try:
            index, stop = _NEXT.unpack_from(self.shm)
            if stop:
                return None
            _NEXT.pack_into(self.shm, 0, index + 1, 0)
            return index
        finally:
            os.write(self.w, b"x")

    def stop(self) -> None:
        struct.pack_into("<q", self.shm, 8, 1)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)
        self.shm.close()


def _pack_share(entries: Iterator[Entry], counter: _Counter, part: int, path: Path,
                seg: archive._Sum, dostime: tuple[int, int], room: tuple[int, int]
                ) -> tuple[list[_Batch], tuple[str, int] | None]:
    """Pack the batches this process takes into ``path``; stop at the end of the walk,
    when the other process says so, or past Lambda's limits (``room``: files and
    unzipped bytes left for the tree), which is then returned as ("files"|"bytes", n)."""
    done: list[_Batch] = []
    unzipped = 0
    with open(path, "wb") as out:
        w = archive._Writer(out, None, dostime)
        w.sha = None  # the parent hashes the zip as it copies the parts in
        want = counter.take()
        for index, batch in enumerate(archive._batches(entries, {})):
            if want is None:
                break
            if index < want:
                continue  # the other process's: walked past
            files_at_least = index * archive._BATCH_FILES + len(batch)
            if files_at_least > room[0]:
                counter.stop()
                w._drain()
                return done, ("files", files_at_least)
            part_seg = archive._Sum(seg.prefix, seg.key, seg.known)
            start, first = w.pos, len(w.staged_cd)
            for packed in archive._pack_batch(batch, hashed=False):
                w.add(packed, part_seg)
            done.append((index, part, start, w.pos, bytes(w.staged_cd[first:]), part_seg.files,
                         part_seg.unzipped, part_seg.packages, part_seg.notable))
            unzipped += part_seg.unzipped
            if unzipped > room[1]:
                counter.stop()
                w._drain()
                return done, ("bytes", unzipped)
            want = counter.take()
        w._drain()
    return done, None


def _moved(records: bytes, delta: int) -> bytes:
    """Central directory records with their local header offsets moved by ``delta``."""
    out = bytearray(records)
    pos, end = 0, len(out)
    name_len, offset = _NAME_LEN.unpack_from, _OFFSET.unpack_from
    put = _OFFSET.pack_into
    while pos < end:
        put(out, pos + 42, offset(out, pos + 42)[0] + delta)
        pos += _RECORD + name_len(out, pos + 28)[0]
    return bytes(out)


def _child(entries: Iterator[Entry], counter: _Counter, path: Path, seg: archive._Sum,
           dostime: tuple[int, int], room: tuple[int, int], result_fd: int) -> None:
    """The forked process: pack, send what it packed (or its error), and leave without
    running anything of the parent's (no atexit, no finally, no buffered file flushed)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent reports an interrupt
        try:
            payload: Any = ("ok", *_pack_share(entries, counter, 1, path, seg, dostime, room))
        except DodoLambdaError as exc:
            counter.stop()
            payload = ("dodo", exc.message)
        except OSError as exc:
            counter.stop()
            payload = ("os", exc.errno, exc.strerror, exc.filename)
        except Exception as exc:  # noqa: BLE001 - carried to the parent, raised there
            counter.stop()
            payload = ("other", f"{type(exc).__name__}: {exc}")
        data = marshal.dumps(payload)
        view = memoryview(data)
        while view:
            view = view[os.write(result_fd, view):]
        code = 0
    finally:
        os._exit(code)


def _collected(fd: int, pid: int) -> tuple[bytes, int]:
    """What the child sent, once it has ended, and its exit code."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return b"".join(chunks), os.waitstatus_to_exitcode(status)


def _decoded(data: bytes, code: int) -> tuple[list[_Batch], tuple[str, int] | None]:
    if code != 0 or not data:
        raise DodoLambdaError(f"the zip's second process ended without its part (exit {code});"
                              " run the build again")
    payload = marshal.loads(data)
    if payload[0] == "dodo":
        raise DodoLambdaError(payload[1])
    if payload[0] == "os":
        raise OSError(payload[1], payload[2], payload[3])
    if payload[0] == "other":
        raise RuntimeError(f"the zip's second process failed: {payload[1]}")
    return payload[1], payload[2]


def write(writer: archive._Writer, seg: archive._Sum, entries: Iterator[Entry], dest: Path,
          room: tuple[int, int]) -> tuple[str, int] | None:
    """Pack ``entries`` (a walk in progress) as two processes and append them to
    ``writer`` (the zip to be ``dest``) in order, summed into ``seg``; a limit passed is
    returned as in ``_pack_share`` (the caller raises: it knows the whole item)."""
    # temporary files as the build's cleaners know them: .<zip>.<what>.<pid>.tmp
    parts = [dest.with_name(f".{dest.name}.part{i}.{os.getpid()}.tmp") for i in (0, 1)]
    counter = _Counter()
    rfd, wfd = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child leaves through os._exit
            os.close(rfd)
            _child(entries, counter, parts[1], seg, writer.dostime, room, wfd)
        os.close(wfd)
        reaped = False
        try:
            mine, over = _pack_share(entries, counter, 0, parts[0], seg, writer.dostime, room)
            data, status = _collected(rfd, pid)
            reaped = True
            theirs, their_over = _decoded(data, status)
        except BaseException:
            if not reaped:
                counter.stop()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise
        over = over or their_over
        if over is None:
            _append(writer, seg, sorted(mine + theirs), parts)
        else:
            _sum(seg, mine + theirs)
        return over
    finally:
        os.close(rfd)
        counter.close()
        for p in parts:
            p.unlink(missing_ok=True)


def _sum(seg: archive._Sum, batches: list[_Batch]) -> None:
    for b in batches:
        seg.files += b[5]
        seg.unzipped += b[6]
        for name, size in b[7].items():
            seg.packages[name] = seg.packages.get(name, 0) + size
        seg.notable.extend(b[8])


def _append(writer: archive._Writer, seg: archive._Sum, batches: list[_Batch],
            parts: list[Path]) -> None:
    """The batches, in order, into the zip: their bytes copied from the parts (a run of
    batches one process wrote one after the other in one piece), their records moved."""
    if [b[0] for b in batches] != list(range(len(batches))):
        raise RuntimeError("the zip's two processes lost a batch")  # a bug, not an input
    writer._drain()
    # read, not mapped: mapped pages would count in the build's memory
    with open(parts[0], "rb") as f0, open(parts[1], "rb") as f1:
        files = (f0, f1)
        for part, start, end in _runs(batches):
            files[part].seek(start)
            archive._copy_exact(files[part], writer._write, end - start)
    for b in batches:
        writer.staged_cd += _moved(b[4], writer.pos - b[2])
        writer.pos += b[3] - b[2]
        writer.count += b[5]
        writer.unzipped += b[6]
    _sum(seg, batches)


def _runs(batches: list[_Batch]) -> Iterator[tuple[int, int, int]]:
    """(part, start, end) of each stretch of consecutive batches that one process
    wrote next to each other."""
    run: list[int] | None = None
    for b in batches:
        if run is not None and run[0] == b[1] and run[2] == b[2]:
            run[2] = b[3]
            continue
        if run is not None:
            yield run[0], run[1], run[2]
        run = [b[1], b[2], b[3]]
    if run is not None:
        yield run[0], run[1], run[2]
