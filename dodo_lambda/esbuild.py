"""Where esbuild comes from.

1. The function's own devDependencies (or those of a folder above it, up to the
   project folder or a workspace root), when installed there with the binary for
   this machine: the project pins its version, and dodo_lambda follows it.
2. Otherwise a pinned esbuild that dodo_lambda installs once with npm into a cache
   folder of its own, ``$XDG_CACHE_HOME/dodo_lambda/`` (``~/.cache/dodo_lambda/``):
   shared by every project on the machine, kept across ``doit clean`` and fresh
   checkouts, and easy to cache in CI with the rest of ``~/.cache``.

Finding it costs a few stats and one small JSON read (no process is started), so
the bundle step's up-to-date check can afford it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import npmpolicy
from .errors import DodoLambdaError
from .files import locked, read_manifest

VERSION = "0.28.2"  # the pinned esbuild, when the project has none of its own
MIN_VERSION = (0, 17, 0)  # metafile marks externals, plugins can call build.resolve
_CPUS = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Esbuild:
    """An installed esbuild package: ``require(package)`` gives its JS API."""

    package: Path  # .../node_modules/esbuild
    version: str
    origin: str  # "devDependencies of <folder>" or "dodo_lambda's cache"


def host_package() -> str:
    """The npm package holding esbuild's binary for this machine (@esbuild/linux-x64)."""
    machine = platform.machine().lower()
    return f"@esbuild/{sys.platform}-{_CPUS.get(machine, machine)}"


def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """dodo_lambda's own cache folder (XDG_CACHE_HOME respected)."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dodo_lambda"


def cached_folder(env: Mapping[str, str] = os.environ) -> Path:
    """Where the pinned esbuild lives: one folder per version and machine type."""
    return cache_dir(env) / f"esbuild-{VERSION}-{host_package().split('/')[1]}"


def _version(package: Path) -> str | None:
    version = (read_manifest(package / "package.json") or {}).get("version")
    return version if isinstance(version, str) else None


def _parse(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("-")[0].split(".")[:3]:
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)


def _has_binary(package: Path) -> bool:
    """Node's lookup of the platform package from inside the esbuild package."""
    name = host_package()
    return any((folder / "node_modules" / name / "package.json").is_file()
               for folder in (package, *package.parents))


def _declares_esbuild(folder: Path) -> bool:
    data = read_manifest(folder / "package.json") or {}
    return any(isinstance(data.get(f), dict) and "esbuild" in data[f]
               for f in ("devDependencies", "dependencies"))


def _is_workspace_root(folder: Path) -> bool:
    return "workspaces" in (read_manifest(folder / "package.json") or {})


def _candidates(source: Path, project: Path) -> list[Path]:
    """The source folder, then the folders above it up to the project folder or the
    first workspace root (package.json with "workspaces"), whichever comes first."""
    src, top = source.resolve(), project.resolve()
    out = [src]
    if src == top or _is_workspace_root(src):
        return out
    for folder in src.parents:
        out.append(folder)
        if folder == top or _is_workspace_root(folder):
            break
    return out


def project_esbuild(source: Path, project: Path | None = None) -> Esbuild | None:
    """The esbuild the project declares and has installed for this machine, if any."""
    for folder in _candidates(source, project or Path.cwd()):
        package = folder / "node_modules" / "esbuild"
        if not _declares_esbuild(folder) or not (package / "package.json").is_file():
            continue
        version = _version(package)
        if version is None or _parse(version) < MIN_VERSION:
            continue  # too old for what we ask of it: the pinned one is used
        if not _has_binary(package):
            continue  # installed on another platform (a mounted folder): the pinned one
        return Esbuild(package, version, f"devDependencies of {folder}")
    return None


def cached_esbuild(env: Mapping[str, str] = os.environ) -> Esbuild | None:
    package = cached_folder(env) / "node_modules" / "esbuild"
    if _version(package) == VERSION and _has_binary(package):
        return Esbuild(package, VERSION, "dodo_lambda's cache")
    return None


def locate(source: Path, env: Mapping[str, str] = os.environ) -> Esbuild | None:
    """The esbuild a bundle of ``source`` would use now, without installing anything."""
    return project_esbuild(source) or cached_esbuild(env)


def obtain(source: Path, who: str, env: Mapping[str, str] = os.environ) -> Esbuild:
    """The esbuild to use, installing the pinned one into the cache when needed."""
    found = locate(source, env)
    return found if found is not None else install(who, env)


def install(who: str, env: Mapping[str, str] = os.environ) -> Esbuild:
    """``npm install esbuild@VERSION`` into the cache folder, once: a lock keeps two
    processes from installing at the same time, and the folder appears whole or
    not at all (installed beside it, then renamed)."""
    final = cached_folder(env)
    with locked(final.with_name(f".{final.name}.lock")):
        found = cached_esbuild(env)
        if found is not None:
            return found  # another process installed it while we waited
        work = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            (work / "package.json").write_text('{"private": true}\n')
            _npm_install(work, who, env)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    found = cached_esbuild(env)
    if found is None:
        raise DodoLambdaError(
            f"{who}: npm installed esbuild {VERSION} into {final} without its {host_package()}"
            " binary; add esbuild to the function's devDependencies (`npm i -D esbuild`)")
    return found


def _npm_install(work: Path, who: str, env: Mapping[str, str]) -> None:
    cmd = ["npm", "install", f"esbuild@{VERSION}", "--no-save", "--no-package-lock",
           "--no-audit", "--no-fund", "--no-update-notifier"]
    if shutil.which("npm") is None:
        raise DodoLambdaError(f"{who}: npm not found on PATH; install Node.js to bundle")
    # esbuild's own install script runs: in the scrubbed environment, as every npm run
    referenced = npmpolicy.npmrc_variables(npmpolicy.npmrc_files(work, env))
    proc = subprocess.run(cmd, cwd=work, env=npmpolicy.child_env(env, referenced),
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return
    reason = next((line.removeprefix("npm error").strip() for line in
                   (proc.stderr or proc.stdout).splitlines()
                   if line.startswith("npm error") and line.removeprefix("npm error").strip()),
                  f"exit code {proc.returncode}")
    raise DodoLambdaError(
        f"{who}: could not install esbuild {VERSION} with npm ({reason}); add esbuild to the"
        " function's devDependencies (`npm i -D esbuild`), or point npm at a registry it can"
        " reach (`npm config set registry URL`)")
