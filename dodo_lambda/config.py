"""Function and Layer: validated settings as frozen dataclasses.

Construction never raises for a user's mistake, whatever the types given:
loading dodo.py must not end in a traceback. The problem is kept and every task
of the item reports it as one line when doit runs (see ``problem``). Lambda's
rules themselves live in ``rules``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from . import rules

if TYPE_CHECKING:
    from .bundle_options import BundleOptions

HANDLER_EXTS = (".js", ".mjs", ".cjs")


def _strings(value: Any, key: str) -> tuple[tuple[Any, ...], str | None]:
    """``value`` as a tuple of strings (a single string is one item), and what is
    wrong with it; never raises."""
    if value is None:
        return (), None
    if isinstance(value, str):
        return (value,), None
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        return (), f"{key}={value!r} must be a list of strings"
    try:
        items = tuple(value)
    except Exception as exc:  # a user's iterable may raise anything
        return (), f"{key}= could not be read ({exc})"
    bad = [x for x in items if not isinstance(x, str)]
    if bad:
        return items, f"{key}= must hold strings only, not {bad[0]!r}"
    return items, None


def _path(value: Any, key: str) -> tuple[str, str | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        return (path, None) if isinstance(path, str) else (repr(value), f"{key}= must be a path")
    return repr(value), f"{key}={value!r} must be a folder path (a string)"


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Layer:
    """A Lambda layer built from a folder with package.json (and a lock file when it
    has dependencies).

    Its dependencies are installed for the target platform and packed as
    ``nodejs/node_modules/...``; anything the source keeps under ``nodejs/`` is
    packed too. Without ``architectures=`` it is built for the architecture of the
    functions that use it.
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
    allow_deprecated_runtime: bool = False
    scripts: bool = False  # run dependencies' install scripts (see README, Security)
    keep_layer_versions: int | None = None  # delete older versions no function uses
    _problems: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    # the users' architecture, when architectures= is not given (set by lambda_tasks)
    _users_architecture: str | None = field(default=None, init=False, repr=False,
                                            compare=False)
    # a stage's copy (stages.staged) is deployed under another name, built under this one
    _build_name: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        for attr in ("runtimes", "architectures", "include", "exclude"):
            value, problem = _strings(getattr(self, attr), attr)
            _set(self, attr, value)
            if problem:
                problems.append(problem)
        source, problem = _path(self.source, "source")
        _set(self, "source", source)
        if problem:
            problems.append(problem)
        _set(self, "_problems", tuple(problems))

    @property
    def kind(self) -> str:
        return "layer"

    @property
    def build_name(self) -> str:
        """The name its package and tasks go by (its name, unless a stage renamed it)."""
        return self._build_name or self.name

    @property
    def architecture(self) -> str:
        """The platform its native dependencies are installed for."""
        if self.architectures:
            return self.architectures[0]
        return self._users_architecture or "x86_64"

    @property
    def runtime(self) -> str:
        return self.runtimes[0] if self.runtimes else rules.DEFAULT_RUNTIME

    @property
    def problem(self) -> str | None:
        return layer_problem(self)


@dataclass(frozen=True)
class Function:
    """A Node.js Lambda function: where its code is and how it is deployed.

    Paths are relative to the directory doit runs in. Only the function
    settings given (memory, timeout, environment, description) are managed.
    ``allow_deprecated_runtime=True`` deploys on a runtime that Lambda's published
    schedule says is blocked (for accounts with an extension).
    """

    name: str
    source: str
    handler: str
    runtime: str = rules.DEFAULT_RUNTIME
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
    allow_deprecated_runtime: bool = False
    bundle: Any = None  # True or a dict of options: see bundle_options
    scripts: bool = False  # run dependencies' install scripts (see README, Security)
    keep_versions: int | None = None  # delete published versions beyond the newest N
    # more policies for the role dodo_lambda creates when role= is not given ("vpc",
    # "xray" or policy ARNs; AWSLambdaBasicExecutionRole is always attached): see iam.py
    role_policies: tuple[str, ...] = ()
    _frozen_env: tuple[tuple[str, str], ...] | None = field(
        default=None, init=False, repr=False, compare=False)
    _problems: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    _bundle: tuple[BundleOptions | None, str | None] = field(
        default=(None, None), init=False, repr=False, compare=False)
    # a stage's copy (stages.staged) is deployed under another name, built under this one
    _build_name: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        for attr in ("include", "exclude", "role_policies"):
            value, problem = _strings(getattr(self, attr), attr)
            _set(self, attr, value)
            if problem:
                problems.append(problem)
        layers = self.layers
        if layers is None or isinstance(layers, (str, Layer)):
            layers = () if layers is None else (layers,)
        elif isinstance(layers, Iterable) and not isinstance(layers, (bytes, Mapping)):
            layers = tuple(layers)
        else:
            problems.append(f"layers={layers!r} must be a list of Layer objects or layer ARNs")
            layers = ()
        _set(self, "layers", layers)
        source, problem = _path(self.source, "source")
        _set(self, "source", source)
        if problem:
            problems.append(problem)
        env_problem = rules.environment_problem(self.environment)
        if env_problem:
            problems.append(env_problem)
        elif self.environment is not None:
            _set(self, "_frozen_env", tuple(sorted(self.environment.items())))
        _set(self, "_bundle", _parse_bundle(self.bundle))
        _set(self, "_problems", tuple(problems))

    @property
    def kind(self) -> str:
        return "function"

    @property
    def build_name(self) -> str:
        """The name its package and tasks go by (its name, unless a stage renamed it)."""
        return self._build_name or self.name

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
    name = item.name
    if isinstance(name, str) and name.isprintable() and "'" not in name:
        return f"{item.kind} '{name}'"
    return f"{item.kind} {name!r}"  # a name that is not plain text, shown escaped


def _common_problem(item: Function | Layer) -> str | None:
    checks = [
        rules.bucket_problem(item.bucket),
        rules.bucket_prefix_problem(item.bucket_prefix),
        rules.description_problem(item.description),
        None if isinstance(item.allow_deprecated_runtime, bool) else
        f"allow_deprecated_runtime={item.allow_deprecated_runtime!r} must be True or False",
        None if isinstance(item.scripts, bool) else
        f"scripts={item.scripts!r} must be True (run the dependencies' install scripts) or"
        " False (the default)",
    ]
    problem = next((p for p in checks if p), None)
    if problem:
        return problem
    src = Path(item.source)
    if src.is_file():
        return (f"source {item.source} is a file, not a folder; set source= to the folder"
                f" that holds it (e.g. source='{src.parent.as_posix()}')")
    if not src.is_dir():
        return (f"source folder {item.source} does not exist (relative to {Path.cwd()});"
                " set source= to the folder with its code")
    return None


def function_problem(fn: Function, today: date | None = None) -> str | None:
    """What is wrong with ``fn`` as one line, or None."""
    problem = _function_problem(fn, today)
    return f"{label(fn)}: {problem}" if problem else None


def _function_problem(fn: Function, today: date | None) -> str | None:
    if fn._problems:
        return fn._problems[0]
    name = rules.function_name_problem(fn.name)
    if name:
        return name
    allow = fn.allow_deprecated_runtime is True
    runtime = rules.runtime_verdict(fn.runtime, today, allow_deprecated=allow).error
    if runtime:
        return runtime
    arns = [x for x in fn.layers if not isinstance(x, Layer)]
    for layer in arns:
        if not isinstance(layer, str):
            return f"layers must be Layer objects or layer version ARNs, not {layer!r}"
    checks = [
        rules.architecture_problem(fn.architecture),
        rules.layers_problem(arns, [x.name for x in fn.layers if isinstance(x, Layer)]),
        rules.int_setting_problem("memory", fn.memory, *rules.MEMORY_RANGE, "MB"),
        rules.int_setting_problem("timeout", fn.timeout, *rules.TIMEOUT_RANGE, "seconds"),
        rules.alias_problem(fn.alias),
        None if isinstance(fn.publish, bool) else f"publish={fn.publish!r} must be True or False",
        f"alias={fn.alias!r} needs publish=True (an alias points at a version)"
        if fn.alias is not None and fn.publish is not True else None,
        _keep_problem("keep_versions", fn.keep_versions),
        f"keep_versions={fn.keep_versions!r} needs publish=True (it prunes published versions)"
        if fn.keep_versions is not None and fn.publish is not True else None,
        rules.role_problem(fn.role),
        _role_policies_problem(fn),
        fn._bundle[1],
        _common_problem(fn),
        rules.handler_problem(fn.handler, fn.source),
    ]
    return next((p for p in checks if p), None) or _entry_problem(fn)


def bundled(item: Function | Layer) -> TypeGuard[Function]:
    """Whether the item is a function whose handler esbuild bundles (``bundle=``)."""
    return isinstance(item, Function) and item.bundle_options is not None


def _parse_bundle(value: Any) -> tuple[BundleOptions | None, str | None]:
    if value is None or value is False:  # most functions: esbuild's options not loaded
        return None, None
    from . import bundle_options

    return bundle_options.parse(value)


def _entry_problem(fn: Function) -> str | None:
    """A bundled function needs its entry file in the source; an unbundled one with
    only a TypeScript entry is told to bundle (the rest is checked in the zip)."""
    src = Path(fn.source)
    module = fn.handler.rpartition(".")[0]
    unbundled = fn.bundle_options is None
    if unbundled and any((src / (module + ext)).is_file() for ext in HANDLER_EXTS):
        return None  # the common case, decided without esbuild's options
    from . import bundle_options

    typed = bundle_options.entry(src, module)
    if unbundled and typed is not None:
        return (f"handler file {src / module}.js (or .mjs/.cjs) not found, but {typed} is"
                " there; TypeScript needs bundling: add bundle=True to the Function")
    if not unbundled and typed is None:
        others = "/".join(bundle_options.ENTRY_EXTS[1:])
        return (f"handler file {src / module}.ts (or {others}) not found;"
                f" fix handler={fn.handler!r} or add the file to {fn.source}")
    return None


def _role_policies_problem(fn: Function) -> str | None:
    if not fn.role_policies:
        return None
    if fn.role is not None:
        return ("role_policies= is for the role dodo_lambda creates when role= is not given;"
                f" attach them to role {fn.role} yourself, or drop role=")
    return rules.policies_problem(fn.role_policies)


def _keep_problem(field_name: str, value: object) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return (f"{field_name}={value!r} must be a whole number of versions, 1 or more"
            " (or None to keep them all)")


def layer_problem(layer: Layer, today: date | None = None) -> str | None:
    problem = _layer_problem(layer, today)
    return f"{label(layer)}: {problem}" if problem else None


def _layer_problem(layer: Layer, today: date | None) -> str | None:
    if layer._problems:
        return layer._problems[0]
    name = rules.layer_name_problem(layer.name) or \
        _keep_problem("keep_layer_versions", layer.keep_layer_versions)
    if name:
        return name
    allow = layer.allow_deprecated_runtime is True
    for rt in layer.runtimes:
        problem = rules.runtime_verdict(rt, today, allow_deprecated=allow).error
        if problem:
            return f"runtimes=: {problem}"
    for arch in layer.architectures:
        problem = rules.architecture_problem(arch)
        if problem:
            return problem
    common = _common_problem(layer)
    if common:
        return common
    from .npm import has_dependencies, lock_file  # npm imports config

    src = Path(layer.source)
    if not (src / "package.json").is_file():
        return (f"{src / 'package.json'} not found; a layer source is a folder with"
                " package.json (and package-lock.json once it has dependencies)")
    if has_dependencies(layer) and lock_file(src) is None and not _in_workspace(src):
        return (f"{src / 'package-lock.json'} not found; run"
                f" `npm install --package-lock-only` in {layer.source} and commit the lock file")
    return None


def _in_workspace(src: Path) -> bool:
    """A workspace of an npm workspaces root: the root's lock governs it."""
    from . import workspaces
    from .errors import DodoLambdaError

    try:
        return workspaces.find(src, "") is not None
    except DodoLambdaError:  # its problem is reported by lambda_tasks (workspaces.problem)
        return True
