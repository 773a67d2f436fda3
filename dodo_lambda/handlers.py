"""The handler, checked in the package as Lambda will load it: is its file in the
zip (or in a layer the function uses), is it loaded as the kind of module its
syntax needs, does it export the handler, and does that handler still work on
the runtime (Node.js 24 removed callback handlers).

Nothing of the user's code is run: the module is read statically
(``jsmodule``). Forms that cannot be read give warnings, never errors.

How Lambda loads the handler (source: aws-lambda-nodejs-runtime-interface-client,
src/UserFunction.js and src/function/*.ts): ``handler`` is ``[dir/]module.export``
where ``module`` is the part of the last path segment before its first dot; ``..``
is refused; ``dir/module`` is tried as is, then with ``.js``, ``.mjs``, ``.cjs``
under /var/task; then ``module`` is resolved like ``require(module)`` from there
(node_modules, and the layers' /opt/nodejs/nodeNN/node_modules and
/opt/nodejs/node_modules on NODE_PATH). A ``.js`` file is an ES module when the
nearest package.json (not looking above a node_modules folder) says
``"type": "module"``. The export may be a dotted path; an ES module's default
export is searched too.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import jsmodule, rules

EXTENSIONS = ("", ".js", ".mjs", ".cjs")
MAX_READ = 16 * 2**20  # a bigger file is not read (a bundle that size is unusual)


@dataclass(frozen=True)
class HandlerCheck:
    """The verdict: an error refuses the package; warnings are said and ignored."""

    error: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Located:
    arcname: str | None  # the file in the package, when it is there
    in_layer: bool = False  # found in a layer's files (not read further)
    maybe_in_layer: bool = False  # not found, but a layer whose files are unknown may hold it


def check_handler(names: Collection[str], read: Callable[[str], bytes], handler: str,
                  runtime: str, *, source: str,
                  layers: Sequence[Collection[str] | None] = ()) -> HandlerCheck:
    """Check ``handler`` against the package whose files are ``names`` (zip paths;
    ``read`` gives a file's bytes) and the function's ``layers`` (each the zip paths
    of a layer, or None for a layer whose files are unknown, such as an ARN).
    Messages read after "function 'name': "; ``source`` is the folder shown."""
    problem = rules.handler_problem(handler, source)
    if problem:
        return HandlerCheck(error=problem)
    folder, _, last = handler.rpartition("/")
    module, _, export = last.partition(".")
    located = _locate(names, folder, module, rules.runtime_major(runtime), layers)
    if isinstance(located, str):
        return HandlerCheck(error=located)
    if located.in_layer:
        return HandlerCheck()
    if located.arcname is None:
        return _missing(names, handler, folder, module, source, located.maybe_in_layer)
    return _check_module(names, read, located.arcname, handler, export, runtime, source)


def in_package(names: Collection[str], handler: str) -> bool:
    """Whether the handler's own file is among ``names`` (then the layers' files
    are not needed to check it)."""
    folder, _, last = str(handler).rpartition("/")
    if folder.startswith("/"):
        return False
    folder = posixpath.normpath(folder) if folder else ""
    prefix = "" if folder in ("", ".") else folder + "/"
    module = last.partition(".")[0]
    return any(prefix + module + ext in names for ext in EXTENSIONS)


def _locate(names: Collection[str], folder: str, module: str, major: int | None,
            layers: Sequence[Collection[str] | None]) -> _Located | str:
    if folder.startswith("/"):
        if folder == "/var/task" or folder.startswith("/var/task/"):
            folder = folder[len("/var/task"):].lstrip("/")
        elif folder.startswith("/opt/"):
            rel = posixpath.normpath(folder[len("/opt/"):]) + "/" + module
            found = any(n is not None and any(rel + e in n for e in EXTENSIONS) for n in layers)
            return _Located(None, in_layer=found, maybe_in_layer=None in layers)
        else:
            return (f"handler directory {folder} is outside the package (/var/task) and the"
                    " layers (/opt); name the file relative to the package, e.g."
                    f" handler='{module}.handler'")
    folder = posixpath.normpath(folder) if folder else ""
    prefix = "" if folder in ("", ".") else folder + "/"
    for ext in EXTENSIONS:
        if prefix + module + ext in names:
            return _Located(prefix + module + ext)
    # require(module) from the package: node_modules up the tree, then NODE_PATH
    bases = []
    parts = prefix.rstrip("/").split("/") if prefix else []
    for i in range(len(parts), -1, -1):
        bases.append("/".join(parts[:i] + ["node_modules", module]))
    for base in bases:
        for ext in ("", ".js", "/package.json", "/index.js"):
            if base + ext in names:
                target = _package_main(names, base) if ext == "/package.json" else base + ext
                return _Located(target or base + ext)
    layer_bases = [f"nodejs/node{major}/node_modules/{module}", f"nodejs/node_modules/{module}"]
    for layer in layers:
        if layer is not None and any(
                n.startswith(b + "/") or n in (b, b + ".js") for b in layer_bases for n in layer):
            return _Located(None, in_layer=True)
    return _Located(None, maybe_in_layer=None in layers)


def _package_main(names: Collection[str], base: str) -> str | None:
    for candidate in ("/index.js", "/index.cjs", "/index.mjs"):
        if base + candidate in names:
            return base + candidate
    return None  # its package.json names the entry point: not read further


def _missing(names: Collection[str], handler: str, folder: str, module: str, source: str,
             maybe_in_layer: bool) -> HandlerCheck:
    stem = posixpath.join(folder, module) if folder else module
    if maybe_in_layer:
        return HandlerCheck(warnings=(
            f"handler {handler!r}: {_shown(source, stem)}.js (or .mjs/.cjs) is not in the"
            " package; a layer given as an ARN may provide it, which dodo_lambda cannot see",))
    on_disk = [stem + e for e in EXTENSIONS[1:] if (Path(source) / (stem + e)).is_file()]
    if on_disk:
        return HandlerCheck(error=(
            f"handler {handler!r} needs {_shown(source, on_disk[0])}, which exists but is left"
            " out of the package (by .lambdaignore or exclude=); include it (include=["
            f"'{on_disk[0]}']) or fix handler="))
    return HandlerCheck(error=(
        f"handler {handler!r} needs {_shown(source, stem)}.js (or .mjs/.cjs) in the package"
        f" and it is not there; fix handler= or add the file to {source}"))


def _shown(source: str, arcname: str) -> str:
    if arcname.startswith("node_modules/") or source in ("", "."):
        return arcname
    return f"{source.rstrip('/')}/{arcname}"


def _package_type(names: Collection[str], read: Callable[[str], bytes], arcname: str
                  ) -> tuple[str | None, str | None, str | None]:
    """(arcname of the nearest package.json, its "type", a warning) for a file."""
    folder = posixpath.dirname(arcname)
    while True:
        if folder.endswith("node_modules"):
            return None, None, None
        candidate = posixpath.join(folder, "package.json") if folder else "package.json"
        if candidate in names:
            try:
                data = json.loads(read(candidate))
            except (OSError, ValueError):
                return candidate, None, f"{candidate} cannot be read as JSON; Lambda ignores it"
            kind = data.get("type") if isinstance(data, dict) else None
            return candidate, kind if isinstance(kind, str) else None, None
        if not folder:
            return None, None, None
        folder = posixpath.dirname(folder)


def _check_module(names: Collection[str], read: Callable[[str], bytes], arcname: str,
                  handler: str, export: str, runtime: str, source: str) -> HandlerCheck:
    shown = _shown(source, arcname)
    warnings: list[str] = []
    ext = posixpath.splitext(arcname)[1]
    pkg, pkg_type, warning = _package_type(names, read, arcname)
    if warning:
        warnings.append(warning)
    esm = ext == ".mjs" or (ext == ".js" and pkg_type == "module")
    try:
        data = read(arcname)
    except OSError as exc:
        return HandlerCheck(warnings=(*warnings, f"cannot read {shown} ({exc}); handler not checked"))
    if len(data) > MAX_READ:
        return HandlerCheck(warnings=(*warnings, f"{shown} is over {MAX_READ // 2**20} MiB;"
                                                 " its handler is not checked"))
    mod = jsmodule.read(data.decode("utf-8", errors="replace"))
    stem = posixpath.splitext(posixpath.basename(arcname))[0]
    pkg_shown = _shown(source, pkg) if pkg else None
    if not esm and mod.esm:
        if ext == ".cjs":
            return HandlerCheck(error=(
                f"{shown} uses ES module syntax ({mod.esm[0]}) but a .cjs file is always"
                f" CommonJS; rename it to {stem}.mjs or use require()/module.exports"))
        where = (f"{pkg_shown} has no \"type\": \"module\"" if pkg_shown
                 else "there is no package.json with \"type\": \"module\" above it")
        return HandlerCheck(error=(
            f"{shown} uses ES module syntax ({mod.esm[0]}) but {where}, so Lambda loads it as"
            f" CommonJS; add \"type\": \"module\" to {pkg_shown or _shown(source, 'package.json')}"
            f" or rename the file to {stem}.mjs"))
    if esm and mod.cjs:
        why = (f"\"type\": \"module\" in {pkg_shown}" if ext == ".js" else "the .mjs extension")
        fix = (f"rename it to {stem}.cjs" if ext == ".mjs" else
               f"rename it to {stem}.cjs or drop \"type\": \"module\" from {pkg_shown}")
        return HandlerCheck(error=(
            f"{shown} uses CommonJS ({mod.cjs[0]}) but Lambda loads it as an ES module ({why}),"
            f" where that is not defined; use export/import, or {fix}"))
    name, _, nested = export.partition(".")
    if name not in mod.exports:
        if mod.unreadable:
            return HandlerCheck(warnings=(*warnings, (
                f"cannot tell whether {shown} exports '{name}' ({mod.unreadable[0]}); check"
                f" handler={handler!r} yourself")))
        seen = ", ".join(sorted(mod.exports)) or "nothing dodo_lambda can see"
        return HandlerCheck(error=(
            f"{shown} does not export '{name}' (it exports {seen}); fix handler={handler!r}"
            f" or export {name} from {shown}"))
    if not nested and rules.callbacks_removed(runtime):
        count = jsmodule.parameter_count(mod.exports[name], mod.code)
        if count is not None and count >= 3:
            return HandlerCheck(error=(
                f"handler '{name}' in {shown} takes a callback ({count} parameters, as in"
                f" (event, context, callback)), which {runtime} no longer supports; make it"
                " async and return the result, or stay on runtime='nodejs22.x'"))
    return HandlerCheck(warnings=tuple(warnings))
