"""Thirty functions (moto server): parallel deploys under -P process and -P thread send
each upload once; a fresh checkout with a warm build cache runs no npm and no zip
writer, sends no write request and reads Lambda through one listing."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

from helpers import CACHE, fresh_copy, without_npm, writes
from projects import LAYER, Project

N = 30
STAGES = [{"name": "p", "suffix": "-p", "bucket": "p-artifacts"},
          {"name": "t", "suffix": "-t", "bucket": "t-artifacts"}]
LISTING = r"^/2015-03-31/functions/?(\?|$)"


def _thirty(project: Project, role: str) -> list[str]:
    """Thirty small functions sharing one layer (one npm install between them)."""
    names = [f"f{i:02}" for i in range(N)]
    for name in names:
        folder = project.root / "functions" / name
        folder.mkdir(parents=True)
        (folder / "index.js").write_text(f"exports.handler = async () => '{name}';\n")
    shutil.rmtree(project.fn)
    project.configure([{"name": name, "source": f"functions/{name}", "handler": "index.handler",
                        "role": role, "layers": ["shared"], "bucket": "artifacts"}
                       for name in names], [LAYER],
                      {"stages": STAGES, "cache_bucket": CACHE})
    return names


def _no_duplicate_puts(aws_env, mark: int) -> list[str]:
    puts = [r.path for r in aws_env.requests(mark) if r.method == "PUT"]
    twice = [p for p, n in Counter(puts).items() if n > 1]
    assert twice == [], twice
    return puts


def test_thirty_functions_parallel_and_fresh_checkout_with_a_warm_cache(
        project: Project, aws_env, fault_proxy, tmp_path: Path) -> None:
    for bucket in (CACHE, "p-artifacts", "t-artifacts"):
        aws_env.bucket(bucket)
    names = _thirty(project, aws_env.role_arn())
    lam = aws_env.boto("lambda")

    # -P process, from nothing: every package built and stored, every zip uploaded once
    mark = aws_env.mark()
    run = project.doit("-n", "4", "-P", "process", "deploy", "stage=p")
    assert run.rc == 0, run.text
    puts = _no_duplicate_puts(aws_env, mark)
    assert sum(p.startswith("/p-artifacts/") for p in puts) == N
    assert sum(p.startswith(f"/{CACHE}/dodo-lambda-cache/zips/") for p in puts) == N + 1
    for name in names:
        code = project.manifest(name)["code_sha256"]
        assert lam.get_function_configuration(FunctionName=f"{name}-p")["CodeSha256"] == code

    # -P thread, the other stage: nothing built again, every zip uploaded once
    mark = aws_env.mark()
    run = project.doit("-n", "4", "-P", "thread", "deploy", "stage=t")
    assert run.rc == 0, run.text
    assert not [t for t in run.executed if t.startswith(("npm:", "package:"))], run.text
    puts = _no_duplicate_puts(aws_env, mark)
    assert sum(p.startswith("/t-artifacts/") for p in puts) == N
    assert not [p for p in puts if p.startswith(f"/{CACHE}/")]
    assert len([n for n in lam.list_functions(MaxItems=100)["Functions"]]) == 2 * N

    # a fresh checkout without npm: everything fetched, nothing written, one listing
    b = fresh_copy(project, tmp_path / "runner-b")
    body = json.dumps({"AccountUsage": {"FunctionCount": 2 * N}}).encode()
    fault_proxy.clear()
    fault_proxy.add("GET", r"^/2016-08-19/account-settings/?$", status=200, body=body,
                    headers={"Content-Type": "application/json"}, times=100)
    mark = aws_env.mark()
    run = b.doit("deploy", "stage=p", env=without_npm(tmp_path))
    assert run.rc == 0, run.text
    assert not [t for t in run.executed if t.startswith(("npm:", "bundle:"))], run.text
    assert run.err.count("fetched from the build cache") == N + 1, run.err
    assert "put in the build cache" not in run.err
    assert writes(aws_env, mark) == []
    listings = fault_proxy.count("GET", LISTING)
    assert 1 <= listings <= math.ceil(2 * N / 50), listings
    reads = [r for r in aws_env.requests(mark) if r.method == "GET"
             and re.search(r"^/2015-03-31/functions/f\d\d-p(/configuration)?$", r.path)]
    assert reads == []
    for name in names:
        assert b.layout(name).zip.read_bytes() == project.layout(name).zip.read_bytes()
