"""What npm may see and run during a build.

- **Environment**: npm gets an allow-list of the parent's variables (``child_env``),
  never ``AWS_*`` or any other secret a CI job holds, plus exactly the variables
  the npmrc files reference as ``${NAME}`` (a private registry's token).
- **Lifecycle scripts** are off unless the item says ``scripts=True``
  (``script_flags``); the root package's own scripts never run in the staging
  folder (``staged_package_json``). With scripts off, ``unbuilt_packages`` names
  the packages that look as if they needed their install script.
- **The project's .npmrc** is staged with mode 0600 (``stage_npmrc``) and removed
  by the caller when npm ends.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .files import read_manifest
from .selection import Entry, Root

# -- the child's environment ---------------------------------------------------------

# Passed through by exact name: what npm, node and a compiler toolchain need to find
# their files, talk through a proxy and trust a corporate CA.
ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ",
    "TMPDIR", "TMP", "TEMP", "TERM", "COLORTERM", "NO_COLOR", "CI",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR",
    "VOLTA_HOME",  # Volta's node/npm shims find their toolchain through it
})
# Passed through by prefix (npm_config_* in any case, as npm reads them).
ENV_PREFIXES = ("LC_", "npm_config_", "NODE_", "COREPACK_")
# Never passed by prefix: NODE_OPTIONS is read by npm and by every install script it
# starts and can load code into them (--require, --import); in CI it usually holds
# settings for tests, not for installing. NODE_AUTH_TOKEN is a registry token:
# it reaches npm only when an npmrc references it, like any other token.
ENV_HELD_BACK = frozenset({"NODE_OPTIONS", "NODE_AUTH_TOKEN"})
# Names (or PREFIX_*) to pass as well, for an install script that needs them.
EXTRA_ENV = "DODO_LAMBDA_NPM_ENV"
# npm's own chatter, off in every run.
QUIET = {"npm_config_update_notifier": "false", "npm_config_fund": "false",
         "npm_config_audit": "false"}


def _passes(name: str, extra: tuple[str, ...]) -> bool:
    if name in ENV_NAMES:
        return True
    if name in ENV_HELD_BACK:
        return False
    if name.lower().startswith("npm_config_") or name.startswith(ENV_PREFIXES):
        return True
    return any(name == x or (x.endswith("*") and name.startswith(x[:-1])) for x in extra)


def child_env(parent: Mapping[str, str], referenced: Iterable[str] = ()) -> dict[str, str]:
    """The environment npm runs in: the allow-listed variables of ``parent``, those
    named in ``$DODO_LAMBDA_NPM_ENV``, and the ``referenced`` ones (see
    ``npmrc_variables``) that are set."""
    extra = tuple(x for x in re.split(r"[\s,]+", parent.get(EXTRA_ENV, "")) if x)
    env = {k: v for k, v in parent.items() if _passes(k, extra)}
    env.update((name, parent[name]) for name in referenced if name in parent)
    env.update(QUIET)
    return env


# npm's own syntax (@npmcli/config env-replace): ${NAME} or ${NAME?}, not after an
# odd number of backslashes.
_ENV_REF = re.compile(r"(?<!\\)(\\*)\$\{([^${}?]+)\??\}")


def npmrc_variables(files: Iterable[Path]) -> set[str]:
    """The environment variables the npmrc ``files`` reference (``${NPM_TOKEN}``)."""
    names: set[str] = set()
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        names.update(m.group(2) for m in _ENV_REF.finditer(text) if len(m.group(1)) % 2 == 0)
    return names


def _get(env: Mapping[str, str], npm_name: str) -> str | None:
    """An ``npm_config_<name>`` variable, in any case, as npm reads it."""
    wanted = f"npm_config_{npm_name}"
    return next((v for k, v in env.items() if k.lower() == wanted and v), None)


def npmrc_files(source: Path, env: Mapping[str, str]) -> list[Path]:
    """The npmrc files npm reads for an install of ``source``: the project's, the
    user's, the system-wide one and npm's built-in one (those that exist)."""
    found = [source / ".npmrc"]
    user = _get(env, "userconfig")
    home = env.get("HOME")
    if user:
        found.append(Path(user).expanduser())
    elif home:
        found.append(Path(home) / ".npmrc")
    node, npm = shutil.which("node"), shutil.which("npm")
    glob = _get(env, "globalconfig")
    prefix = _get(env, "prefix") or (os.path.dirname(os.path.dirname(os.path.realpath(node)))
                                     if node else None)
    if glob:
        found.append(Path(glob))
    elif prefix:
        found.append(Path(prefix) / "etc" / "npmrc")
    if npm:  # <npm's folder>/bin/npm-cli.js -> <npm's folder>/npmrc
        found.append(Path(os.path.realpath(npm)).parent.parent / "npmrc")
    return [p for p in found if p.is_file()]


# -- the staged .npmrc ----------------------------------------------------------------


def stage_npmrc(source: Path, dest: Path) -> None:
    """Copy the project's .npmrc for npm, readable by its owner only from the
    moment it exists (created with mode 0600, never chmod'ed after)."""
    data = source.read_bytes()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- lifecycle scripts ----------------------------------------------------------------


def script_flags(scripts: bool) -> list[str]:
    """Explicit both ways, so that an .npmrc or npm_config_ignore_scripts cannot
    flip the item's choice."""
    return ["--ignore-scripts=false"] if scripts else ["--ignore-scripts"]


def staged_package_json(pkg: dict[str, Any]) -> dict[str, Any]:
    """The project's package.json as npm sees it in the staging folder: without
    its own scripts. They build the developer's checkout (``prepare: husky``,
    ``postinstall: node scripts/setup.js``), whose files are not in the staging
    folder, and the zip packs the source as it is; dependencies' scripts are
    governed by ``script_flags``."""
    return {k: v for k, v in pkg.items() if k != "scripts"}


# Tools an install script runs to compile or fetch a native addon.
NATIVE_BUILDERS = ("node-gyp", "node-pre-gyp", "prebuild-install", "cmake-js")
_INSTALL_SCRIPTS = ("preinstall", "install", "postinstall")


def _package_dir(rel: str) -> tuple[str, str]:
    """(package folder, path inside it) for a path relative to node_modules:
    ``a/node_modules/@s/b/build/x.node`` -> (``a/node_modules/@s/b``, ``build/x.node``)."""
    parts = rel.split("/")
    i = 0
    while True:
        end = i + (2 if parts[i].startswith("@") else 1)
        if end + 1 < len(parts) and parts[end] == "node_modules":
            i = end + 1
            continue
        return "/".join(parts[:end]), "/".join(parts[end:])


def skipped_scripts(node_modules: Path) -> list[str]:
    """Installed packages with install scripts (as npm's hidden lockfile records
    them), by package folder relative to ``node_modules``."""
    lock = read_manifest(node_modules / ".package-lock.json") or {}
    packages = lock.get("packages")
    if not isinstance(packages, dict):
        return []
    return sorted(k[len("node_modules/"):] for k, v in packages.items()
                  if k.startswith("node_modules/") and isinstance(v, dict)
                  and v.get("hasInstallScript"))


def unbuilt_packages(entries: Iterable[Entry], staged: Root) -> list[tuple[str, str]]:
    """Packages of the staged tree that look broken because their install script
    did not run: (package name, why). The heuristic:

    - no ``.node`` file anywhere in the package, and
    - a ``binding.gyp`` at its root (npm's implicit ``node-gyp rebuild``), or an
      install script that runs a native builder (``NATIVE_BUILDERS``), and
    - none of its optionalDependencies brings a ``.node`` file (the prebuilt binary
      shipped as a platform package, as @parcel/watcher or sharp do).

    A heuristic, so a warning: a package may be an optional extra its user loads
    in a try/catch (cpu-features under ssh2).
    """
    prefix = staged.prefix
    gyp: set[str] = set()
    built: set[str] = set()
    for e in entries:
        name = e.arcname
        if not name.startswith(prefix) or not name.endswith((".node", "/binding.gyp")):
            continue
        folder, inner = _package_dir(name[len(prefix):])
        if inner.endswith(".node"):
            built.add(folder)
        elif inner == "binding.gyp":
            gyp.add(folder)
    candidates = {folder: "binding.gyp and no compiled .node file" for folder in gyp - built}
    for folder in skipped_scripts(staged.path):
        if folder in built or folder in candidates:
            continue
        scripts = (read_manifest(staged.path / folder / "package.json") or {}).get("scripts")
        if not isinstance(scripts, dict):
            continue
        for key in _INSTALL_SCRIPTS:
            text = scripts.get(key)
            tool = next((t for t in NATIVE_BUILDERS if isinstance(text, str) and t in text), None)
            if tool:
                candidates[folder] = f"its {key} script runs {tool} and there is no .node file"
                break
    built_names = {package_name(folder) for folder in built}
    out = []
    for folder, why in sorted(candidates.items()):
        optional = (read_manifest(staged.path / folder / "package.json") or {}).get("optionalDependencies")
        if isinstance(optional, dict) and built_names.intersection(optional):
            continue
        out.append((package_name(folder), why))
    return out


def package_name(folder: str) -> str:
    """The package name of a folder relative to node_modules."""
    parts = folder.split("/")
    return "/".join(parts[-2:]) if len(parts) > 1 and parts[-2].startswith("@") else parts[-1]
