"""Test projects: real npm packages (built with `npm pack`, depended on as
`file:` tarballs, so no registry is needed) and doit run as a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dodo_lambda.layout import BuildDir, Layout

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
NO_REGISTRY = "http://127.0.0.1:9/"  # nothing listens there: any registry use fails fast

DODO = '''
import json
from dodo_lambda import Function, Layer, Stage, lambda_tasks

DOIT_CONFIG = {"backend": "sqlite3", "verbosity": 2}
settings = json.load(open("project.json"))
if "stages" in settings.get("options", {}):
    settings["options"]["stages"] = [Stage(**s) for s in settings["options"]["stages"]]
layers = {spec["name"]: Layer(**spec) for spec in settings.get("layers", [])}
functions = []
for spec in settings["functions"]:
    spec = dict(spec)
    spec["layers"] = [layers.get(x, x) for x in spec.get("layers", [])]
    functions.append(Function(**spec))


def task_lambda():
    yield from lambda_tasks(*functions, *layers.values(), **settings.get("options", {}))
'''


def npm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(npm_config_registry=NO_REGISTRY, npm_config_fetch_retries="0",
               npm_config_update_notifier="false", npm_config_audit="false",
               npm_config_fund="false")
    return env


def pack(folder: Path, dest: Path) -> str:
    """`npm pack` a package folder into dest; returns the tarball's file name."""
    out = subprocess.run(["npm", "pack", "--pack-destination", str(dest), "--json"], cwd=folder,
                         capture_output=True, text=True, check=True, env=npm_env())
    return json.loads(out.stdout)[0]["filename"]


def make_package(root: Path, name: str, files: dict[str, str], version: str = "1.0.0",
                 deps: dict[str, str] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    manifest = {"name": name, "version": version, "main": "index.js", "license": "MIT"}
    if deps:
        manifest["dependencies"] = deps
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def lock(folder: Path) -> None:
    # --ignore-scripts: even --package-lock-only runs the root's own install scripts
    subprocess.run(["npm", "install", "--package-lock-only", "--offline", "--ignore-scripts"],
                   cwd=folder, check=True, capture_output=True, env=npm_env())


@dataclass
class Project:
    root: Path

    @property
    def fn(self) -> Path:
        return self.root / "fn"

    def configure(self, functions: list[dict], layers: list[dict] | None = None,
                  options: dict | None = None) -> None:
        data = {"functions": functions, "layers": layers or [], "options": options or {}}
        (self.root / "project.json").write_text(json.dumps(data, indent=1))

    def doit(self, *args: str, env: dict[str, str] | None = None) -> Run:
        proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=self.root,
                              capture_output=True, text=True, env=env or npm_env(), timeout=300)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    @property
    def build_dir(self) -> Path:
        return self.root / ".dodo_lambda"

    @property
    def paths(self) -> BuildDir:
        """The build dir's project-wide paths (the invoker's cache, the emulator's files)."""
        return BuildDir(self.build_dir)

    def layout(self, name: str = "demo", kind: str = "function") -> Layout:
        """Where dodo_lambda keeps the item's files (the code's own Layout)."""
        return Layout(self.build_dir, kind, name)

    def zip_path(self, name: str = "demo") -> Path:
        return self.layout(name).zip

    def names(self, name: str = "demo") -> list[str]:
        with zipfile.ZipFile(self.zip_path(name)) as z:
            return z.namelist()

    def record(self, kind: str, name: str = "demo") -> dict:
        """A JSON record beside the zip: deployed, uploaded, published."""
        item = "layer" if kind == "published" else "function"
        return json.loads(getattr(self.layout(name, item), kind).read_text())

    def manifest(self, name: str = "demo", kind: str = "function") -> dict:
        return json.loads(self.layout(name, kind).manifest.read_text())


@dataclass
class Run:
    rc: int
    out: str
    err: str

    @property
    def executed(self) -> set[str]:
        return set(re.findall(r"^\.  (\S+)", self.out, re.M))

    @property
    def skipped(self) -> set[str]:
        return set(re.findall(r"^-- (\S+)", self.out, re.M))

    @property
    def text(self) -> str:
        return self.out + self.err


FUNCTION = {"name": "demo", "source": "fn", "handler": "index.handler"}
LAYER = {"name": "shared", "source": "layers/shared", "runtimes": ["nodejs24.x"]}


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a function that has a production and a dev dependency,
    secrets and junk beside its code; built once, copied per test."""
    root = tmp_path_factory.mktemp("template") / "project"
    pkgs = root / "pkgs"
    src = tmp_path_factory.mktemp("pkgsrc")
    pkgs.mkdir(parents=True)
    util = make_package(src, "greet-util", {"index.js": "exports.excl = (s) => s + '!';\n"})
    pack(util, pkgs)
    greet = make_package(src, "greet", {
        "index.js": "const { excl } = require('greet-util');\n"
                    "exports.greet = (n) => excl(`Hello, ${n}`);\n",
        "bin/greet.js": "#!/usr/bin/env node\nconsole.log(require('..').greet('cli'));\n",
        # files a package reads at run time that the default excludes would drop in
        # the function's own folder: they must ship from node_modules
        "certs/ca.pem": "-----BEGIN CERTIFICATE-----\n", ".env.defaults": "GREETING=Hello\n",
    }, deps={"greet-util": "file:../pkgs/greet-util-1.0.0.tgz"})
    manifest = json.loads((greet / "package.json").read_text())
    manifest["bin"] = {"greet": "bin/greet.js"}
    # the tarball's own file: dep resolves from where it is installed: name the tarball
    manifest["dependencies"] = {"greet-util": "1.0.0"}
    (greet / "package.json").write_text(json.dumps(manifest))
    pack(greet, pkgs)
    dev = make_package(src, "devtool", {"index.js": "module.exports = 'dev only';\n"})
    pack(dev, pkgs)

    fn = root / "fn"
    (fn / "lib").mkdir(parents=True)
    (fn / "index.js").write_text(
        "const { greet } = require('greet');\nconst util = require('./lib/util');\n"
        "exports.handler = async (event) => ({ body: util.wrap(greet(event.name)) });\n")
    (fn / "lib" / "util.js").write_text("exports.wrap = (s) => `[${s}]`;\n")
    (fn / "README.md").write_text("# demo\n")
    (fn / "run.sh").write_text("#!/bin/sh\necho run\n")
    (fn / "run.sh").chmod(0o755)
    (fn / ".env").write_text("SECRET=1\n")
    (fn / ".env.local").write_text("SECRET=2\n")
    (fn / "server.pem").write_text("-----BEGIN-----\n")
    (fn / ".npmrc").write_text("fund=false\n")
    (fn / ".git").mkdir()
    (fn / ".git" / "config").write_text("[core]\n")
    (fn / ".DS_Store").write_text("junk")
    (fn / "package.json").write_text(json.dumps({
        "name": "demo", "version": "1.0.0", "private": True,
        "dependencies": {"greet": "file:../pkgs/greet-1.0.0.tgz",
                         "greet-util": "file:../pkgs/greet-util-1.0.0.tgz"},
        "devDependencies": {"devtool": "file:../pkgs/devtool-1.0.0.tgz"},
    }, indent=2))
    lock(fn)
    # a developer's own install, with dev dependencies: must never be packed
    nm = fn / "node_modules" / "devtool"
    nm.mkdir(parents=True)
    (nm / "index.js").write_text("dev\n")
    # a layer sharing greet-util with the function, plus code of its own under nodejs/
    layer = root / "layers" / "shared"
    (layer / "nodejs" / "lib").mkdir(parents=True)
    (layer / "nodejs" / "lib" / "helper.js").write_text("exports.shared = true;\n")
    (layer / "package.json").write_text(json.dumps({
        "name": "shared", "version": "1.0.0", "private": True,
        "dependencies": {"greet-util": "file:../../pkgs/greet-util-1.0.0.tgz"}}, indent=2))
    lock(layer)
    Project(root).configure([FUNCTION])
    (root / "dodo.py").write_text(DODO)
    return root


def copied(template: Path, root: Path) -> Project:
    """A test's own copy of a session's template project (links kept as links)."""
    shutil.copytree(template, root, symlinks=True)
    return Project(root)


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Iterator[Project]:
    yield copied(template, tmp_path / "project")
