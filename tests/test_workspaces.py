"""npm workspaces: each function and layer installed from the root lock, its
closure only, workspace packages as files, incremental per function. Offline:
external packages are local tarballs, workspace packages real folders."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from projects import DODO, Project, copied, make_package, npm_env, pack

from dodo_lambda import workspaces, wslock
from dodo_lambda.errors import DodoLambdaError

FUNCTIONS = [
    {"name": "a", "source": "functions/a", "handler": "index.handler"},
    {"name": "b", "source": "functions/b", "handler": "index.handler"},
    {"name": "c", "source": "functions/c", "handler": "index.handler"},
]
LAYERS = [{"name": "common", "source": "layers/common", "runtimes": ["nodejs24.x"]}]
EVERYTHING = {"npm:a", "npm:b", "npm:c", "npm:common",
              "package:a", "package:b", "package:c", "package:common"}
SHARED_USERS = {"npm:a", "npm:b", "npm:common", "package:a", "package:b", "package:common"}
REPORT = "module.exports = () => require('./package.json').version;\n"
# a workspace package's build step, as npm runs it when it packs a folder
PREPARE = "node -e \"require('fs').writeFileSync('PREPARED', process.cwd())\""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _manifest(path: Path, name: str, deps: dict[str, str], **extra: object) -> None:
    _write(path / "package.json", json.dumps(
        {"name": name, "version": "1.0.0", "private": True, "dependencies": deps, **extra},
        indent=2))


def _registry_like(root: Path) -> None:
    """External dependencies named by version range, as from a registry, while the
    lock still resolves them to the local tarballs (npm ci accepts that): a lock
    entry can then change alone, as `npm update` changes it."""
    def ranged(deps: dict[str, str]) -> dict[str, str]:
        return {k: "^" + v.rsplit("-", 1)[1].removesuffix(".tgz") if v.endswith(".tgz") else v
                for k, v in deps.items()}

    for path in [root / "package.json", *root.glob("*/*/package.json")]:
        data = json.loads(path.read_text())
        for f in ("dependencies", "devDependencies"):
            if f in data:
                data[f] = ranged(data[f])
        path.write_text(json.dumps(data, indent=2))
    lock = json.loads((root / "package-lock.json").read_text())
    for key, meta in lock["packages"].items():
        if "node_modules/" not in key:
            for f in ("dependencies", "devDependencies"):
                if f in meta:
                    meta[f] = ranged(meta[f])
    (root / "package-lock.json").write_text(json.dumps(lock, indent=2))


@pytest.fixture(scope="session")
def mono_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A monorepo (workspaces functions/*, layers/*, packages/*, one root lock):
    functions a and b and layer common use the workspace package @mono/shared, c
    does not; b pins ext-c 1 where shared needs ext-c 2; everything has a dev
    dependency. Packaged once here; tests copy it, built and up to date."""
    root = tmp_path_factory.mktemp("mono") / "repo"
    pkgs = root / "pkgs"
    pkgs.mkdir(parents=True)
    src = tmp_path_factory.mktemp("mono-pkgsrc")
    tar = {}
    for name, version in (("ext-a", "1.0.0"), ("ext-a", "1.1.0"), ("ext-b", "1.0.0"),
                          ("ext-c", "1.0.0"), ("ext-c", "2.0.0"), ("ext-d", "1.0.0"),
                          ("devtool", "1.0.0")):
        folder = make_package(src / version, name, {"index.js": REPORT}, version=version)
        tar[name, version] = pack(folder, pkgs)

    def dep(name: str, version: str = "1.0.0") -> str:
        return f"file:../../pkgs/{tar[name, version]}"

    _write(root / "package.json", json.dumps({
        "name": "mono", "private": True, "workspaces": ["functions/*", "layers/*", "packages/*"],
        "devDependencies": {"devtool": f"file:pkgs/{tar['devtool', '1.0.0']}"}}, indent=2))
    shared = root / "packages" / "shared"
    _manifest(shared, "@mono/shared", {"ext-a": dep("ext-a"), "ext-c": dep("ext-c", "2.0.0")},
              main="index.js", files=["index.js", "lib/"],
              devDependencies={"devtool": dep("devtool")}, scripts={"prepare": PREPARE})
    _write(shared / "index.js", "const util = require('./lib/util');\n"
           "module.exports = () => ({shared: util.word, a: require('ext-a')(),"
           " c: require('ext-c')()});\n")
    _write(shared / "lib" / "util.js", "exports.word = 'one';\n")
    _write(shared / "README.md", "# shared\n")
    _write(shared / "test" / "util.test.js", "// not shipped: not in files\n")
    _write(shared / "lib" / ".env", "SECRET=1\n")  # never copied, files= or not
    for name, deps in (("a", {"@mono/shared": "*", "ext-b": dep("ext-b")}),
                       ("b", {"@mono/shared": "^1.0.0", "ext-c": dep("ext-c")}),
                       ("c", {"ext-b": dep("ext-b"), "ext-d": dep("ext-d")}),
                       ("d", {"@mono/shared": "*"})):
        fn = root / "functions" / name
        _manifest(fn, f"fn-{name}", deps, devDependencies={"devtool": dep("devtool")})
        uses = "require('@mono/shared')()" if "@mono/shared" in deps else "null"
        own = "require('ext-c')()" if name == "b" else "null"
        _write(fn / "index.js", f"exports.handler = async () => ({{shared: {uses}, c: {own}}});\n")
    _manifest(root / "layers" / "common", "common", {"@mono/shared": "*"})
    _write(root / "layers" / "common" / "nodejs" / "hello.js", "exports.hi = 1;\n")
    subprocess.run(["npm", "install", "--package-lock-only", "--offline", "--ignore-scripts"],
                   cwd=root, check=True, capture_output=True, env=npm_env())
    _registry_like(root)
    (root / "dodo.py").write_text(DODO)
    project = Project(root)
    project.configure(FUNCTIONS, LAYERS)
    run = project.doit("package")
    assert run.rc == 0, run.text
    assert run.executed == EVERYTHING, run.text
    return root


@pytest.fixture
def mono(mono_template: Path, tmp_path: Path) -> Iterator[Project]:
    yield copied(mono_template, tmp_path / "repo")


def _zip(project: Project, name: str, kind: str = "function") -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(project.layout(name, kind).zip) as z:
        return {i.filename: i for i in z.infolist()}


def _read(project: Project, name: str, member: str) -> str:
    with zipfile.ZipFile(project.layout(name).zip) as z:
        return z.read(member).decode()


def _run_handler(project: Project, name: str, where: Path) -> dict:
    subprocess.run(["unzip", "-q", str(project.layout(name).zip), "-d", str(where)], check=True)
    script = "require('./index.js').handler().then(r => console.log(JSON.stringify(r)))"
    out = subprocess.run(["node", "-e", script], cwd=where, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_zip_holds_the_closure_with_workspace_packages_as_files(mono_template: Path,
                                                                tmp_path: Path) -> None:
    project = Project(mono_template)
    a = _zip(project, "a")
    shared = "node_modules/@mono/shared/"
    assert {shared + "index.js", shared + "lib/util.js", shared + "package.json",
            shared + "README.md", "node_modules/ext-a/index.js", "node_modules/ext-b/index.js",
            "node_modules/ext-c/index.js", "index.js", "package.json"} <= set(a)
    for info in a.values():  # files, never links into the checkout
        assert not stat.S_ISLNK(info.external_attr >> 16), info.filename
    assert _read(project, "a", shared + "lib/util.js") == "exports.word = 'one';\n"
    # not shipped: another function's dependency, dev dependencies, what shared's
    # package.json "files" leaves out, secrets
    for name in a:
        assert not name.startswith(("node_modules/ext-d/", "node_modules/devtool/")), name
        assert "/test/" not in name and not name.endswith(".env"), name
    assert not [n for n in _zip(project, "c") if n.startswith("node_modules/@mono/")]
    # b pins ext-c 1 while shared needs ext-c 2: each finds its own, as in the checkout
    assert _run_handler(project, "b", tmp_path / "b") == {
        "shared": {"shared": "one", "a": "1.0.0", "c": "2.0.0"}, "c": "1.0.0"}
    assert not [n for n in _zip(project, "b") if n.startswith(("node_modules/ext-b/",
                                                                 "node_modules/ext-d/"))]
    layer = _zip(project, "common", "layer")
    assert {"nodejs/hello.js", "nodejs/node_modules/@mono/shared/index.js",
            "nodejs/node_modules/ext-a/index.js"} <= set(layer)


def test_editing_a_workspace_package_repackages_only_its_users(mono: Project) -> None:
    assert mono.doit("package").executed == set()  # a copied checkout is up to date
    shared = mono.root / "packages" / "shared"
    (shared / "lib" / "util.js").write_text("exports.word = 'two';\n")
    run = mono.doit("package")
    assert run.rc == 0, run.text
    assert run.executed == SHARED_USERS, run.text
    assert "npm not run" in run.err  # copied again, no npm ci
    assert _read(mono, "a", "node_modules/@mono/shared/lib/util.js") == "exports.word = 'two';\n"
    # in worker processes too (whose output interleaves: judged by the zips), none may
    # pack what the staged tree held before the copy
    zip_c = mono.layout("c").zip
    untouched = (zip_c.stat().st_mtime_ns, zip_c.stat().st_ino)
    (shared / "lib" / "util.js").write_text("exports.word = 'three';\n")
    assert mono.doit("-n", "2", "-P", "process", "package").rc == 0
    for name in ("a", "b"):
        assert _read(mono, name, "node_modules/@mono/shared/lib/util.js") == \
            "exports.word = 'three';\n", name
    assert (zip_c.stat().st_mtime_ns, zip_c.stat().st_ino) == untouched  # c not repackaged
    # a file shared's "files" leaves out, and a touch: nothing to do
    (shared / "test" / "util.test.js").write_text("// still not shipped\n")
    (shared / "index.js").touch()
    assert mono.doit("package").executed == set()


def test_root_lock_change_reruns_npm_only_where_the_closure_holds_it(mono: Project) -> None:
    lock_path = mono.root / "package-lock.json"
    lock = json.loads(lock_path.read_text())
    tarball = mono.root / "pkgs" / "ext-a-1.1.0.tgz"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    # what `npm update ext-a` does: one entry of the root lock moves
    lock["packages"]["node_modules/ext-a"].update(
        version="1.1.0", resolved="file:pkgs/ext-a-1.1.0.tgz", integrity=integrity)
    lock_path.write_text(json.dumps(lock, indent=2))
    run = mono.doit("package")
    assert run.rc == 0, run.text
    assert run.executed == SHARED_USERS, run.text  # c's closure has no ext-a
    assert "npm not run" not in run.err
    assert json.loads(_read(mono, "a", "node_modules/ext-a/package.json"))["version"] == "1.1.0"


def test_npm_never_runs_scripts_in_the_checkout(mono: Project) -> None:
    # scripts=True: npm would run shared's `prepare` where it packs shared from
    mono.configure([{**FUNCTIONS[0], "scripts": True}])
    run = mono.doit("package")
    assert run.rc == 0, run.text
    assert run.executed == {"npm:a", "package:a"}, run.text
    assert not list(mono.root.rglob("PREPARED"))
    assert "node_modules/@mono/shared/index.js" in mono.names("a")


def test_install_key_follows_the_closure_and_workspace_package_json(mono: Project,
                                                                     monkeypatch) -> None:
    from dodo_lambda import Function, npm

    monkeypatch.chdir(mono.root)
    versions = {"node": "20", "npm": "11"}
    fns = {x: Function(x, source=f"functions/{x}", handler="index.handler") for x in "abc"}
    before = {x: npm.install_key(fn, versions) for x, fn in fns.items()}
    manifest = json.loads(Path("packages/shared/package.json").read_text())
    Path("packages/shared/package.json").write_text(json.dumps({**manifest, "main": "lib/x.js"}))
    after = {x: npm.install_key(fn, versions) for x, fn in fns.items()}
    assert [x for x in "abc" if before[x] != after[x]] == ["a", "b"]
    # an entry only c's closure holds
    lock = json.loads(Path("package-lock.json").read_text())
    lock["packages"]["node_modules/ext-d"]["integrity"] = "sha512-changed"
    Path("package-lock.json").write_text(json.dumps(lock))
    again = {x: npm.install_key(fn, versions) for x, fn in fns.items()}
    assert [x for x in "abc" if again[x] != after[x]] == ["c"]


def test_install_key_kept_between_runs_still_follows_changes(mono: Project, monkeypatch) -> None:
    """The workspace part of the key is kept beside the install state while the files it
    read keep their stats; an edit of any of them, or of the root lock, is still seen."""
    from dodo_lambda import Function, npm, wslock
    from dodo_lambda.context import RunContext

    monkeypatch.chdir(mono.root)
    versions = {"node": "20", "npm": "11"}
    fns = {x: Function(x, source=f"functions/{x}", handler="index.handler") for x in "abc"}
    computed: list[str] = []
    real = wslock.install_key
    monkeypatch.setattr(wslock, "install_key",
                        lambda ws, item, ctx: computed.append(item.name) or real(ws, item, ctx))

    def keys() -> dict[str, dict]:
        ctx = RunContext(Path(".dodo_lambda"))  # a new run each time
        return {x: npm.install_key(fn, versions, ctx) for x, fn in fns.items()}

    first = [keys() for _ in range(3)][-1]
    computed.clear()
    assert keys() == first and computed == []  # kept: no closure computed
    manifest = json.loads(Path("packages/shared/package.json").read_text())
    Path("packages/shared/package.json").write_text(json.dumps({**manifest, "main": "lib/x.js"}))
    after = keys()
    assert [x for x in "abc" if after[x] != first[x]] == ["a", "b"]
    lock = json.loads(Path("package-lock.json").read_text())
    lock["packages"]["node_modules/ext-d"]["integrity"] = "sha512-changed"
    Path("package-lock.json").write_text(json.dumps(lock))
    again = keys()
    assert [x for x in "abc" if again[x] != after[x]] == ["c"]
    assert keys() == again


def test_bundled_workspace_function(mono: Project, bundle_env: dict[str, str],
                                    tmp_path: Path) -> None:
    mono.configure([{"name": "d", "source": "functions/d", "handler": "index.handler",
                     "bundle": {"format": "cjs"}}])
    run = mono.doit("package", env=bundle_env)
    assert run.rc == 0, run.text
    assert run.executed == {"npm:d", "bundle:d", "package:d"}, run.text
    assert not [n for n in mono.names("d") if n.startswith("node_modules/")]  # all bundled
    assert _run_handler(mono, "d", tmp_path / "d")["shared"]["shared"] == "one"
    (mono.root / "packages" / "shared" / "lib" / "util.js").write_text("exports.word = 'two';\n")
    run = mono.doit("package", env=bundle_env)
    assert run.executed == {"npm:d", "bundle:d", "package:d"}, run.text
    assert _run_handler(mono, "d", tmp_path / "d2")["shared"]["shared"] == "two"


# -- which package manager governs a folder -------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        _write(root / rel, text)


ROOT = json.dumps({"name": "r", "private": True, "workspaces": ["functions/*"]})
FN = json.dumps({"name": "f", "version": "1.0.0", "dependencies": {"x": "^1.0.0"}})


@pytest.mark.parametrize(("files", "needles"), [
    ({"fn/package.json": FN, "fn/pnpm-lock.yaml": ""}, ["fn/pnpm-lock.yaml", "pnpm"]),
    ({"fn/package.json": FN, "fn/yarn.lock": ""}, ["fn/yarn.lock", "yarn"]),
    ({"pnpm-workspace.yaml": "packages: ['fn']\n", "package.json": "{}",
      "fn/package.json": FN}, ["pnpm-workspace.yaml", "pnpm"]),
    ({"package.json": ROOT, "yarn.lock": "", "functions/fn/package.json": FN},
     ["yarn.lock", "yarn"]),
    ({"package.json": ROOT, "functions/fn/package.json": FN},
     ["is a workspace of", "no package-lock.json", "npm install"]),
    ({"package.json": ROOT, "package-lock.json": "{}", "other/fn/package.json": FN},
     ["other/fn", "not one of its workspaces", '"other/fn"', "npm install --package-lock-only"]),
])
def test_unsupported_layouts_are_one_line(tmp_path: Path, monkeypatch, files: dict[str, str],
                                          needles: list[str]) -> None:
    _tree(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    source = next(Path(p).parent for p in files if p.endswith("fn/package.json"))
    with pytest.raises(DodoLambdaError) as info:
        workspaces.find(source, "function 'f'")
    message = info.value.message
    assert message.startswith("function 'f': ") and "\n" not in message
    for needle in needles:
        assert needle in message, message
    if "pnpm" in needles or "yarn" in needles:
        assert "npm" in message and "package-lock.json" in message  # what is supported


def test_own_lock_inside_a_monorepo_stands_alone(tmp_path: Path, monkeypatch) -> None:
    _tree(tmp_path, {"package.json": ROOT, "package-lock.json": "{}", "yarn.lock": "",
                     "other/fn/package.json": FN, "other/fn/package-lock.json": "{}",
                     "functions/fn/package.json": FN})
    monkeypatch.chdir(tmp_path)
    assert workspaces.find(Path("other/fn"), "f") is None
    found = workspaces.find(Path("functions/fn"), "f")
    assert found is not None and found.member == "functions/fn"
    assert found.lock == Path("package-lock.json")  # npm's lock wins over yarn.lock beside it


def test_the_nearest_root_that_lists_the_folder_governs(tmp_path: Path, monkeypatch) -> None:
    # as npm looks for it: a nearer workspaces root that leaves the folder out is passed by
    _tree(tmp_path, {"package.json": json.dumps({"workspaces": ["apps/*/functions/*"]}),
                     "package-lock.json": "{}",
                     "apps/x/package.json": json.dumps({"workspaces": ["tools/*"]}),
                     "apps/x/functions/fn/package.json": FN})
    monkeypatch.chdir(tmp_path / "apps")
    found = workspaces.find(Path("x/functions/fn"), "f")
    assert found == workspaces.Workspace(Path(".."), Path("../package-lock.json"),
                                         "apps/x/functions/fn")


def test_yarn_monorepo_fails_before_anything_is_built(tmp_path: Path) -> None:
    _tree(tmp_path, {"package.json": ROOT, "yarn.lock": "",
                     "functions/fn/package.json": FN,
                     "functions/fn/index.js": "exports.handler = async () => 1;\n",
                     "dodo.py": DODO})
    project = Project(tmp_path)
    project.configure([{"name": "f", "source": "functions/fn", "handler": "index.handler"}])
    run = project.doit("package")
    assert run.rc != 0 and "Traceback" not in run.text
    lines = [ln for ln in run.text.splitlines() if ln.startswith("function 'f': ")]
    assert lines and "yarn" in lines[0] and "npm workspaces" in lines[0], run.text
    assert not (tmp_path / ".dodo_lambda" / "npm").exists()


# -- laying out a closure from a root lock ----------------------------------------------


def test_closure_is_relaid_where_the_root_had_two_levels(tmp_path: Path, monkeypatch) -> None:
    """The root hoists x@1 (wanted by y) while the function pins x@2 in its own
    node_modules: in the function's one-level tree x@2 takes the top, y gets x@1 below it."""
    entry = {"resolved": "https://registry.example/t.tgz", "integrity": "sha512-x"}
    _tree(tmp_path, {
        "package.json": ROOT,
        "functions/f/package.json": json.dumps(
            {"name": "f", "version": "1.0.0", "dependencies": {"x": "^2", "y": "^1", "z": "^1"},
             "devDependencies": {"dev": "^1"}}),
        "package-lock.json": json.dumps({"lockfileVersion": 3, "packages": {
            "": {"workspaces": ["functions/*"]},
            "functions/f": {"name": "f"},
            "node_modules/f": {"resolved": "functions/f", "link": True},
            "functions/f/node_modules/x": {**entry, "version": "2.0.0"},
            "node_modules/x": {**entry, "version": "1.0.0"},
            "node_modules/y": {**entry, "version": "1.0.0", "dependencies": {"x": "^1"}},
            "node_modules/z": {**entry, "version": "1.0.0", "dev": True,
                               "optionalDependencies": {"gone": "^1", "p": "^1"}},
            "node_modules/p": {**entry, "version": "1.0.0", "optional": True},
            "node_modules/dev": {**entry, "version": "1.0.0", "dev": True},
            "node_modules/other": {**entry, "version": "1.0.0"},
        }}),
    })
    monkeypatch.chdir(tmp_path)
    ws = workspaces.find(Path("functions/f"), "f")
    assert ws is not None
    packages = wslock.closure(ws, "f").lock["packages"]
    assert sorted(packages) == ["", "node_modules/p", "node_modules/x", "node_modules/y",
                                "node_modules/y/node_modules/x", "node_modules/z"]
    assert packages["node_modules/x"]["version"] == "2.0.0"
    assert packages["node_modules/y/node_modules/x"]["version"] == "1.0.0"
    assert packages["node_modules/p"]["optional"] is True  # reached through optional edges only
    assert "dev" not in packages["node_modules/z"] and "optional" not in packages["node_modules/z"]
    assert "devDependencies" not in packages[""]


# -- the example ------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "monorepo"


def test_monorepo_example_deploys_after_its_checks(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "monorepo"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".dodo_lambda", ".doit.db*",
                                                                  "node_modules"))
    for key in [k for k in __import__("os").environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.aws either
    project = Project(root)
    from dodo_lambda import emulator

    try:
        run = project.doit("deploy")
    finally:
        emulator.stop(project.build_dir)  # the server outlives doit: stop it here
    assert run.rc == 0, run.text
    order = [line[3:] for line in run.out.splitlines() if line.startswith(".  ")]
    assert {"install", "lint", "test", "npm:acme-orders", "npm:acme-invoices", "npm:acme-common",
            "layer:acme-common", "deploy:acme-orders", "deploy:acme-invoices"} <= set(order)
    first_deploy = min(order.index(t) for t in order if t.startswith(("deploy:", "layer:")))
    assert order.index("lint") < first_deploy and order.index("test") < first_deploy
    assert "function 'acme-invoices': created" in run.text
    orders = project.names("acme-orders")
    assert "node_modules/@acme/money/index.js" in orders  # from the workspace
    assert "node_modules/round-half-even/index.js" in orders  # its external dependency
    assert not [n for n in project.names("acme-invoices") if "money" in n or "round" in n]
    # run both handlers as Lambda would: invoices finds @acme/money in the layer
    task = tmp_path / "orders"
    subprocess.run(["unzip", "-q", str(project.layout("acme-orders").zip), "-d", str(task)],
                   check=True)
    script = ("require('./index.js').handler({customer: 'ada', items: [{cents: 625, quantity: 2}]})"
              ".then(r => console.log(JSON.stringify(r)))")
    out = subprocess.run(["node", "-e", script], cwd=task, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == {"customer": "ada", "total": "15.00 EUR"}
    opt, task = tmp_path / "opt", tmp_path / "invoices"
    for zip_path, dest in ((project.layout("acme-common", "layer").zip, opt),
                           (project.layout("acme-invoices").zip, task)):
        subprocess.run(["unzip", "-q", str(zip_path), "-d", str(dest)], check=True)
    script = ("require('./index.js').handler({number: 7, lines: [{text: 'tea', cents: 250,"
              " quantity: 3}]}).then(r => console.log(JSON.stringify(r)))")
    out = subprocess.run(["node", "-e", script], cwd=task, capture_output=True, text=True, check=True,
                         env={**npm_env(), "NODE_PATH": str(opt / "nodejs" / "node_modules")})
    assert json.loads(out.stdout.splitlines()[-1])["total"] == "7.50 EUR"


@pytest.mark.parametrize(("lock", "needles"), [
    ('{"lockfileVersion": 1, "dependencies": {}}', ["lockfileVersion 1", "npm install"]),
    ('{"lockfileVersion": 3,', ["not valid JSON", "npm install"]),
    ('{"lockfileVersion": 3, "packages": {"": {}}}', ["does not list the workspace functions/fn",
                                                      "npm install"]),
    ('{"lockfileVersion": 3, "packages": {"": {}, "functions/fn": {}}}',
     ["no entry for 'x'", "out of date", "npm install"]),
])
def test_a_root_lock_npm_cannot_use_is_one_line(tmp_path: Path, monkeypatch, lock: str,
                                                needles: list[str]) -> None:
    _tree(tmp_path, {"package.json": ROOT, "package-lock.json": lock,
                     "functions/fn/package.json": FN})
    monkeypatch.chdir(tmp_path)
    ws = workspaces.find(Path("functions/fn"), "f")
    assert ws is not None
    with pytest.raises(DodoLambdaError) as info:
        wslock.closure(ws, "function 'f'")
    assert info.value.message.startswith("function 'f': ") and "package-lock.json" in \
        info.value.message
    for needle in needles:
        assert needle in info.value.message, info.value.message


# -- a workspace package's files, as installed ---------------------------------------


def test_workspace_package_files_and_their_sync(tmp_path: Path) -> None:
    from dodo_lambda import localpkgs

    pkg = tmp_path / "pkg"
    _tree(pkg, {"package.json": json.dumps({"name": "p", "main": "lib/main.js",
                                            "bin": {"p": "cli.js"}, "files": ["dist", "!dist/*.map"]}),
                "dist/index.js": "1", "dist/index.js.map": "{}", "lib/main.js": "2", "cli.js": "3",
                "src/index.ts": "4", "README.md": "5", "LICENSE": "6", ".env": "SECRET",
                "node_modules/dep/index.js": "7"})
    names = [e.arcname for e in localpkgs.select(pkg, "p")]
    assert names == ["LICENSE", "README.md", "cli.js", "dist/index.js", "lib/main.js",
                     "package.json"]
    # no "files": everything but .npmignore's lines, the default excludes, node_modules
    other = tmp_path / "other"
    _tree(other, {"package.json": "{}", "index.js": "1", "test/a.test.js": "2", ".npmignore": "test/\n",
                  "dist/out.js": "3", ".gitignore": "dist/\n", "keys/id_rsa": "k"})
    names = [e.arcname for e in localpkgs.select(other, "o")]
    assert names == [".gitignore", "dist/out.js", "index.js", "package.json"]
    # sync: copies what changed, drops what went, keeps the copy's own node_modules
    dest = tmp_path / "staged"
    _tree(dest, {"old.js": "gone", "index.js": "stale", "node_modules/x/index.js": "npm's"})
    localpkgs.sync(localpkgs.select(other, "o"), dest)
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert found == [".gitignore", "dist/out.js", "index.js", "node_modules/x/index.js",
                     "package.json"]
    assert (dest / "index.js").read_text() == "1"


def test_watch_follows_a_workspace_package(mono: Project) -> None:
    """`doit watch:a`: an edit to the workspace package a copies reaches its zip (the npm
    step copies it again, npm not run); an edit to a file the package does not ship
    changes nothing."""
    from helpers import Watcher

    w = Watcher(mono, "watch:a", "--poll", "--no-deploy")
    try:
        w.wait_for(r"^watch: watching function 'a' through polling")
        shared = mono.root / "packages" / "shared"
        (shared / "lib" / "util.js").write_text("exports.word = 'watched';\n")
        w.wait_for(r"function 'a': \.\./\.\./packages/shared/lib/util\.js: rebuilt in \d+ ms$")
        assert _read(mono, "a", "node_modules/@mono/shared/lib/util.js") == \
            "exports.word = 'watched';\n"
        (shared / "test" / "util.test.js").write_text("// still not shipped\n")
        w.wait_for(r"function 'a': \.\./\.\./packages/shared/test/util\.test\.js: zip unchanged$")
        assert w.interrupt() == 0
    finally:
        w.kill()
    watched = mono.layout("a").zip.read_bytes()
    # doit's own record of the install record's bytes is older than the watch's copy:
    # the package step runs once more, and writes the same zip
    run = mono.doit("package:a")
    assert "npm:a" not in run.executed and mono.layout("a").zip.read_bytes() == watched
