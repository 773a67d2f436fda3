"""Benchmark the local loop: `doit watch` save-to-zip latency and `doit invoke` overhead.

Run on demand (not part of the test suite):

    python benchmarks/bench_local.py [--runs N] [--workdir DIR] [--json FILE]

Cases, interleaved round by round and reported as medians:

    b  Info-ZIP `zip -qr -X out.zip .` of the benchmark function's tree, cold (the reference)
    w  `doit watch:bench --no-deploy` running: from appending a line to one source file
       (after the file is closed) to the watch's output line saying the package is rebuilt
       (zip, manifest and entry cache written); the watcher's own figure (from the file's
       mtime) is reported beside it
    i  `doit invoke:<quickstart function>`, whole process (python, doit, the package check,
       node and the handler)
    n  `node -e` requiring the same handler from the same extracted folder and printing its
       result: the floor `doit invoke` adds to

Targets: w / b <= 0.05; i - n <= 300 ms.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import lambda_project as lp
from bench_package import (
    DOIT,
    ENV,
    executed_tasks,
    require_library,
    require_tools,
    run_timed,
    timed_args,
    timed_parser,
)

from dodo_lambda.layout import BuildDir, Layout

EXAMPLE = lp.BENCH_DIR.parent / "examples" / "quickstart"
QUICK_NAME = "dodo-lambda-hello"
NODE_E = ("const h = require(process.cwd() + '/index.js').handler;"
          " Promise.resolve(h({}, {})).then((r) => console.log(JSON.stringify(r)));")


class Watch:
    """`doit watch:bench --no-deploy` in the background, its lines in a queue."""

    def __init__(self, project: Path) -> None:
        self.proc = subprocess.Popen(
            [*DOIT, "watch:bench", "--no-deploy"], cwd=project, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**ENV, "PYTHONUNBUFFERED": "1"},
            start_new_session=True)
        self.lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.time(), line.rstrip("\n")))
        self.lines.put((time.time(), None))

    def wait_for(self, pattern: str, timeout: float = 120) -> tuple[float, str]:
        while True:
            when, line = self.lines.get(timeout=timeout)
            if line is None:
                sys.exit(f"error: the watch ended before {pattern!r}")
            if re.search(pattern, line):
                return when, line

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def prepare_quickstart(workdir: Path) -> Path:
    root = workdir / "quickstart"
    # copied over on every run: an older copy may name a runtime Lambda no longer takes
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        ".dodo_lambda", ".doit.db*", "node_modules"))
    warm = run_timed([*DOIT, f"invoke:{QUICK_NAME}"], root)
    print(f"  warm-up invoke: {warm.seconds:.2f} s, ran: {', '.join(executed_tasks(warm.output))}")
    return root


def task_root(quick: Path) -> Path:
    roots = sorted(BuildDir(quick / ".dodo_lambda").invoke_task.iterdir(),
                   key=lambda p: p.stat().st_mtime)
    return roots[-1]


def main(argv: list[str] | None = None) -> None:
    args = timed_args(timed_parser(__doc__, 15, lp.DEFAULT_WORKDIR), argv)
    require_library()
    require_tools()
    ws = lp.Workspace(args.workdir.resolve())
    print(f"Project in {ws.project}", flush=True)
    lp.ensure_project(ws)
    warm = run_timed([*DOIT, "package"], ws.project)
    print(f"  warm-up package: {warm.seconds:.2f} s", flush=True)
    staged = ws.library_staging / "node_modules"
    lp.build_ref_tree(ws, staged)
    ws.zip_out.mkdir(parents=True, exist_ok=True)
    ref_zip = ws.zip_out / "out.zip"
    quick = prepare_quickstart(args.workdir.resolve())
    floor_dir = task_root(quick)

    times: dict[str, list[float]] = {"b": [], "w": [], "w_own": [], "i": [], "n": []}
    edited = ws.fn_dir / lp.EDITED_MODULE
    dist_zip = Layout(ws.project / ".dodo_lambda", "function", lp.FUNCTION_NAME).zip
    watch = Watch(ws.project)
    try:
        watch.wait_for(r"^watch: watching ")
        for round_no in range(1, args.runs + 1):
            ref_zip.unlink(missing_ok=True)
            times["b"].append(run_timed(["zip", "-qr", "-X", str(ref_zip), "."],
                                        ws.ref_tree).seconds)
            marker = f"// watch edit {round_no} {time.time_ns()}\n"
            with edited.open("a") as fh:
                fh.write(marker)
            saved = time.time()
            seen, line = watch.wait_for(r"function 'bench': .*(rebuilt in|zip unchanged)")
            own = re.search(r"rebuilt in (\d+) ms", line)
            times["w"].append(seen - saved)
            times["w_own"].append(int(own.group(1)) / 1000 if own else float("nan"))
            with zipfile.ZipFile(dist_zip) as zf:
                if not zf.read(lp.EDITED_MODULE).decode().endswith(marker):
                    print(f"  warning: round {round_no}: the zip lacks the edit")
            times["i"].append(run_timed([*DOIT, f"invoke:{QUICK_NAME}"], quick).seconds)
            times["n"].append(run_timed(["node", "-e", NODE_E], floor_dir).seconds)
            print(f"  round {round_no}/{args.runs}: " + "  ".join(
                f"{k}={v[-1] * 1000:.1f}ms" for k, v in times.items()), flush=True)
    finally:
        watch.stop()

    med = {k: statistics.median(v) for k, v in times.items()}
    summary = {
        "runs": args.runs,
        "median_seconds": med,
        "watch_ratio_to_info_zip": med["w"] / med["b"],
        "watch_own_ratio_to_info_zip": med["w_own"] / med["b"],
        "invoke_overhead_ms": (med["i"] - med["n"]) * 1000,
        "seconds": times,
        "python": sys.version.split()[0],
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    print(f"\nMedians of {args.runs} interleaved rounds")
    print(f"  b  Info-ZIP cold zip of the benchmark function   {med['b'] * 1000:8.1f} ms")
    print(f"  w  watch: save -> rebuilt line (wall)           {med['w'] * 1000:8.1f} ms"
          f"  {summary['watch_ratio_to_info_zip']:.3f}x of b  (target <= 0.05x)")
    print(f"     watch's own figure (file mtime -> package)   {med['w_own'] * 1000:8.1f} ms"
          f"  {summary['watch_own_ratio_to_info_zip']:.3f}x of b")
    print(f"  i  doit invoke:{QUICK_NAME}                  {med['i'] * 1000:8.1f} ms")
    print(f"  n  node -e of the same handler                   {med['n'] * 1000:8.1f} ms")
    print(f"     invoke overhead i - n                         {summary['invoke_overhead_ms']:8.1f}"
          " ms  (target <= 300 ms)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
