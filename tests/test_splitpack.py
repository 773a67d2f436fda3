"""A staged tree packed by two processes (splitpack) gives the threaded writer's bytes,
and its errors and Lambda's limits come out of either process as they would from one,
with nothing left beside the zip."""

from __future__ import annotations

import os
import random
import subprocess
import zipfile
from pathlib import Path

import pytest

from dodo_lambda import archive, splitpack
from dodo_lambda.errors import DodoLambdaError
from dodo_lambda.selection import Entry, Root, walk

PREFIX = "node_modules/"


def _tree(root: Path) -> None:
    """About 400 files in a few packages (a scoped one, nested node_modules): text of
    varied sizes, an incompressible file, an executable, a native addon, and one file
    over the (lowered) streaming threshold."""
    rng = random.Random(7)
    words = ["const", "return", "function", "module", "exports", "require", "=>", "{}"]
    for n in range(400):
        pkg = rng.choice(["a", "a-b", "@s/c", "d/node_modules/e", "z"])
        path = root / pkg / rng.choice(["", "lib/", "dist/esm/"]) / f"f{n:03d}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(rng.choice(words) for _ in range(rng.randint(0, 600))))
    (root / "a" / "blob.bin").write_bytes(os.urandom(5000))
    (root / "z" / "cli.js").write_text("#!/usr/bin/env node\n")
    (root / "z" / "cli.js").chmod(0o755)
    (root / "@s" / "c" / "addon.node").write_bytes(b"\x7fELF" + bytes(200))
    (root / "d" / "big.js").write_text("x = 1;\n" * 20_000)  # 140 kB: streamed below


def _own(root: Path) -> list[Entry]:
    (root / "index.js").write_text("exports.handler = async () => 1;\n")
    return sorted(walk(Root(root)), key=lambda e: e.arcname)


def _staged(staged: Path, content: str | None = "known") -> archive.Staged:
    # as the build streams it: walked without stats, in zip order
    entries = walk(Root(staged, PREFIX, staged=True), stats=False)
    return archive.Staged(PREFIX, "key", entries, content)


@pytest.fixture
def trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setattr(archive, "STREAM_THRESHOLD", 100_000)
    monkeypatch.setattr(splitpack, "FORK_AFTER", 8)
    monkeypatch.setattr(splitpack, "usable", lambda: True)  # an xdist worker has threads
    own, staged = tmp_path / "own", tmp_path / "staged"
    _tree(staged)
    own.mkdir()
    return own, staged


@pytest.fixture
def child_first(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The parent takes its first batch only once the child has taken one, so that
    the child's part is sure to hold batch 0 and the parent's batches move after it.
    Returns the pids that forked (the fork happened: it is not the threaded path)."""
    forks: list[int] = []
    real_fork, real_take = os.fork, splitpack._Counter.take
    parent = os.getpid()

    def fork() -> int:
        forks.append(os.getpid())
        return real_fork()

    def take(self: splitpack._Counter) -> int | None:
        if os.getpid() == parent and not getattr(self, "waited", False):
            self.waited = True  # type: ignore[attr-defined]
            index = 0
            while index == 0:  # the child's first take moves the shared counter
                index = int.from_bytes(self.shm[:8], "little")
                os.sched_yield()
        return real_take(self)

    monkeypatch.setattr(splitpack.os, "fork", fork)
    monkeypatch.setattr(splitpack._Counter, "take", take)
    return forks


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_two_processes_write_the_bytes_of_one(trees: tuple[Path, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              child_first: list[int]) -> None:
    own, staged = trees
    entries = _own(own)
    out = tmp_path / "out"
    split = archive.write_zip(entries, out / "split.zip", who="test", staged=_staged(staged))
    assert child_first == [os.getpid()]  # one fork, from this process
    monkeypatch.setattr(splitpack, "usable", lambda: False)
    threads = archive.write_zip(entries, out / "threads.zip", who="test", staged=_staged(staged))

    assert (out / "split.zip").read_bytes() == (out / "threads.zip").read_bytes()
    assert split == threads  # sums, packages, native files and where the records sit
    assert split.segment is not None and split.segment.files == 404
    assert [name for name, _ in split.segment.notable] == ["node_modules/@s/c/addon.node"]
    assert set(split.segment.packages) == {"a", "a-b", "@s/c", "d", "z"}
    assert _leftovers(out) == []
    with zipfile.ZipFile(out / "split.zip") as z:
        assert z.testzip() is None
        info = z.getinfo("node_modules/z/cli.js")
        assert info.external_attr >> 16 == 0o100755
        assert z.read("node_modules/d/big.js") == (staged / "d" / "big.js").read_bytes()
    assert subprocess.run(["unzip", "-tq", out / "split.zip"], capture_output=True).returncode == 0


def test_a_tree_smaller_than_the_fork_point_keeps_one_process(
        trees: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        child_first: list[int]) -> None:
    own, staged = trees
    monkeypatch.setattr(splitpack, "FORK_AFTER", 1000)
    archive.write_zip(_own(own), tmp_path / "f.zip", who="test", staged=_staged(staged))
    assert child_first == []


def test_an_unhashed_tree_keeps_one_writer(trees: tuple[Path, Path], tmp_path: Path,
                                           child_first: list[int]) -> None:
    own, staged = trees
    result = archive.write_zip(_own(own), tmp_path / "f.zip", who="test",
                               staged=_staged(staged, content=None))
    assert child_first == []
    assert result.segment is not None and result.segment.content != "known"


def test_an_error_in_the_child_reaches_the_build(trees: tuple[Path, Path], tmp_path: Path,
                                                 child_first: list[int]) -> None:
    own, staged = trees
    entries = list(walk(Root(staged, PREFIX, staged=True), stats=False))
    gone = entries[20]  # batch 0: the child's
    entries[20] = gone._replace(path=gone.path + ".removed")
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError) as err:
        archive.write_zip(_own(own), out / "f.zip", who="test",
                          staged=archive.Staged(PREFIX, "key", iter(entries), "known"))
    assert err.value.filename == gone.path + ".removed"
    assert child_first == [os.getpid()]
    assert _leftovers(out) == [] and not (out / "f.zip").exists()


@pytest.mark.parametrize("processes", [2, 1])
@pytest.mark.parametrize("limit", ["files", "bytes"])
def test_lambdas_limits_hold_across_both_processes(trees: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   child_first: list[int], limit: str,
                                                   processes: int) -> None:
    own, staged = trees
    monkeypatch.setattr(splitpack, "usable", lambda: processes == 2)
    entries = _own(own)  # one own file, after the 404 staged ones
    if limit == "files":  # the staged tree fits, the own file does not
        monkeypatch.setattr(archive, "MAX_ENTRIES", 404)
        message = "405 files, more than a zip without ZIP64 holds (404)"
    else:
        monkeypatch.setattr(archive, "UNZIPPED_LIMIT", 100_000)
        message = "over Lambda's limit of 100,000; largest: node_modules/"
    out = tmp_path / "out"
    with pytest.raises(DodoLambdaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        archive.write_zip(entries, out / "f.zip", who="test", staged=_staged(staged))
    assert child_first == ([os.getpid()] if processes == 2 else [])
    assert _leftovers(out) == [] and not (out / "f.zip").exists()
