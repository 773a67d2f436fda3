"""Fixtures for bundling: esbuild (installed from the npm registry once, the one
exception to hermetic tests) and a TypeScript project built from local packages."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from projects import DODO, Project, copied, lock, make_package, npm_env, pack

# A file that starts like an x86-64 Linux ELF shared object: enough for
# dodo_lambda to see a native addon built for Lambda's x86_64 (it is never loaded).
FAKE_ADDON = b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x03\x00\x3e\x00" + bytes(44)

TS_FUNCTION = {"name": "demo", "source": "fn", "handler": "index.handler",
               "runtime": "nodejs22.x", "bundle": {"external": ["greet"]}}

INDEX_TS = """\
import { platform } from "cjs-os";
import { greet } from "greet";
import native from "fastnative";
import { client } from "@acme/client";
import { twice } from "./lib/math";
import { here } from "./lib/paths";
import type { Result } from "./lib/types";

export const handler = async (event: { n: number }): Promise<Result> => ({
  platform: platform(),
  greeting: greet("ts"),
  native: native.kind(),
  client: client(),
  n: twice(event.n),
  here: here(),
  dirname: typeof __dirname,
});
"""

TYPES_TS = """\
export interface Result {
  platform: string;
  greeting: string;
  native: string;
  client: string;
  n: number;
  here: boolean;
  dirname: string;
}
"""

# ESM code that declares __filename itself, as Node's docs teach: the bundle's own
# __filename shim must not clash with it
PATHS_TS = """\
import { fileURLToPath } from "node:url";
const __filename = fileURLToPath(import.meta.url);
export const here = (): boolean => __filename.endsWith(".mjs") || __filename.endsWith(".js");
"""


@pytest.fixture(scope="session")
def esbuild_home(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG_CACHE_HOME holding dodo_lambda's pinned esbuild, installed by
    dodo_lambda itself from the npm registry once; kept in pytest's cache folder so
    that the next run of the suite reuses it (the install is atomic and locked)."""
    from dodo_lambda import esbuild

    try:
        home = Path(request.config.cache.mkdir("dodo_lambda_xdg"))  # type: ignore[union-attr]
    except AttributeError:  # cache plugin disabled (-p no:cacheprovider)
        home = tmp_path_factory.mktemp("xdg")
    env = {**os.environ, "XDG_CACHE_HOME": str(home)}
    if esbuild.cached_esbuild(env) is None:
        esbuild.install("test session", env)
    assert esbuild.cached_esbuild(env) is not None
    return home


@pytest.fixture
def bundle_env(esbuild_home: Path) -> dict[str, str]:
    """npm without a registry, esbuild from the session's cache."""
    return {**npm_env(), "XDG_CACHE_HOME": str(esbuild_home)}


def _packages(pkgs: Path, src: Path) -> dict[str, str]:
    """Local packages as tarballs; returns the function's dependencies."""
    make_package(src, "cjs-os", {
        # CommonJS calling require() on a Node built-in: ESM bundles need createRequire
        "index.js": "const os = require('os');\n"
                    "exports.platform = () => os.platform();\n",
    })
    make_package(src, "greet-util", {"index.js": "exports.excl = (s) => s + '!';\n"})
    make_package(src, "greet", {
        "index.js": "const { excl } = require('greet-util');\n"
                    "exports.greet = (n) => excl(`Hello, ${n}`);\n",
    }, deps={"greet-util": "1.0.0"})
    make_package(src, "native-helper", {"index.js": "exports.kind = () => 'native-helper';\n"})
    native = make_package(src, "fastnative", {
        # a real addon would load build/Release/fastnative.node; this one only names it
        "index.js": "const path = require('path');\n"
                    "exports.binary = path.join(__dirname, 'build', 'Release', 'fastnative.node');\n"
                    "exports.kind = () => require('native-helper').kind();\n",
    }, deps={"native-helper": "1.0.0"})
    (native / "build" / "Release").mkdir(parents=True)
    (native / "build" / "Release" / "fastnative.node").write_bytes(FAKE_ADDON)
    acme = make_package(src, "acme-client", {"index.js": "exports.client = () => 'acme';\n"})
    manifest = json.loads((acme / "package.json").read_text())
    manifest["name"] = "@acme/client"
    (acme / "package.json").write_text(json.dumps(manifest))
    make_package(src, "devtool", {"index.js": "module.exports = 'dev only';\n"})
    deps = {}
    for folder in ("cjs-os", "greet-util", "greet", "native-helper", "fastnative",
                   "acme-client", "devtool"):
        name = json.loads((src / folder / "package.json").read_text())["name"]
        deps[name] = f"file:../pkgs/{pack(src / folder, pkgs)}"
    return deps


@pytest.fixture(scope="session")
def ts_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TypeScript function: a bundled CommonJS dependency that requires a Node
    built-in, a scoped package, a native package and an explicit external (each
    with a dependency of its own), a devDependency, and files nothing imports."""
    root = tmp_path_factory.mktemp("ts-template") / "project"
    pkgs = root / "pkgs"
    pkgs.mkdir(parents=True)
    deps = _packages(pkgs, tmp_path_factory.mktemp("ts-pkgsrc"))
    fn = root / "fn"
    (fn / "lib").mkdir(parents=True)
    (fn / "index.ts").write_text(INDEX_TS)
    (fn / "lib" / "math.ts").write_text("export const twice = (n: number): number => n * 2;\n")
    (fn / "lib" / "paths.ts").write_text(PATHS_TS)
    (fn / "lib" / "types.ts").write_text(TYPES_TS)
    (fn / "lib" / "unused.ts").write_text("export const unused = 1;\n")
    (fn / "README.md").write_text("# demo\n")
    dev = deps.pop("devtool")
    (fn / "package.json").write_text(json.dumps({
        "name": "demo", "version": "1.0.0", "private": True,
        "dependencies": deps, "devDependencies": {"devtool": dev}}, indent=2))
    lock(fn)
    Project(root).configure([TS_FUNCTION])
    (root / "dodo.py").write_text(DODO)
    return root


@pytest.fixture
def ts_project(ts_template: Path, tmp_path: Path) -> Iterator[Project]:
    yield copied(ts_template, tmp_path / "project")
