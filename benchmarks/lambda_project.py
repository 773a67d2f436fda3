"""Builds (once, then reuses) the realistic Node.js Lambda project the benchmarks run on.

Layout of the work folder (default ``benchmarks/.work/``)::

    lock/package.json, lock/package-lock.json  pinned after the first npm resolution
    project/dodo.py                            uses dodo_lambda
    project/fn/                                the function's source (index.js, src/, package.json)
    staged/node_modules/                       own `npm ci` staging, used only when the
                                               library's staging does not exist yet
    ref_tree/                                  the zip's layout as plain files, for Info-ZIP
    zip_out/                                   Info-ZIP outputs
    triple/...                                 the same for the three-times tree (``TRIPLE``)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dodo_lambda.layout import Layout

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORKDIR = BENCH_DIR / ".work"

FUNCTION_NAME = "bench"
MODULE_COUNT = 300
EDITED_MODULE = "src/lib/mod_007.js"
# npm's own files at the top of node_modules: not part of a deployable tree
NPM_BOOKKEEPING = [".bin", ".package-lock.json", ".cache"]
NPM_CI_ARGS = ["ci", "--omit=dev", "--os=linux", "--cpu=x64", "--no-audit", "--no-fund"]

DEPENDENCIES = {
    "@aws-sdk/client-s3": "^3.600.0",
    "@aws-sdk/client-dynamodb": "^3.600.0",
    "@aws-sdk/lib-dynamodb": "^3.600.0",
    "express": "^4.19.2",
    "lodash": "^4.17.21",
    "moment": "^2.30.1",
    "axios": "^1.7.2",
    "zod": "^3.23.8",
}
DEV_DEPENDENCIES = {"jest": "^29.7.0", "typescript": "^5.4.5"}
# The three-times tree: three times the source modules and a backend's worth more of
# dependencies: about 24,000 files and 120 MB in production.
TRIPLE_DEPENDENCIES = {
    **DEPENDENCIES,
    **{f"@aws-sdk/client-{name}": "^3.600.0" for name in (
        "sqs", "sns", "lambda", "secrets-manager", "ssm", "eventbridge", "cloudwatch-logs",
        "sfn", "ec2", "kinesis")},
    "date-fns": "^3.6.0", "rxjs": "^7.8.1", "uuid": "^9.0.1", "pg": "^8.12.0",
    "ioredis": "^5.4.1", "jsonwebtoken": "^9.0.2", "ajv": "^8.16.0", "pino": "^9.2.0",
    "luxon": "^3.4.4", "graphql": "^16.9.0", "knex": "^3.1.0", "winston": "^3.13.0",
    "joi": "^17.13.3", "mongodb": "^6.8.0",
}


@dataclass(frozen=True)
class Spec:
    """What a benchmark tree holds: its generated modules and its dependencies."""

    name: str
    modules: int
    dependencies: dict[str, str]
    subdir: str  # under the work folder ("" for the base tree)


BASE = Spec("base", MODULE_COUNT, DEPENDENCIES, "")
TRIPLE = Spec("three-times", 3 * MODULE_COUNT, TRIPLE_DEPENDENCIES, "triple")

DODO_PY = """\
from dodo_lambda import Function, lambda_tasks

fn = Function("bench", source="fn", handler="index.handler")


def task_lambda():
    yield from lambda_tasks(fn)
"""

INDEX_JS = """\
'use strict';

const { S3Client } = require('@aws-sdk/client-s3');
const { DynamoDBClient } = require('@aws-sdk/client-dynamodb');
const { DynamoDBDocumentClient } = require('@aws-sdk/lib-dynamodb');
const _ = require('lodash');
const { z } = require('zod');
const registry = require('./src/registry');

const s3 = new S3Client({});
const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));
const Event = z.object({}).passthrough();

exports.handler = async (e) => {
  Event.parse(e || {});
  void s3;
  void ddb;
  void _.size(registry);
  return { ok: true };
};
"""


@dataclass(frozen=True)
class Workspace:
    """Paths of the benchmark work folder."""

    root: Path
    spec: Spec = BASE

    @classmethod
    def of(cls, workdir: Path, spec: Spec) -> Workspace:
        return cls(workdir / spec.subdir if spec.subdir else workdir, spec)

    @property
    def lock_dir(self) -> Path:
        return self.root / "lock"

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def fn_dir(self) -> Path:
        return self.project / "fn"

    @property
    def own_staging(self) -> Path:
        return self.root / "staged"

    @property
    def library_staging(self) -> Path:
        return Layout(self.project / ".dodo_lambda", "function", FUNCTION_NAME).staging

    @property
    def ref_tree(self) -> Path:
        return self.root / "ref_tree"

    @property
    def zip_out(self) -> Path:
        return self.root / "zip_out"


# --------------------------------------------------------------------------- generated JS


def _split_words(text: str) -> list[str]:
    return text.split()


_WORDS = _split_words(
    "order item customer invoice payment account session token cache record batch queue "
    "event stream bucket object table index query filter result error retry policy limit "
    "window metric label region tenant profile address shipment price discount tax report "
    "schedule job worker handler route request response header payload schema field value"
)
_VERBS = _split_words(
    "get set load save build parse format validate normalize merge split resolve compute "
    "apply update remove create find list count sort group map reduce encode decode"
)


def _camel(rng: random.Random, parts: int) -> str:
    words = [rng.choice(_VERBS)] + [rng.choice(_WORDS) for _ in range(parts)]
    return words[0] + "".join(w.capitalize() for w in words[1:])


def _function_js(rng: random.Random, name: str) -> str:
    args = [rng.choice(_WORDS) for _ in range(rng.randint(1, 3))]
    args = list(dict.fromkeys(args))
    first = args[0]
    field = rng.choice(_WORDS)
    limit = rng.randint(2, 500)
    doc = "\n".join(f" * @param {{object}} {a} - the {a} to process" for a in args)
    return f"""
/**
 * {name.capitalize()}: {" ".join(rng.choice(_WORDS) for _ in range(8))}.
{doc}
 * @returns {{Promise<object>}} the resulting {rng.choice(_WORDS)}
 */
async function {name}({", ".join(args)}) {{
  if (!{first} || typeof {first} !== 'object') {{
    throw new TypeError('{name}: expected {first} to be an object, got ' + typeof {first});
  }}
  const out = {{ ...DEFAULTS, id: {first}.id || null, createdAt: new Date().toISOString() }};
  const entries = Object.entries({first}.{field} || {{}}).slice(0, {limit});
  for (const [key, value] of entries) {{
    if (value === undefined || value === null) continue;
    out[key] = typeof value === 'string' ? value.trim().toLowerCase() : value;
  }}
  if (entries.length > {limit // 2 + 1}) {{
    out.truncated = true;
    out.{rng.choice(_WORDS)}Count = entries.length;
  }}
  return out;
}}
"""


def _class_js(rng: random.Random, name: str) -> str:
    methods = "".join(
        f"""
  {_camel(rng, 1)}(input) {{
    const key = keyOf('{rng.choice(_WORDS)}', input);
    if (this.#store.has(key)) return this.#store.get(key);
    const value = {{ key, at: Date.now(), ttl: {rng.randint(10, 3600)} }};
    this.#store.set(key, value);
    return value;
  }}
"""
        for _ in range(rng.randint(2, 4))
    )
    return f"""
class {name} {{
  #store = new Map();

  constructor(options = {{}}) {{
    this.options = {{ ...DEFAULTS, ...options }};
    this.name = '{name}';
  }}
{methods}
  get size() {{
    return this.#store.size;
  }}
}}
"""


KEY_OF_JS = """
function keyOf(kind, x) {
  return x && x.id !== undefined ? `${kind}:${x.id}` : `${kind}:none`;
}"""


def module_js(index: int) -> str:
    """Plausible CommonJS module number ``index`` (a few KB, deterministic)."""
    rng = random.Random(index)
    requires = sorted({rng.randrange(index) for _ in range(min(index, 2))})
    lines = ["'use strict';", ""]
    lines += [f"const mod{r:03d} = require('./mod_{r:03d}');" for r in requires]
    lines.append("")
    defaults = {rng.choice(_WORDS): rng.randint(1, 9999) for _ in range(rng.randint(3, 8))}
    lines.append(f"const DEFAULTS = Object.freeze({json.dumps(defaults, indent=2)});")
    functions = list(dict.fromkeys(_camel(rng, 2) for _ in range(rng.randint(3, 7))))
    cls = _camel(rng, 1).capitalize()
    lines.append(KEY_OF_JS)
    body = "".join(_function_js(rng, f) for f in functions) + _class_js(rng, cls)
    exports = ", ".join([*functions, cls, "DEFAULTS"])
    return "\n".join(lines) + "\n" + body + f"\nmodule.exports = {{ {exports} }};\n"


def registry_js() -> str:
    entries = ",\n".join(f"  mod_{i:03d}: () => require('./lib/mod_{i:03d}')" for i in range(20))
    return f"'use strict';\n\nmodule.exports = {{\n{entries},\n}};\n"


def package_json(spec: Spec = BASE) -> str:
    manifest = {
        "name": "bench-fn",
        "version": "1.0.0",
        "private": True,
        "main": "index.js",
        "dependencies": spec.dependencies,
        "devDependencies": DEV_DEPENDENCIES,
    }
    return json.dumps(manifest, indent=2) + "\n"


# --------------------------------------------------------------------------- files


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it (keeps mtimes stable)."""
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def source_files(modules: int = MODULE_COUNT) -> dict[str, str]:
    """Relative path -> content of every generated source file (package.json aside)."""
    files = {"index.js": INDEX_JS, "src/registry.js": registry_js()}
    for i in range(modules):
        files[f"src/lib/mod_{i:03d}.js"] = module_js(i)
    return files


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` (symlinks not followed), sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path


def tree_stats(root: Path) -> tuple[int, int]:
    """(file count, total bytes) of the regular files under ``root``."""
    count = size = 0
    for path in iter_files(root):
        count += 1
        size += path.stat().st_size
    return count, size


# --------------------------------------------------------------------------- npm


@dataclass
class Timed:
    wall: float
    cpu: float  # user + system of the process tree: steadier than wall time on a busy machine
    output: str


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> Timed:
    """Run ``cmd`` to completion: its wall time, CPU time and output; exit on failure."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        output = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(cmd)} in {cwd}\n{output[-3000:]}")
    return Timed(wall, usage.ru_utime + usage.ru_stime, output)


def run(cmd: list[str], cwd: Path) -> None:
    print(f"  $ {' '.join(cmd)}  (in {cwd})", flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def ensure_lock(ws: Workspace) -> None:
    """Resolve the dependency tree once; afterwards reuse the pinned manifest + lock."""
    cached_manifest = ws.lock_dir / "package.json"
    cached_lock = ws.lock_dir / "package-lock.json"
    if not cached_lock.is_file():
        ws.lock_dir.mkdir(parents=True, exist_ok=True)
        write_if_changed(cached_manifest, package_json(ws.spec))
        print("Resolving the dependency tree (first run only)...", flush=True)
        run(["npm", "install", "--package-lock-only", "--no-audit", "--no-fund"], ws.lock_dir)
    write_if_changed(ws.fn_dir / "package.json", cached_manifest.read_text())
    write_if_changed(ws.fn_dir / "package-lock.json", cached_lock.read_text())


def ensure_project(ws: Workspace) -> None:
    """Create or refresh the project; files already right are left untouched."""
    ws.fn_dir.mkdir(parents=True, exist_ok=True)
    for rel, text in source_files(ws.spec.modules).items():
        write_if_changed(ws.fn_dir / rel, text)
    ensure_lock(ws)
    write_if_changed(ws.project / "dodo.py", DODO_PY)


def ensure_own_staging(ws: Workspace) -> Path:
    """`npm ci` the production tree ourselves (same flags as the library); returns node_modules."""
    modules = ws.own_staging / "node_modules"
    lock = ws.fn_dir / "package-lock.json"
    stamp = ws.own_staging / ".lock-copy.json"
    if modules.is_dir() and stamp.is_file() and stamp.read_text() == lock.read_text():
        return modules
    if ws.own_staging.exists():
        shutil.rmtree(ws.own_staging)
    ws.own_staging.mkdir(parents=True)
    shutil.copy2(ws.fn_dir / "package.json", ws.own_staging / "package.json")
    shutil.copy2(lock, ws.own_staging / "package-lock.json")
    print("Staging production dependencies...", flush=True)
    run(["npm", *NPM_CI_ARGS], ws.own_staging)
    shutil.copy2(lock, stamp)
    return modules


def production_node_modules(ws: Workspace) -> Path:
    """The library's staged node_modules when it exists, else our own staging."""
    library = ws.library_staging / "node_modules"
    return library if library.is_dir() else ensure_own_staging(ws)


# --------------------------------------------------------------------------- reference tree


def build_ref_tree(ws: Workspace, node_modules: Path) -> Path:
    """Lay out what the zip should contain as plain files: fn/ sources + node_modules
    (without npm's bookkeeping: .bin/, the hidden lockfile)."""
    dest = ws.ref_tree
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        ws.fn_dir,
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns("node_modules"),
    )
    shutil.copytree(
        node_modules,
        dest / "node_modules",
        symlinks=True,
        ignore=lambda d, names: NPM_BOOKKEEPING if Path(d) == node_modules else [],
    )
    return dest


def ensure_ref_tree(ws: Workspace) -> Path:
    """The reference tree, built if missing (for compressors.py)."""
    if (ws.ref_tree / "node_modules").is_dir():
        return ws.ref_tree
    ensure_project(ws)
    return build_ref_tree(ws, production_node_modules(ws))


def info_zip(tree: Path, out: Path, *extra: str) -> None:
    """`zip -qr -X [extra] out .` run inside ``tree``."""
    subprocess.run(["zip", "-qr", "-X", *extra, str(out), "."], cwd=tree, check=True)
