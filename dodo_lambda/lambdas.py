"""The Lambda calls a deploy needs (functions, versions, aliases, layers), each waiting
out Pending and InProgress states and update conflicts before it returns."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .aws import Clients, MiB, _error_code, aws_error, translating
from .errors import DodoLambdaError

# Lambda's cap on a direct (ZipFile) upload: a 69,905,067-byte request body is
# 50 MiB once base64-encoded. Bigger zips must go through S3.
DIRECT_UPLOAD_LIMIT = 50 * MiB

# Polling a function's state. Module-level so that tests can make it fast.
POLL_DELAY = 1.0  # seconds between GetFunctionConfiguration calls
POLL_TIMEOUT = 900.0  # give up waiting after this long (Lambda's own limit is minutes)

# ResourceConflictException backoff: base * 2**attempt, capped.
CONFLICT_BASE_DELAY = 1.0
CONFLICT_MAX_DELAY = 20.0

# A freshly created IAM role takes a few seconds to become assumable by Lambda
# (IAM is eventually consistent). Pauses between CreateFunction attempts, in
# POLL_DELAY units: 35 s in all, and never past ROLE_WAIT_LIMIT seconds.
ROLE_RETRY_STEPS = (1, 2, 3, 4, 5, 5, 5, 5, 5)
ROLE_WAIT_LIMIT = 40.0

log = logging.getLogger("dodo_lambda")


def _clean(response: dict) -> dict:
    response = dict(response)
    response.pop("ResponseMetadata", None)
    return response


def _default_who(name: str) -> str:
    return f"function '{name}'"


def _remember(c: Clients, config: dict) -> dict:
    with c._lock:
        if c._listed[0] and config.get("FunctionName"):
            c._functions[config["FunctionName"]] = config
    return config


def _clean_or_none(call: Callable[..., dict], **kwargs: Any) -> dict | None:
    """``call``'s answer without ResponseMetadata, or None on ResourceNotFoundException."""
    from botocore.exceptions import ClientError

    try:
        return _clean(call(**kwargs))
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def get_function(c: Clients, name: str, *, who: str | None = None) -> dict | None:
    """The function's configuration (GetFunctionConfiguration), or None when it does not exist."""
    with translating(who or _default_who(name), c=c):
        return _clean_or_none(c.lam.get_function_configuration, FunctionName=name)


def list_functions(c: Clients, *, who: str = "AWS") -> dict[str, dict]:
    """Every function's configuration by name, listed once per Clients (see ``invalidate``).

    ListFunctions leaves out State and LastUpdateStatus; use get_function for those.
    """
    with c._lock:
        if c._listed[0]:
            return dict(c._functions)
    found: dict[str, dict] = {}
    with translating(who, c=c):
        for page in c.lam.get_paginator("list_functions").paginate():
            for config in page.get("Functions", []):
                found[config["FunctionName"]] = config
    with c._lock:
        c._functions.clear()
        c._functions.update(found)
        c._listed[0] = True
    return dict(found)


def invalidate(c: Clients, name: str | None = None) -> None:
    """Forget the listed configuration of ``name`` (or all) so the next look-up asks AWS."""
    with c._lock:
        if name is None:
            c._functions.clear()
            c._listed[0] = False
        elif c._listed[0]:
            # The listing stays valid for the others; drop just this one and
            # let list_functions users fall back to get_function for it.
            c._functions.pop(name, None)


def _poll(c: Clients, name: str, who: str, *, updated: bool, what: str,
          delay: float | None) -> dict:
    # Mirrors botocore's function_active_v2 (State) and function_updated_v2
    # (LastUpdateStatus) waiters, but returns the final configuration (saving a
    # call) and says why a failure happened. A Pending function also refuses
    # updates, so waiting for an update waits out Pending too.
    delay = POLL_DELAY if delay is None else delay
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        config = get_function(c, name, who=who)
        if config is None:
            raise DodoLambdaError(
                f"{who}: the Lambda function does not exist in {c.region}; create it, or give"
                " role= so dodo_lambda creates it"
            )
        state = config.get("State") or "Active"
        busy = state == "Pending"
        _check_failed(config, "State", who, what)
        if updated:
            busy = busy or config.get("LastUpdateStatus") == "InProgress"
            _check_failed(config, "LastUpdateStatus", who, what)
        elif state != "Active":
            busy = True  # Inactive after a create is not expected; keep asking until the limit
        if not busy:
            if ":" not in name:  # a version's configuration is not the function's
                _remember(c, config)
            return config
        if time.monotonic() > deadline:
            status = config.get("LastUpdateStatus") if updated else state
            raise DodoLambdaError(
                f"{who}: still {status} after {POLL_TIMEOUT:.0f} s waiting for {what}; check the"
                " function in the AWS console and run again"
            )
        time.sleep(delay)


def _check_failed(config: dict, field_name: str, who: str, what: str) -> None:
    if config.get(field_name) != "Failed":
        return
    reason = config.get(f"{field_name}Reason") or "no reason given"
    code = config.get(f"{field_name}ReasonCode")
    detail = f"{reason} ({code})" if code else reason
    raise DodoLambdaError(f"{who}: {what} ended Failed: {detail}; fix the cause and run again")


def wait_updated(c: Clients, name: str, *, who: str, delay: float | None = None) -> dict:
    """Wait while the function is Pending or its update InProgress; its configuration."""
    return _poll(c, name, who, updated=True, what="the update", delay=delay)


def wait_active(c: Clients, name: str, *, who: str, delay: float | None = None) -> dict:
    """Wait until State is Active (after create); its configuration, or an error on Failed."""
    return _poll(c, name, who, updated=False, what="activation", delay=delay)


def call_with_conflict_retry(
    fn: Callable[..., Any],
    *args: Any,
    who: str,
    c: Clients,
    name: str,
    attempts: int = 6,
    base_delay: float | None = None,
    bucket: str | None = None,
    missing_ok: bool = False,
    **kwargs: Any,
) -> Any:
    """Call a Lambda API, waiting out ResourceConflictException (botocore does not retry 409).

    With ``missing_ok``, ResourceNotFoundException returns None instead of raising.
    ``base_delay`` (None: CONFLICT_BASE_DELAY and POLL_DELAY) also sets the polling
    pace; the Lambda functions below pass their ``delay`` on as it.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    base = CONFLICT_BASE_DELAY if base_delay is None else base_delay
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if missing_ok and code == "ResourceNotFoundException":
                return None
            if code != "ResourceConflictException":
                raise aws_error(exc, who, bucket=bucket, c=c) from exc
            if attempt == attempts - 1:
                raise DodoLambdaError(
                    f"{who}: Lambda still reports an update in progress (ResourceConflictException)"
                    f" after {attempts} attempts; another deploy may be running, run again"
                    " when it has finished"
                ) from exc
        except BotoCoreError as exc:
            raise aws_error(exc, who, bucket=bucket, c=c) from exc
        wait_updated(c, name, who=who, delay=base_delay)
        # Someone else's update may start again right after ours ends: back off.
        time.sleep(min(base * 2**attempt, CONFLICT_MAX_DELAY) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


def _code(who: str, zip_path: Path | None, s3: tuple[str, str] | None) -> dict[str, Any]:
    """The Code/Content argument: a direct zip (≤ 50 MiB) or an S3 object."""
    if (zip_path is None) == (s3 is None):
        raise ValueError("give exactly one of zip_path and s3")
    if s3 is not None:
        return {"S3Bucket": s3[0], "S3Key": s3[1]}
    zip_path = Path(zip_path)  # type: ignore[arg-type]
    size = zip_path.stat().st_size
    if size > DIRECT_UPLOAD_LIMIT:
        raise DodoLambdaError(
            f"{who}: {zip_path} is {size / MiB:.1f} MiB, over Lambda's 50 MiB limit for a"
            " direct upload; set bucket= so it goes through S3"
        )
    return {"ZipFile": zip_path.read_bytes()}


def update_code(
    c: Clients,
    name: str,
    *,
    who: str,
    architecture: str,
    zip_path: Path | None = None,
    s3: tuple[str, str] | None = None,
    delay: float | None = None,
) -> dict:
    """Replace the function's code (zip or S3 object) and wait until it is live; its config."""
    code = _code(who, zip_path, s3)
    wait_updated(c, name, who=who, delay=delay)
    call_with_conflict_retry(
        c.lam.update_function_code, who=who, c=c, name=name, base_delay=delay,
        bucket=s3[0] if s3 else None,
        FunctionName=name, Architectures=[architecture], **code,
    )
    return wait_updated(c, name, who=who, delay=delay)


def role_arn(c: Clients, role: str) -> str:
    """An IAM role ARN from an ARN or a bare role name (the latter costs one STS call)."""
    if role.startswith("arn:"):
        return role
    partition = c.session.get_partition_for_region(c.region)
    return f"arn:{partition}:iam::{c.account_id}:role/{role}"


def create_function(
    c: Clients,
    name: str,
    *,
    who: str,
    role: str,
    runtime: str,
    handler: str,
    architecture: str,
    zip_path: Path | None = None,
    s3: tuple[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    layers: list[str] | None = None,
    delay: float | None = None,
) -> dict:
    """Create the function and wait until it is Active; its configuration."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not role:
        raise DodoLambdaError(
            f"{who}: the function does not exist; give role= (the IAM role it runs as)"
            " so dodo_lambda creates it, or create it yourself"
        )
    code = _code(who, zip_path, s3)
    with translating(who, c=c):
        arn = role_arn(c, role)
    wait = POLL_DELAY if delay is None else delay
    start = time.monotonic()
    for attempt in range(len(ROLE_RETRY_STEPS) + 1):
        try:
            c.lam.create_function(
                FunctionName=name, Role=arn, Runtime=runtime, Handler=handler,
                Architectures=[architecture], PackageType="Zip", Code=code,
                Layers=list(layers or []), **(settings or {}),
            )
            break
        except ClientError as exc:
            code_ = _error_code(exc)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if code_ == "ResourceConflictException":
                raise DodoLambdaError(
                    f"{who}: the function was created meanwhile (by another deploy?); run again"
                ) from exc
            if code_ == "InvalidParameterValueException" and "role" in message.lower():
                elapsed = time.monotonic() - start
                pause = wait * ROLE_RETRY_STEPS[attempt] if attempt < len(ROLE_RETRY_STEPS) \
                    else None
                if "cannot be assumed" in message and pause is not None \
                        and elapsed + pause <= ROLE_WAIT_LIMIT:
                    log.info("%s: Lambda cannot assume role %s yet (a new role takes a few"
                             " seconds to reach Lambda); trying again in %.0f s (%.0f s so far)",
                             who, arn, pause, elapsed)
                    time.sleep(pause)
                    continue
                waited = f" after {elapsed:.0f} s of retries" if attempt else ""
                raise DodoLambdaError(
                    f"{who}: Lambda rejected role {arn}{waited} ({message}); fix role= (an IAM"
                    " role whose trust policy lets lambda.amazonaws.com assume it), or run"
                    " again if the role was created moments ago"
                ) from exc
            raise aws_error(exc, who, bucket=s3[0] if s3 else None, c=c) from exc
        except BotoCoreError as exc:
            raise aws_error(exc, who, c=c) from exc
    return wait_active(c, name, who=who, delay=delay)


def update_configuration(
    c: Clients, name: str, *, who: str, changes: dict[str, Any], delay: float | None = None
) -> dict:
    """Apply configuration changes (Lambda field names) and wait until live; its configuration."""
    call_with_conflict_retry(
        c.lam.update_function_configuration, who=who, c=c, name=name, base_delay=delay,
        FunctionName=name, **changes,
    )
    return wait_updated(c, name, who=who, delay=delay)


def publish_version(
    c: Clients, name: str, *, who: str, code_sha256: str, description: str | None = None,
    delay: float | None = None,
) -> dict:
    """Publish $LATEST as a version, refused by AWS unless its CodeSha256 is ``code_sha256``."""
    kwargs: dict[str, Any] = {"FunctionName": name, "CodeSha256": code_sha256}
    if description is not None:
        kwargs["Description"] = description
    version = _clean(call_with_conflict_retry(
        c.lam.publish_version, who=who, c=c, name=name, base_delay=delay, **kwargs
    ))
    if version.get("State", "Active") != "Active":
        _poll(c, f"{name}:{version['Version']}", who, updated=False,
              what=f"activation of version {version['Version']}", delay=delay)
    return version


def point_alias(
    c: Clients, name: str, alias: str, version: str, *, who: str, delay: float | None = None
) -> dict:
    """Point ``alias`` at ``version``, creating the alias when it does not exist; the alias."""
    common: dict[str, Any] = {"who": who, "c": c, "name": name, "base_delay": delay}
    args = {"FunctionName": name, "Name": alias, "FunctionVersion": version}
    found = call_with_conflict_retry(c.lam.update_alias, missing_ok=True, **common, **args)
    if found is None:
        found = call_with_conflict_retry(c.lam.create_alias, **common, **args)
    return _clean(found)


def latest_version(
    c: Clients, name: str, *, who: str, code_sha256: str | None = None
) -> dict | None:
    """The newest published version with $LATEST's code (or ``code_sha256``), or None."""
    with translating(who, c=c):
        versions = [
            v
            for page in c.lam.get_paginator("list_versions_by_function").paginate(
                FunctionName=name
            )
            for v in page.get("Versions", [])
        ]
    if code_sha256 is None:
        latest = [v for v in versions if v.get("Version") == "$LATEST"]
        if not latest:
            return None
        code_sha256 = latest[0].get("CodeSha256")
    published = [
        v for v in versions
        if str(v.get("Version", "")).isdigit() and v.get("CodeSha256") == code_sha256
    ]
    return max(published, key=lambda v: int(v["Version"]), default=None)


def latest_layer_version(c: Clients, layer_name: str, *, who: str | None = None) -> dict | None:
    """The newest version of a layer (GetLayerVersion, with Content.CodeSha256), or None."""
    who = who or f"layer '{layer_name}'"
    with translating(who, c=c):
        found = _clean_or_none(c.lam.list_layer_versions, LayerName=layer_name)
        listed = (found or {}).get("LayerVersions", [])
        if not listed:
            return None
        # AWS lists newest first; take the maximum so the order does not matter.
        newest = max(listed, key=lambda v: int(v["Version"]))
        return _clean(c.lam.get_layer_version(LayerName=layer_name,
                                              VersionNumber=newest["Version"]))


def publish_layer(
    c: Clients,
    layer_name: str,
    *,
    who: str,
    zip_path: Path | None = None,
    s3: tuple[str, str] | None = None,
    runtimes: list[str] | tuple[str, ...] = (),
    architectures: list[str] | tuple[str, ...] = (),
    description: str | None = None,
) -> dict:
    """Publish a new layer version from a zip or an S3 object; PublishLayerVersion's answer."""
    kwargs: dict[str, Any] = {"LayerName": layer_name, "Content": _code(who, zip_path, s3)}
    if runtimes:
        kwargs["CompatibleRuntimes"] = list(runtimes)
    if architectures:
        kwargs["CompatibleArchitectures"] = list(architectures)
    if description is not None:
        kwargs["Description"] = description
    with translating(who, bucket=s3[0] if s3 else None, c=c):
        return _clean(c.lam.publish_layer_version(**kwargs))
