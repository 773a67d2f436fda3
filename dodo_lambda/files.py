"""Small files other steps trust: JSON records written atomically, a zip replaced
over its spare, and a lock so that two doit processes do not install or deploy the
same item at once."""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# write_atomic's (and the zip writer's) temporary files: .<name>.<pid>.tmp
_TEMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def spare_path(dest: Path) -> Path:
    """The file ``dest`` replaced last, kept for the next write to go over: a new file
    costs ext4 its blocks' allocation and the replaced one their freeing, 6 of an
    8.6 MB zip's 8 ms (measured here); writing over an old one and keeping the
    replaced one instead costs neither. One hidden file beside ``dest``, its size."""
    return dest.with_name(f".{dest.name}.spare")


def claim_spare(dest: Path, tmp: Path) -> bool:
    """The spare renamed to ``tmp`` (True), or nothing to write over (False). Only a
    spare nobody has open: an upload that opened the zip before it was replaced may
    still be reading it (a write lease is granted only to the file's sole opener).
    Call it holding the lock of ``dest``'s writers."""
    spare = spare_path(dest)
    try:
        fd = os.open(spare, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    except (OSError, AttributeError):  # read now, or no leases (not Linux): never written over
        spare.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)
    try:
        os.replace(spare, tmp)  # a hidden name only the package lock's holder uses
    except OSError:
        return False
    return True


def replace_keeping_spare(tmp: Path, dest: Path) -> None:
    """``tmp`` in place of ``dest`` (atomically), and the replaced file kept as the
    spare: linked aside first, so that no step frees its blocks."""
    aside = dest.with_name(f".{dest.name}.spare.{os.getpid()}.tmp")
    try:
        os.link(dest, aside)
    except OSError:  # no previous zip, or no hard links here
        os.replace(tmp, dest)
        return
    try:
        os.replace(tmp, dest)
        os.replace(aside, spare_path(dest))
    finally:
        aside.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:
    """Write a JSON record atomically, readable by people."""
    write_atomic(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A JSON object file such as a package.json; None when it is missing, unreadable,
    not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextmanager
def locked(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if needed) across processes; the
    lock file's descriptor (a child given it keeps the lock while it lives).
    ``on_wait`` is called once when the lock is busy, before waiting for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f.fileno()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_dead_temps(*folders: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temporary files (``.<name>.<pid>.tmp``) of writers that were killed:
    those whose process is gone. A live writer's pid is alive, so its file stays (a
    reused pid only keeps a dead writer's file a little longer). ``skip``: endings of
    ``<name>`` left to their own step. What was removed."""
    removed = []
    for folder in folders:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            match = _TEMP.match(name)
            if match is None:
                continue
            target = name[1:match.start(1) - 1]  # .<target>.<pid>.tmp
            if skip and target.endswith(skip):
                continue
            if not pid_alive(int(match.group(1))) and (folder / name).is_file():
                (folder / name).unlink(missing_ok=True)
                removed.append(folder / name)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (an exited one that waits to be reaped, a
    zombie, does not)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc here: trust kill()
