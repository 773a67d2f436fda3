"""Lambda's own rules and limits, held here because the local emulator (moto)
accepts almost anything: runtimes, names, sizes, settings.

Every number and date carries its source. Each check takes plain values and
returns a message (None when fine) that reads after "function 'name': " — the
caller names the item, so these functions stay free of config objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

# -- runtimes ------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeLife:
    """When Lambda deprecates a runtime, then refuses to create, then to update
    functions on it (each from that day on)."""

    deprecated: date
    block_create: date
    block_update: date


# Source: AWS Lambda Developer Guide, "Lambda runtimes" — the "Supported runtimes"
# and "Deprecated runtimes" tables (columns Deprecation date / Block function create
# / Block function update), https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html,
# as of 2026-11-30. AWS moves these dates: update the table, and users with an
# exception can pass allow_deprecated_runtime=True.
NODE_RUNTIMES: dict[str, RuntimeLife] = {
    "nodejs18.x": RuntimeLife(date(2025, 9, 1), date(2025, 10, 1), date(2025, 11, 1)),
    "nodejs20.x": RuntimeLife(date(2026, 4, 30), date(2026, 8, 31), date(2026, 9, 30)),
    "nodejs22.x": RuntimeLife(date(2027, 4, 30), date(2027, 6, 1), date(2027, 7, 1)),
    "nodejs24.x": RuntimeLife(date(2028, 4, 30), date(2028, 6, 1), date(2028, 7, 1)),
}
DEFAULT_RUNTIME = "nodejs24.x"

# Source: Lambda quotas, "Deployment package (.zip file archive) size: 50 MB (zipped, when
# uploading directly)": a direct (ZipFile) upload's 69,905,067-byte request body is 50 MiB
# once base64-encoded. Bigger zips go through S3.
DIRECT_UPLOAD_LIMIT = 50 * 2**20


def log_group(function: str) -> str:
    """The CloudWatch Logs group Lambda writes a function's logs to."""
    return f"/aws/lambda/{function}"
RUNTIME_RE = re.compile(r"nodejs(\d+)\.x")

# Source: the Lambda runtime interface client for Node.js 24 and later
# (aws-lambda-nodejs-runtime-interface-client, src/function/callback-deprecation.ts):
# a handler declared with 3 or more parameters that is not a response-streaming
# handler fails at its first invocation ("AWS Lambda has removed support for
# callback-based function handlers starting with Node.js 24").
CALLBACKS_REMOVED_FROM = 24


def runtime_major(runtime: str) -> int | None:
    match = RUNTIME_RE.fullmatch(runtime) if isinstance(runtime, str) else None
    return int(match.group(1)) if match else None


def current_runtime(today: date) -> str:
    """The newest runtime in the table, the one to move to."""
    live = [r for r, life in NODE_RUNTIMES.items() if today < life.deprecated]
    return max(live or NODE_RUNTIMES, key=lambda r: runtime_major(r) or 0)


@dataclass(frozen=True)
class RuntimeVerdict:
    """What Lambda's lifecycle says about a runtime today."""

    error: str | None = None  # refuse before any AWS call
    create_error: str | None = None  # refuse only when the function would be created
    warning: str | None = None  # say so and carry on


def runtime_verdict(runtime: object, today: date | None = None, *,
                    allow_deprecated: bool = False) -> RuntimeVerdict:
    """Lambda's verdict on ``runtime`` on ``today`` (default: the real today).

    ``allow_deprecated`` turns every lifecycle refusal into a warning (for accounts
    AWS granted an extension, or a table that fell behind AWS's dates); a string
    that is not a Node.js runtime stays an error.
    """
    today = today or date.today()
    major = runtime_major(runtime)  # type: ignore[arg-type]
    newest = max(runtime_major(r) or 0 for r in NODE_RUNTIMES)
    move = current_runtime(today)
    if major is None:
        return RuntimeVerdict(error=f"runtime {runtime!r} is not a Node.js runtime;"
                                    f" use runtime='{move}'")
    hatch = " (or allow_deprecated_runtime=True if AWS extended it for your account)"
    life = NODE_RUNTIMES.get(str(runtime))
    if life is None:
        if major > newest:
            return RuntimeVerdict(warning=(
                f"runtime {runtime} is newer than dodo_lambda's runtime table (newest"
                f" {current_runtime(date.max)}); deploying it as given"))
        message = (f"runtime {runtime} is not accepted by Lambda (Node.js runtimes:"
                   f" {', '.join(NODE_RUNTIMES)}); use runtime='{move}'")
        if allow_deprecated:
            return RuntimeVerdict(warning=message + " — sent anyway (allow_deprecated_runtime)")
        return RuntimeVerdict(error=message + hatch)
    if today >= life.block_update:
        message = (f"Lambda refuses to create or update functions on runtime {runtime} since"
                   f" {life.block_update.isoformat()} (creates since"
                   f" {life.block_create.isoformat()}); move to runtime='{move}'")
        if allow_deprecated:
            return RuntimeVerdict(warning=message + " — sent anyway (allow_deprecated_runtime)")
        return RuntimeVerdict(error=message + hatch)
    if today >= life.block_create:
        message = (f"Lambda refuses to create functions on runtime {runtime} since"
                   f" {life.block_create.isoformat()}, and to update them from"
                   f" {life.block_update.isoformat()}; move to runtime='{move}'")
        if allow_deprecated:
            return RuntimeVerdict(warning=message + " — sent anyway (allow_deprecated_runtime)")
        return RuntimeVerdict(create_error=message + hatch, warning=message)
    if today >= life.deprecated:
        return RuntimeVerdict(warning=(
            f"runtime {runtime} is deprecated since {life.deprecated.isoformat()}: Lambda"
            f" blocks creating functions on it from {life.block_create.isoformat()} and"
            f" updating them from {life.block_update.isoformat()}; move to runtime='{move}'"))
    return RuntimeVerdict()


def update_blocked(runtime: object, today: date | None = None) -> bool:
    """Whether Lambda refuses updates to a function that is on ``runtime`` today."""
    life = NODE_RUNTIMES.get(str(runtime))
    if life is not None:
        return (today or date.today()) >= life.block_update
    major = runtime_major(runtime)  # type: ignore[arg-type]
    # older than the table (nodejs16.x and before): long blocked
    return major is not None and major < min(runtime_major(r) or 0 for r in NODE_RUNTIMES)


def callbacks_removed(runtime: str) -> bool:
    major = runtime_major(runtime)
    return major is not None and major >= CALLBACKS_REMOVED_FROM


# -- names ---------------------------------------------------------------------------

# Source: Lambda API Reference, CreateFunction "FunctionName" (a bare name: 1-64 of
# letters, digits, hyphens, underscores).
FUNCTION_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Source: Lambda API Reference, PublishLayerVersion "LayerName" (length 1-140).
LAYER_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,140}")
# Source: Lambda API Reference, CreateFunction "Layers" (a layer version ARN).
LAYER_ARN_RE = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]{1,140}:\d+")
# Source: Lambda API Reference, CreateAlias "Name": (?!^[0-9]+$)([a-zA-Z0-9-_]+),
# length 1-128 (a bare number would be read as a version).
ALIAS_RE = re.compile(r"(?![0-9]+$)[A-Za-z0-9_-]{1,128}")
# Source: Lambda API Reference, CreateFunction "Handler": [^\s]+, length up to 128.
HANDLER_RE = re.compile(r"\S{1,128}")
# Source: Lambda API Reference, CreateFunction "Description": length 0-256 (the same
# for PublishLayerVersion "Description").
DESCRIPTION_MAX = 256
# Source: Lambda API Reference, CreateFunction "Layers": at most 5 items.
MAX_LAYERS = 5
# Source: Lambda Developer Guide, "Lambda quotas": memory 128 MB to 10,240 MB in
# 1-MB steps; timeout 900 seconds (15 minutes).
MEMORY_RANGE = (128, 10240)
TIMEOUT_RANGE = (1, 900)
# Source: Lambda API Reference, CreateFunction "Architectures": x86_64 | arm64.
# The value is npm's --cpu for the same machine.
ARCHITECTURES = {"x86_64": "x64", "arm64": "arm64"}


def function_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not FUNCTION_NAME_RE.fullmatch(name):
        return (f"invalid name {name!r}; a function name is 1-64 letters, digits, '-' or '_'"
                " (the name only, not an ARN)")
    return None


def layer_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not LAYER_NAME_RE.fullmatch(name):
        return f"invalid name {name!r}; a layer name is 1-140 letters, digits, '-' or '_'"
    return None


# Source: IAM User Guide, "IAM object quotas" / CreateRole "RoleName" ([\w+=,.@-]{1,64}),
# and the role ARN form arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME.
ROLE_RE = re.compile(r"[\w+=,.@-]{1,64}|arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


def role_problem(role: object) -> str | None:
    if role is None:
        return None
    if not isinstance(role, str) or not ROLE_RE.fullmatch(role):
        return (f"role={role!r} is not an IAM role name or ARN"
                " (arn:aws:iam::ACCOUNT:role/NAME); fix role=")
    return None


# Source: Lambda Developer Guide, "Lambda execution role" (AWS managed policies for
# Lambda features). The AWS-managed policies by the word role_policies= takes for them;
# each ARN is arn:PARTITION:iam::aws:policy/<path>. "basic" is always attached.
MANAGED = {
    "basic": "service-role/AWSLambdaBasicExecutionRole",  # CloudWatch Logs
    "vpc": "service-role/AWSLambdaVPCAccessExecutionRole",  # network interfaces in a VPC
    "xray": "AWSXRayDaemonWriteAccess",  # X-Ray traces
}
POLICY_ARN_RE = re.compile(r"arn:aws[a-zA-Z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]{1,512}")


def policies_problem(value: object) -> str | None:
    """What is wrong with ``role_policies=`` (a list of "vpc", "xray" or policy ARNs)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return (f"role_policies={value!r} must be a list, e.g. role_policies=['vpc', 'xray']"
                " or policy ARNs")
    for item in value:
        if not isinstance(item, str) or not (item in MANAGED or POLICY_ARN_RE.fullmatch(item)):
            return (f"role_policies: {item!r} is neither 'vpc', 'xray' nor an IAM policy ARN"
                    " (arn:aws:iam::ACCOUNT:policy/NAME)")
    return None


def alias_problem(alias: object) -> str | None:
    if alias is None:
        return None
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        return (f"alias={alias!r} is not a valid alias name; use 1-128 letters, digits, '-'"
                " or '_', not a bare number (that would be a version), e.g. alias='live'")
    return None


def description_problem(description: object) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str):
        return f"description={description!r} must be a string"
    if len(description) > DESCRIPTION_MAX:
        return (f"description is {len(description)} characters, over Lambda's limit of"
                f" {DESCRIPTION_MAX}; shorten it")
    return None


def int_setting_problem(key: str, value: object, lo: int, hi: int, unit: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        return f"{key}={value!r} must be a whole number of {unit} from {lo} to {hi}"
    return None


def architecture_problem(architecture: object) -> str | None:
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        return f"architecture {architecture!r} is not supported; use 'x86_64' or 'arm64'"
    return None


def layers_problem(arns: Sequence[str], local_names: Sequence[str]) -> str | None:
    """At most 5 layers, each layer once (Lambda refuses two versions of one layer)."""
    total = len(arns) + len(local_names)
    if total > MAX_LAYERS:
        return (f"{total} layers given, Lambda allows at most {MAX_LAYERS}; merge some layers")
    for arn in arns:
        if not isinstance(arn, str) or not LAYER_ARN_RE.fullmatch(arn):
            return (f"layer {arn!r} is not a layer version ARN"
                    " (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION); pass a Layer or an ARN")
    seen: set[str] = set()
    for key in [a.rsplit(":", 1)[0] for a in arns] + [f"layer '{n}'" for n in local_names]:
        if key in seen:
            return f"{key} is listed twice in layers=; a function can use each layer once"
        seen.add(key)
    return None


# -- handler string -------------------------------------------------------------------


def handler_problem(handler: object, source: str) -> str | None:
    """The handler string's own rules (the file is checked in the package)."""
    if not isinstance(handler, str) or not HANDLER_RE.fullmatch(handler):
        return (f"handler {handler!r} must be 'file.export' (up to 128 characters, no spaces),"
                f" e.g. 'index.handler' for {source}/index.js exporting handler")
    if ".." in handler:
        # Source: the runtime interface client refuses '..' anywhere in the handler
        # (UserFunction.js: "Use absolute paths when specifying root directories").
        if handler.startswith("..") or "/.." in handler:
            return (f"handler {handler!r} points outside the package ('..'); move the file into"
                    f" {source} and name it from there, e.g. handler='lib/index.handler'")
        return f"handler {handler!r} contains '..', which Lambda refuses; fix handler="
    module, dot, export = handler.rpartition("/")[2].partition(".")
    if not dot or not module or not export or export.endswith(".") or ".." in export:
        return (f"handler {handler!r} must be 'file.export', e.g. 'index.handler'"
                f" for {source}/index.js exporting handler")
    return None


# -- environment ----------------------------------------------------------------------

# Source: Lambda API Reference, "Environment": key pattern [a-zA-Z]([a-zA-Z0-9_])+
# (so at least two characters).
ENV_KEY_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_]+")
# Source: Lambda Developer Guide, "Working with Lambda environment variables":
# "The total size of all environment variables doesn't exceed 4 KB".
ENV_TOTAL_MAX = 4096
# Source: the same page, "Reserved environment variables" (the runtime sets them; a
# function configuration may not). TZ is listed there too but is left out here:
# functions set it in practice, and a false refusal has no way around it.
RESERVED_ENV_KEYS = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})


def environment_problem(environment: object) -> str | None:
    if environment is None:
        return None
    if not isinstance(environment, Mapping):
        return (f"environment must be a dict of names to string values, not"
                f" {type(environment).__name__}")
    total = 0
    for key, value in environment.items():
        if not isinstance(key, str) or not ENV_KEY_RE.fullmatch(key):
            return (f"environment variable name {key!r} is not allowed; Lambda takes a letter"
                    " then letters, digits or '_' (at least two characters)")
        if key in RESERVED_ENV_KEYS:
            return (f"environment variable {key} is reserved: Lambda sets it itself; use"
                    " another name")
        if not isinstance(value, str):
            return (f"environment[{key!r}] is {value!r}; values must be strings: write"
                    f" str(...) yourself, or leave {key} out")
        total += len(key.encode()) + len(value.encode())
    if total > ENV_TOTAL_MAX:
        return (f"environment variables take {total:,} bytes (names and values), over"
                f" Lambda's {ENV_TOTAL_MAX:,}-byte limit; move large values to SSM Parameter"
                " Store or S3 and read them at start-up")
    return None


# -- S3 -------------------------------------------------------------------------------

# Source: Amazon S3 User Guide, "General purpose bucket naming rules": 3-63
# characters of lowercase letters, digits, dots and hyphens; begin and end with a
# letter or digit; no two adjacent dots; not an IP address; reserved prefixes and
# suffixes.
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_problem(bucket: object) -> str | None:
    if bucket is None:
        return None
    if not isinstance(bucket, str) or not bucket:
        return f"bucket={bucket!r} must be an S3 bucket name or None"
    if bucket.startswith(("s3://", "arn:")):
        name = bucket.removeprefix("s3://").split("/")[0].rsplit(":", 1)[-1]
        return (f"bucket={bucket!r} is a URL or ARN; give the bucket's name only"
                f" (bucket='{name}') and any folder as bucket_prefix=")
    if (not BUCKET_RE.fullmatch(bucket) or ".." in bucket or _is_ip(bucket)
            or bucket.startswith(BUCKET_RESERVED_PREFIXES)
            or bucket.endswith(BUCKET_RESERVED_SUFFIXES)):
        return (f"bucket={bucket!r} is not a valid S3 bucket name (3-63 lowercase letters,"
                " digits, '.' or '-', starting and ending with a letter or digit); fix bucket=")
    return None


def _is_ip(name: str) -> bool:
    import ipaddress  # not on every run's path: only bucket names are checked with it

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def bucket_prefix_problem(prefix: object) -> str | None:
    if not isinstance(prefix, str):
        return f"bucket_prefix={prefix!r} must be a string such as 'lambda/'"
    if prefix.startswith("/") or ".." in prefix.split("/") or "\\" in prefix:
        return (f"bucket_prefix={prefix!r} must be a plain key prefix such as 'lambda/'"
                " (no leading '/', no '..', no '\\')")
    return None


# -- layers and their users -----------------------------------------------------------


@dataclass(frozen=True)
class LayerFit:
    """How a layer fits the functions that use it."""

    architecture: str  # the CPU its dependencies are installed for
    problem: str | None = None  # the layer cannot be built (its users disagree)
    misfits: dict[str, str] = field(default_factory=dict)  # function name -> why not


def layer_fit(layer: str, runtimes: Sequence[str], architectures: Sequence[str],
              users: Sequence[tuple[str, str, str]]) -> LayerFit:
    """``users`` are (function name, runtime, architecture). A layer without
    ``architectures`` is built for its users' architecture; a layer lists the
    runtimes and architectures it supports, and a user outside them is refused
    (its native packages would not load)."""
    misfits = {}
    for name, runtime, arch in users:
        if architectures and arch not in architectures:
            misfits[name] = (
                f"runs on {arch} but layer '{layer}' is built for {architectures[0]}"
                f" (architectures={list(architectures)}); set the function's architecture="
                f" to one of those, or give the layer architectures=['{arch}']")
        elif runtimes and runtime not in runtimes:
            misfits[name] = (
                f"uses runtime {runtime} but layer '{layer}' lists runtimes={list(runtimes)};"
                f" add '{runtime}' to the layer's runtimes= (after checking it works there)")
    if architectures:
        return LayerFit(architectures[0], None, misfits)
    archs = sorted({arch for _, _, arch in users})
    if len(archs) > 1:
        who = ", ".join(f"function '{n}' ({a})" for n, _, a in users)
        return LayerFit(archs[0], (
            f"layer '{layer}' has no architectures= and is used by {who}; a layer's packages are"
            " installed for one CPU: give it architectures= and use one layer per"
            " architecture"), misfits)
    return LayerFit(archs[0] if archs else "x86_64", None, misfits)
