"""Benchmark the shared build cache: `doit deploy` of N functions of the benchmark's
shape from a fresh checkout, with a warm cache against a cold build (time and requests).

Run on demand (not part of the test suite); needs the test extra (``moto_server``
plays S3 and Lambda on 127.0.0.1), Node/npm with the benchmark's packages in npm's
cache (bench_package.py's first run puts them there) and Info-ZIP:

    python benchmarks/bench_cache.py [--functions N] [--runs N] [--cold-runs N]
                                     [--workdir DIR] [--json FILE]

The project (``benchmarks/.work/cache/template/``): N copies of bench_package.py's
function (index.js, 300 modules, the AWS SDK clients, express, lodash, moment, axios
and zod: about 7,300 files and 28 MB in production each), each with a line of its own
so that no two zips are alike, all deployed once before the rounds (so every case's
deploy finds its code in place and changes nothing). Each case is one whole `doit
deploy` process in a new copy of the template (no build dir, no doit state):

    cold   the cache bucket emptied first: npm ci and the zip writer for every
           function, each package put in the cache
    warm   the cache as the cold case left it, npm not on PATH: every package fetched
    b      (reference) Info-ZIP `zip -qr -X` of one function's files, times N

Requests are counted in moto's log, per case, by service and method.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import lambda_project as lp

BENCH_DIR = Path(__file__).resolve().parent
CACHE_BUCKET = "bench-build-cache"
ROLE = "bench-lambda"
LOG_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S*) HTTP/[0-9.]+" (?P<status>\d{3})')
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")

DODO = """\
from dodo_lambda import Function, lambda_tasks

DOIT_CONFIG = {{"backend": "sqlite3"}}
ROLE = "arn:aws:iam::123456789012:role/{role}"
FUNCTIONS = [Function(f"bench-{{i:02d}}", source=f"functions/fn{{i:02d}}", handler="index.handler",
                      role=ROLE) for i in range({n})]


def task_lambda():
    yield from lambda_tasks(*FUNCTIONS, cache_bucket="{bucket}")
"""


class Moto:
    """moto_server on a free port, its request log collected by a thread."""

    def __init__(self) -> None:
        exe = Path(sys.executable).with_name("moto_server")
        command = str(exe) if exe.exists() else shutil.which("moto_server")
        if command is None:
            sys.exit("error: moto_server not found; pip install -e '.[test]'")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([command, "-H", "127.0.0.1", "-p", "0"], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**env, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()
        line = self._wait(lambda s: "Running on http://" in s)
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        self.url = match.group(1)
        self.marks = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(ANSI_RE.sub("", line.rstrip("\n")))
                self.cond.notify_all()

    def _wait(self, pred, start: int = 0) -> str:  # type: ignore[no-untyped-def]
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pred(s) for s in self.lines[start:]), timeout=60)
            if not ok:
                sys.exit("error: moto_server did not answer:\n" + "\n".join(self.lines[-20:]))
            return next(s for s in self.lines[start:] if pred(s))

    def mark(self) -> int:
        """A position in the log after every request answered so far."""
        self.marks += 1
        tag = f"bench-mark={self.marks}"
        with urllib.request.urlopen(f"{self.url}/moto-api/config?{tag}", timeout=30) as r:
            r.read()
        self._wait(lambda s: tag in s)
        with self.cond:
            return len(self.lines)

    def requests(self, since: int) -> Counter[str]:
        """What was asked after ``since``, as "service METHOD" counts."""
        end = self.mark()
        counts: Counter[str] = Counter()
        for line in self.lines[since:end]:
            m = LOG_RE.search(line)
            if not m or "bench-mark=" in m["path"]:
                continue
            path, method = m["path"], m["method"]
            if path.startswith(f"/{CACHE_BUCKET}"):
                service = "S3 (cache)"
            elif path.startswith(("/2015-03-31/", "/2016-08-19/", "/2018-10-31/")):
                service = "Lambda"
            elif (method, path) == ("POST", "/"):
                service = "STS/IAM"
            else:
                service = "other"
            counts[f"{service} {method}"] += 1
        return counts

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def make_template(ws: lp.Workspace, template: Path, n: int) -> None:
    """N copies of the benchmark function, each with a line of its own."""
    lp.ensure_project(ws)
    shutil.rmtree(template, ignore_errors=True)
    for i in range(n):
        dest = template / "functions" / f"fn{i:02d}"
        shutil.copytree(ws.fn_dir, dest, ignore=shutil.ignore_patterns("node_modules"))
        with open(dest / "index.js", "a") as f:
            f.write(f"exports.copy = {i};\n")
    (template / "dodo.py").write_text(DODO.format(role=ROLE, n=n, bucket=CACHE_BUCKET))


def checkout(template: Path, where: Path) -> Path:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(template, where)
    return where


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3, help="warm rounds (default 3)")
    parser.add_argument("--cold-runs", type=int, default=1,
                        help="cold rounds (default 1: each takes minutes)")
    parser.add_argument("--workdir", type=Path, default=lp.DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    import boto3

    ws = lp.Workspace(args.workdir)
    base = args.workdir / "cache"
    template = base / "template"
    print(f"generating {args.functions} functions in {template} ...", flush=True)
    make_template(ws, template, args.functions)
    ref = lp.ensure_ref_tree(ws)  # one function's files, for Info-ZIP
    moto = Moto()
    node = shutil.which("node")
    assert node is not None
    no_npm = base / "bin-without-npm"
    shutil.rmtree(no_npm, ignore_errors=True)
    no_npm.mkdir(parents=True)
    os.symlink(node, no_npm / "node")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", DODO_LAMBDA_WAIT_SCALE="0",
               npm_config_prefer_offline="true")  # npm's cache holds the packages
    warm_env = {**env, "PATH": str(no_npm)}
    session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                            region_name="us-east-1")
    iam, s3 = (session.client(s, endpoint_url=moto.url) for s in ("iam", "s3"))
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))
    s3.create_bucket(Bucket=CACHE_BUCKET)
    doit = [sys.executable, "-m", "doit", "deploy"]
    try:
        print("first deploy (creates the functions, fills the cache) ...", flush=True)
        setup = lp.timed(doit, checkout(template, base / "setup"), env)
        shutil.rmtree(base / "setup")
        print(f"  {setup.wall:.1f} s", flush=True)
        times: dict[str, list[float]] = {"cold": [], "warm": [], "b": []}
        cpu: dict[str, list[float]] = {"cold": [], "warm": []}
        requests: dict[str, Counter[str]] = {}
        warnings: list[str] = []
        out = base / "ref.zip"
        for r in range(max(args.runs, args.cold_runs)):
            out.unlink(missing_ok=True)
            start = time.perf_counter()
            subprocess.run(["zip", "-qr", "-X", str(out), "."], cwd=ref, check=True)
            times["b"].append((time.perf_counter() - start) * args.functions)
            cases = (["cold"] if r < args.cold_runs else []) + ["warm"]
            for case in cases:
                if case == "cold":
                    for o in s3.list_objects_v2(Bucket=CACHE_BUCKET).get("Contents", []):
                        s3.delete_object(Bucket=CACHE_BUCKET, Key=o["Key"])
                root = checkout(template, base / case)
                mark = moto.mark()
                timed = lp.timed(doit, root, env if case == "cold" else warm_env)
                requests[case] = moto.requests(mark)
                times[case].append(timed.wall)
                cpu[case].append(timed.cpu)
                fetched = timed.output.count("fetched from the build cache")
                ran = [t for t in re.findall(r"^\.  (\S+)", timed.output, re.M)
                       if t.startswith("npm:")]
                expect = (0, args.functions) if case == "cold" else (args.functions, 0)
                if (fetched, len(ran)) != expect:
                    warnings.append(f"{case}: {fetched} fetched, {len(ran)} npm steps ran")
                if "nothing changed" not in timed.output:
                    warnings.append(f"{case}: the deploy changed something")
                print(f"  round {r + 1} {case}: {timed.wall:.1f} s", flush=True)
                shutil.rmtree(root)
    finally:
        moto.stop()
    med = {k: statistics.median(v) for k, v in times.items() if v}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    print(f"\n{args.functions} functions; medians ({args.cold_runs} cold, {args.runs} warm rounds)")
    print(f"{'case':<46}{'wall s':>9}{'vs b':>8}{'cpu s':>9}")
    for key, label in (("cold", "cold: npm ci + zip + put in the cache"),
                       ("warm", "warm: fetched from the cache, no npm"),
                       ("b", "Info-ZIP zip -qr -X of one tree, times N")):
        line = f"{key:<6}{label:<40}{med[key]:>9.2f}{med[key] / med['b']:>7.2f}x"
        print(line + (f"{med_cpu[key]:>9.2f}" if key in med_cpu else ""))
    print(f"\nwarm / cold: {med['warm'] / med['cold']:.3f} (wall),"
          f" {med_cpu['warm'] / med_cpu['cold']:.3f} (cpu)")
    for case in ("cold", "warm"):
        print(f"requests, {case}: " + ", ".join(f"{k} {v}" for k, v in sorted(requests[case].items())))
    for message in warnings:
        print(f"warning: {message}")
    if args.json:
        args.json.write_text(json.dumps({
            "functions": args.functions, "seconds": times, "median_seconds": med,
            "cpu_seconds": cpu, "median_cpu_seconds": med_cpu,
            "requests": {k: dict(v) for k, v in requests.items()}, "warnings": warnings,
            "python": sys.version.split()[0], "cpus": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
