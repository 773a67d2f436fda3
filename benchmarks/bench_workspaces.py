"""Benchmark npm workspaces: does a no-op ``doit package`` of a 10-function monorepo
cost more than a no-op of one of its functions? Target: ≤ 1.2×.

Run on demand (not part of the test suite); offline, needs Node/npm and Info-ZIP:

    python benchmarks/bench_workspaces.py [--runs N] [--workdir DIR] [--json FILE]

The first run generates a monorepo in ``benchmarks/.work/workspaces/`` (delete it
to start again): 40 external packages (packed as local tarballs, 25 files each,
some depending on others), 3 workspace packages (30 files each) and 10 functions
(60 source files each), each function using 2 workspace packages and 6 external
ones: about 400 files and 1 MB per zip. One root package-lock.json; a dev
dependency at the root and in each function. ``dodo_one.py`` declares fn-01 alone,
``dodo_all.py`` all ten (separate doit state, same build dir). Cases, interleaved
round-robin, medians:

    b    Info-ZIP `zip -qr -X` of fn-01's files (the team's reference)
    one  no-op `doit package`, fn-01 declared alone
    all  no-op `doit package`, ten functions declared
    f    (info) `doit list` of dodo_all.py: interpreter + doit + dodo_lambda + loading

and, in this process, the cost per function of the two up-to-date checks
(npm.is_installed, build.is_packaged) and of the workspace-specific parts of the
first: the closure's install key and the check of the workspace packages' sources.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_package as bp
import lambda_project as lp

BENCH_DIR = Path(__file__).resolve().parent
FUNCTIONS = [f"fn-{i:02d}" for i in range(1, 11)]
EXTERNALS = 40
WS_PACKAGES = ("core", "db", "http")
TARGET = 1.2
CASES = {
    "b": "Info-ZIP zip -r of fn-01",
    "one": "no-op doit package (1 fn)",
    "all": "no-op doit package (10 fn)",
    "f": "doit list (floor, info)",
}
DODO = """\
from dodo_lambda import Function, lambda_tasks

DOIT_CONFIG = {{"backend": "sqlite3", "dep_file": "{db}"}}
NAMES = {names!r}


def task_lambda():
    yield from lambda_tasks(*[Function(n, source=f"functions/{{n}}", handler="index.handler")
                              for n in NAMES])
"""
NO_REGISTRY = {"npm_config_registry": "http://127.0.0.1:9/", "npm_config_fetch_retries": "0",
               "npm_config_audit": "false", "npm_config_fund": "false",
               "npm_config_update_notifier": "false"}


def _module(i: int, words: int = 60) -> str:
    body = "\n".join(f"  v{j}: '{'x' * (j % 40)}'," for j in range(words))
    return f"'use strict';\nmodule.exports = {{\n  id: {i},\n{body}\n}};\n"


def _write_package(folder: Path, manifest: dict, files: int) -> None:
    (folder / "lib").mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    (folder / "index.js").write_text(
        "module.exports = [" + ", ".join(f"require('./lib/m{i}')" for i in range(files)) + "];\n")
    for i in range(files):
        (folder / "lib" / f"m{i}.js").write_text(_module(i))


def _npm(args: list[str], cwd: Path) -> None:
    subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, **NO_REGISTRY})


def generate(root: Path) -> None:
    """The monorepo, written once (see the module's doc)."""
    src, vendor = root.parent / "pkgsrc", root / "vendor"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    vendor.mkdir(parents=True)
    tarballs = {}
    for i in range(EXTERNALS + 1):  # the last one is the dev dependency
        name = f"ext-{i:02d}" if i < EXTERNALS else "devtool"
        deps = {f"ext-{i + 1:02d}": "1.0.0"} if i % 4 == 0 and i + 1 < EXTERNALS else {}
        manifest = {"name": name, "version": "1.0.0", "main": "index.js", "license": "MIT",
                    "dependencies": deps}
        _write_package(src / name, manifest, 24)
        _npm(["pack", "--pack-destination", str(vendor)], src / name)
        tarballs[name] = f"{name}-1.0.0.tgz"

    def dep(name: str) -> str:
        return f"file:../../vendor/{tarballs[name]}"

    def with_deps(names: list[str]) -> list[str]:
        """The packages and those they need (offline, a package's dependency on a
        version resolves only when a tarball of it is declared as well)."""
        out = list(names)
        for n in names:
            i = int(n.split("-")[1])
            if i % 4 == 0 and i + 1 < EXTERNALS and f"ext-{i + 1:02d}" not in out:
                out.append(f"ext-{i + 1:02d}")
        return out

    (root / "package.json").write_text(json.dumps({
        "name": "bench-monorepo", "private": True, "workspaces": ["functions/*", "packages/*"],
        "devDependencies": {"devtool": f"file:vendor/{tarballs['devtool']}"}}, indent=2))
    for k, name in enumerate(WS_PACKAGES):
        deps = with_deps([f"ext-{(k * 5 + j) % EXTERNALS:02d}" for j in range(3)])
        _write_package(root / "packages" / name, {
            "name": f"@bench/{name}", "version": "1.0.0", "main": "index.js", "private": True,
            "dependencies": {n: dep(n) for n in deps}}, 29)
    for i, fn in enumerate(FUNCTIONS):
        uses = [WS_PACKAGES[i % 3], WS_PACKAGES[(i + 1) % 3]]
        externals = with_deps([f"ext-{(15 + i * 2 + j) % EXTERNALS:02d}" for j in range(6)])
        deps = {f"@bench/{u}": "*" for u in uses} | {n: dep(n) for n in externals}
        folder = root / "functions" / fn
        _write_package(folder, {"name": fn, "version": "1.0.0", "private": True,
                                "dependencies": deps,
                                "devDependencies": {"devtool": dep("devtool")}}, 59)
        (folder / "index.js").write_text(
            "".join(f"require('{d}');\n" for d in deps)
            + "exports.handler = async () => ({ ok: true });\n")
    _npm(["install", "--package-lock-only", "--offline", "--ignore-scripts"], root)
    (root / "dodo_one.py").write_text(DODO.format(db=".doit-one.db", names=FUNCTIONS[:1]))
    (root / "dodo_all.py").write_text(DODO.format(db=".doit-all.db", names=FUNCTIONS))


def doit(root: Path, dodo: str, *args: str) -> lp.Timed:
    return lp.timed([sys.executable, "-m", "doit", "-f", dodo, *args], root, bp.ENV)


def reference_tree(root: Path, ref: Path) -> None:
    """fn-01's zip, unpacked as plain files, for Info-ZIP."""
    import zipfile

    shutil.rmtree(ref, ignore_errors=True)
    with zipfile.ZipFile(root / ".dodo_lambda" / "dist" / f"{FUNCTIONS[0]}.zip") as z:
        z.extractall(ref)


def in_process_checks(root: Path, rounds: int = 30) -> dict[str, float]:
    """Median seconds per function of each up-to-date check, in a warm process."""
    from dodo_lambda import Function, build, npm, workspaces, wslock
    from dodo_lambda.context import RunContext

    here = os.getcwd()
    os.chdir(root)
    try:
        fns = [Function(n, source=f"functions/{n}", handler="index.handler") for n in FUNCTIONS]
        checks = {
            "npm.is_installed": npm.is_installed,
            "build.is_packaged": build.is_packaged,
            # the workspace-specific parts of the first: the closure, computed when the
            # files it reads changed (else kept beside the install state), and the sources
            "closure key, when recomputed":
                lambda fn, ctx: wslock.install_key(workspaces.of(fn, ctx), fn, ctx),
            "workspace sources": npm._local_unchanged,
        }
        times: dict[str, list[float]] = {k: [] for k in checks}
        for _ in range(rounds):
            ctx = RunContext(Path(".dodo_lambda"))  # a new run, as doit's: the root lock
            wslock.read_lock(workspaces.of(fns[0], ctx), "", ctx)  # is parsed once per run
            for label, check in checks.items():
                start = time.perf_counter()
                for fn in fns:
                    assert check(fn, ctx), f"{label} says {fn.name} is not up to date"
                times[label].append((time.perf_counter() - start) / len(fns))
        return {k: statistics.median(v) for k, v in times.items()}
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> None:
    args = bp.timed_args(bp.timed_parser(__doc__, 7, BENCH_DIR / ".work" / "workspaces"), argv)
    bp.require_library()
    bp.require_tools()
    root, ref = args.workdir / "repo", args.workdir / "ref_tree"
    if not (root / "dodo_all.py").is_file():
        print(f"generating the monorepo in {root} ...", flush=True)
        generate(root)
    for dodo in ("dodo_all.py", "dodo_one.py"):  # warm-up: installs and zips, then state
        doit(root, dodo, "package")
    reference_tree(root, ref)
    times: dict[str, list[float]] = {k: [] for k in CASES}
    cpu: dict[str, list[float]] = {k: [] for k in CASES}
    warnings = []
    out = root.parent / "ref.zip"
    for _ in range(args.runs):
        out.unlink(missing_ok=True)
        timed = {"b": lp.timed(["zip", "-qr", "-X", str(out), "."], ref, bp.ENV)}
        for case, dodo in (("one", "dodo_one.py"), ("all", "dodo_all.py")):
            timed[case] = doit(root, dodo, "package")
            ran = bp.executed_tasks(timed[case].output)
            if ran:
                warnings.append(f"the no-op of {dodo} ran {ran}")
        timed["f"] = doit(root, "dodo_all.py", "list")
        for key, t in timed.items():
            times[key].append(t.wall)
            cpu[key].append(t.cpu)
    checks = in_process_checks(root)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratio, ratio_cpu = med["all"] / med["one"], med_cpu["all"] / med_cpu["one"]
    files = sum(1 for p in ref.rglob("*") if p.is_file())
    print(f"\nMedians of {args.runs} interleaved rounds (fn-01's zip: {files} files)")
    print(f"{'case':<34}{'wall s':>8}{'vs (b)':>9}{'cpu s':>8}{'vs (b)':>9}")
    for key, label in CASES.items():
        print(f"{key:<5}{label:<29}{med[key]:>8.3f}{med[key] / med['b']:>8.2f}x"
              f"{med_cpu[key]:>8.3f}{med_cpu[key] / med_cpu['b']:>8.2f}x")
    print(f"\nno-op, 10 functions / 1 function: {ratio:.2f}x wall, {ratio_cpu:.2f}x cpu"
          f" (target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT MET'}")
    print("per function, in a warm process (median of 30): " + ", ".join(
        f"{k} {v * 1000:.1f} ms" for k, v in checks.items()))
    for message in warnings:
        print(f"warning: {message}")
    if args.json:
        args.json.write_text(json.dumps({
            "runs": args.runs, "seconds": times, "median_seconds": med, "ratio_all_to_one": ratio,
            "cpu_seconds": cpu, "median_cpu_seconds": med_cpu, "ratio_all_to_one_cpu": ratio_cpu,
            "target": TARGET, "checks_seconds": checks, "warnings": warnings,
            "python": sys.version.split()[0], "cpus": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
