"""The Lambda calls that put a function in place (create, update code and
configuration), each waiting out Pending and InProgress states and update conflicts
before it returns; ``sent_once`` for the writes botocore must not repeat blindly.
Versions, aliases and layer versions are in ``releases``."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .aws import Clients, MiB, Unconfirmed, _error_code, aws_error, translating
from .errors import DodoLambdaError
from .rules import DIRECT_UPLOAD_LIMIT

# Waits and back-offs, in seconds. DODO_LAMBDA_WAIT_SCALE multiplies every pause
# (tests set it to 0; the number of attempts, and so the time bound, stays).
WAIT_TIMEOUT = 900.0  # give up waiting for a function after this long
CONFLICT_BASE_DELAY = 1.0  # ResourceConflictException: base * 2**attempt, capped
CONFLICT_MAX_DELAY = 20.0

# A freshly created IAM role takes a few seconds to become assumable by Lambda
# (IAM is eventually consistent). Pauses between CreateFunction attempts, in
# seconds: 35 s in all, and never past ROLE_WAIT_LIMIT seconds.
ROLE_RETRY_STEPS = (1, 2, 3, 4, 5, 5, 5, 5, 5)
ROLE_WAIT_LIMIT = 40.0

# Writes botocore does not repeat blindly (aws.GUARDED): how many times we send one
# when AWS shows it did not take effect.
SEND_ATTEMPTS = 3

log = logging.getLogger("dodo_lambda")

T = TypeVar("T")


def wait_scale() -> float:
    """DODO_LAMBDA_WAIT_SCALE (default 1): 0 makes every wait and back-off instant."""
    try:
        return max(0.0, float(os.environ.get("DODO_LAMBDA_WAIT_SCALE") or 1.0))
    except ValueError:
        return 1.0


def waiter_config(delay: float, bound: float) -> dict[str, Any]:
    """A botocore waiter's WaiterConfig: its delay (scaled, see ``wait_scale``) and as
    many attempts as fit in ``bound`` seconds."""
    return {"Delay": delay * wait_scale(), "MaxAttempts": max(1, math.ceil(bound / delay))}


def pause(seconds: float) -> None:
    time.sleep(seconds * wait_scale())


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


def _busy(config: dict) -> str | None:
    """The waiter a function needs before it takes an update, or None when ready:
    a Pending function and an update InProgress both refuse updates (409)."""
    if (config.get("State") or "Active") == "Pending":
        return "function_active_v2"
    if config.get("LastUpdateStatus") == "InProgress":
        return "function_updated_v2"
    return None


def _wait(c: Clients, waiter_name: str, *, who: str, what: str, **kwargs: Any) -> None:
    """One of botocore's Lambda waiters, bounded by WAIT_TIMEOUT; a failure says why,
    from the waiter's last answer."""
    from botocore.exceptions import WaiterError

    waiter = c.lam.get_waiter(waiter_name)
    delay = float(waiter.config.delay)
    config = waiter_config(delay, WAIT_TIMEOUT)
    with translating(who, c=c):
        try:
            waiter.wait(**kwargs, WaiterConfig=config)
        except WaiterError as exc:
            raise _wait_failed(exc, c, who, what) from exc


def _wait_failed(exc: Any, c: Clients, who: str, what: str) -> DodoLambdaError:
    from botocore.exceptions import ClientError

    last = exc.last_response or {}
    if "Error" in last:
        if last["Error"].get("Code") == "ResourceNotFoundException":
            return _missing(c, who)
        return aws_error(ClientError(last, "GetFunction"), who, c=c)
    config = last.get("Configuration", last)
    failed = _failure(config, who, what)
    if failed is not None:
        return failed
    status = config.get("LastUpdateStatus") if config.get("State") == "Active" else \
        config.get("State")
    return DodoLambdaError(
        f"{who}: still {status or 'not ready'} after {WAIT_TIMEOUT:.0f} s waiting for {what};"
        " check the function in the AWS console and run again"
    )


def _failure(config: dict, who: str, what: str) -> DodoLambdaError | None:
    """The error for a configuration that says an update or the function Failed."""
    for field_name in ("LastUpdateStatus", "State"):
        if config.get(field_name) == "Failed":
            reason = config.get(f"{field_name}Reason") or "no reason given"
            code = config.get(f"{field_name}ReasonCode")
            detail = f"{reason} ({code})" if code else reason
            return DodoLambdaError(f"{who}: {what} ended Failed: {detail}; fix the cause and"
                                   " run again")
    return None


def _missing(c: Clients, who: str) -> DodoLambdaError:
    return DodoLambdaError(f"{who}: the Lambda function does not exist in {c.region} (deleted"
                           " meanwhile?); deploy again and dodo_lambda creates it")


def wait_ready(c: Clients, name: str, *, who: str, config: dict | None = None,
               what: str = "the update") -> dict:
    """Wait while the function is Pending or an update is InProgress; its configuration.
    ``config``, when given, is what the caller last read (no request when it is ready)."""
    if config is None:
        config = get_function(c, name, who=who)
        if config is None:
            raise _missing(c, who)
    while (waiter := _busy(config)) is not None:
        _wait(c, waiter, who=who, what=what, FunctionName=name)
        config = get_function(c, name, who=who)
        if config is None:
            raise _missing(c, who)
    return _remember(c, config)


def retry_conflicts(call: Callable[[], T], *, c: Clients, name: str, who: str,
                    attempts: int = 6) -> T:
    """``call()``, waiting out ResourceConflictException (409: another update of the
    function is in progress; botocore does not retry it). Other errors propagate."""
    from botocore.exceptions import ClientError

    for attempt in range(attempts):
        try:
            return call()
        except ClientError as exc:
            if _error_code(exc) != "ResourceConflictException":
                raise
            if attempt == attempts - 1:
                raise DodoLambdaError(
                    f"{who}: Lambda still reports an update in progress (ResourceConflictException)"
                    f" after {attempts} attempts; another deploy may be running, run again"
                    " when it has finished"
                ) from exc
        wait_ready(c, name, who=who)
        # Someone else's update may start again right after ours ends: back off.
        pause(min(CONFLICT_BASE_DELAY * 2**attempt, CONFLICT_MAX_DELAY) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


def sent_once(send: Callable[[], T], check: Callable[[], T | None], *, who: str) -> T:
    """``send()`` a write that must not be repeated blindly (aws.GUARDED). When its
    effect is unknown (aws.Unconfirmed: the answer was lost, or AWS answered 5xx),
    ``check()`` reads what is there: its result when the write took effect, else None
    and the write is sent again (SEND_ATTEMPTS in all)."""
    for attempt in range(SEND_ATTEMPTS):
        try:
            return send()
        except Unconfirmed as exc:
            found = check()
            if found is not None:
                log.info("%s: %s got no clear answer (%s) but took effect; continuing from"
                         " what AWS shows", who, exc.operation, exc.detail)
                return found
            if attempt == SEND_ATTEMPTS - 1:
                raise
            log.info("%s: %s failed (%s) and did not take effect; sending it again", who,
                     exc.operation, exc.detail)
        pause(min(CONFLICT_BASE_DELAY * 2**attempt, CONFLICT_MAX_DELAY))
    raise AssertionError("unreachable")


def _settled(c: Clients, name: str, who: str, answer: dict, what: str) -> dict:
    """The configuration after a write: the answer itself when Lambda says it is done,
    else what it is once the waiters say so."""
    config = _clean(answer)
    failed = _failure(config, who, what)
    if failed is not None:
        raise failed
    if _busy(config) is None:
        return _remember(c, config)
    return wait_ready(c, name, who=who, config=config, what=what)


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
    config: dict | None = None,
) -> dict:
    """Replace the function's code (zip or S3 object) and wait until it is live; its
    configuration. ``config``: the function as last read (waited on when busy)."""
    code = _code(who, zip_path, s3)
    if config is not None:
        wait_ready(c, name, who=who, config=config)
    with translating(who, bucket=s3[0] if s3 else None, c=c):
        answer = retry_conflicts(
            lambda: c.lam_for(code).update_function_code(
                FunctionName=name, Architectures=[architecture], **code),
            c=c, name=name, who=who)
    return _settled(c, name, who, answer, "the update")


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
    waited = 0.0  # seconds of pauses at the real pace (DODO_LAMBDA_WAIT_SCALE aside)

    def send() -> dict:
        return c.lam_for(code).create_function(
            FunctionName=name, Role=arn, Runtime=runtime, Handler=handler,
            Architectures=[architecture], PackageType="Zip", Code=code,
            Layers=list(layers or []), **(settings or {}),
        )

    def there() -> dict | None:  # a lost answer: the function may exist now
        with translating(who, c=c):
            return get_function(c, name, who=who)

    for attempt in range(len(ROLE_RETRY_STEPS) + 1):
        try:
            answer = sent_once(send, there, who=who)
            break
        except ClientError as exc:
            code_ = _error_code(exc)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if code_ == "ResourceConflictException":
                # it exists (created meanwhile, or by our own attempt whose answer was
                # lost): continue from what is there; the caller makes it what it wants
                found = there()
                if found is None:
                    raise aws_error(exc, who, c=c) from exc
                log.info("%s: exists already (409 on CreateFunction); continuing from it", who)
                answer = found
                break
            if code_ == "InvalidParameterValueException" and "role" in message.lower():
                step = ROLE_RETRY_STEPS[attempt] if attempt < len(ROLE_RETRY_STEPS) else None
                if "cannot be assumed" in message and step is not None \
                        and waited + step <= ROLE_WAIT_LIMIT:
                    log.info("%s: Lambda cannot assume role %s yet (a new role takes a few"
                             " seconds to reach Lambda); trying again in %.0f s (%.0f s so far)",
                             who, arn, step, waited)
                    pause(step)
                    waited += step
                    continue
                after = f" after {waited:.0f} s of retries" if attempt else ""
                raise DodoLambdaError(
                    f"{who}: Lambda rejected role {arn}{after} ({message}); fix role= (an IAM"
                    " role whose trust policy lets lambda.amazonaws.com assume it), or run"
                    " again if the role was created moments ago"
                ) from exc
            raise aws_error(exc, who, bucket=s3[0] if s3 else None, c=c) from exc
        except (BotoCoreError, Unconfirmed) as exc:
            raise aws_error(exc, who, c=c) from exc
    return _settled(c, name, who, answer, "activation")


def update_configuration(
    c: Clients, name: str, *, who: str, changes: dict[str, Any], config: dict | None = None
) -> dict:
    """Apply configuration changes (Lambda field names) and wait until live; its configuration."""
    if config is not None:
        wait_ready(c, name, who=who, config=config)
    with translating(who, c=c):
        answer = retry_conflicts(
            lambda: c.lam.update_function_configuration(FunctionName=name, **changes),
            c=c, name=name, who=who)
    return _settled(c, name, who, answer, "the update")
