"""bundle=: esbuild as its own incremental doit step, with Lambda's details right.

esbuild comes from the npm registry once per session (bundlefixtures.esbuild_home);
everything else is offline: local packages as file: tarballs, doit as a subprocess,
the bundles run by the real `node`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
from bundlefixtures import TS_FUNCTION
from projects import NO_REGISTRY, Project, npm_env


def _unzip(project: Project, dest: Path) -> Path:
    subprocess.run(["unzip", "-q", str(project.zip_path()), "-d", str(dest)], check=True)
    return dest


def _node(cwd: Path, script: str, env: dict[str, str] | None = None) -> dict:
    res = subprocess.run(["node", "--input-type=module", "-e", script], cwd=cwd,
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


CALL_ESM = ("const m = await import('./index.mjs');"
            "console.log(JSON.stringify(await m.handler({n: 21})));")


def test_typescript_bundle_runs_with_externals_and_natives_shipped(
        ts_project: Project, bundle_env: dict[str, str], tmp_path: Path) -> None:
    run = ts_project.doit("package", env=bundle_env)
    assert run.rc == 0, run.text
    assert run.executed == {"npm:demo", "bundle:demo", "package:demo"}
    names = ts_project.names()
    # the bundle, named so that handler="index.handler" resolves; no sources
    assert "index.mjs" in names
    assert not [n for n in names if n.endswith((".ts", ".tsx", ".mts"))]
    assert "package.json" not in names and "README.md" not in names
    shipped = {n.split("/")[1] for n in names if n.startswith("node_modules/")}
    # greet: external=; fastnative: holds a .node, so external by itself; each with
    # the dependency it needs at run time; cjs-os and @acme/client are in the bundle
    assert shipped == {"greet", "greet-util", "fastnative", "native-helper"}
    assert "node_modules/fastnative/build/Release/fastnative.node" in names
    out = _unzip(ts_project, tmp_path / "task")
    result = _node(out, CALL_ESM)
    assert result == {"platform": os.uname().sysname.lower(), "greeting": "Hello, ts!",
                      "native": "native-helper", "client": "acme", "n": 42, "here": True,
                      "dirname": "string"}
    bundle = (out / "index.mjs").read_text()
    assert "Dynamic require" in bundle  # esbuild's CommonJS shim is there, and worked
    assert 'from "greet"' in bundle and 'from "fastnative"' in bundle


def _esbuild_wrapper(home: Path, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """ESBUILD_BINARY_PATH pointing at a script that logs each start of esbuild."""
    from dodo_lambda import esbuild

    env = {**os.environ, "XDG_CACHE_HOME": str(home)}
    tool = esbuild.cached_esbuild(env)
    assert tool is not None
    real = tool.package.parent / esbuild.host_package() / "bin" / "esbuild"
    log = tmp_path / "esbuild-starts.log"
    wrapper = tmp_path / "esbuild-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return {"ESBUILD_BINARY_PATH": str(wrapper)}, log


def _starts(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_noop_starts_no_esbuild_and_only_imported_files_rerun_it(
        ts_project: Project, bundle_env: dict[str, str], esbuild_home: Path,
        tmp_path: Path) -> None:
    extra, log = _esbuild_wrapper(esbuild_home, tmp_path)
    env = {**bundle_env, **extra}
    fn = ts_project.fn
    assert ts_project.doit("package", env=env).rc == 0
    started = _starts(log)
    assert started > 0  # the wrapper is what runs esbuild

    run = ts_project.doit("package", env=env)
    assert run.rc == 0 and run.executed == set(), run.text
    assert run.skipped == {"npm:demo", "bundle:demo", "package:demo"}
    assert _starts(log) == started

    # files esbuild never read: edited, or only touched, change nothing
    (fn / "lib" / "unused.ts").write_text("export const unused = 2;\n")
    (fn / "README.md").write_text("# changed\n")
    os.utime(fn / "index.ts", ns=(1_900_000_000 * 10**9, 1_900_000_000 * 10**9))
    run = ts_project.doit("package", env=env)
    assert run.executed == set(), run.text
    assert _starts(log) == started

    # an imported file: a new bundle, a new zip
    (fn / "lib" / "math.ts").write_text("export const twice = (n: number): number => n * 3;\n")
    run = ts_project.doit("package", env=env)
    assert run.executed == {"bundle:demo", "package:demo"}, run.text
    assert _starts(log) > started
    started = _starts(log)
    with zipfile.ZipFile(ts_project.zip_path()) as z:
        assert b"n * 3" in z.read("index.mjs")

    # a new file that an import now finds first (esbuild tries .tsx before .ts)
    (fn / "lib" / "math.tsx").write_text("export const twice = (n: number): number => n * 4;\n")
    run = ts_project.doit("package", env=env)
    assert run.executed == {"bundle:demo", "package:demo"}, run.text
    with zipfile.ZipFile(ts_project.zip_path()) as z:
        assert b"n * 4" in z.read("index.mjs")
    assert ts_project.doit("package", env=env).executed == set()
    assert _starts(log) > started
    started = _starts(log)

    # package.json and the lock file reach the bundle through the npm step's install
    manifest = json.loads((fn / "package.json").read_text())
    (fn / "package.json").write_text(json.dumps({**manifest, "description": "changed"}))
    run = ts_project.doit("package", env=env)
    assert {"npm:demo", "bundle:demo"} <= run.executed, run.text
    assert _starts(log) > started


def test_byte_identical_from_two_checkouts_cjs_with_sourcemap(
        ts_template: Path, bundle_env: dict[str, str], tmp_path: Path) -> None:
    bundle = {"format": "cjs", "sourcemap": True, "external": ["greet", "@acme/*"]}
    roots = [tmp_path / "a" / "project", tmp_path / "checkout-b" / "deeper" / "project"]
    zips = []
    for root in roots:
        shutil.copytree(ts_template, root, symlinks=True)
        project = Project(root)
        project.configure([{**TS_FUNCTION, "bundle": bundle}])
        run = project.doit("package", env=bundle_env)
        assert run.rc == 0, run.text
        zips.append(project.zip_path().read_bytes())
        # no absolute path in what ships, nor in esbuild's own metafile
        meta = project.layout().bundle_meta.read_text()
        assert str(tmp_path) not in meta
        with zipfile.ZipFile(project.zip_path()) as z:
            for name in z.namelist():
                assert str(tmp_path).encode() not in z.read(name), name
    assert zips[0] == zips[1]

    project = Project(roots[0])
    names = project.names()
    assert {"index.js", "index.js.map"} <= set(names) and "index.mjs" not in names
    # "@acme/*" is left to the runtime or a layer: never shipped, still imported
    assert not [n for n in names if n.startswith("node_modules/@acme/")]
    out = _unzip(project, tmp_path / "task")
    layer = tmp_path / "opt" / "nodejs" / "node_modules" / "@acme"
    layer.mkdir(parents=True)
    shutil.copytree(project.layout().node_modules / "@acme" / "client", layer / "client")
    script = ("const m = require('./index.js');"
              "m.handler({n: 1}).then(r => console.log(JSON.stringify(r)));")
    env = {**os.environ, "NODE_PATH": str(tmp_path / "opt" / "nodejs" / "node_modules")}
    res = subprocess.run(["node", "--enable-source-maps", "-e", script], cwd=out,
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["client"] == "acme"
    sources = json.loads((out / "index.js.map").read_text())["sources"]
    assert any(s.endswith("fn/index.ts") for s in sources)
    assert not any(s.startswith("/") for s in sources)


def test_bad_bundle_options_are_one_line(ts_project: Project, bundle_env: dict[str, str]
                                         ) -> None:
    ts_project.configure([{**TS_FUNCTION, "bundle": {"minfy": True}}])
    run = ts_project.doit("package", env=bundle_env)
    assert run.rc != 0
    assert "Traceback" not in run.text
    assert ("function 'demo': bundle option 'minfy' is unknown; did you mean 'minify'?"
            in run.text)
    ts_project.configure([{**TS_FUNCTION, "bundle": None}])
    run = ts_project.doit("package", env=bundle_env)
    assert run.rc != 0 and "Traceback" not in run.text
    assert "fn/index.ts is there; TypeScript needs bundling: add bundle=True" in run.text


def test_import_of_a_dev_dependency_names_the_fix(ts_project: Project,
                                                  bundle_env: dict[str, str]) -> None:
    # the developer's own node_modules has it: the bundle must not take it from there
    dev = ts_project.fn / "node_modules" / "devtool"
    dev.mkdir(parents=True)
    (dev / "package.json").write_text('{"name": "devtool", "version": "1.0.0"}')
    (dev / "index.js").write_text("module.exports = 'dev only';\n")
    (ts_project.fn / "index.ts").write_text(
        'import tool from "devtool";\nexport const handler = async () => tool;\n')
    run = ts_project.doit("package", env=bundle_env)
    assert run.rc != 0 and "Traceback" not in run.text
    line = next(x for x in run.text.splitlines() if x.startswith("function 'demo':"))
    assert "fn/index.ts:1:18" in line and '"devtool" is not among the production' in line
    assert "fn/package.json" in line and 'add it to "dependencies"' in line
    assert not ts_project.layout().bundle_record.exists()


def test_project_esbuild_is_preferred_and_its_version_is_an_input(
        ts_project: Project, bundle_env: dict[str, str], esbuild_home: Path) -> None:
    from dodo_lambda import esbuild

    assert ts_project.doit("package", env=bundle_env).rc == 0
    record = ts_project.layout().bundle_record
    assert json.loads(record.read_text())["esbuild"]["origin"] == "dodo_lambda's cache"
    # the project declares esbuild and has it installed (with this machine's binary)
    cached = esbuild.cached_esbuild({"XDG_CACHE_HOME": str(esbuild_home)})
    assert cached is not None
    nm = ts_project.root / "node_modules"
    shutil.copytree(cached.package, nm / "esbuild", symlinks=True)
    manifest = json.loads((nm / "esbuild" / "package.json").read_text())
    manifest["version"] = f"{cached.version}-project"
    (nm / "esbuild" / "package.json").write_text(json.dumps(manifest))
    (nm / "@esbuild").mkdir()
    os.symlink(cached.package.parent / esbuild.host_package(), nm / esbuild.host_package())
    (ts_project.root / "package.json").write_text(json.dumps(
        {"private": True, "devDependencies": {"esbuild": cached.version}}))
    run = ts_project.doit("package", env=bundle_env)
    assert run.executed == {"bundle:demo"}, run.text  # same bytes: the zip stays
    recorded = json.loads(record.read_text())["esbuild"]
    assert recorded["version"] == f"{cached.version}-project"
    assert recorded["origin"].startswith("devDependencies of ")
    assert ts_project.doit("package", env=bundle_env).executed == set()


def test_esbuild_install_failure_is_one_line(ts_project: Project, tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    env = {**npm_env(), "XDG_CACHE_HOME": str(cache), "npm_config_registry": NO_REGISTRY}
    run = ts_project.doit("bundle", env=env)
    assert run.rc != 0 and "Traceback" not in run.text
    line = next(x for x in run.text.splitlines() if x.startswith("function 'demo':"))
    assert "could not install esbuild" in line
    assert "add esbuild to the function's devDependencies" in line and "registry" in line
    # nothing half-installed that a later run would trust
    assert not [p for p in (cache / "dodo_lambda").iterdir() if p.is_dir()]


@pytest.mark.parametrize("value, problem", [
    (True, None),
    ({"format": "esm", "external": ["sharp", "@aws-sdk/*"], "minify": True}, None),
    ({"sourcemap": True, "enable_source_maps": True}, None),
    ("yes", "must be True or a dict"),
    ({"format": "umd"}, "format='umd' must be 'esm'"),
    ({"minify": "yes"}, "minify='yes' must be True or False"),
    ({"enable_source_maps": True}, "needs sourcemap=True"),
    ({"external": ["a b"]}, "must be a list of package names"),
    ({"define": {"X": 1}}, "define="),
    ({"loader": {"txt": "text"}}, "loader="),
    ({"loader": {".txt": "words"}}, "loader="),
    ({"sourcemaps": True}, "did you mean 'sourcemap'?"),
])
def test_bundle_options_validation(value: object, problem: str | None) -> None:
    from dodo_lambda import bundle_options

    opts, found = bundle_options.parse(value)
    if problem is None:
        assert found is None and opts is not None
    else:
        assert opts is None and found is not None and problem in found


def test_source_maps_env_only_when_asked(tmp_path: Path, monkeypatch) -> None:
    from dodo_lambda import Function

    monkeypatch.chdir(tmp_path)
    plain = Function("f", source=".", handler="index.handler", bundle={"sourcemap": True})
    assert "Environment" not in plain.settings()
    asked = Function("f", source=".", handler="index.handler",
                     bundle={"sourcemap": True, "enable_source_maps": True},
                     environment={"NODE_OPTIONS": "--max-old-space-size=512", "STAGE": "1"})
    assert asked.settings()["Environment"] == {"Variables": {
        "STAGE": "1", "NODE_OPTIONS": "--max-old-space-size=512 --enable-source-maps"}}


def test_externals_closure_and_native_dependents() -> None:
    from dodo_lambda.externals import Graph, native_externals, shipped_folders

    graph = Graph({
        "node_modules/sharp": ("sharp", ("@img/sharp-linux-x64", "color")),
        "node_modules/@img/sharp-linux-x64": ("@img/sharp-linux-x64", ()),
        "node_modules/color": ("color", ("color-name",)),
        "node_modules/color/node_modules/color-name": ("color-name", ()),
        "node_modules/color-name": ("color-name", ()),
        "node_modules/app-images": ("app-images", ("sharp",)),
        "node_modules/lodash": ("lodash", ()),
        "node_modules/uses-sdk": ("uses-sdk", ("@aws-sdk/client-s3",)),
        "node_modules/@aws-sdk/client-s3": ("@aws-sdk/client-s3", ()),
        "node_modules/wrap": ("wrap", ()),
        "node_modules/wrap/node_modules/inner-native": ("inner-native", ()),
    })
    assert graph.resolve("node_modules/color", "color-name") == \
        "node_modules/color/node_modules/color-name"
    assert graph.resolve("node_modules/sharp", "color-name") == "node_modules/color-name"
    natives = {"node_modules/@img/sharp-linux-x64",
               "node_modules/wrap/node_modules/inner-native"}
    # the binary's package, whoever needs it at run time, and whoever carries one inside
    assert native_externals(graph, natives) == {"@img/sharp-linux-x64", "sharp", "app-images",
                                                "wrap"}
    assert shipped_folders(graph, ["sharp"], ()) == [
        "node_modules/@img/sharp-linux-x64", "node_modules/color", "node_modules/sharp"]
    # "provided" patterns (the runtime's or a layer's) are never shipped, even as a dependency
    assert shipped_folders(graph, ["uses-sdk", "@aws-sdk/client-s3"], ("@aws-sdk/*",)) == [
        "node_modules/uses-sdk"]


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "typescript"


def test_typescript_example_builds_and_runs(bundle_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "example"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(
        ".dodo_lambda", ".doit.db*", "node_modules"))
    project = Project(root)
    run = project.doit("package", env=bundle_env)  # no typecheck: that is deploy's
    assert run.rc == 0, run.text
    assert "typecheck" not in run.executed
    fn, layer = "dodo-lambda-ts-orders", "dodo-lambda-ts-shared"
    names = project.names(fn)
    assert {"index.mjs", "index.mjs.map"} <= set(names)
    assert not [n for n in names if n.endswith(".ts") and not n.startswith("node_modules/")]
    shipped = {n.split("/")[1] for n in names if n.startswith("node_modules/")}
    assert shipped == {"fast-checksum", "checksum-core"}  # order-id bundled, shared-format layered
    assert "node_modules/fast-checksum/prebuilds/linux-x64/fast-checksum.node" in names
    with zipfile.ZipFile(project.layout(layer, "layer").zip) as z:
        assert "nodejs/node_modules/shared-format/index.js" in z.namelist()
        # Lambda's ESM loader searches the layer's node_modules (NODE_PATH, Node.js 18
        # and later); plain node looks in the folders above the code: put it there
        z.extractall(tmp_path / "run")
    os.rename(tmp_path / "run" / "nodejs" / "node_modules", tmp_path / "run" / "node_modules")
    task = tmp_path / "run" / "task"
    subprocess.run(["unzip", "-q", str(project.zip_path(fn)), "-d", str(task)], check=True)
    script = ("const m = await import('./index.mjs');"
              "const order = {customer: 'ada', items: [{sku: 'a', cents: 625, quantity: 2}]};"
              "console.log(JSON.stringify(await m.handler(order)));")
    result = _node(task, script)
    assert result["id"] == "ord_" + hashlib.sha256(b"ada").hexdigest()[:12]
    assert result["total"] == "12.50 EUR"
    assert isinstance(result["checksum"], int)
    assert result["nativeBinding"] is (os.uname().machine in ("x86_64", "amd64"))


def test_handler_in_a_subfolder_with_included_assets_and_no_package_json(
        tmp_path: Path, bundle_env: dict[str, str]) -> None:
    from projects import DODO

    root = tmp_path / "project"
    (root / "fn" / "src").mkdir(parents=True)
    (root / "fn" / "templates").mkdir()
    (root / "fn" / "src" / "main.ts").write_text(
        'import { readFileSync } from "node:fs";\nimport { join } from "node:path";\n'
        "export const handler = async () =>\n"
        '  readFileSync(join(__dirname, "..", "templates", "mail.txt"), "utf8").trim();\n')
    (root / "fn" / "templates" / "mail.txt").write_text("Dear customer\n")
    (root / "fn" / "notes.md").write_text("not shipped\n")
    (root / "dodo.py").write_text(DODO)
    project = Project(root)
    project.configure([{"name": "demo", "source": "fn", "handler": "src/main.handler",
                        "bundle": True, "include": ["templates/"]}])
    run = project.doit("package", env=bundle_env)
    assert run.rc == 0, run.text
    assert run.executed == {"bundle:demo", "package:demo"}  # no package.json, no npm step
    assert project.names() == ["src/main.mjs", "templates/mail.txt"]
    out = _unzip(project, tmp_path / "task")
    script = ("const m = await import('./src/main.mjs');"
              "console.log(JSON.stringify(await m.handler()));")
    assert _node(out, script) == "Dear customer"
    (root / "fn" / "templates" / "mail.txt").write_text("Dear reader\n")  # an asset: no esbuild
    run = project.doit("package", env=bundle_env)
    assert run.executed == {"package:demo"}, run.text
