"""Bad input: one clear line naming the function, the file and the fix; a nonzero
exit; no traceback; nothing half-written that a later run would trust."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from projects import FUNCTION, Project, lock, make_package, pack


def _fails(project: Project, *needles: str) -> str:
    run = project.doit("package")
    assert run.rc != 0, run.text
    assert "Traceback" not in run.text, run.text
    lines = [ln for ln in run.text.splitlines() if "function 'demo'" in ln or "layer '" in ln]
    assert lines, run.text
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not project.zip_path().exists()
    leftovers = [p.name for p in (project.root / ".dodo_lambda").rglob("*.tmp")]
    assert not leftovers
    return lines[0]


def test_missing_source(project: Project) -> None:
    project.configure([{**FUNCTION, "source": "nope"}])
    _fails(project, "nope", "source=")


@pytest.mark.parametrize("handler", ["index", "missing.handler", ".handler"])
def test_bad_handler(project: Project, handler: str) -> None:
    project.configure([{**FUNCTION, "handler": handler}])
    _fails(project, "handler")


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("runtime", "python3.12", "runtime"),
    ("architecture", "arm", "architecture"),
])
def test_bad_settings(project: Project, field: str, value: str, needle: str) -> None:
    project.configure([{**FUNCTION, field: value}])
    _fails(project, needle)


def test_broken_package_json(project: Project) -> None:
    (project.fn / "package.json").write_text('{"name": "demo",')
    _fails(project, "package.json", "not valid JSON")


def test_missing_lock(project: Project) -> None:
    (project.fn / "package-lock.json").unlink()
    _fails(project, "package-lock.json", "npm install --package-lock-only")


def test_debug_shows_the_traceback_and_its_cause(project: Project) -> None:
    (project.fn / "package.json").write_text('{"name": "demo",')
    env = dict(os.environ, DODO_LAMBDA_DEBUG="1")
    run = project.doit("package", env=env)
    assert run.rc != 0
    assert "Traceback" in run.err and "JSONDecodeError" in run.err  # the cause, kept
    assert "function 'demo': " in run.text and "not valid JSON" in run.text


def test_next_step_is_a_doit_command(project: Project) -> None:
    # the core names the step as data; the adapter renders the command to run
    run = project.doit("-s", "package:demo")  # alone (-s): nothing is installed
    assert run.rc != 0 and "Traceback" not in run.text
    assert "dependencies are not installed; run `doit npm:demo`" in run.text


def test_npm_failure_leaves_nothing_trusted(project: Project, tmp_path: Path) -> None:
    assert project.doit("package").rc == 0
    project.zip_path().unlink()
    # a dependency whose install script fails: npm ci fails, offline and every time
    breaks = make_package(tmp_path, "breaks", {"index.js": ""})
    manifest = json.loads((breaks / "package.json").read_text())
    manifest["scripts"] = {"install": "node -e \"console.error('no compiler'); process.exit(3)\""}
    (breaks / "package.json").write_text(json.dumps(manifest))
    pack(breaks, project.root / "pkgs")
    manifest = json.loads((project.fn / "package.json").read_text())
    manifest["dependencies"]["breaks"] = "file:../pkgs/breaks-1.0.0.tgz"
    (project.fn / "package.json").write_text(json.dumps(manifest))
    lock(project.fn)
    project.configure([{**FUNCTION, "scripts": True}])  # scripts are off by default
    line = _fails(project, "npm ci", "package-lock.json")
    assert "exit code 3" in line or "code 3" in line, line
    record = project.layout().install_record
    assert not record.exists()
    again = project.doit("package")
    assert again.rc != 0 and "npm:demo" in again.text


def test_symlink_escaping_source(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    os.symlink(outside, project.fn / "lib" / "escape.js")
    _fails(project, "lib/escape.js", "outside")


def test_broken_symlink(project: Project) -> None:
    os.symlink("does-not-exist.js", project.fn / "lib" / "dangling.js")
    _fails(project, "lib/dangling.js", "broken")


def test_excluded_broken_symlink_is_fine(project: Project) -> None:
    os.symlink("does-not-exist.js", project.fn / "lib" / "dangling.js")
    (project.fn / ".lambdaignore").write_text("lib/dangling.js\n")
    assert project.doit("package").rc == 0


def test_symlink_inside_source_packs_the_target(project: Project) -> None:
    os.symlink("util.js", project.fn / "lib" / "alias.js")
    os.symlink("lib", project.fn / "lib2")
    assert project.doit("package").rc == 0
    names = project.names()
    assert "lib/alias.js" in names and "lib2/util.js" in names


def test_over_the_unzipped_limit(project: Project) -> None:
    big = project.fn / "assets" / "model.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(270_000_000)
    line = _fails(project, "262,144,000", "assets/")
    assert "270.0 MB" in line


def test_two_functions_one_broken_other_builds(project: Project) -> None:
    project.configure([{**FUNCTION, "source": "nope"},
                       {"name": "ok", "source": "fn", "handler": "index.handler"}])
    run = project.doit("--continue", "package")
    assert run.rc != 0 and "Traceback" not in run.text
    assert project.zip_path("ok").is_file()


def test_same_name_twice_and_not_an_item(project: Project) -> None:
    dodo = project.root / "dodo.py"
    dodo.write_text(dodo.read_text().replace(
        "yield from lambda_tasks(*functions,",
        "yield from lambda_tasks(*functions, functions[0], 'oops', 'oops',"))
    project.configure([FUNCTION, {**FUNCTION, "handler": "index.other"}])
    run = project.doit("--continue", "package")
    assert run.rc != 0 and "Traceback" not in run.text, run.text
    assert "function 'demo' is defined twice with different settings" in run.text
    assert "takes Function and Layer objects, not 'oops'" in run.text
    assert project.zip_path().is_file()  # the first definition still builds


def test_unwritable_build_dir_is_one_line(project: Project) -> None:
    import shutil

    assert project.doit("package").rc == 0
    dist = project.layout().zip.parent
    shutil.rmtree(dist)
    dist.write_text("a file where the build dir's dist/ folder belongs")
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => s;\n")
    run = project.doit("package")
    assert run.rc != 0 and "Traceback" not in run.text, run.text
    line = next(ln for ln in run.text.splitlines() if ln.startswith("function 'demo': "))
    assert "writing the package failed" in line and "dist" in line and "run again" in line
