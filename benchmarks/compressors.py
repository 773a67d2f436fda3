"""Micro benchmark: raw-deflate every file of the production tree, one file at a time.

    python benchmarks/compressors.py [--workdir DIR] [--repeat N] [--max-mib M] [--only NAME..]

Compares stdlib zlib, libdeflate (PyPI `deflate`) and ISA-L (PyPI `isal`), each single-
threaded and with 2 worker threads over batches of files, against Info-ZIP `zip -6`,
and probes whether each binding releases the GIL while it compresses.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import deflate
import lambda_project as lp
from isal import isal_zlib

Compressor = Callable[[bytes], int]
BATCH_BYTES = 256 * 1024
PROBE_BLOB = 4 * 1024 * 1024
PROBE_TRIES = 3
PROBE_SECONDS = 0.2
# per file: local header (30) + central directory entry (46), each with the name
ZIP_ENTRY_OVERHEAD = 30 + 46
ZIP_END_OVERHEAD = 22


def zlib_raw(level: int) -> Compressor:
    def compress(data: bytes) -> int:
        obj = zlib.compressobj(level, zlib.DEFLATED, -15)
        return len(obj.compress(data)) + len(obj.flush())

    return compress


def libdeflate_raw(level: int) -> Compressor:
    def compress(data: bytes) -> int:
        return len(deflate.deflate_compress(data, level))

    return compress


def isal_raw(level: int) -> Compressor:
    def compress(data: bytes) -> int:
        obj = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
        return len(obj.compress(data)) + len(obj.flush())

    return compress


COMPRESSORS: dict[str, Compressor] = {
    "zlib 6": zlib_raw(6),
    "zlib 9": zlib_raw(9),
    **{f"libdeflate {lvl}": libdeflate_raw(lvl) for lvl in (4, 5, 6, 7, 8, 9, 10, 12)},
    **{f"isal {lvl}": isal_raw(lvl) for lvl in (1, 2, 3)},
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Corpus:
    names: list[str]
    blobs: list[bytes]

    @property
    def raw_bytes(self) -> int:
        return sum(map(len, self.blobs))

    def batches(self, limit: int = BATCH_BYTES) -> list[list[bytes]]:
        """Consecutive files grouped into batches of about ``limit`` bytes."""
        out: list[list[bytes]] = [[]]
        size = 0
        for blob in self.blobs:
            if size >= limit:
                out.append([])
                size = 0
            out[-1].append(blob)
            size += len(blob)
        return out


def load_corpus(tree: Path, cap: int) -> Corpus:
    names: list[str] = []
    blobs: list[bytes] = []
    total = 0
    for path in lp.iter_files(tree):
        data = path.read_bytes()
        if total + len(data) > cap:
            print(f"  (cap of {cap:,} bytes reached: {len(blobs)} files loaded)")
            break
        names.append(path.relative_to(tree).as_posix())
        blobs.append(data)
        total += len(data)
    return Corpus(names, blobs)


@dataclass(frozen=True)
class InfoZip:
    file_bytes: int
    payload_bytes: int  # sum of the entries' compressed sizes


def info_zip_level6(ws: lp.Workspace) -> InfoZip:
    out = ws.zip_out / "ref_level6.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    lp.info_zip(ws.ref_tree, out, "-6")
    with zipfile.ZipFile(out) as zf:
        payload = sum(i.compress_size for i in zf.infolist())
    return InfoZip(out.stat().st_size, payload)


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Result:
    name: str
    one_thread: float
    two_threads: float
    compressed: int  # sum of the deflate outputs
    stored_fallback: int  # sum of min(deflate output, raw size): what a zip would hold
    gil_probe: float  # Python's progress during a call on a large blob (see gil_probe)

    @property
    def speedup(self) -> float:
        return self.one_thread / self.two_threads


def single(fn: Compressor, blobs: Sequence[bytes]) -> list[int]:
    return [fn(b) for b in blobs]


def threaded(fn: Compressor, batches: list[list[bytes]], workers: int = 2) -> list[int]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = pool.map(lambda batch: single(fn, batch), batches)
        return [size for part in parts for size in part]


Run = Callable[[], list[int]]


def best_times(first: Run, second: Run, repeat: int) -> tuple[float, float, list[int]]:
    """Best-of-``repeat`` times of two runs, alternated so that noise hits both alike;
    also returns the first run's output sizes, checked equal to the second's."""
    best = [float("inf"), float("inf")]
    outputs: list[list[int]] = [[], []]
    for _ in range(repeat):
        for i, run in enumerate((first, second)):
            start = time.perf_counter()
            outputs[i] = run()
            best[i] = min(best[i], time.perf_counter() - start)
    if outputs[0] != outputs[1]:
        raise AssertionError("threaded output sizes differ from single-threaded ones")
    return best[0], best[1], outputs[0]


def probe_blob(corpus: Corpus) -> bytes:
    """Up to PROBE_BLOB bytes cut from the concatenated corpus."""
    return b"".join(corpus.blobs)[:PROBE_BLOB]


def _spin_while(work: Callable[[], object]) -> float:
    """Count Python loop turns per second while ``work`` runs in another thread."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (work(), done.set()))
    count = 0
    start = time.perf_counter()
    thread.start()
    while not done.is_set():
        count += 1
    elapsed = time.perf_counter() - start
    thread.join()
    return count / elapsed


def gil_probe(fn: Compressor, blob: bytes) -> float:
    """Spin a Python loop while another thread compresses ``blob`` (repeated for about
    PROBE_SECONDS); return the loop's rate as a fraction of its rate beside a plain
    sleep of the same length. About 0 means the calls hold the GIL; calls that release
    it let the loop run (~1 with a free core, ~0.5 when both threads share one). Each
    rate is the best of PROBE_TRIES: load on the shared machine can only lower it."""
    start = time.perf_counter()
    fn(blob)
    calls = max(1, round(PROBE_SECONDS / (time.perf_counter() - start)))

    def work() -> None:
        for _ in range(calls):
            fn(blob)

    duration = time.perf_counter()
    work()
    duration = time.perf_counter() - duration
    alone = max(_spin_while(lambda: time.sleep(duration)) for _ in range(PROBE_TRIES))
    during = max(_spin_while(work) for _ in range(PROBE_TRIES))
    return during / alone


def measure(name: str, fn: Compressor, corpus: Corpus, repeat: int) -> Result:
    batches = corpus.batches()
    t1, t2, sizes = best_times(lambda: single(fn, corpus.blobs), lambda: threaded(fn, batches), repeat)
    fallback = sum(min(c, len(b)) for c, b in zip(sizes, corpus.blobs, strict=True))
    return Result(name, t1, t2, sum(sizes), fallback, gil_probe(fn, probe_blob(corpus)))


# --------------------------------------------------------------------------- report


def gil_note(probe: float) -> str:
    if probe >= 0.35:
        return "yes"
    return "no" if probe < 0.2 else "unclear"


def estimated_zip(result: Result, corpus: Corpus) -> int:
    names = sum(2 * len(n.encode()) for n in corpus.names)
    headers = ZIP_ENTRY_OVERHEAD * len(corpus.names) + ZIP_END_OVERHEAD
    return result.stored_fallback + names + headers


COLUMNS = (
    ("compressor", "<14"),
    ("1 thr s", ">9"),
    ("2 thr s", ">9"),
    ("x", ">6"),
    ("probe", ">7"),
    ("GIL freed", ">10"),
    ("deflated B", ">12"),
    ("/zip", ">7"),
    ("/payload", ">9"),
    ("est. zip B", ">12"),
    ("/zip", ">7"),
)
NOTES = """
/zip: deflated bytes over the Info-ZIP zip's file size (nothing subtracted).
/payload: sum of min(deflated, raw) per file over Info-ZIP's compressed payload.
est. zip: that sum + local/central headers with names, no directory entries
  (Info-ZIP's zip also has directory entries).
x: 1-thread time / 2-thread time, per file, in batches of ~256 KiB over 2 workers.
probe: how fast a Python loop runs while another thread compresses a 4 MiB blob, as a
  fraction of its speed alone: ~0.1 or less = the call holds the GIL (checked with
  sum(range(...)): 0.11), >= 0.35 = 'GIL freed' (hashlib.sha256: 0.6 under load).
The machine is shared and has 2 cores: 2.0 is the ceiling and noise is large."""


def row(result: Result, corpus: Corpus, ref: InfoZip) -> str:
    est = estimated_zip(result, corpus)
    cells = (
        result.name,
        f"{result.one_thread:.3f}",
        f"{result.two_threads:.3f}",
        f"{result.speedup:.2f}",
        f"{result.gil_probe:.2f}",
        gil_note(result.gil_probe),
        f"{result.compressed:,}",
        f"{result.compressed / ref.file_bytes:.3f}",
        f"{result.stored_fallback / ref.payload_bytes:.3f}",
        f"{est:,}",
        f"{est / ref.file_bytes:.3f}",
    )
    return "".join(f"{cell:{spec}}" for cell, (_, spec) in zip(cells, COLUMNS, strict=True))


def print_report(results: list[Result], corpus: Corpus, ref: InfoZip, repeat: int) -> None:
    print(
        f"\n{len(corpus.blobs):,} files, {corpus.raw_bytes:,} bytes; best of {repeat}; "
        f"Info-ZIP -6 zip: {ref.file_bytes:,} B (entries' compressed payload "
        f"{ref.payload_bytes:,} B)"
    )
    header = "".join(f"{name:{spec}}" for name, spec in COLUMNS)
    print(header)
    print("-" * len(header))
    for result in results:
        print(row(result, corpus, ref))
    print(NOTES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=lp.DEFAULT_WORKDIR)
    parser.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    parser.add_argument("--max-mib", type=int, default=256, help="cap on bytes loaded")
    parser.add_argument("--only", nargs="*", help="compressor names to run (default all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ws = lp.Workspace(args.workdir.resolve())
    tree = lp.ensure_ref_tree(ws)
    print(f"Loading {tree} ...", flush=True)
    corpus = load_corpus(tree, args.max_mib * 1024 * 1024)
    ref = info_zip_level6(ws)
    selected = {k: v for k, v in COMPRESSORS.items() if not args.only or k in args.only}
    if not selected:
        sys.exit(f"no such compressor; choose from: {', '.join(COMPRESSORS)}")
    results = []
    for name, fn in selected.items():
        print(f"  {name} ...", flush=True)
        results.append(measure(name, fn, corpus, args.repeat))
    print_report(results, corpus, ref, args.repeat)


if __name__ == "__main__":
    main()
