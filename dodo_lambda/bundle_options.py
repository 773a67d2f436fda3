"""``Function(bundle=...)``: the bundling options, validated into a frozen value.

Parsing never raises: a mistake comes back as one line that ``config.problem``
reports when doit runs, as for every other setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The handler's module, tried in this order: TypeScript first, so that a stale
# index.js compiled beside index.ts is not what gets bundled.
ENTRY_EXTS = (".ts", ".mts", ".tsx", ".js", ".mjs", ".cts", ".cjs")
FORMATS = {"esm": ".mjs", "cjs": ".js"}  # output extension: the handler string still resolves
LOADERS = frozenset({"base64", "binary", "copy", "css", "dataurl", "default", "empty", "file",
                     "global-css", "js", "json", "jsx", "local-css", "text", "ts", "tsx"})
KEYS = ("format", "minify", "sourcemap", "enable_source_maps", "external", "define", "loader")
# a package name or path, with at most one "*" (esbuild's wildcard)
_EXTERNAL_RE = re.compile(r"^[^\s*]*\*?[^\s*]*$")
_EXT_RE = re.compile(r"^\.[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class BundleOptions:
    """What esbuild is asked to do (plain data: part of the bundle step's inputs)."""

    format: str = "esm"
    minify: bool = False
    sourcemap: bool = False
    enable_source_maps: bool = False  # NODE_OPTIONS=--enable-source-maps on the function
    external: tuple[str, ...] = ()
    define: tuple[tuple[str, str], ...] = ()
    loader: tuple[tuple[str, str], ...] = ()

    @property
    def out_ext(self) -> str:
        return FORMATS[self.format]

    def provided(self) -> tuple[str, ...]:
        """Wildcard externals (``@aws-sdk/*``): left to the runtime or a layer, never shipped."""
        return tuple(x for x in self.external if "*" in x)

    def shipped(self) -> tuple[str, ...]:
        """Externals named exactly: shipped from the staged tree when installed there."""
        return tuple(x for x in self.external if "*" not in x)


def parse(value: Any) -> tuple[BundleOptions | None, str | None]:
    """``bundle=`` as given to Function: (options or None when off, problem or None)."""
    if value is None or value is False:
        return None, None
    if value is True:
        return BundleOptions(), None
    if not isinstance(value, Mapping):
        return None, f"bundle={value!r} must be True or a dict of options ({', '.join(KEYS)})"
    for key in value:
        if key not in KEYS:
            import difflib  # only for a mistake's message

            near = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            return None, f"bundle option {key!r} is unknown; {hint}use {', '.join(KEYS)}"
    fmt = value.get("format", "esm")
    if fmt not in FORMATS:
        return None, f"bundle format={fmt!r} must be 'esm' (index.mjs) or 'cjs' (index.js)"
    flags = {}
    for key in ("minify", "sourcemap", "enable_source_maps"):
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            return None, f"bundle {key}={flag!r} must be True or False"
        flags[key] = flag
    if flags["enable_source_maps"] and not flags["sourcemap"]:
        return None, "bundle enable_source_maps=True needs sourcemap=True (there is no map to use)"
    external = value.get("external", ())
    if isinstance(external, str):
        external = (external,)
    if not isinstance(external, (list, tuple)) or not all(
            isinstance(x, str) and x and _EXTERNAL_RE.match(x) for x in external):
        return None, (f"bundle external={external!r} must be a list of package names"
                      " (one '*' allowed, e.g. ['sharp', '@aws-sdk/*'])")
    define, problem = _pairs(value.get("define", {}), "define",
                             lambda k, v: bool(k) and isinstance(v, str),
                             "a dict of identifier -> JavaScript expression strings,"
                             " e.g. {'process.env.STAGE': '\"prod\"'}")
    if problem:
        return None, problem
    loader, problem = _pairs(value.get("loader", {}), "loader",
                             lambda k, v: bool(_EXT_RE.match(k)) and v in LOADERS,
                             f"a dict of '.ext' -> loader ({', '.join(sorted(LOADERS))}),"
                             " e.g. {'.txt': 'text'}")
    if problem:
        return None, problem
    return BundleOptions(format=fmt, minify=flags["minify"], sourcemap=flags["sourcemap"],
                         enable_source_maps=flags["enable_source_maps"],
                         external=tuple(external), define=define, loader=loader), None


def _pairs(value: Any, name: str, ok: Any, shape: str
           ) -> tuple[tuple[tuple[str, str], ...], str | None]:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and ok(k, v) for k, v in value.items()):
        return (), f"bundle {name}={value!r} must be {shape}"
    return tuple(sorted(value.items())), None


def target(runtime: str) -> str:
    """esbuild's target for a Lambda runtime: nodejs22.x -> node22."""
    return "node" + runtime.removeprefix("nodejs").removesuffix(".x")


def entry(source: Path, module: str) -> Path | None:
    """The handler module's source file (``index`` -> index.ts, ...), or None."""
    for ext in ENTRY_EXTS:
        path = source / (module + ext)
        if path.is_file():
            return path
    return None
