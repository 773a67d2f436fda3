"""Where a watch's changes come from: batches of changed paths under some folders
(and among a few single files), from the OS's file events through ``watchfiles``
(inotify, FSEvents, ...: the ``watch`` extra) or, without it or with ``poll=True``,
from a stat walk of the folders every half second. Bursts (an editor's temporary
files, a ``git checkout``) come as one batch: a batch ends when the files have not
changed for ``STEP_MS``."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

STEP_MS = 5  # a batch ends when the files have not changed for this long
DEBOUNCE_MS = 1600  # ... or after this long, whatever keeps changing
POLL_SECONDS = 0.5


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def notify_batches(folders: list[Path], stop: threading.Event, on_ready: Callable[[str], None],
                   files: Sequence[Path] = ()) -> Iterator[set[str]]:
    """Batches of changed paths from the OS's file events (watchfiles), and of the
    ``files`` whose stats moved (checked at least once a second)."""
    from watchfiles._rust_notify import RustNotify

    notify = RustNotify([str(f) for f in folders], False, False, 300, True, True)
    stamps = _stamps(files)
    on_ready("file events (watchfiles)")
    while not stop.is_set():
        raw = notify.watch(DEBOUNCE_MS, STEP_MS, 1000, stop)
        if raw == "signal":
            raise KeyboardInterrupt
        changed = set() if isinstance(raw, str) else {path for _, path in raw}  # str: timeout
        now = _stamps(files)
        changed |= {str(f) for f in files if now[str(f)] != stamps[str(f)]}
        stamps = now
        if changed:
            yield changed


def _stamps(files: Iterable[Path]) -> dict[str, tuple[int, int, int] | None]:
    out: dict[str, tuple[int, int, int] | None] = {}
    for f in files:
        try:
            st = os.stat(f)
            out[str(f)] = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            out[str(f)] = None
    return out


def _snapshot(folders: list[Path], skip: set[str], files: Sequence[Path] = ()
              ) -> dict[str, tuple[int, int, int] | None]:
    found: dict[str, tuple[int, int, int] | None] = dict(_stamps(files))
    for top in folders:
        for folder, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if d not in ("node_modules", ".git")
                       and os.path.join(folder, d) not in skip]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                found[path] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


def poll_batches(folders: list[Path], stop: threading.Event, on_ready: Callable[[str], None],
                 skip: set[str], interval: float = POLL_SECONDS,
                 files: Sequence[Path] = ()) -> Iterator[set[str]]:
    """Batches of changed paths from stat walks of the folders and stats of the
    ``files`` (no watchfiles); the folders in ``skip`` (the build dir) are not walked."""
    before = _snapshot(folders, skip, files)
    on_ready(f"polling every {interval:g} s")
    while not stop.wait(interval):
        now = _snapshot(folders, skip, files)
        changed: set[str] = set()
        while now != before:  # wait for the burst to end
            changed |= {p for p in before.keys() | now.keys() if before.get(p) != now.get(p)}
            before = now
            if stop.wait(STEP_MS / 1000 * 5):
                return
            now = _snapshot(folders, skip, files)
        if changed:
            yield changed


def batches(folders: list[Path], stop: threading.Event, on_ready: Callable[[str], None], *,
            poll: bool = False, skip: Iterable[str | Path] = (),
            files: Iterable[Path] = ()) -> Iterator[set[str]]:
    """Batches of changed paths under ``folders`` and among ``files``, from file events
    or polling."""
    if not poll:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            poll = True
    if poll:
        return poll_batches(folders, stop, on_ready, {str(_resolved(p)) for p in skip},
                            files=list(files))
    return notify_batches(folders, stop, on_ready, list(files))
