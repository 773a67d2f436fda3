"""One run's state, in one visible place.

``lambda_tasks`` makes a ``RunContext`` from its arguments and hands it to every
uptodate check and action. Besides the project's settings it carries what one
step learns that a later step in the same process reuses: the package check's scan
(its walk, taken by the package action that follows it); node and npm versions;
botocore clients. Nothing else in dodo_lambda keeps state
between calls.

Pickled (``doit -P process`` sends actions to worker processes) it keeps the
settings and starts with empty caches. A long-lived process (watch) calls
``next_round()`` between rounds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .layout import Layout
from .rules import DIRECT_UPLOAD_LIMIT

if TYPE_CHECKING:
    from .aws import Clients
    from .buildcache import CacheSettings
    from .config import Function, Layer

T = TypeVar("T")
# ``made`` keys (their first part) that a new round keeps: botocore's loader, clients
# (keyed by target and AWS_* variables, or by the emulator's id), node/npm versions
# (keyed by the executables' stats), the items' Layouts (paths only)
KEPT_BETWEEN_ROUNDS = frozenset({"botocore-loader", "clients", "emulator-clients", "tools",
                                 "layout"})


@dataclass(frozen=True)
class AwsTarget:
    """Where deploys go; None fields fall back to boto3's standard chain (env, profile).
    Here, not in aws.py, so that a run that only builds never loads the AWS code."""

    profile: str | None = None
    region: str | None = None
    endpoint: str | None = None


@dataclass
class Caches:
    """Per-process memory of one run. Never pickled."""

    # the package check's findings, taken by the package action right after it
    scans: dict[tuple[str, str], Any] = field(default_factory=dict)
    # anything made once per run and kept: tool versions, botocore clients, ...
    made: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass(eq=False)
class RunContext:
    """The project's settings (from ``lambda_tasks``) and the run's caches."""

    build_dir: Path
    target: AwsTarget = field(default_factory=AwsTarget)
    emulator: bool = False  # deploy to the project's local emulator, never AWS
    direct_limit: int = DIRECT_UPLOAD_LIMIT  # bigger zips go through S3
    verify: bool = False  # deploy tasks compare with AWS even when records say up to date
    role_name: str | None = None  # the one role functions without role= share (None: one each)
    items: tuple[Function | Layer, ...] = ()  # the project's functions and layers
    # tells this run's deploy records from older ones (the end-of-run summary)
    run_id: str = field(default_factory=lambda: os.urandom(6).hex())
    today: date | None = None  # the day Lambda's runtime schedule is read at (None: today)
    # check every staged file, not only the staged tree's folder stamps (see npm.py)
    verify_staging: bool = False
    stage: str | None = None  # the stage deployed to (lambda_tasks(stages=...)): its records
    cache: CacheSettings | None = None  # the shared build cache (lambda_tasks(cache_bucket=...))
    # a stage's Lambda names -> the task names they go by (doit package:orders, not orders-prod)
    task_names: dict[str, str] = field(default_factory=dict)
    caches: Caches = field(default_factory=Caches, repr=False)

    def __post_init__(self) -> None:
        self.build_dir = Path(self.build_dir)

    def layout(self, item: Function | Layer) -> Layout:
        key = ("layout", item.kind, item.build_name, self.stage)
        found = self.caches.made.get(key)  # a plain read: a race makes an equal Layout
        if found is None:
            found = self.caches.made[key] = Layout.of(self.build_dir, item, self.stage)
        return found

    def reset(self) -> None:
        """Forget everything learnt (a new round in a long-lived process)."""
        self.caches = Caches()

    def next_round(self) -> None:
        """A new round in a long-lived process (watch): forget what was learnt (scans,
        the run's decisions such as whether a listing pays), keep what is costly to make
        and whose key says when it is stale (``KEPT_BETWEEN_ROUNDS``)."""
        made = self.caches.made
        self.caches = Caches(made={k: v for k, v in made.items() if k[0] in KEPT_BETWEEN_ROUNDS})

    def once(self, key: tuple[Any, ...], make: Callable[[], T], *, wait: bool = True) -> T:
        """``make()``'s value, made once per run for ``key``, thread-safe: under
        ``doit -P thread`` the other threads wait rather than make it twice; with
        ``wait=False`` (S3 requests, hashing files) they do not wait on each other, and at
        worst two of them make the same value."""
        caches = self.caches
        with caches.lock:
            if key in caches.made or wait:
                if key not in caches.made:
                    caches.made[key] = make()
                return caches.made[key]
        value = make()
        with caches.lock:
            return caches.made.setdefault(key, value)

    def clients(self, who: str | None = None, target: AwsTarget | None = None) -> Clients:
        """The S3 and Lambda clients of this project's target (or of ``target``: the
        build cache's). The standard chain reads AWS_* variables, so a change of them
        gets new clients."""
        from . import aws

        target = target or self.target
        env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
        loader = self.once(("botocore-loader",), aws.data_loader)
        return self.once(("clients", target, env),
                         lambda: aws.connect(target, who=who, loader=loader))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "caches": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.caches = Caches()
