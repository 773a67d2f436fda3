"""Function and Layer: validated settings as frozen dataclasses.

Construction never raises for a user's mistake: loading dodo.py must not end in
a traceback. The problem is kept and every task of the item reports it as one
line when doit runs (see ``problem``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bundle_options
from .bundle_options import BundleOptions

RUNTIME_RE = re.compile(r"^nodejs\d+\.x$")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ARCHITECTURES = {"x86_64": "x64", "arm64": "arm64"}  # Lambda name -> npm --cpu
HANDLER_EXTS = (".js", ".mjs", ".cjs")
MAX_LAYERS = 5
LAYER_ARN_RE = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]+:\d+$")


def _tuple(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Layer:
    """A Lambda layer built from a folder with package.json and a lock file.

    Its dependencies are installed for the target platform and packed as
    ``nodejs/node_modules/...``; anything the source keeps under ``nodejs/`` is
    packed too.
    """

    name: str
    source: str
    runtimes: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    description: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    bucket: str | None = None
    bucket_prefix: str = ""
    scripts: bool = False  # run dependencies' install scripts (see README, Security)

    def __post_init__(self) -> None:
        for attr in ("runtimes", "architectures", "include", "exclude"):
            object.__setattr__(self, attr, _tuple(getattr(self, attr)))
        object.__setattr__(self, "source", str(self.source))

    @property
    def kind(self) -> str:
        return "layer"

    @property
    def architecture(self) -> str:
        """The platform its native dependencies are installed for."""
        return self.architectures[0] if self.architectures else "x86_64"

    @property
    def runtime(self) -> str:
        return self.runtimes[0] if self.runtimes else "nodejs20.x"

    @property
    def problem(self) -> str | None:
        return layer_problem(self)


@dataclass(frozen=True)
class Function:
    """A Node.js Lambda function: where its code is and how it is deployed.

    Paths are relative to the directory doit runs in. Only the function
    settings given (memory, timeout, environment, description) are managed.
    """

    name: str
    source: str
    handler: str
    runtime: str = "nodejs20.x"
    architecture: str = "x86_64"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    layers: tuple[Layer | str, ...] = ()
    bucket: str | None = None
    bucket_prefix: str = ""
    role: str | None = None
    publish: bool = False
    alias: str | None = None
    memory: int | None = None
    timeout: int | None = None
    environment: Mapping[str, str] | None = field(default=None, repr=False)
    description: str | None = None
    bundle: Any = None  # True or a dict of options: see bundle_options
    scripts: bool = False  # run dependencies' install scripts (see README, Security)
    _frozen_env: tuple[tuple[str, str], ...] | None = field(
        default=None, init=False, repr=False, compare=False)
    _bundle: tuple[BundleOptions | None, str | None] = field(
        default=(None, None), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for attr in ("include", "exclude"):
            object.__setattr__(self, attr, _tuple(getattr(self, attr)))
        layers = self.layers
        if isinstance(layers, (str, Layer)):
            layers = (layers,)
        object.__setattr__(self, "layers", tuple(layers or ()))
        object.__setattr__(self, "source", str(self.source))
        if isinstance(self.environment, Mapping):
            env = tuple(sorted((str(k), str(v)) for k, v in self.environment.items()))
            object.__setattr__(self, "_frozen_env", env)
        object.__setattr__(self, "_bundle", bundle_options.parse(self.bundle))

    @property
    def kind(self) -> str:
        return "function"

    @property
    def bundle_options(self) -> BundleOptions | None:
        """The validated ``bundle=`` options, None when the function is not bundled."""
        return self._bundle[0]

    @property
    def problem(self) -> str | None:
        return function_problem(self)

    def settings(self) -> dict[str, object]:
        """The managed function configuration, in Lambda's own field names."""
        out: dict[str, object] = {}
        if self.memory is not None:
            out["MemorySize"] = self.memory
        if self.timeout is not None:
            out["Timeout"] = self.timeout
        env = None if self._frozen_env is None else dict(self._frozen_env)
        opts = self.bundle_options
        if opts is not None and opts.enable_source_maps:
            # asked for explicitly: parsing maps slows cold starts (Lambda's own advice)
            env = env or {}
            node_options = env.get("NODE_OPTIONS", "").split()
            if "--enable-source-maps" not in node_options:
                env["NODE_OPTIONS"] = " ".join([*node_options, "--enable-source-maps"])
        if env is not None:
            out["Environment"] = {"Variables": env}
        if self.description is not None:
            out["Description"] = self.description
        return out


def label(item: Function | Layer) -> str:
    return f"{item.kind} '{item.name}'"


def _common_problem(item: Function | Layer) -> str | None:
    who = label(item)
    if not isinstance(item.name, str) or not NAME_RE.match(item.name):
        return (
            f"{who}: invalid name; use 1-64 letters, digits, '-' or '_'"
        )
    src = Path(item.source)
    if not src.is_dir():
        return (
            f"{who}: source folder {item.source} does not exist"
            f" (relative to {Path.cwd()}); set source= to the folder with its code"
        )
    if item.bucket is not None and (not isinstance(item.bucket, str) or not item.bucket):
        return f"{who}: bucket must be a non-empty S3 bucket name or None"
    if not isinstance(item.scripts, bool):
        return (f"{who}: scripts={item.scripts!r} must be True (run the dependencies' install"
                " scripts) or False (the default)")
    return None


def function_problem(fn: Function) -> str | None:
    """What is wrong with ``fn`` as one line, or None."""
    who = label(fn)
    if not isinstance(fn.runtime, str) or not RUNTIME_RE.match(fn.runtime):
        return (
            f"{who}: runtime {fn.runtime!r} is not a Node.js runtime;"
            " use e.g. runtime='nodejs20.x'"
        )
    if fn.architecture not in ARCHITECTURES:
        return f"{who}: architecture {fn.architecture!r} is not supported; use 'x86_64' or 'arm64'"
    if len(fn.layers) > MAX_LAYERS:
        return (
            f"{who}: {len(fn.layers)} layers given, Lambda allows at most {MAX_LAYERS};"
            " merge some layers"
        )
    for layer in fn.layers:
        if isinstance(layer, str):
            if not LAYER_ARN_RE.match(layer):
                return (
                    f"{who}: layer {layer!r} is not a layer version ARN"
                    " (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION); pass a Layer or an ARN"
                )
        elif not isinstance(layer, Layer):
            return f"{who}: layers must be Layer objects or layer version ARNs, not {layer!r}"
    if fn.memory is not None and (not isinstance(fn.memory, int) or not 128 <= fn.memory <= 10240):
        return f"{who}: memory={fn.memory!r} must be an integer number of MB from 128 to 10240"
    if fn.timeout is not None and (not isinstance(fn.timeout, int) or not 1 <= fn.timeout <= 900):
        return f"{who}: timeout={fn.timeout!r} must be an integer number of seconds from 1 to 900"
    if fn.alias is not None and not fn.publish:
        return f"{who}: alias={fn.alias!r} needs publish=True (an alias points at a version)"
    if fn._bundle[1]:
        return f"{who}: {fn._bundle[1]}"
    common = _common_problem(fn)
    if common:
        return common
    module, dot, export = str(fn.handler).rpartition(".")
    if not dot or not module or not export:
        return (
            f"{who}: handler {fn.handler!r} must be 'file.export', e.g. 'index.handler'"
            f" for {fn.source}/index.js exporting handler"
        )
    src = Path(fn.source)
    if fn.bundle_options is not None:
        if bundle_options.entry(src, module) is None:
            others = "/".join(bundle_options.ENTRY_EXTS[1:])
            return (
                f"{who}: handler file {src / module}.ts (or {others}) not found;"
                f" fix handler={fn.handler!r} or add the file to {fn.source}"
            )
        return None
    if not any((src / (module + ext)).is_file() for ext in HANDLER_EXTS):
        typed = bundle_options.entry(src, module)
        if typed is not None:
            return (
                f"{who}: handler file {src / module}.js (or .mjs/.cjs) not found, but {typed}"
                " is there; TypeScript needs bundling: add bundle=True to the Function"
            )
        return (
            f"{who}: handler file {src / module}.js (or .mjs/.cjs) not found;"
            f" fix handler={fn.handler!r} or add the file to {fn.source}"
        )
    return None


def layer_problem(layer: Layer) -> str | None:
    who = label(layer)
    for rt in layer.runtimes:
        if not RUNTIME_RE.match(str(rt)):
            return f"{who}: runtime {rt!r} is not a Node.js runtime; use e.g. 'nodejs20.x'"
    for arch in layer.architectures:
        if arch not in ARCHITECTURES:
            return f"{who}: architecture {arch!r} is not supported; use 'x86_64' or 'arm64'"
    common = _common_problem(layer)
    if common:
        return common
    src = Path(layer.source)
    if not (src / "package.json").is_file():
        return (
            f"{who}: {src / 'package.json'} not found; a layer source is a folder with"
            " package.json and package-lock.json (run `npm install` there)"
        )
    if not (src / "package-lock.json").is_file() and not (src / "npm-shrinkwrap.json").is_file() \
            and not _in_workspace(src):
        return (
            f"{who}: {src / 'package-lock.json'} not found; run"
            f" `npm install --package-lock-only` in {layer.source} and commit the lock file"
        )
    return None


def _in_workspace(src: Path) -> bool:
    """A workspace of an npm workspaces root: the root's lock governs it."""
    from . import workspaces
    from .errors import DodoLambdaError

    try:
        return workspaces.find(src, "") is not None
    except DodoLambdaError:  # its problem is reported by lambda_tasks (workspaces.problem)
        return True
