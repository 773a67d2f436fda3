"""Benchmark the bundle step's no-op: does ``bundle=True`` add anything measurable to a
no-op ``doit package``?

Run on demand (not part of the test suite), after or instead of bench_package.py:

    python benchmarks/bench_bundle.py [--runs N] [--workdir DIR] [--json FILE]

The realistic project of bench_package.py (index.js, 300 modules, the AWS SDK v3
clients, express, lodash, moment, axios, zod) is copied to ``fnb/`` and declared a
second time with ``bundle=True`` (its own dodo file and doit state), so the two never
see each other's edits. Cases, interleaved round-robin, medians:

    b  Info-ZIP `zip -qr -X` of what the bundled zip holds (the reference)
    c  no-op `doit package`, unbundled function (npm + package checks)
    g  no-op `doit package`, bundled function (npm + bundle + package checks)
    h  no-op `doit npm`, bundled function (the npm check alone: g's floor)
    i  `doit package`, bundled function, after editing one imported module (esbuild runs)
    f  (info) `doit list`: interpreter + doit + dodo.py import, no task run

and, in this process, the bundle step's own up-to-date check (bundle.is_bundled)
against the package step's (build.is_packaged) on the bundled function.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bench_package as bp
import lambda_project as lp

from dodo_lambda.layout import Layout

NAME = "bench-bundle"
DODO_BUNDLE = f"""\
from dodo_lambda import Function, lambda_tasks

DOIT_CONFIG = {{"dep_file": ".doit-bundle.db"}}  # dodo.py's backend: compare like with like
fn = Function("{NAME}", source="fnb", handler="index.handler", runtime="nodejs22.x",
              bundle=True)


def task_lambda():
    yield from lambda_tasks(fn)
"""
PLAIN = [sys.executable, "-m", "doit", "-f", "dodo.py"]
BUNDLED = [sys.executable, "-m", "doit", "-f", "dodo_bundle.py"]
CASES = {
    "b": "Info-ZIP zip -r of the bundle",
    "c": "no-op doit package (unbundled)",
    "g": "no-op doit package (bundled)",
    "h": "no-op doit npm (bundled)",
    "i": "doit package, bundled, 1 edit",
    "f": "doit list (floor, info)",
}


class Bench:
    def __init__(self, ws: lp.Workspace) -> None:
        self.ws = ws
        self.times: dict[str, list[float]] = {k: [] for k in CASES}
        self.warnings: list[str] = []
        self.counter = 0

    @property
    def fnb(self) -> Path:
        return self.ws.project / "fnb"

    @property
    def ref(self) -> Path:
        return self.ws.root / "ref_bundle"

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            print(f"  warning: {message}", flush=True)

    def prepare(self) -> None:
        lp.ensure_project(self.ws)
        if not self.fnb.is_dir():
            shutil.copytree(self.ws.fn_dir, self.fnb, ignore=shutil.ignore_patterns("node_modules"))
        lp.write_if_changed(self.ws.project / "dodo_bundle.py", DODO_BUNDLE)
        for cmd in (PLAIN, BUNDLED):
            warm = bp.run_timed([*cmd, "package"], self.ws.project)
            print(f"  warm-up {cmd[-1]}: {warm.seconds:.2f} s, ran:"
                  f" {', '.join(bp.executed_tasks(warm.output)) or '-'}", flush=True)
        layout = Layout(self.ws.project / ".dodo_lambda", "function", NAME)
        record = json.loads(layout.bundle_record.read_text())
        # the reference tree: what the bundled zip holds, as plain files
        shutil.rmtree(self.ref, ignore_errors=True)
        shutil.copytree(layout.bundle_out, self.ref)
        staged = layout.staging
        for folder in record["externals"]:
            shutil.copytree(staged / folder, self.ref / folder)
        self.ws.zip_out.mkdir(parents=True, exist_ok=True)

    def noop(self, cmd: list[str], step: str) -> bp.Timed:
        timed = bp.run_timed([*cmd, step], self.ws.project)
        ran = bp.executed_tasks(timed.output)
        if ran:
            self.warn(f"no-op `doit {step}` ({cmd[-1]}) executed {', '.join(ran)}")
        return timed

    def case_b(self) -> bp.Timed:
        out = self.ws.zip_out / "bundle.zip"
        out.unlink(missing_ok=True)
        return bp.run_timed(["zip", "-qr", "-X", str(out), "."], self.ref)

    def case_i(self) -> bp.Timed:
        self.counter += 1
        with (self.fnb / lp.EDITED_MODULE).open("a") as fh:
            fh.write(f"module.exports.benchEdit{self.counter} = {time.time_ns()};\n")
        timed = bp.run_timed([*BUNDLED, "package"], self.ws.project)
        ran = set(bp.executed_tasks(timed.output))
        if not {f"bundle:{NAME}", f"package:{NAME}"} <= ran:
            self.warn(f"after an edit, bundled `doit package` ran only {sorted(ran)}")
        return timed

    def run_rounds(self, runs: int) -> None:
        cases: dict[str, Callable[[], bp.Timed]] = {
            "b": self.case_b,
            "c": lambda: self.noop(PLAIN, "package"),
            "i": self.case_i,
            "g": lambda: self.noop(BUNDLED, "package"),
            "h": lambda: self.noop(BUNDLED, "npm"),
            "f": lambda: bp.run_timed([*BUNDLED, "list"], self.ws.project),
        }
        for round_no in range(1, runs + 1):
            row = []
            for key, case in cases.items():
                seconds = case().seconds
                self.times[key].append(seconds)
                row.append(f"{key}={seconds:.3f}")
            print(f"  round {round_no}/{runs}: {'  '.join(row)}", flush=True)


def in_process_checks(project: Path, repeat: int) -> dict[str, float]:
    """Median milliseconds of one up-to-date check each, in a warm process."""
    from dodo_lambda import Function, build, bundle, npm
    from dodo_lambda.context import RunContext

    here = os.getcwd()
    os.chdir(project)
    try:
        fn = Function(NAME, source="fnb", handler="index.handler", runtime="nodejs22.x",
                      bundle=True)
        out = {}
        ctx = RunContext(Path(".dodo_lambda"))
        for label, check in (("is_installed", npm.is_installed), ("is_bundled", bundle.is_bundled),
                             ("is_packaged", build.is_packaged)):
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                ctx.reset()  # each check from scratch, as a new doit run would
                if not check(fn, ctx):
                    sys.exit(f"error: {label} said the bundled function is not up to date")
                times.append((time.perf_counter() - start) * 1000)
            out[label] = statistics.median(times)
        return out
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> None:
    args = bp.timed_args(bp.timed_parser(__doc__, 7, lp.DEFAULT_WORKDIR), argv)
    bp.require_library()
    bp.require_tools()
    bench = Bench(lp.Workspace(args.workdir.resolve()))
    print(f"Project in {bench.ws.project}", flush=True)
    bench.prepare()
    print(f"Timing {args.runs} interleaved rounds...", flush=True)
    bench.run_rounds(args.runs)
    checks = in_process_checks(bench.ws.project, 30)
    med = {k: statistics.median(v) for k, v in bench.times.items()}
    ref = med["b"]
    files, size = lp.tree_stats(bench.ref)
    print(f"\nMedians of {args.runs} interleaved rounds (bundle: {files} files, {size:,} bytes)")
    print(f"{'case':<36}{'median s':>10}{'vs (b)':>9}")
    for key, label in CASES.items():
        print(f"{key}  {label:<33}{med[key]:>10.3f}{med[key] / ref:>8.2f}x")
    print(f"\nno-op doit package, bundled / unbundled (g / c): {med['g'] / med['c']:.2f}x")
    print(f"no-op bundled package over its npm check (g - h): {1000 * (med['g'] - med['h']):.0f} ms")
    print("up-to-date checks in a warm process (median of 30, bundled function):")
    for label, ms in checks.items():
        print(f"  {label:<13}{ms:>8.2f} ms")
    print(f"is_bundled / no-op doit package (g): {checks['is_bundled'] / (1000 * med['g']):.3f}x")
    for message in bench.warnings:
        print(f"warning: {message}")
    if args.json:
        args.json.write_text(json.dumps({"seconds": bench.times, "median_seconds": med,
                                         "checks_ms": checks, "warnings": bench.warnings},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
