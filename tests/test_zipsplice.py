"""The watch's zip splice gives exactly the bytes of a cold ``archive.write_zip`` of the
same files, whatever the changes: random batches of edits, additions, deletions and
mode changes over a small tree, each checked against a cold build; with and without
a staged dependency tree written as the zip's first segment (which a splice copies)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from dodo_lambda import archive, digest, zipsplice
from dodo_lambda.selection import Entry, Root, walk


def _entries(root: Path) -> list[Entry]:
    return sorted(walk(Root(root)), key=lambda e: e.arcname)


def _staged(staged: Path | None) -> archive.Staged | None:
    if staged is None:
        return None
    entries = sorted(walk(Root(staged, "node_modules/", staged=True)), key=lambda e: e.arcname)
    return archive.Staged("node_modules/", "key", iter(entries))


def _cold(root: Path, dest: Path, staged: Path | None = None) -> tuple[bytes, archive.ZipResult]:
    result = archive.write_zip(_entries(root), dest, who="test", staged=_staged(staged))
    return dest.read_bytes(), result


def _entry(root: Path, arcname: str) -> Entry | None:
    path = root / arcname
    if not path.is_file():
        return None
    st = path.stat()
    return Entry(arcname, str(path), st.st_size, st.st_mtime_ns,
                 0o755 if st.st_mode & 0o111 else 0o644, st.st_ctime_ns)


def _write(path: Path, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(0, 400)))
    path.write_text(f"// {rng.random()}\n{words}\n")


@pytest.mark.parametrize("seed", range(6))
def test_random_changes_equal_cold_builds(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    tree = tmp_path / "tree"
    staged = tmp_path / "staged" if seed % 2 else None  # odd seeds: with a segment
    folders = ['', 'lib/', 'z/'] if staged else ['', 'lib/', 'node_modules/x/', 'z/']
    for n in range(40):
        _write(tree / f"{rng.choice(folders)}f{n:02d}.js", rng)
    (tree / "incompressible.bin").write_bytes(os.urandom(3000))
    if staged is not None:
        for n in range(30):
            _write(staged / f"{rng.choice(['a', 'b', '@s/c'])}/f{n:02d}.js", rng)
    live = tmp_path / "live.zip"
    result = archive.write_zip(_entries(tree), live, who="test", staged=_staged(staged))
    assert (result.segment is not None) == (staged is not None)
    state = zipsplice.load(live, _entries(tree), result.records, archive.dos_timestamp(),
                           result.segment)
    for _ in range(8):
        names = sorted(e.arcname for e in _entries(tree))
        touched: set[str] = set()
        for _ in range(rng.randint(1, 4)):
            what = rng.choice(["edit", "add", "delete", "chmod", "same", "first", "last"])
            if what == "add" or len(names) < 3:
                name = rng.choice(["", "lib/", "a/", "zz/"]) + f"new{rng.randint(0, 999)}.js"
                _write(tree / name, rng)
            elif what == "delete":
                name = rng.choice(names)
                (tree / name).unlink(missing_ok=True)
            elif what == "chmod":
                name = rng.choice(names)
                if (tree / name).exists():
                    (tree / name).chmod(0o755 if rng.random() < 0.5 else 0o644)
            elif what == "same":  # saved without a change: stats move, bytes do not
                name = rng.choice(names)
                if (tree / name).exists():
                    (tree / name).write_bytes((tree / name).read_bytes())
            else:
                name = {"first": names[0], "last": names[-1]}.get(what, rng.choice(names))
                _write(tree / name, rng)
            touched.add(name)
        answer = zipsplice.splice(state, {a: _entry(tree, a) for a in touched}, "test")
        zipsplice.discard(state)
        cold_bytes, cold = _cold(tree, tmp_path / "cold.zip", staged)
        assert live.read_bytes() == cold_bytes
        if answer is not None:
            assert answer.sha256 == hashlib.sha256(cold_bytes).hexdigest()
            lines = [(n, r.mode, r.sha256) for n, r in answer.records.items()]
            if answer.segment is not None:
                lines.append(digest.segment_line(answer.segment.prefix, answer.segment.content))
            assert answer.content_digest == cold.content_digest == digest.content_digest(lines)
            assert answer.segment == cold.segment  # where its directory records now are
            assert (answer.zip_size, answer.unzipped_size, answer.files) == (
                cold.zip_size, cold.unzipped_size, cold.files)
            # every record as a cold build writes it, the offsets too
            assert answer.records == cold.records


def test_load_refuses_records_of_other_files(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _write(tree / "a.js", random.Random(1))
    live = tmp_path / "live.zip"
    result = archive.write_zip(_entries(tree), live, who="test")
    _write(tree / "a.js", random.Random(2))  # the file moved on since the build
    with pytest.raises(zipsplice.Fallback):
        zipsplice.load(live, _entries(tree), result.records, archive.dos_timestamp())
