"""Benchmark dodo_lambda's `doit package` against Info-ZIP on a realistic Node.js Lambda.

Run on demand (not part of the test suite):

    python benchmarks/bench_package.py [--runs N] [--workdir DIR] [--json FILE]

Cases, interleaved round-robin and reported as medians:

    a  cold `doit package` (dist/ and cache/ deleted; staged node_modules kept)
    b  Info-ZIP `zip -qr -X out.zip .` of the same tree into a new file (the reference)
    c  no-op `doit package` (nothing changed since the previous build)
    d  `doit package` after editing one source file
    e  Info-ZIP `zip -qr -X -FS` after the same kind of edit, against a kept zip
    f  (info only) `doit list`: interpreter + doit + dodo.py import, no task run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lambda_project as lp

from dodo_lambda.layout import Layout

REPO_ROOT = lp.BENCH_DIR.parent
DOIT = [sys.executable, "-m", "doit", "-f", "dodo.py"]
CASES = {
    "a": "cold doit package",
    "b": "Info-ZIP zip -r (new)",
    "c": "no-op doit package",
    "d": "doit package, 1 edit",
    "e": "Info-ZIP zip -FS, 1 edit",
    "f": "doit list (floor, info)",
}


@dataclass(frozen=True)
class Target:
    label: str
    limit: float
    aim: float
    unit: str


TARGETS = {
    "cold": Target("cold (a) / (b)", 0.8, 0.6, "x"),
    "size": Target("zip size (a) / (b)", 1.0, 0.98, "x"),
    "noop": Target("no-op (c) / (b)", 0.3, 0.2, "x"),
    "edit": Target("one-edit (d) / (b)", 0.4, 0.2, "x"),
    "rss": Target("peak RSS (a), median", 64.0, 48.0, " MiB"),
}


# --------------------------------------------------------------------------- processes


@dataclass
class Timed:
    seconds: float
    maxrss_kib: int
    output: str


# As on a user's machine: Python caches bytecode (this sandbox sets
# PYTHONDONTWRITEBYTECODE, which would recompile every module on every run).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_timed(cmd: list[str], cwd: Path) -> Timed:
    """Run ``cmd`` to completion; wall time and the whole process tree's peak RSS."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)} in {cwd}\n{output}")
    return Timed(seconds, usage.ru_maxrss, output)


def executed_tasks(doit_output: str) -> list[str]:
    """Tasks doit reports as run (`. name`), as opposed to up to date (`-- name`)."""
    return [line[2:].strip() for line in doit_output.splitlines() if line.startswith(". ")]


# --------------------------------------------------------------------------- setup


def require_library() -> None:
    try:
        from dodo_lambda import Function, lambda_tasks  # noqa: F401
    except ImportError as exc:
        sys.exit(
            f"error: dodo_lambda is not importable ({exc}).\n"
            f"Install it into this interpreter ({sys.executable}) first:\n"
            f"    pip install -e {REPO_ROOT}"
        )


def require_tools() -> None:
    missing = [tool for tool in ("zip", "npm") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"error: missing tools on PATH: {', '.join(missing)}")


@dataclass
class Bench:
    ws: lp.Workspace
    counter: int = 0
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CASES})
    rss_kib: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def dodo_dir(self) -> Path:
        return self.ws.project / ".dodo_lambda"

    @property
    def layout(self) -> Layout:
        return Layout(self.dodo_dir, "function", lp.FUNCTION_NAME)

    @property
    def dist_zip(self) -> Path:
        return self.layout.zip

    @property
    def new_zip(self) -> Path:
        return self.ws.zip_out / "out.zip"

    @property
    def fs_zip(self) -> Path:
        return self.ws.zip_out / "out_fs.zip"

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            print(f"  warning: {message}", flush=True)

    # ---- setup

    def prepare(self) -> None:
        print(f"Project in {self.ws.project}", flush=True)
        lp.ensure_project(self.ws)
        print("Warm-up `doit package` (runs npm the first time)...", flush=True)
        warm = run_timed([*DOIT, "package"], self.ws.project)
        print(f"  {warm.seconds:.2f} s, ran: {', '.join(executed_tasks(warm.output)) or '-'}")
        if not self.dist_zip.is_file():
            sys.exit(f"error: warm-up did not produce {self.dist_zip}\n{warm.output}")
        staged = self.ws.library_staging / "node_modules"
        if not staged.is_dir():
            sys.exit(f"error: the library did not stage dependencies into {staged}")
        print("Building the Info-ZIP reference tree...", flush=True)
        lp.build_ref_tree(self.ws, staged)
        self.ws.zip_out.mkdir(parents=True, exist_ok=True)
        self.fs_zip.unlink(missing_ok=True)
        lp.info_zip(self.ws.ref_tree, self.fs_zip)

    # ---- cases

    def edit(self, path: Path) -> str:
        self.counter += 1
        marker = f"// bench edit {self.counter} {time.time_ns()}\n"
        with path.open("a") as fh:
            fh.write(marker)
        return marker

    def case_a(self) -> Timed:
        for folder in (self.layout.zip.parent, self.layout.entries.parent):
            shutil.rmtree(folder, ignore_errors=True)
        timed = run_timed([*DOIT, "package"], self.ws.project)
        self.rss_kib.append(timed.maxrss_kib)
        if not self.dist_zip.is_file():
            sys.exit(f"error: cold `doit package` did not produce {self.dist_zip}")
        return timed

    def case_b(self) -> Timed:
        self.new_zip.unlink(missing_ok=True)
        return run_timed(["zip", "-qr", "-X", str(self.new_zip), "."], self.ws.ref_tree)

    def case_c(self) -> Timed:
        timed = run_timed([*DOIT, "package"], self.ws.project)
        ran = executed_tasks(timed.output)
        if ran:
            self.warn(f"no-op `doit package` executed tasks: {', '.join(ran)}")
        return timed

    def case_d(self) -> Timed:
        marker = self.edit(self.ws.fn_dir / lp.EDITED_MODULE)
        timed = run_timed([*DOIT, "package"], self.ws.project)
        if not zip_entry_endswith(self.dist_zip, lp.EDITED_MODULE, marker):
            self.warn(f"after an edit, {self.dist_zip.name} lacks the new {lp.EDITED_MODULE}")
        return timed

    def case_e(self) -> Timed:
        self.edit(self.ws.ref_tree / lp.EDITED_MODULE)
        return run_timed(["zip", "-qr", "-X", "-FS", str(self.fs_zip), "."], self.ws.ref_tree)

    def case_f(self) -> Timed:
        return run_timed([*DOIT, "list"], self.ws.project)

    def run_rounds(self, runs: int) -> None:
        cases: dict[str, Callable[[], Timed]] = {
            "a": self.case_a,
            "b": self.case_b,
            "c": self.case_c,
            "d": self.case_d,
            "e": self.case_e,
            "f": self.case_f,
        }
        for round_no in range(1, runs + 1):
            row = []
            for key, case in cases.items():
                seconds = case().seconds
                self.times[key].append(seconds)
                row.append(f"{key}={seconds:.3f}")
            print(f"  round {round_no}/{runs}: {'  '.join(row)}", flush=True)


def zip_entry_endswith(archive: Path, suffix: str, tail: str) -> bool:
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n == suffix or n.endswith("/" + suffix)]
        return any(zf.read(n).decode(errors="replace").endswith(tail) for n in names)


def zip_file_names(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as zf:
        return {i.filename for i in zf.infolist() if not i.is_dir()}


def ref_tree_names(tree: Path) -> set[str]:
    return {p.relative_to(tree).as_posix() for p in lp.iter_files(tree)}


# --------------------------------------------------------------------------- report


def verdict(target: Target, value: float) -> str:
    if value <= target.aim:
        return "met (aim met)"
    return "met" if value <= target.limit else "NOT MET"


def summarize(bench: Bench) -> dict:
    med = {k: statistics.median(v) for k, v in bench.times.items()}
    ref = med["b"]
    files, size = lp.tree_stats(bench.ws.ref_tree)
    ours, theirs = bench.dist_zip.stat().st_size, bench.new_zip.stat().st_size
    rss = [k / 1024 for k in bench.rss_kib]
    values = {
        "cold": med["a"] / ref,
        "size": ours / theirs,
        "noop": med["c"] / ref,
        "edit": med["d"] / ref,
        "rss": statistics.median(rss),
    }
    return {
        "runs": len(bench.times["a"]),
        "tree": {"files": files, "bytes": size},
        "zip_bytes": {"dodo_lambda": ours, "info_zip": theirs},
        "seconds": bench.times,
        "median_seconds": med,
        "ratio_to_b": {k: v / ref for k, v in med.items()},
        "rss_mib": {"all": rss, "median": statistics.median(rss), "max": max(rss)},
        "targets": {
            key: {**asdict(t), "value": values[key], "verdict": verdict(t, values[key])}
            for key, t in TARGETS.items()
        },
        "warnings": bench.warnings,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def print_report(summary: dict) -> None:
    med, ratio = summary["median_seconds"], summary["ratio_to_b"]
    tree, sizes, rss = summary["tree"], summary["zip_bytes"], summary["rss_mib"]
    print(f"\nMedians of {summary['runs']} interleaved rounds")
    print(f"{'case':<32}{'median s':>10}{'vs (b)':>9}")
    for key, label in CASES.items():
        print(f"{key}  {label:<29}{med[key]:>10.3f}{ratio[key]:>8.2f}x")
    print(f"\ntree: {tree['files']:,} files, {tree['bytes']:,} bytes unzipped")
    print(
        f"zip size: dodo_lambda {sizes['dodo_lambda']:,} B, Info-ZIP {sizes['info_zip']:,} B"
        f" ({sizes['dodo_lambda'] / sizes['info_zip']:.3f}x)"
    )
    print(f"peak RSS of (a): median {rss['median']:.1f} MiB, max {rss['max']:.1f} MiB")
    print(f"\n{'target':<24}{'value':>10}{'limit':>9}{'aim':>8}  verdict")
    for t in summary["targets"].values():
        value = f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.1f}{t['unit']}"
        print(f"{t['label']:<24}{value:>10}{t['limit']:>9.2f}{t['aim']:>8.2f}  {t['verdict']}")
    for message in summary["warnings"]:
        print(f"warning: {message}")


def check_contents(bench: Bench) -> None:
    """Warn when the two zips would not hold the same files (the size ratio would mislead)."""
    ours, ref = zip_file_names(bench.dist_zip), ref_tree_names(bench.ws.ref_tree)
    # the edited file is in both; only compare names
    only_ours, only_ref = sorted(ours - ref), sorted(ref - ours)
    if only_ours or only_ref:
        bench.warn(
            f"zip contents differ from the reference tree: {len(only_ours)} only in "
            f"dodo_lambda's zip (e.g. {only_ours[:3]}), {len(only_ref)} only in the "
            f"reference tree (e.g. {only_ref[:3]})"
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds (at least 5; default 7)")
    parser.add_argument("--workdir", type=Path, default=lp.DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_library()
    require_tools()
    bench = Bench(lp.Workspace(args.workdir.resolve()))
    bench.prepare()
    print(f"Timing {args.runs} interleaved rounds...", flush=True)
    bench.run_rounds(args.runs)
    check_contents(bench)
    summary = summarize(bench)
    print_report(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
