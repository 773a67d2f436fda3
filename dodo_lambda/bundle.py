"""The bundle step: esbuild turns the handler's entry (TypeScript or JavaScript)
and everything it imports into one file for the runtime's Node version.

Inputs are what esbuild actually read (its metafile, saved after each run) plus
the options, the esbuild version and the staged production tree; a record beside
the output holds them with their stats, so "up to date" costs a few stats and no
process. The zip then holds the bundle, its map when asked for, the externals'
folders from the staged tree, and the source files ``include=`` names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import digest, esbuild, externals, npm
from .build import source_root  # build loads this module only when it bundles
from .bundle_options import BundleOptions, entry, target
from .config import Function, label
from .context import RunContext
from .errors import DodoLambdaError, NextStep
from .files import locked, read_json, write_atomic, write_json
from .layout import Layout
from .selection import Entry, Patterns, Root, walk_roots

log = logging.getLogger("dodo_lambda")

RECORD_FORMAT = 1
RUNNER = Path(__file__).with_name("esbuild_runner.cjs")
# Read by esbuild without showing in its metafile: they change how files compile
CONFIG_FILES = ("package.json", "tsconfig.json", "jsconfig.json")
CONFIG_STEMS = frozenset(_n.split(".")[0] for _n in CONFIG_FILES)
# ESM output: bundled CommonJS calls require() on Node built-ins ("Dynamic require
# of 'x' is not supported" without it), and code written for CommonJS reads
# __dirname/__filename. These go through `define` so that esbuild renames a
# module's own declarations of those names instead of clashing with ours.
ESM_BANNER = "\n".join((
    'import { createRequire as __dodoLambdaCreateRequire } from "node:module";',
    'import { fileURLToPath as __dodoLambdaFileURLToPath } from "node:url";',
    'import { dirname as __dodoLambdaDirnameOf } from "node:path";',
    "const require = __dodoLambdaCreateRequire(import.meta.url);",
    "const __dodoLambdaFilename = __dodoLambdaFileURLToPath(import.meta.url);",
    "const __dodoLambdaDirname = __dodoLambdaDirnameOf(__dodoLambdaFilename);",
))
ESM_DEFINE = {"__dirname": "__dodoLambdaDirname", "__filename": "__dodoLambdaFilename"}
# CommonJS output: code written as ESM reads import.meta.url, which esbuild would
# leave empty there
CJS_BANNER = 'var __dodoLambdaImportMetaUrl = require("url").pathToFileURL(__filename).href;'
CJS_DEFINE = {"import.meta.url": "__dodoLambdaImportMetaUrl"}


@dataclass(frozen=True)
class BundleResult:
    entry: str  # the source file bundled
    outputs: dict[str, int]  # zip path -> bytes
    externals: tuple[str, ...]  # package folders shipped in node_modules
    esbuild: esbuild.Esbuild
    warnings: tuple[str, ...]


def _options(fn: Function) -> BundleOptions:
    opts = fn.bundle_options
    if opts is None:
        raise DodoLambdaError(f"{label(fn)} is not bundled (no bundle= option)")
    return opts


def _entry(fn: Function) -> Path:
    module = fn.handler.rpartition(".")[0]
    found = entry(Path(fn.source), module)
    if found is None:
        raise DodoLambdaError(f"{label(fn)}: no entry file for handler {fn.handler!r}"
                              f" in {fn.source}")
    return found


def _staged_state(fn: Function, layout: Layout) -> Any:
    """What the npm step installed (the lock file's digest and the tree's content),
    from its record: a changed install means a new bundle."""
    if not npm.has_dependencies(fn):
        return None
    record = npm.read_record(layout) or {}
    return [(record.get("key") or {}).get("files"), record.get("tree_content")]


def _key(fn: Function, layout: Layout, tool: esbuild.Esbuild) -> dict[str, Any]:
    """Everything besides the files read that decides the output, as the record holds
    it (through JSON: tuples become lists)."""
    return json.loads(json.dumps({
        "format": RECORD_FORMAT,
        "options": asdict(_options(fn)),
        "target": target(fn.runtime),
        "handler": fn.handler,
        "entry": _entry(fn).as_posix(),
        "esbuild": tool.version,
        "runner": digest.file_sha256(RUNNER),
        "staged": _staged_state(fn, layout),
    }))


# -- up to date? ----------------------------------------------------------------

def is_bundled(fn: Function, ctx: RunContext) -> bool:
    """True when the bundle on disk is what esbuild would write now. Starts no
    process: stats of the recorded inputs and outputs, hashes only of those whose
    stats moved."""
    try:
        return _is_bundled(fn, ctx.layout(fn))
    except (DodoLambdaError, OSError, ValueError, TypeError):
        return False  # let the action run and report it


def _is_bundled(fn: Function, layout: Layout) -> bool:
    if fn.problem:
        return False
    record = read_json(layout.bundle_record)
    if not isinstance(record, dict):
        return False
    tool = esbuild.locate(Path(fn.source))
    if tool is None or record.get("key") != _key(fn, layout, tool):
        return False
    moved = False
    for base, group in ((layout.bundle_out, "outputs"), (Path("."), "inputs")):
        for rel, rec in record[group].items():
            fresh = _same_file(base / rel, rec)
            if fresh is None:
                return False
            moved = moved or fresh is not rec
            record[group][rel] = fresh
    for rel, (mtime, stems, names) in record["dirs"].items():
        now = os.stat(rel).st_mtime_ns
        if now != mtime:
            if _listing(Path(rel), stems) != names:
                return False  # a file came or went that an import may now find
            record["dirs"][rel] = [now, stems, names]
            moved = True
    if moved:  # same content, new stats: the next check is stats only again
        write_json(layout.bundle_record, record)
    return True


def _same_file(path: Path, rec: list[Any]) -> list[Any] | None:
    """``rec`` ([size, mtime_ns, sha256]) when the file still matches it, an updated
    record when only its mtime moved, None when it changed or is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if st.st_size == rec[0] and st.st_mtime_ns == rec[1]:
        return rec
    if st.st_size != rec[0] or digest.file_sha256(path) != rec[2]:
        return None
    return [st.st_size, st.st_mtime_ns, rec[2]]


def _file_record(path: Path) -> list[Any]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, digest.file_sha256(path)]


def _stem(name: str) -> str:
    return name.split(".", 1)[0]


def _listing(folder: Path, stems: list[str]) -> str:
    """The names in ``folder`` that could change what an import resolves to: those
    sharing a stem with a file read there (util.tsx beside util.ts), with a folder
    imported from (lib.ts beside lib/), or with a config file. Other files can come
    and go without a new bundle."""
    wanted = set(stems)
    names = sorted(n for n in os.listdir(folder) if _stem(n) in wanted)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


# -- the step -------------------------------------------------------------------

def bundle(fn: Function, ctx: RunContext) -> BundleResult:
    """Run esbuild for ``fn`` and record what it read and wrote."""
    who = label(fn)
    problem = fn.problem
    if problem:
        raise DodoLambdaError(problem)
    opts = _options(fn)
    layout = ctx.layout(fn)
    if npm.has_dependencies(fn) and not layout.install_record.is_file():
        raise DodoLambdaError(f"{who}: dependencies are not installed",
                              next_step=NextStep("npm", fn.name))
    tool = esbuild.obtain(Path(fn.source), who)
    graph = externals.read_graph(layout.staging, who)
    natives = externals.native_externals(graph, externals.native_folders(layout.staging))
    src = _entry(fn)
    with locked(layout.bundle_lock):  # one esbuild per function
        layout.bundle_record.unlink(missing_ok=True)  # from here on, nothing counts as bundled
        tmp = layout.bundle_folder / ".out.tmp"  # beside out/: the map's relative paths stay
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta_tmp = layout.bundle_folder / ".meta.tmp.json"
        try:
            answer = _run(tool, fn, opts, src, tmp, meta_tmp, layout, sorted(natives), who)
            meta = json.loads(meta_tmp.read_text(encoding="utf-8"))
            outputs = _publish(tmp, layout.bundle_out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # kept for people and tools (esbuild's analyzer): named as the outputs now are
        out_name = layout.bundle_out.name
        meta["outputs"] = {k.replace(f"/{tmp.name}/", f"/{out_name}/"): v
                           for k, v in meta.get("outputs", {}).items()}
        write_atomic(layout.bundle_meta, json.dumps(meta).encode())
        meta_tmp.unlink()
        imported = _imported_externals(meta, set(answer.get("builtins") or ()))
        ship = [n for n in imported if n in natives] + list(opts.shipped())
        folders = externals.shipped_folders(graph, dict.fromkeys(ship), opts.provided())
        inputs, dirs = _inputs(meta, layout.staging)
        key = _key(fn, layout, tool)
        write_json(layout.bundle_record, {
            "key": key,
            "inputs": inputs,
            "dirs": dirs,
            "outputs": {rel: _file_record(layout.bundle_out / rel) for rel in outputs},
            "externals": folders,
            "esbuild": {"version": tool.version, "origin": tool.origin},
        })
    warnings = tuple(answer.get("warnings") or ())
    for warning in warnings[:5]:
        log.warning("%s: esbuild: %s", who, warning)
    sizes = {rel: (layout.bundle_out / rel).stat().st_size for rel in outputs}
    return BundleResult(src.as_posix(), sizes, tuple(folders), tool, warnings)


def _run(tool: esbuild.Esbuild, fn: Function, opts: BundleOptions, src: Path, tmp: Path,
         meta_tmp: Path, layout: Layout, natives: list[str], who: str) -> dict[str, Any]:
    cwd = os.path.realpath(".")
    module = fn.handler.rpartition(".")[0]
    options: dict[str, Any] = {
        "format": opts.format,
        "target": target(fn.runtime),
        "minify": opts.minify,
        "sourcemap": "linked" if opts.sourcemap else False,
        "external": sorted(set(opts.external) | set(natives)),
        "define": dict(opts.define),
        "loader": dict(opts.loader),
    }
    banner, define = (ESM_BANNER, ESM_DEFINE) if opts.format == "esm" else (CJS_BANNER, CJS_DEFINE)
    options["banner"] = {"js": banner}
    options["define"] = {**define, **options["define"]}  # the user's define= wins
    request = {
        "esbuild": str(tool.package.resolve()),
        "cwd": cwd,
        "entry": _rel(src, cwd),
        "outfile": _rel(tmp / (module + opts.out_ext), cwd),
        "metafile": str(meta_tmp.resolve()),
        "staged_node_modules": os.path.realpath(layout.node_modules),
        "package_json": (Path(fn.source) / "package.json").as_posix(),
        "options": options,
    }
    try:
        proc = subprocess.run(["node", str(RUNNER)], input=json.dumps(request), cwd=cwd,
                              capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DodoLambdaError(f"{who}: node not found on PATH; install Node.js to bundle"
                              ) from exc
    try:
        answer = json.loads(proc.stdout)
    except ValueError as exc:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise DodoLambdaError(f"{who}: esbuild {tool.version} ({tool.origin}) failed: {tail}"
                              ) from exc
    errors = answer.get("errors") or []
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DodoLambdaError(f"{who}: esbuild could not bundle {src.as_posix()}: {errors[0]}"
                              f"{more}; fix it and run again")
    return dict(answer)


def _rel(path: Path, cwd: str) -> str:
    return Path(os.path.relpath(os.path.realpath(path), cwd)).as_posix()


def _publish(tmp: Path, out: Path) -> list[str]:
    """Move esbuild's outputs into ``out``, leaving files whose bytes did not change
    untouched (so the package step sees nothing new), and drop stale ones."""
    new = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    out.mkdir(parents=True, exist_ok=True)
    for rel in new:
        target_path = out / rel
        if target_path.is_file() and target_path.read_bytes() == (tmp / rel).read_bytes():
            continue
        target_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp / rel, 0o644)
        os.replace(tmp / rel, target_path)
    keep = set(new)
    for path in sorted(out.rglob("*"), reverse=True):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return new


def _imported_externals(meta: dict[str, Any], builtins: set[str]) -> list[str]:
    """Package names the bundle still imports at run time (Node built-ins aside)."""
    names: dict[str, None] = {}
    for info in meta.get("inputs", {}).values():
        for imp in info.get("imports", ()):
            spec = imp.get("path", "")
            if not imp.get("external") or spec.startswith(("node:", ".", "/")):
                continue
            name = externals.package_name(spec)
            if name not in builtins:
                names[name] = None
    return list(names)


def _inputs(meta: dict[str, Any], staging_folder: Path
            ) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """The files esbuild read outside the staged tree (which the npm record covers),
    the config files beside and above them, and the names in those folders that
    could change what an import finds."""
    staged = os.path.realpath(staging_folder)
    top = os.path.realpath(".")
    files: dict[str, list[Any]] = {}
    stems: dict[str, set[str]] = {}
    for rel in meta.get("inputs", {}):
        path = os.path.realpath(rel)
        if not os.path.isfile(path) or path.startswith(staged + os.sep):
            continue  # another namespace, or a staged package
        files[Path(rel).as_posix()] = _file_record(Path(rel))
        stems.setdefault(Path(rel).parent.as_posix(), set()).add(_stem(Path(rel).name))
    for folder in sorted(stems):
        here = Path(folder)
        inside = os.path.realpath(here).startswith(top + os.sep)
        child = None
        for above in (here, *(here.parents if inside else ())):
            wanted = stems.setdefault(above.as_posix(), set())
            wanted.update(CONFIG_STEMS)
            if child is not None:
                wanted.add(child)
            child = above.name
            for name in CONFIG_FILES:
                candidate = above / name
                if candidate.as_posix() not in files and candidate.is_file():
                    files[candidate.as_posix()] = _file_record(candidate)
    dirs = {}
    for folder, wanted in sorted(stems.items()):
        names = sorted(wanted)
        dirs[folder] = [os.stat(folder).st_mtime_ns, names, _listing(Path(folder), names)]
    return dict(sorted(files.items())), dirs


# -- what the package step zips --------------------------------------------------

def roots(fn: Function, build_dir: Path) -> list[Root]:
    """The bundle's output folder, each shipped external's folder in the staged tree
    and, when ``include=`` is given, the source folder (for the files it names)."""
    layout = Layout.of(build_dir, fn)
    record = read_json(layout.bundle_record) or {}
    out = [Root(layout.bundle_out, "")]
    for folder in record.get("externals") or ():
        out.append(Root(layout.staging / folder, folder + "/", staged=True))
    if fn.include:
        out.append(source_root(fn, build_dir))
    return out


def walk(fn: Function, ctx: RunContext) -> list[Entry]:
    """Every file the zip may hold; from the source folder only what include= names."""
    who = label(fn)
    found: list[Entry] = []
    for root in roots(fn, ctx.build_dir):
        entries = walk_roots([root], who)
        if fn.include and root == source_root(fn, ctx.build_dir):
            only = Patterns(("*",), fn.include).matcher()  # include= alone decides
            entries = [e for e in entries if only.selected(e.arcname)]
        found.extend(entries)
    return found


def check_bundled(fn: Function, layout: Layout) -> None:
    """Raise unless the bundle step has run (the package step needs its output)."""
    if not layout.bundle_record.is_file():
        raise DodoLambdaError(f"{label(fn)}: not bundled yet",
                              next_step=NextStep("bundle", fn.name))
