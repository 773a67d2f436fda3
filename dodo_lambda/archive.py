"""The deterministic, streaming zip writer.

Same inputs, same bytes: entries sorted by path, one fixed timestamp, modes
normalised to 0644/0755, no extra fields, deflate from a compressor that ships
inside its wheel (libdeflate via ``deflate``). Files are compressed in worker
threads (the compressors release the GIL) through a bounded window, so memory
stays flat; a large staged tree, by two processes (``splitpack``). A rebuild
copies the unchanged entries' bytes from the previous zip, as ``zip -FS`` does,
and recompresses only what changed; the output is identical to a cold build
because each entry's bytes depend only on its path, content and mode. A staged
dependency tree is written as a *segment*, first in the file (the central
directory still lists every entry in path order): streamed from its walk, nothing
kept per file but its directory record's bytes, and copied whole, entries and
directory records, while it stays the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import deflate

from .digest import ContentDigest, same_stat, zip_content_digest
from .entrycache import CachedEntry, Segment
from .errors import DodoLambdaError
from .files import claim_spare, replace_keeping_spare
from .selection import Entry, zip_mode

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

UNZIPPED_LIMIT = 262_144_000  # Lambda: function code plus layers, unzipped
MAX_ENTRIES = 0xFFFF  # without ZIP64
STREAM_THRESHOLD = 16 << 20  # larger files are streamed, never read whole
FORMAT = 2  # bump whenever the bytes written for the same inputs change
_BATCH_BYTES = 1 << 20
_BATCH_FILES = 64
_READ = 1 << 20

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_UTF8_FLAG = 0x800


# libdeflate, bundled in the ``deflate`` wheel: twice zlib's speed at the same
# size, and the same bytes on every machine whatever its zlib (see README, Speed).
_LEVEL = 6
# The wheel's version names the bundled libdeflate, whose output may change.
# Files over STREAM_THRESHOLD go through zlib's streaming API (libdeflate has none).
COMPRESSOR_ID = (f"libdeflate-{_LEVEL} (deflate {deflate.__version__}); zlib"
                 f" {zlib.ZLIB_RUNTIME_VERSION} over {STREAM_THRESHOLD >> 20} MiB")
_crc32 = deflate.crc32  # libdeflate's: about twice as fast as zlib's


def _compress(data: bytes) -> bytes | bytearray:
    return deflate.deflate_compress(data, _LEVEL)


def dos_timestamp(epoch: str | None = None) -> tuple[int, int]:
    """(time, date) in DOS format: 1980-01-01 00:00, or SOURCE_DATE_EPOCH (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH") if epoch is None else epoch
    if not epoch:
        return 0, (0 << 9) | (1 << 5) | 1
    try:
        t = time.gmtime(max(int(epoch), 315532800))
    except (ValueError, OverflowError) as exc:
        raise DodoLambdaError(
            f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds; unset it or fix it"
        ) from exc
    year = min(t.tm_year, 2107)
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
            ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)


class Packed:
    """One entry's bytes as they go in the zip (``data`` None: copy from the
    previous zip; ``stream``: compress from disk in the writer). A slotted class, not
    a dataclass: one is made per file, and a dataclass costs an edit's run 0.5 ms to
    define."""

    __slots__ = ("entry", "sha256", "crc", "method", "csize", "size", "mode", "data",
                 "old_offset", "stream")

    def __init__(self, entry: Entry, sha256: str, crc: int, method: int, csize: int, size: int,
                 mode: int, data: bytes | bytearray | None = None, old_offset: int | None = None,
                 stream: bool = False) -> None:
        self.entry, self.sha256, self.crc, self.method = entry, sha256, crc, method
        self.csize, self.size, self.mode = csize, size, mode  # mode: 0o644 or 0o755
        self.data, self.old_offset, self.stream = data, old_offset, stream


def local_header(name: bytes, flags: int, method: int, dostime: tuple[int, int], crc: int,
                 csize: int, size: int) -> bytes:
    """A file's local header and name: what comes before its data (one definition for
    the writer and the splice, whose bytes must be the same)."""
    return _LOCAL.pack(0x04034B50, 20, flags, method, dostime[0], dostime[1], crc, csize, size,
                       len(name), 0) + name


def central_record(name: bytes, flags: int, method: int, dostime: tuple[int, int], crc: int,
                   csize: int, size: int, mode: int, offset: int) -> bytes:
    """A file's central directory record (mode: 0o644 or 0o755, a regular file)."""
    return _CENTRAL.pack(0x02014B50, (3 << 8) | 20, 20, flags, method, dostime[0], dostime[1],
                         crc, csize, size, len(name), 0, 0, 0, 0, (0o100000 | mode) << 16,
                         offset) + name


def _name_bytes(arcname: str) -> tuple[bytes, int]:
    raw = arcname.encode("utf-8")
    return raw, (0 if raw.isascii() else _UTF8_FLAG)


def _read(fd: int, size: int) -> bytes:
    """A whole (small) file; os-level calls, as this runs once per file."""
    data = os.read(fd, size + 1)
    if len(data) == size:  # a regular file reads short only at its end: done
        return data
    while more := os.read(fd, _READ):  # it changed since its stat: take it as it is now
        data += more
    return data


def _pack(entry: Entry, cached: CachedEntry | None, hashed: bool = True) -> Packed:
    """Work for a thread: decide reuse, else read, hash and compress one file
    (``hashed``: its SHA-256 too; a staged tree whose content is known skips it)."""
    if cached is not None and same_stat(cached, entry):
        return Packed(entry, cached.sha256, cached.crc, cached.method, cached.csize, entry.size,
                      entry.mode, old_offset=cached.offset)
    size, mode = entry.size, entry.mode
    fd = os.open(entry.path, os.O_RDONLY)
    try:
        if size < 0:  # walked without stats (a staged tree): learnt here, off the walk
            st = os.fstat(fd)
            size, mode = st.st_size, zip_mode(st.st_mode)
        if size > STREAM_THRESHOLD:
            return Packed(entry, "", 0, 8, 0, size, mode, stream=True)
        data = _read(fd, size)
    finally:
        os.close(fd)
    sha = hashlib.sha256(data).hexdigest() if hashed else ""
    crc = _crc32(data)
    if cached is not None and cached.sha256 == sha and cached.size == len(data):
        return Packed(entry, sha, crc, cached.method, cached.csize, len(data), mode,
                      old_offset=cached.offset)
    comp = _compress(data) if data else b""
    if len(comp) >= len(data):
        return Packed(entry, sha, crc, 0, len(data), len(data), mode, data=data)
    return Packed(entry, sha, crc, 8, len(comp), len(data), mode, data=comp)


def _pack_batch(batch: Sequence[tuple[Entry, CachedEntry | None]], hashed: bool = True
                ) -> list[Packed]:
    return [_pack(entry, cached, hashed) for entry, cached in batch]


def _batches(entries: Iterable[Entry], cache: Mapping[str, CachedEntry]
             ) -> Iterator[list[tuple[Entry, CachedEntry | None]]]:
    batch: list[tuple[Entry, CachedEntry | None]] = []
    size = 0
    for e in entries:
        cached = cache.get(e.arcname)
        if cached is not None and cached.mode != e.mode:
            cached = None
        batch.append((e, cached))
        if cached is None or not same_stat(cached, e):
            size += max(e.size, 0)  # unknown (-1): batches go by count
        if size >= _BATCH_BYTES or len(batch) >= _BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


WORKERS = max(1, min(8, os.cpu_count() or 1))


_INLINE = 16  # files to read at most for a rebuild to pack them without workers


def _pool(entries: Sequence[Entry], cache: Mapping[str, CachedEntry],
          staged: Staged | Segment | None) -> contextlib.AbstractContextManager[Executor | None]:
    """Threads: libdeflate and hashlib release the GIL, but the per-file Python work
    does not. A pool of forked processes fed by pickling was measured no faster (this
    2-core machine); a staged tree of known content is packed by two processes that
    share nothing but a batch counter instead (splitpack). An edit's rebuild, with a
    few files to read, packs them itself (no threads to start)."""
    if not isinstance(staged, Staged):
        todo = 0
        for e in entries:
            rec = cache.get(e.arcname)
            if rec is None or rec.mode != e.mode or not same_stat(rec, e):
                todo += 1
                if todo > _INLINE:
                    break
        else:
            return contextlib.nullcontext(None)
    from concurrent.futures import ThreadPoolExecutor  # not on a no-op's or an edit's path

    return ThreadPoolExecutor(WORKERS, thread_name_prefix="dodo_lambda-zip")


def _ordered(entries: Iterable[Entry], cache: Mapping[str, CachedEntry], pool: Executor | None,
             hashed: bool = True) -> Iterator[Packed]:
    """Packed entries in order, computed ahead by the pool through a bounded window
    (``entries`` may be a walk in progress: it is consumed as the window moves);
    without a pool, here."""
    if pool is None:
        for batch in _batches(entries, cache):
            yield from _pack_batch(batch, hashed)
        return
    window: deque[Future[list[Packed]]] = deque()
    for batch in _batches(entries, cache):
        window.append(pool.submit(_pack_batch, batch, hashed))
        if len(window) > 2 * WORKERS:
            yield from window.popleft().result()
    while window:
        yield from window.popleft().result()


class Staged(NamedTuple):
    """A staged tree to write file by file (``entries`` sorted, and all under
    ``prefix``), recorded as a segment under ``key``. ``content``, when the tree's
    content is known (the npm step hashed it), is the segment's content digest, and
    its files are not hashed again."""

    prefix: str
    key: str
    entries: Iterable[Entry]
    content: str | None = None


class _Sum:
    """The segment being written."""

    def __init__(self, prefix: str, key: str, known: str | None) -> None:
        self.prefix, self.key = prefix, key
        self.known = known  # the content digest, when known beforehand
        self.files = 0
        self.unzipped = 0
        self.content = ContentDigest()
        self.packages: dict[str, int] = {}
        self.notable: list[tuple[str, str]] = []
        # the package the previous file counted toward, and its folder's zip path
        self.package: tuple[str, str] | None = None


class _Writer:
    """Appends entries to the open temporary zip and remembers the directory."""

    def __init__(self, out: Any, old: Any, dostime: tuple[int, int]) -> None:
        self.out, self.old = out, old
        self.dostime = dostime
        self.central = bytearray()  # the own files' directory records, in path order
        self.count = 0
        self.records: dict[str, CachedEntry] = {}  # the item's own files
        # the staged segment: its directory records, where they go among the own
        # files' (the first own record past its prefix), and its record
        self.staged_cd = bytearray()
        self.prefix: str | None = None
        self.split: int | None = None
        self.segment: Segment | None = None
        self.unzipped = 0  # bytes as packed (a file may change after the walk)
        self.pending: tuple[int, int] | None = None  # a run of old bytes to copy
        self.pos = 0  # where the next entry starts (tell() is slow, and pending is unwritten)
        self.buf = bytearray()  # small entries gathered into large writes
        # the zip's SHA-256, hashed as it is written (None once a header was patched)
        self.sha: Any = hashlib.sha256()

    def _drain(self) -> None:
        if self.buf:
            self._write(self.buf)
            self.buf.clear()

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self.sha is not None:
            self.sha.update(data)
        self.out.write(data)

    def _flush_copy(self) -> None:
        self._drain()
        if self.pending is not None:
            start, length = self.pending
            self.old.seek(start)
            _copy_exact(self.old, self._write, length)
            self.pending = None

    def _copy_run(self, start: int, length: int) -> None:
        """Copy ``length`` bytes of the previous zip from ``start``, joined with the
        run before when they are adjacent."""
        if self.pending and self.pending[0] + self.pending[1] == start:
            self.pending = (self.pending[0], self.pending[1] + length)
        else:
            self._flush_copy()
            self.pending = (start, length)
        self.pos += length

    def add(self, p: Packed, seg: _Sum | None = None) -> None:
        e = p.entry
        name, flags = _name_bytes(e.arcname)
        offset = self.pos
        if p.old_offset is not None:
            self._copy_run(p.old_offset, _LOCAL.size + len(name) + p.csize)
        else:
            if self.pending is not None:
                self._flush_copy()
            if p.stream:
                self._drain()
                p = self._stream(p, name, flags)
                self.pos = self.out.tell()
            else:
                buf = self.buf  # inline: this runs once per file
                buf += local_header(name, flags, p.method, self.dostime, p.crc, p.csize, p.size)
                if p.data:
                    buf += p.data
                self.pos += _LOCAL.size + len(name) + p.csize
                if len(buf) >= _READ:
                    self._drain()
        record = central_record(name, flags, p.method, self.dostime, p.crc, p.csize, p.size,
                                p.mode, offset)
        self.count += 1
        self.unzipped += p.size
        if seg is None:
            if self.split is None and self.prefix is not None and e.arcname > self.prefix:
                self.split = len(self.central)
            self.central += record
            self.records[e.arcname] = CachedEntry(e.size, e.mtime_ns, e.ctime_ns, p.mode,
                                                  p.sha256, p.crc, p.method, p.csize, offset)
            return
        self.staged_cd += record
        seg.files += 1
        seg.unzipped += p.size
        arcname = e.arcname
        if seg.known is None:
            seg.content.add(arcname, p.mode, p.sha256)
        # files come in path order: a package's files one after the other
        if seg.package is None or not arcname.startswith(seg.package[1]):
            package = package_of(arcname)
            seg.package = None if package is None else (
                package, arcname[:arcname.find("node_modules/") + 13] + package + "/")
        if seg.package is not None:
            seg.packages[seg.package[0]] = seg.packages.get(seg.package[0], 0) + p.size
        if arcname.endswith((".node", "/binding.gyp")):
            seg.notable.append((arcname, e.path))

    def end(self, seg: _Sum) -> None:
        """The segment is written (it starts the zip: its offsets never move)."""
        self.prefix = seg.prefix
        self.segment = Segment(seg.prefix, seg.key, 0, self.pos, 0, len(self.staged_cd),
                               seg.files, seg.unzipped, seg.known or seg.content.hexdigest(),
                               seg.packages, seg.notable)

    def copy_segment(self, seg: Segment) -> None:
        """The segment's entries and directory records from the previous zip, where
        it also started the zip: both copied as they are."""
        self.old.seek(seg.cd_start)
        records = self.old.read(seg.cd_end - seg.cd_start)
        if self.pos != 0 or seg.start != 0 or len(records) != seg.cd_end - seg.cd_start or (
                seg.files and records[:4] != b"PK\x01\x02"):
            raise DodoLambdaError(f"{self.old.name} does not match its entry cache; delete"
                                  " the build dir's cache/ folder and run again")
        self.staged_cd += records
        self._copy_run(seg.start, seg.end - seg.start)
        self.count += seg.files
        self.unzipped += seg.unzipped
        self.prefix = seg.prefix
        self.segment = seg

    def _local(self, p: Packed, name: bytes, flags: int) -> bytes:
        return local_header(name, flags, p.method, self.dostime, p.crc, p.csize, p.size)

    def _stream(self, p: Packed, name: bytes, flags: int) -> Packed:
        """Compress a large file chunk by chunk, then patch its header."""
        self.sha = None  # bytes are rewritten in place: hash the finished file instead
        start = self.out.tell()
        self.out.write(self._local(p, name, flags))
        sha, crc, size, csize = hashlib.sha256(), 0, 0, 0
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        with open(p.entry.path, "rb") as f:
            while chunk := f.read(_READ):
                sha.update(chunk)
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
                out = comp.compress(chunk)
                csize += len(out)
                self.out.write(out)
        tail = comp.flush()
        csize += len(tail)
        self.out.write(tail)
        done = Packed(p.entry, sha.hexdigest(), crc, 8, csize, size, p.mode)
        if csize >= size:  # incompressible: store it instead, as the small path does
            self.out.seek(start)
            self.out.truncate()
            done.method, done.csize = 0, size
            self.out.write(self._local(done, name, flags))
            with open(p.entry.path, "rb") as f:
                _copy_exact(f, self.out.write, size)
        else:
            end = self.out.tell()
            self.out.seek(start)
            self.out.write(self._local(done, name, flags))
            self.out.seek(end)
        return done

    def finish(self) -> None:
        """The central directory, in path order: the segment's records among the own
        files' where its prefix sorts."""
        self._flush_copy()
        cd_offset = self.pos
        split = len(self.central) if self.split is None else self.split
        if self.segment is not None:
            self.segment = self.segment._replace(cd_start=cd_offset + split,
                                                 cd_end=cd_offset + split + len(self.staged_cd))
        self._drain()
        n = self.count
        own = memoryview(self.central)
        for part in (own[:split], self.staged_cd, own[split:]):  # written as they are, not joined
            self._write(part)
        size = len(self.central) + len(self.staged_cd)
        self._write(_END.pack(0x06054B50, 0, 0, n, n, size, cd_offset, 0))


def _copy_exact(src: Any, write: Callable[[memoryview], Any], length: int) -> None:
    """``length`` bytes of ``src`` to ``write`` (which must be done with them when it
    returns), through one buffer: a new megabyte per read costs a rebuild's copy of
    the staged block 10 % in page faults."""
    view = memoryview(bytearray(min(_READ, length)))
    while length > 0:
        n = src.readinto(view[:min(_READ, length)])
        if not n:
            raise DodoLambdaError(f"{getattr(src, 'name', 'a file')} changed while it was packed;"
                                  " run the build again")
        write(view[:n])
        length -= n


class ZipResult(NamedTuple):
    sha256: str
    code_sha256: str
    zip_size: int
    unzipped_size: int
    files: int
    content_digest: str
    records: dict[str, CachedEntry]  # the item's own files
    segment: Segment | None = None  # the staged tree, when one was packed as a block


def package_of(arcname: str) -> str | None:
    """The top-level npm package (``name`` or ``@scope/name``) a file in node_modules
    counts toward, nested node_modules included; None outside node_modules."""
    i = arcname.find("node_modules/")
    if i < 0:
        return None
    parts = arcname[i + 13:].split("/", 2)
    if len(parts) < 2:
        return None  # a file directly in node_modules
    return parts[0] if not parts[0].startswith("@") else "/".join(parts[:2])


def group_of(arcname: str) -> str:
    """The package (node_modules/<pkg>, scoped too) or top folder a path counts toward."""
    parts = arcname.split("/")
    if "node_modules" in parts:
        i = parts.index("node_modules")
        n = 3 if len(parts) > i + 2 and parts[i + 1].startswith("@") else 2
        return "/".join(parts[: i + n]) if len(parts) > i + n - 1 else arcname
    return parts[0] + ("/" if len(parts) > 1 else "")


def group_sizes(entries: Sequence[Entry]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for e in entries:
        g = group_of(e.arcname)
        sizes[g] = sizes.get(g, 0) + e.size
    return sizes


def largest(sizes: dict[str, int], n: int = 10) -> str:
    top = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in top)


def _unsafe(arcname: str) -> bool:
    return arcname.startswith("/") or "\\" in arcname or (
        ".." in arcname and ".." in arcname.split("/"))


def _refuse_unsafe(who: str, arcname: str) -> DodoLambdaError:
    return DodoLambdaError(f"{who}: refusing unsafe zip path {arcname!r}; rename the file")


def _too_many(who: str, count: int) -> DodoLambdaError:
    return DodoLambdaError(f"{who}: {count} files, more than a zip without ZIP64 holds"
                           f" ({MAX_ENTRIES}); exclude what is not needed at run time")


def _too_big(who: str, total: int, entries: Sequence[Entry], prefix: str,
             packages: dict[str, int]) -> DodoLambdaError:
    """Over the unzipped limit: the largest of the own files' groups and the staged
    packages (grouped only now: a build that fits never needs them)."""
    sizes = group_sizes(entries)
    sizes.update({f"{prefix}{name}": size for name, size in packages.items()})
    return DodoLambdaError(
        f"{who}: {total:,} bytes unzipped, over Lambda's limit of {UNZIPPED_LIMIT:,};"
        f" largest: {largest(sizes)};"
        " exclude what is not needed at run time (.lambdaignore, exclude=) or move it to a layer")


def write_zip(entries: Sequence[Entry], dest: Path, *, who: str,
              previous: Mapping[str, CachedEntry] | None = None,
              dostime: tuple[int, int] | None = None,
              staged: Staged | Segment | None = None) -> ZipResult:
    """Write ``entries`` (sorted) to ``dest`` through a temporary file.

    ``previous`` maps zip paths to the records of the zip currently at ``dest``
    (``ZipResult.records``); their bytes are copied, not recompressed, when size,
    mtime and ctime (or content) still match. ``staged``, a staged tree (none of
    ``entries`` under its prefix), is written first: streamed from its walk, or, a
    ``Segment`` of the zip at ``dest`` (which the caller knows it describes), copied
    whole. The central directory lists every entry in path order.
    """
    copied = staged if isinstance(staged, Segment) else None
    count = len(entries) + (copied.files if copied else 0)
    if count > MAX_ENTRIES:
        raise _too_many(who, count)
    for e in entries:
        if _unsafe(e.arcname):
            raise _refuse_unsafe(who, e.arcname)
    total = sum(e.size for e in entries) + (sum(copied.packages.values()) if copied else 0)
    if total > UNZIPPED_LIMIT:
        raise _too_big(who, total, entries, copied.prefix if copied else "",
                       copied.packages if copied else {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    cache = previous if previous and dest.is_file() else {}
    reuse = claim_spare(dest, tmp)
    try:
        with open(tmp, "r+b" if reuse else "wb") as out, \
                (open(dest, "rb") if cache or copied else contextlib.nullcontext()) as old, \
                _pool(entries, cache, staged) as pool:
            writer = _Writer(out, old, dostime or dos_timestamp())
            if isinstance(staged, Segment):
                writer.copy_segment(staged)
            elif staged is not None:
                _write_staged(writer, staged, pool, who, total, entries, dest)
            for packed in _ordered(entries, cache, pool):
                writer.add(packed)
            writer.finish()
            out.truncate()  # a spare written over may have been longer
        sha = writer.sha
        if sha is None:
            sha = hashlib.sha256()
            with open(tmp, "rb") as f:
                _copy_exact(f, sha.update, tmp.stat().st_size)
        replace_keeping_spare(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    from base64 import b64encode

    records = writer.records
    return ZipResult(
        sha256=sha.hexdigest(),
        code_sha256=b64encode(sha.digest()).decode(),
        zip_size=dest.stat().st_size,
        unzipped_size=writer.unzipped,
        files=writer.count,
        content_digest=zip_content_digest(
            ((name, r.mode, r.sha256) for name, r in records.items()), writer.segment),
        records=records,
        segment=writer.segment,
    )


def _write_staged(writer: _Writer, part: Staged, pool: Executor | None, who: str, known: int,
                  entries: Sequence[Entry], dest: Path) -> None:
    """Stream a staged tree into the zip, checking Lambda's limits as it goes (``known``:
    the unzipped size of the own ``entries``, which come after it)."""

    def checked() -> Iterator[Entry]:
        for e in part.entries:
            if _unsafe(e.arcname):
                raise _refuse_unsafe(who, e.arcname)
            yield e

    seg = _Sum(part.prefix, part.key, part.content)
    walk = checked()
    if part.content is not None:  # known content: the files need no hash, nor one writer
        from . import splitpack

        if splitpack.usable():
            head = list(itertools.islice(walk, splitpack.FORK_AFTER))
            if len(head) < splitpack.FORK_AFTER:
                walk = iter(head)
            else:
                room = (MAX_ENTRIES - len(entries), UNZIPPED_LIMIT - known)
                over = splitpack.write(writer, seg, itertools.chain(head, walk), dest, room)
                if over is not None and over[0] == "files":
                    raise _too_many(who, over[1] + len(entries))
                if over is not None or known + seg.unzipped > UNZIPPED_LIMIT:
                    raise _too_big(who, known + seg.unzipped, entries, part.prefix, seg.packages)
                writer.end(seg)
                return
    for packed in _ordered(walk, {}, pool, hashed=part.content is None):
        writer.add(packed, seg)
        if writer.count + len(entries) > MAX_ENTRIES:
            raise _too_many(who, writer.count + len(entries))
        if known + seg.unzipped > UNZIPPED_LIMIT:
            raise _too_big(who, known + seg.unzipped, entries, part.prefix, seg.packages)
    writer.end(seg)
