"""Inputs that used to end in a traceback or a hang: each is now one
DodoLambdaError naming the item, the file and the fix. In-process (no npm, no
doit subprocess) except where staged dependencies are needed."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from projects import Project

from dodo_lambda import DodoLambdaError, Function, Layer, build, npm
from dodo_lambda.aws import AwsTarget, connect
from dodo_lambda.context import RunContext
from dodo_lambda.layout import Layout
from dodo_lambda.tasks import lambda_tasks

HANDLER = "exports.handler = async () => 1;\n"


def function(tmp_path: Path, files: dict[str, str | bytes] | None = None, **kw) -> Function:
    src = tmp_path / "fn"
    src.mkdir(exist_ok=True)
    for name, text in (files or {"index.js": HANDLER}).items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return Function("demo", str(src), kw.pop("handler", "index.handler"), **kw)


def refused(fn: Function | Layer, tmp_path: Path, *needles: str) -> str:
    with pytest.raises(DodoLambdaError) as info:
        build.package(fn, RunContext(tmp_path / "build"))
    message = str(info.value)
    assert message.startswith(f"{fn.kind} '{fn.name}': "), message
    for needle in needles:
        assert needle in message, message
    assert not Layout.of(tmp_path / "build", fn).zip.exists()
    return message


def names(fn: Function, tmp_path: Path) -> list[str]:
    import zipfile

    build.package(fn, RunContext(tmp_path / "build"))
    with zipfile.ZipFile(Layout.of(tmp_path / "build", fn).zip) as z:
        return z.namelist()


@pytest.mark.parametrize("line", ["!", "\\", "[z-a]"])
def test_invalid_lambdaignore_line(tmp_path: Path, line: str) -> None:
    fn = function(tmp_path, {"index.js": HANDLER, ".lambdaignore": f"*.md\n{line}\n"})
    refused(fn, tmp_path, ".lambdaignore line 2", repr(line), "not a valid gitignore pattern")


def test_invalid_exclude_pattern(tmp_path: Path) -> None:
    refused(function(tmp_path, exclude=["[z-a]"]), tmp_path, "exclude=: '[z-a]'")


def test_lambdaignore_not_utf8(tmp_path: Path) -> None:
    fn = function(tmp_path, {"index.js": HANDLER, ".lambdaignore": b"*.md\ncaf\xe9\n"})
    refused(fn, tmp_path, ".lambdaignore line 2 is not valid UTF-8", "save the file as UTF-8")


def test_lambdaignore_fifo_does_not_hang(tmp_path: Path) -> None:
    fn = function(tmp_path)
    os.mkfifo(Path(fn.source) / ".lambdaignore")
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            build.package(fn, RunContext(tmp_path / "build"))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert outcome, "reading a FIFO .lambdaignore hung"
    assert isinstance(outcome[0], DodoLambdaError), outcome
    assert ".lambdaignore is not a regular file" in str(outcome[0])


def test_symlink_loop_through_two_folders(tmp_path: Path) -> None:
    fn = function(tmp_path, {"index.js": HANDLER, "a/x.js": "", "b/y.js": ""})
    os.symlink("../b", Path(fn.source) / "a" / "to_b")
    os.symlink("../a", Path(fn.source) / "b" / "to_a")
    refused(fn, tmp_path, "makes a loop", ".lambdaignore")
    (Path(fn.source) / ".lambdaignore").write_text("to_a\nto_b\n")
    assert names(fn, tmp_path) == ["a/x.js", "b/y.js", "index.js"]


def test_symlink_to_a_sibling_folder_twice_is_not_a_loop(tmp_path: Path) -> None:
    fn = function(tmp_path, {"index.js": HANDLER, "shared/s.js": ""})
    os.mkdir(Path(fn.source) / "a")
    os.symlink("../shared", Path(fn.source) / "a" / "s1")
    os.symlink("shared", Path(fn.source) / "s2")
    assert names(fn, tmp_path) == ["a/s1/s.js", "index.js", "s2/s.js", "shared/s.js"]


def test_file_name_not_utf8(tmp_path: Path) -> None:
    fn = function(tmp_path)
    with open(os.path.join(os.fsencode(fn.source), b"caf\xe9.js"), "wb") as f:
        f.write(b"1")
    refused(fn, tmp_path, "caf\\xe9.js", "not valid UTF-8", "rename it")
    (Path(fn.source) / ".lambdaignore").write_text("caf?.js\n")
    assert names(fn, tmp_path) == ["index.js"]


@pytest.mark.parametrize("lock", ["[]", '{"packages": []}', '{"dependencies": "x"}', "\"x\""])
def test_lock_file_of_the_wrong_shape(tmp_path: Path, lock: str) -> None:
    fn = function(tmp_path, {"index.js": HANDLER, "package-lock.json": lock,
                             "package.json": '{"name": "d", "dependencies": {"x": "1.0.0"}}'})
    with pytest.raises(DodoLambdaError, match=r"^function 'demo': .*package-lock.json is not an"
                                              r" npm lock file.*npm install --package-lock-only"):
        npm.install(fn, RunContext(tmp_path / "build"))
    assert not Layout.of(tmp_path / "build", fn).install_record.exists()


@pytest.mark.parametrize(("where", "url"), [("endpoint=", "localhost:5000"),
                                            ("AWS_ENDPOINT_URL", "127.0.0.1:5000"),
                                            ("AWS_ENDPOINT_URL_S3", "http://"),
                                            ("endpoint=", "http://localhost:port")])
def test_endpoint_without_scheme(monkeypatch: pytest.MonkeyPatch, where: str,
                                 url: str) -> None:
    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(key)
    target = AwsTarget(region="us-east-1", endpoint=url if where == "endpoint=" else None)
    if where != "endpoint=":
        monkeypatch.setenv(where, url)
    with pytest.raises(DodoLambdaError, match=rf"^function 'x': {where}.*not an http\(s\) URL"):
        connect(target, who="function 'x'")


def test_package_json_without_dependencies_needs_no_npm(tmp_path: Path) -> None:
    fn = function(tmp_path, {"index.js": "export const handler = async () => 1;\n",
                             "package.json": '{"type": "module"}'})
    assert not npm.has_dependencies(fn)
    tasks = list(lambda_tasks(fn, build_dir=str(tmp_path / "build")))
    assert not [t for t in tasks if t["basename"] == "npm"]
    assert names(fn, tmp_path) == ["index.js", "package.json"]


def test_build_dir_reached_through_a_symlink_is_refused(tmp_path: Path) -> None:
    fn = function(tmp_path)
    build_dir = Path(fn.source) / ".build"  # inside the source: left out of the walk...
    build.package(fn, RunContext(Path(build_dir)))
    os.symlink(".build", Path(fn.source) / "out")  # ...but not when a link leads there
    Layout.of(build_dir, fn).zip.unlink()
    with pytest.raises(DodoLambdaError, match=r"^function 'demo': out/.* is .*"
                                              r"inside the build dir.*build_dir="):
        build.package(fn, RunContext(Path(build_dir)))
    assert not Layout.of(build_dir, fn).zip.exists()


def test_handler_left_out_by_lambdaignore(tmp_path: Path) -> None:
    fn = function(tmp_path, {"index.js": HANDLER, ".lambdaignore": "*.js\n"})
    refused(fn, tmp_path, "handler 'index.handler' needs", "/fn/index.js", "left out",
            "include=['index.js']")
    ok = function(tmp_path, include=["index.js"])
    assert names(ok, tmp_path) == ["index.js"]


def test_handler_unreadable_form_is_a_warning(tmp_path: Path, caplog) -> None:
    fn = function(tmp_path, {"index.js": "module.exports = require('./impl');\n",
                             "impl.js": HANDLER})
    with caplog.at_level("WARNING", logger="dodo_lambda"):
        assert names(fn, tmp_path) == ["impl.js", "index.js"]
    assert any("cannot tell whether" in r.getMessage() and "function 'demo'" in r.getMessage()
               for r in caplog.records)


def test_a_new_runtime_checks_the_handler_again(tmp_path: Path) -> None:
    fn = function(tmp_path, {"index.js": "exports.handler = (e, c, cb) => cb(null, 1);\n"},
                  runtime="nodejs22.x")
    build.package(fn, RunContext(tmp_path / "build"))
    assert build.is_packaged(fn, RunContext(tmp_path / "build"))
    moved = Function(fn.name, fn.source, fn.handler, runtime="nodejs24.x")
    assert not build.is_packaged(moved, RunContext(tmp_path / "build"))
    with pytest.raises(DodoLambdaError, match="takes a callback"):
        build.package(moved, RunContext(tmp_path / "build"))


# -- layers take their users' architecture ----------------------------------------------


def _layer(tmp_path: Path, **kw) -> Layer:
    src = tmp_path / "layer"
    (src / "nodejs").mkdir(parents=True, exist_ok=True)
    (src / "package.json").write_text('{"name": "shared"}')
    return Layer("shared", str(src), **kw)


def _task(tasks: list[dict], basename: str, name: str) -> dict:
    return next(t for t in tasks if t["basename"] == basename and t["name"] == name)


def test_layer_takes_its_users_architecture(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    fn = function(tmp_path, architecture="arm64", layers=[layer])
    tasks = list(lambda_tasks(fn, layer, build_dir=str(tmp_path / "build")))
    built = _task(tasks, "package", "shared")["actions"][0][1][1][0]
    assert built.architecture == "arm64" and built == layer
    assert "--cpu=arm64" in npm.flags(built)
    assert layer.architecture == "x86_64"  # the user's object is left alone


def _failure(tasks: list[dict], basename: str, name: str) -> str:
    task = _task(tasks, basename, name)
    return task["actions"][0][1][0]


def test_layer_users_on_two_architectures(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    a = function(tmp_path, architecture="arm64", layers=[layer])
    b = Function("other", a.source, "index.handler", layers=[layer])
    tasks = list(lambda_tasks(a, b, layer, build_dir=str(tmp_path / "build")))
    message = _failure(tasks, "layer", "shared")
    assert "function 'demo' (arm64)" in message and "function 'other' (x86_64)" in message
    assert "architectures=" in _failure(tasks, "deploy", "demo")


def test_layer_stated_architecture_or_runtime_excludes_a_user(tmp_path: Path) -> None:
    layer = _layer(tmp_path, architectures=["x86_64"], runtimes=["nodejs22.x"])
    arm = function(tmp_path, architecture="arm64", layers=[layer])
    tasks = list(lambda_tasks(arm, layer, build_dir=str(tmp_path / "build")))
    message = _failure(tasks, "deploy", "demo")
    assert message.startswith("function 'demo' runs on arm64 but layer 'shared'"), message
    assert _task(tasks, "layer", "shared")["actions"][0][1][0] == "layer"  # the layer builds
    newer = Function("demo", arm.source, "index.handler", layers=[layer])
    tasks = list(lambda_tasks(newer, layer, build_dir=str(tmp_path / "build")))
    assert "uses runtime nodejs24.x but layer 'shared' lists runtimes=['nodejs22.x']" in \
        _failure(tasks, "package", "demo")


# -- doit runs: one line, nonzero, no traceback -------------------------------------------


def _doit_fails(project: Project, *needles: str, command: str = "package") -> str:
    run = project.doit(command)
    assert run.rc != 0, run.text
    assert "Traceback" not in run.text, run.text
    line = next((ln for ln in run.text.splitlines() if all(n in ln for n in needles)), None)
    assert line, run.text
    return line


def test_wrong_types_in_dodo_py_fail_when_doit_runs(project: Project) -> None:
    dodo = project.root / "dodo.py"
    dodo.write_text(
        "from dodo_lambda import Function, lambda_tasks\n"
        "DOIT_CONFIG = {'backend': 'sqlite3', 'verbosity': 2}\n"
        "fns = [Function(None, 'fn', 'index.handler'),\n"
        "       Function('b', 'fn', 'index.handler', exclude=123),\n"
        "       Function('c', 'fn', 'index.handler', include=[1], environment=['A'])]\n"
        "def task_lambda():\n"
        "    yield from lambda_tasks(*fns)\n")
    run = project.doit("--continue", "package")
    assert run.rc != 0 and "Traceback" not in run.text, run.text
    assert "function None: invalid name None" in run.text
    assert "function 'b': exclude=123 must be a list of strings" in run.text
    assert "function 'c': include= must hold strings only, not 1" in run.text


def test_handler_errors_stop_the_package(project: Project) -> None:
    (project.fn / "index.js").write_text(
        "const { greet } = require('greet');\nexport const handler = async () => greet('x');\n")
    line = _doit_fails(project, "function 'demo'", "fn/index.js uses ES module syntax")
    assert "\"type\": \"module\"" in line and "index.mjs" in line
    assert not project.zip_path().exists()


def test_blocked_runtime_fails_before_anything(project: Project) -> None:
    project.configure([{"name": "demo", "source": "fn", "handler": "index.handler",
                        "runtime": "nodejs20.x"}])
    line = _doit_fails(project, "function 'demo'", "2026-09-30", command="deploy")
    assert "runtime='nodejs24.x'" in line and "allow_deprecated_runtime=True" in line


def test_file_named_node_modules_beside_staged_dependencies(project: Project) -> None:
    import shutil

    shutil.rmtree(project.fn / "node_modules")
    (project.fn / "node_modules").write_text("not a folder\n")
    _doit_fails(project, "function 'demo'", "node_modules is a file", "rename or exclude")
    assert not project.zip_path().exists()


def test_build_dir_that_is_the_source(tmp_path: Path) -> None:
    root = tmp_path / "fn"
    root.mkdir()
    (root / "index.js").write_text(HANDLER)
    (root / "dodo.py").write_text(
        "from dodo_lambda import Function, lambda_tasks\n"
        "DOIT_CONFIG = {'backend': 'sqlite3'}\n"
        "def task_lambda():\n"
        "    yield from lambda_tasks(Function('here', source='.', handler='index.handler'),\n"
        "                            build_dir='.')\n")
    line = _doit_fails(Project(root), "function 'here'", "build_dir='.' is its source folder")
    assert "'.dodo_lambda'" in line
    assert not list(root.rglob("*.zip"))


def test_layer_package_json_order_of_checks(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    (Path(layer.source) / "package.json").write_text(json.dumps({"name": "shared"}))
    assert layer.problem is None and not npm.has_dependencies(layer)


def test_handler_from_a_layer_dependency_not_installed_yet(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    (Path(layer.source) / "package.json").write_text(
        '{"name": "shared", "dependencies": {"shared-handlers": "1.0.0"}}')
    fn = function(tmp_path, {"other.js": ""}, handler="shared-handlers.handler", layers=[layer])
    assert names(fn, tmp_path) == ["other.js"]
    # the same files without the layer: the package is built (and checked) again
    lonely = function(tmp_path, {"other.js": ""}, handler="shared-handlers.handler")
    assert not build.is_packaged(lonely, RunContext(tmp_path / "build"))
    with pytest.raises(DodoLambdaError, match="fn/shared-handlers.js"):
        build.package(lonely, RunContext(tmp_path / "build"))
