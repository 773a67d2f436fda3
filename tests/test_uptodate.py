"""What the up-to-date checks see: an edit that keeps a file's size and mtime,
a staged tree altered behind npm's back, and node or npm upgraded within a
major version."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

from projects import Project, npm_env

from dodo_lambda import npm
from dodo_lambda.layout import Layout


def _plain_env() -> dict[str, str]:
    """The tests' environment as a developer's shell: no CI, no full check asked."""
    return {k: v for k, v in npm_env().items() if k not in ("CI", "DODO_LAMBDA_VERIFY_STAGING")}


def _rewrite_keeping_stats(path: Path, text: str) -> None:
    """What `cp -p`, `tar x` and `rsync -t` leave: new bytes, the old size and mtime."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _packed(project: Project, arcname: str) -> str:
    with zipfile.ZipFile(project.zip_path()) as z:
        return z.read(arcname).decode()


def test_edit_keeping_size_and_mtime_is_packed(project: Project) -> None:
    assert project.doit("package").rc == 0
    util = project.fn / "lib" / "util.js"
    edited = util.read_text().replace("[", "<").replace("]", ">")
    _rewrite_keeping_stats(util, edited)
    run = project.doit("package")
    assert run.executed == {"package:demo"}, run.text
    assert _packed(project, "lib/util.js") == edited


def test_staged_file_rewritten_in_place_is_found_by_the_full_check(project: Project) -> None:
    """In place, with its size and mtime kept, no folder stamp moves: the plain
    check trusts the tree (that is what makes it cheap). The full check finds the
    file: asked for (verify_staging=1), on CI, or a day after the last one."""
    assert project.doit("package", env=_plain_env()).rc == 0
    layout = project.layout()
    target = layout.node_modules / "greet" / "index.js"
    pristine = target.read_text()
    tampered = "/" * (len(pristine) - 1) + "\n"

    _rewrite_keeping_stats(target, tampered)
    assert project.doit("package", env=_plain_env()).executed == set()  # documented

    asked = project.doit("package", "verify_staging=1", env=_plain_env())
    assert asked.executed == {"npm:demo", "package:demo"}, asked.text
    assert target.read_text() == pristine
    assert _packed(project, "node_modules/greet/index.js") == pristine

    _rewrite_keeping_stats(target, tampered)
    on_ci = project.doit("package", env={**_plain_env(), "CI": "true"})
    assert on_ci.executed == {"npm:demo", "package:demo"}, on_ci.text
    assert target.read_text() == pristine

    _rewrite_keeping_stats(target, tampered)
    npm._update_state(layout, checked=time.time() - npm.FULL_CHECK_AGE - 60)
    a_day_later = project.doit("package", env=_plain_env())
    assert a_day_later.executed == {"npm:demo", "package:demo"}, a_day_later.text
    assert target.read_text() == pristine
    # a clean full check changes nothing
    assert project.doit("package", "verify_staging=1", env=_plain_env()).executed == set()


def _shim(folder: Path, tool: str, version: str, log: Path) -> None:
    """`tool --version` says ``version`` (and is logged); anything else runs the real tool."""
    real = shutil.which(tool)
    path = folder / tool
    path.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo {tool} >> "{log}";'
                    f' echo {version}; exit 0; fi\nexec "{real}" "$@"\n')
    path.chmod(0o755)


def test_tools_upgraded_within_a_major_are_asked_once(project: Project, tmp_path: Path) -> None:
    majors = {tool: subprocess.run([tool, "--version"], capture_output=True, text=True,
                                   check=True).stdout.strip().lstrip("v").split(".")[0]
              for tool in ("node", "npm")}
    shims, log = tmp_path / "shims", tmp_path / "versions.log"
    shims.mkdir()
    env = {**npm_env(), "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}

    def upgrade(minor: int) -> None:
        for tool, major in majors.items():
            _shim(shims, tool, f"{'v' if tool == 'node' else ''}{major}.{minor}.0", log)

    def asked() -> list[str]:
        return sorted(log.read_text().split()) if log.exists() else []

    upgrade(1)
    assert project.doit("package", env=env).executed == {"npm:demo", "package:demo"}
    assert asked() == ["node", "npm"]
    upgrade(2)  # new executables, same majors: asked again, nothing reinstalled
    assert project.doit("package", env=env).executed == set()
    assert asked() == ["node", "node", "npm", "npm"]
    for _ in range(2):  # remembered: later no-ops spawn neither
        assert project.doit("package", env=env).executed == set()
    assert asked() == ["node", "node", "npm", "npm"]
    assert Layout(project.build_dir, "function", "demo").install_record.is_file()
