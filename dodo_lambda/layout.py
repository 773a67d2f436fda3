"""Every path dodo_lambda writes for an item, named in one place.

Used by the core, the doit adapter and the tests alike, so that a path is never
re-derived by hand.

    <build_dir>/dist/<name>.zip                   the deployment package
    <build_dir>/dist/<name>.manifest.json         what is in it (sizes, digests)
    <build_dir>/dist/<name>.{uploaded,deployed}.json   what the AWS steps did
    <build_dir>/cache/<name>.entries              per-entry records for incremental rebuilds
    <build_dir>/cache/<name>.multipart.json       a multipart upload in flight (s3.py)
    <build_dir>/npm/functions/<name>/             the staged production install
    <build_dir>/npm/functions/<name>.json         its install record
    <build_dir>/npm/functions/<name>.local.json   stats of its workspace packages' sources
    <build_dir>/npm/functions/<name>.state        how the staged tree was last checked
    <build_dir>/cache/<name>.fetched.json         a package installed from the build cache

Layers live under ``dist/layers/``, ``cache/layers/`` and ``npm/layers/``.

With stages (``lambda_tasks(stages=...)``) the build is shared and the records of
what went where are kept per stage: ``dist/stages/<stage>/<name>.{uploaded,deployed}.json``
and ``dist/stages/<stage>/layers/<name>.published.json``. ``name`` is always the
item's build name (``orders``), never a stage's Lambda name (``orders-prod``).

Paths of the project as a whole (``BuildDir``):

    <build_dir>/invoke/{task,opt}/<sha256>/      zips extracted for the local invoker
    <build_dir>/invoke/home/                     the invoked handler's HOME
    <build_dir>/emulator/state.json              the running emulator: pid, url, id
    <build_dir>/emulator/{start.lock,server.log}
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Function, Layer


@dataclass(frozen=True)
class Layout:
    """The paths of one item (a Function or a Layer) under ``build_dir``. Each path is
    made once per Layout (cached_property): the checks of a no-op run ask for them
    many times, and building Path objects is most of what they cost."""

    build_dir: Path
    kind: str  # "function" or "layer"
    name: str
    stage: str | None = None  # the stage whose records these are (None: no stages)

    @classmethod
    def of(cls, build_dir: str | Path, item: Function | Layer, stage: str | None = None
           ) -> Layout:
        return cls(Path(build_dir), item.kind, item.build_name, stage)

    @cached_property
    def _sub(self) -> str:
        return "layers/" if self.kind == "layer" else ""

    def _dist(self, suffix: str) -> Path:
        return self.build_dir / "dist" / f"{self._sub}{self.name}{suffix}"

    # -- the package step
    @cached_property
    def zip(self) -> Path:
        return self._dist(".zip")

    @cached_property
    def manifest(self) -> Path:
        return self._dist(".manifest.json")

    @cached_property
    def entries(self) -> Path:
        """The entry cache: the previous zip's per-entry records (marshal)."""
        return self.build_dir / "cache" / f"{self._sub}{self.name}.entries"

    @cached_property
    def package_lock(self) -> Path:
        """Held while the zip is written: one writer of a zip at a time."""
        return self.build_dir / "cache" / f"{self._sub}{self.name}.lock"

    @cached_property
    def fetched(self) -> Path:
        """The record of a package installed from the shared build cache (buildcache)."""
        return self.build_dir / "cache" / f"{self._sub}{self.name}.fetched.json"

    # -- the AWS steps' records (per stage)
    def _record(self, suffix: str) -> Path:
        if self.stage is None:
            return self._dist(suffix)
        return self.build_dir / "dist" / "stages" / self.stage / f"{self._sub}{self.name}{suffix}"

    @cached_property
    def uploaded(self) -> Path:
        return self._record(".uploaded.json")

    @cached_property
    def deployed(self) -> Path:
        return self._record(".deployed.json")

    @cached_property
    def published(self) -> Path:
        return self._record(".published.json")

    @cached_property
    def deploy_lock(self) -> Path:
        return self._record(".deploy.lock")

    @cached_property
    def upload_lock(self) -> Path:
        """Held while the zip goes to S3: one upload of an item at a time."""
        return self._dist(".upload.lock")

    @cached_property
    def upload_journal(self) -> Path:
        """What a multipart upload began (s3.py): what a killed one left open."""
        return self.build_dir / "cache" / f"{self._sub}{self.name}.multipart.json"

    # -- the bundle step (functions with bundle=)
    @cached_property
    def bundle_folder(self) -> Path:
        return self.build_dir / "bundle" / self.name

    @cached_property
    def bundle_out(self) -> Path:
        """What the zip holds: the bundle (and its map)."""
        return self.bundle_folder / "out"

    @cached_property
    def bundle_meta(self) -> Path:
        """esbuild's own account of the last run (its metafile), for people and tools."""
        return self.bundle_folder / "meta.json"

    @cached_property
    def bundle_record(self) -> Path:
        """Inputs and outputs with their stats: the bundle's up-to-date check."""
        return self.build_dir / "bundle" / f"{self.name}.json"

    @cached_property
    def bundle_lock(self) -> Path:
        return self.build_dir / "bundle" / f".{self.name}.lock"

    # -- the npm step
    @cached_property
    def _npm(self) -> Path:
        return self.build_dir / "npm" / ("layers" if self.kind == "layer" else "functions")

    @cached_property
    def staging(self) -> Path:
        """The folder npm installs in: package.json, the lock and node_modules/."""
        return self._npm / self.name

    @cached_property
    def node_modules(self) -> Path:
        return self.staging / "node_modules"

    @cached_property
    def install_record(self) -> Path:
        return self._npm / f"{self.name}.json"

    @cached_property
    def local_stats(self) -> Path:
        """Stats of the workspace packages' source files at their last check (kept
        apart from the install record, whose bytes must change only with the tree)."""
        return self._npm / f"{self.name}.local.json"

    @cached_property
    def install_state(self) -> Path:
        """How the staged tree was last checked against the install record: its folder
        stamps, its stats, when, and the tool stamp (marshal; not a doit file_dep, so
        rewriting it never reruns a step)."""
        return self._npm / f"{self.name}.state"

    @cached_property
    def install_lock(self) -> Path:
        return self._npm / f".{self.name}.lock"

    @cached_property
    def install_work(self) -> Path:
        """Where npm runs before its result replaces ``staging``."""
        return self._npm / f".{self.name}.tmp"

    @cached_property
    def install_old(self) -> Path:
        return self._npm / f".{self.name}.old"


def written_folders(build_dir: str | Path) -> list[Path]:
    """Every folder where files are replaced atomically (a killed writer leaves its
    temporary file there: files.remove_dead_temps)."""
    root = Path(build_dir)
    return [root / "dist", root / "dist" / "layers", root / "cache", root / "cache" / "layers",
            root / "npm" / "functions", root / "npm" / "layers", BuildDir(root).emulator]


@dataclass(frozen=True)
class BuildDir:
    """The paths under ``build_dir`` that belong to no one item: the run's shared
    records, the local invoker's extraction cache and the emulator's files."""

    path: Path

    # -- one project's runs
    @property
    def run_summary(self) -> Path:
        """Which end-of-run lines were said in a run (records.first_to_report)."""
        return self.path / "cache" / "summary.json"

    @property
    def doit_processes_lock(self) -> Path:
        """Held by each doit process of the project (tasks: other processes running)."""
        return self.path / "cache" / "doit-processes.lock"

    @property
    def build_cache_down(self) -> Path:
        """When the shared build cache was last found unreachable (cachestore)."""
        return self.path / "cache" / "buildcache-down.json"

    # -- the local invoker (invoke.py)
    @property
    def invoke(self) -> Path:
        return self.path / "invoke"

    @property
    def invoke_task(self) -> Path:
        """Function zips, each extracted into a folder named for its SHA-256 (Lambda's
        /var/task)."""
        return self.invoke / "task"

    @property
    def invoke_opt(self) -> Path:
        """A function's layers, extracted together in order (Lambda's /opt)."""
        return self.invoke / "opt"

    @property
    def invoke_home(self) -> Path:
        """HOME for an invoked handler (never the developer's own)."""
        return self.invoke / "home"

    # -- the emulator (emulator.py, emulator_server.py)
    @property
    def emulator(self) -> Path:
        return self.path / "emulator"

    @property
    def emulator_state(self) -> Path:
        """Written by the running server: pid, url, id, who started it."""
        return self.emulator / "state.json"

    @property
    def emulator_lock(self) -> Path:
        """Held while a server is found or started, and while it is stopped."""
        return self.emulator / "start.lock"

    @property
    def emulator_log(self) -> Path:
        return self.emulator / "server.log"
