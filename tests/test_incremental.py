"""A rebuild that reuses the previous zip's compressed entries gives exactly the
bytes of a cold build of the same inputs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from projects import Project


def _cold_bytes(project: Project) -> bytes:
    """Build again with no previous zip and no entry cache."""
    layout = project.layout()
    for folder in (layout.zip.parent, layout.entries.parent):
        shutil.rmtree(folder)
    run = project.doit("package")
    assert run.executed == {"package:demo"}, run.text
    return project.zip_path().read_bytes()


def _edit(fn: Path) -> None:
    (fn / "lib" / "util.js").write_text("exports.wrap = (s) => `(${s})`;\n")


def _add(fn: Path) -> None:
    (fn / "lib" / "added.js").write_text("exports.added = 1;\n" * 200)
    (fn / "aaa-first.js").write_text("// sorts before everything\n")


def _delete(fn: Path) -> None:
    (fn / "README.md").unlink()


def _chmod(fn: Path) -> None:
    (fn / "lib" / "util.js").chmod(0o755)


def _rename(fn: Path) -> None:
    os.rename(fn / "lib" / "util.js", fn / "lib" / "utils.js")
    (fn / "index.js").write_text((fn / "index.js").read_text().replace("./lib/util", "./lib/utils"))


def _big(fn: Path) -> None:
    # over the streaming threshold: compressed chunk by chunk, never read whole
    from dodo_lambda import archive

    with open(fn / "data.json", "w") as f:
        line = '{"id": %d, "name": "item-%d", "tags": ["a", "b", "c"]}\n'
        n = 0
        while f.tell() <= archive.STREAM_THRESHOLD:
            f.write(line % (n, n * 7))
            n += 1


CHANGES: dict[str, Callable[[Path], None]] = {
    "edit": _edit, "add": _add, "delete": _delete, "chmod": _chmod, "rename": _rename,
    "big": _big,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_incremental_equals_cold(project: Project, change: str) -> None:
    assert project.doit("package").rc == 0
    before = project.zip_path().read_bytes()
    CHANGES[change](project.fn)
    run = project.doit("package")
    assert run.executed == {"package:demo"}, run.text
    incremental = project.zip_path().read_bytes()
    assert incremental != before
    assert incremental == _cold_bytes(project)


def test_all_changes_at_once_then_unchanged_rebuild(project: Project) -> None:
    assert project.doit("package").rc == 0
    for change in CHANGES.values():
        change(project.fn)
    assert project.doit("package").rc == 0
    incremental = project.zip_path().read_bytes()
    # the previous zip is reused whole when only stats moved
    for p in project.fn.rglob("*"):
        os.utime(p, (1_900_000_000, 1_900_000_000), follow_symlinks=False)
    run = project.doit("package")
    assert "package:demo" not in run.executed
    assert project.zip_path().read_bytes() == incremental == _cold_bytes(project)


def test_rebuild_recompresses_only_what_changed(project: Project, monkeypatch) -> None:
    from dodo_lambda import Function, archive, build
    from dodo_lambda.context import RunContext

    assert project.doit("package").rc == 0
    monkeypatch.chdir(project.root)
    compressed: list[int] = []
    real = archive._compress
    monkeypatch.setattr(archive, "_compress", lambda data: compressed.append(len(data))
                        or real(data))
    fn = Function("demo", source="fn", handler="index.handler")
    _edit(project.fn)
    result = build.package(fn, RunContext(Path(".dodo_lambda")))
    assert compressed == [len((project.fn / "lib" / "util.js").read_bytes())]
    assert result.files > 5
    assert project.zip_path().read_bytes() == _cold_bytes(project)


@pytest.mark.parametrize("walked_size", [3, 5, 8])
def test_a_file_that_changed_since_its_stat_is_read_whole(tmp_path: Path, walked_size: int) -> None:
    """The writer reads size + 1 bytes; a file that grew or shrank after the walk
    is packed as it is now, never cut at either size."""
    from dodo_lambda import archive

    path = tmp_path / "f.txt"
    path.write_bytes(b"12345")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert archive._read(fd, walked_size) == b"12345"
    finally:
        os.close(fd)


def test_a_rebuild_rechecks_the_handler_only_when_what_it_read_or_the_names_change(
        project: Project, monkeypatch, caplog) -> None:
    from dodo_lambda import Function, build, handlers
    from dodo_lambda.context import RunContext
    from dodo_lambda.errors import DodoLambdaError

    (project.fn / "index.js").write_text("module.exports = makeHandlers();\n")  # a warning
    assert project.doit("package").rc == 0
    monkeypatch.chdir(project.root)
    checks: list[str] = []
    real = handlers.check_handler
    monkeypatch.setattr(handlers, "check_handler",
                        lambda *a, **k: checks.append(a[2]) or real(*a, **k))
    fn = Function("demo", source="fn", handler="index.handler")

    def rebuild() -> None:
        build.package(fn, RunContext(Path(".dodo_lambda")))

    _edit(project.fn)  # a file the check does not read
    caplog.clear()
    rebuild()
    assert checks == []
    assert "cannot tell whether" in caplog.text  # its warning, shown again

    _add(project.fn)  # new names: a file may now shadow the handler's
    rebuild()
    assert checks == ["index.handler"]

    (project.fn / "index.js").write_text("exports.hander = async () => 1;\n")  # the file it read
    with pytest.raises(DodoLambdaError, match="hander"):
        rebuild()
    assert checks == ["index.handler"] * 2


def test_a_rebuild_writes_over_the_zip_before_and_gives_a_cold_builds_bytes(
        project: Project) -> None:
    from dodo_lambda.files import spare_path

    zip_path = project.zip_path()
    spare = spare_path(zip_path)

    def build() -> bytes:
        run = project.doit("package")
        assert "package:demo" in run.executed, run.text
        return zip_path.read_bytes()

    first = build()
    assert not spare.exists()  # nothing replaced yet
    _edit(project.fn)
    build()
    assert spare.read_bytes() == first  # the replaced zip, kept to be written over
    blob = project.fn / "blob.txt"
    blob.write_text("".join(f"line {n} of a file that makes the zip bigger\n"
                            for n in range(40_000)))
    bigger = build()  # written over the smaller first zip: it grew
    blob.unlink()
    build()
    (project.fn / "README.md").unlink()
    assert spare.read_bytes() == bigger
    smaller = build()  # written over the bigger one: cut to its length
    assert len(smaller) < len(bigger)
    assert smaller == _cold_bytes(project)


def test_a_zip_still_open_elsewhere_is_never_written_over(project: Project) -> None:
    from dodo_lambda.files import spare_path

    zip_path = project.zip_path()
    assert project.doit("package").rc == 0
    _edit(project.fn)
    assert project.doit("package").rc == 0
    spare = spare_path(zip_path)
    with open(spare, "rb") as upload:  # an upload that opened the zip before it was replaced
        before = upload.read()
        (project.fn / "index.js").write_text((project.fn / "index.js").read_text() + "// 2\n")
        assert project.doit("package").rc == 0
        upload.seek(0)
        assert upload.read() == before
    assert zip_path.read_bytes() == _cold_bytes(project)


def test_a_rebuild_matches_the_patterns_only_when_the_walk_changes(project: Project,
                                                                    monkeypatch) -> None:
    from dodo_lambda import Function, build
    from dodo_lambda.context import RunContext

    (project.fn / ".env").write_text("SECRET=1\n")  # left out by default
    assert project.doit("package").rc == 0
    left_out = project.manifest()["excluded_by_default"]
    assert ".env" in left_out
    monkeypatch.chdir(project.root)
    matched: list[int] = []
    real = build.choose
    monkeypatch.setattr(build, "choose", lambda own, *a: matched.append(len(own))
                        or real(own, *a))
    fn = Function("demo", source="fn", handler="index.handler")

    def rebuild() -> None:
        build.package(fn, RunContext(Path(".dodo_lambda")))

    _edit(project.fn)  # same names: the last choice again
    rebuild()
    assert matched == []
    assert ".env" not in project.names()
    assert project.manifest()["excluded_by_default"] == left_out
    assert project.zip_path().read_bytes() == _cold_bytes(project)

    (project.fn / "lib" / ".env.local").write_text("X=1\n")  # a new name: matched again
    rebuild()
    assert len(matched) == 1
    assert project.manifest()["excluded_by_default"] == sorted([*left_out, "lib/.env.local"])
    assert "lib/.env.local" not in project.names()
