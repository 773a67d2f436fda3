"""Where deploys go and the botocore clients for it, shared by s3.py and lambdas.py, and
the translation that turns every botocore failure in them into a one-line DodoLambdaError."""

# botocore (the core of boto3; nothing here needs boto3's resources) is imported
# inside functions only, here and in s3.py and lambdas.py, so that loading a
# dodo.py or a no-op ``doit package`` does not pay for it.

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .context import AwsTarget
from .errors import DodoLambdaError

MiB = 2**20

USER_AGENT = "dodo_lambda"

_ACCESS_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "Forbidden",
    "403",
}
# S3 operations -> the IAM action a policy must allow (the others are named alike).
_S3_ACTIONS = {
    "HeadObject": "s3:GetObject",
    "HeadBucket": "s3:ListBucket",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
}
_SSO_ERRORS = {"SSOTokenLoadError", "TokenRetrievalError", "UnauthorizedSSOTokenError",
               "SSOError", "PendingAuthorizationExpiredError"}
_THROTTLE_CODES = {"TooManyRequestsException", "Throttling", "ThrottlingException", "SlowDown"}
_FUNCTION_OPS = {
    "GetFunction",
    "GetFunctionConfiguration",
    "UpdateFunctionCode",
    "UpdateFunctionConfiguration",
    "PublishVersion",
    "CreateAlias",
    "ListVersionsByFunction",
}


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True, eq=False)
class Clients:
    """The boto3 clients of one target, with per-process caches that belong to it."""

    session: Any  # botocore.session.Session
    s3: Any
    lam: Any
    region: str
    endpoint: str | None  # the endpoint given by target or environment, None for AWS's own
    profile: str | None
    target: AwsTarget = AwsTarget()
    _functions: dict[str, dict] = field(default_factory=dict, repr=False)
    _listed: list[bool] = field(default_factory=lambda: [False], repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def sts(self) -> Any:
        """An STS client, made only when an account id is really needed."""
        # Only an explicit endpoint is passed: AWS_ENDPOINT_URL(_STS) are botocore's own.
        return guard(self.session.create_client(
            "sts", **_client_kwargs(self.target.endpoint, self.region)
        ))

    @cached_property
    def lam_big(self) -> Any:
        """A Lambda client for calls with a big ZipFile body (BIG_CALLS' budget)."""
        return guard(self.session.create_client(
            "lambda", **_client_kwargs(self.target.endpoint, self.region, BIG_CALLS)))

    def lam_for(self, body: dict[str, Any]) -> Any:
        """The Lambda client for a call carrying ``body`` (Code/Content arguments)."""
        data = body.get("ZipFile")
        return self.lam_big if isinstance(data, bytes) and len(data) > BIG_BODY else self.lam

    @cached_property
    def iam(self) -> Any:
        """An IAM client, made only when a function's execution role is looked up or made."""
        return self.session.create_client(
            "iam", **_client_kwargs(self.target.endpoint, self.region)
        )

    @cached_property
    def logs(self) -> Any:
        """A CloudWatch Logs client, made only by ``doit logs:NAME``."""
        return self.session.create_client(
            "logs", **_client_kwargs(self.target.endpoint, self.region)
        )

    @cached_property
    def account_id(self) -> str:
        """The account the credentials belong to (one STS call, then remembered)."""
        with translating("AWS"):
            return str(self.sts.get_caller_identity()["Account"])


def _env_endpoint() -> str | None:
    # botocore honours these itself; we only need to know that one is set.
    env = os.environ
    return env.get("AWS_ENDPOINT_URL_LAMBDA") or env.get("AWS_ENDPOINT_URL") or None


# -- time bounds: any single AWS call gives up within CALL_BOUND seconds ------------
#
# A call that gets no answer costs at most attempts × (connect + read timeout) plus
# botocore's back-off between attempts (standard mode: rand × 50 ms·2^i, or 1 s·2^i
# when throttled, raised to an x-amz-retry-after of up to 5 s more: ≤ 13 s over two
# pauses). Lambda's waits are many calls and keep their own bound (lambdas.WAIT_TIMEOUT).
CALL_BOUND = 180.0


@dataclass(frozen=True)
class Budget:
    connect: float  # seconds to open the connection
    read: float  # seconds of silence while sending the body or awaiting the answer
    attempts: int  # botocore's total_max_attempts
    backoff: float  # the most botocore pauses between those attempts

    def bound(self, scale: float = 1.0) -> float:
        """The longest a call that never gets an answer can take."""
        return self.attempts * (self.connect + self.read) * scale + self.backoff


CALLS = Budget(connect=10, read=45, attempts=3, backoff=13)
# A direct upload's body (up to ~67 MB of base64) is sent by one sendall(), which the
# read timeout bounds as a whole: one long attempt (at least 0.4 MB/s) for Lambda calls
# carrying a ZipFile bigger than BIG_BODY, made through their own client.
BIG_CALLS = Budget(connect=10, read=165, attempts=1, backoff=0)
BIG_BODY = 8 * MiB


def timeout_scale() -> float:
    """DODO_LAMBDA_AWS_TIMEOUT (default 1) multiplies the connect and read timeouts
    (tests make a hung endpoint fail in seconds); the number of attempts stays."""
    try:
        return max(0.001, float(os.environ.get("DODO_LAMBDA_AWS_TIMEOUT") or 1.0))
    except ValueError:
        return 1.0


def _client_kwargs(endpoint: str | None, region: str, budget: Budget = CALLS) -> dict[str, Any]:
    from botocore.config import Config

    scale = timeout_scale()
    config = Config(
        region_name=region,
        retries={"mode": "standard", "total_max_attempts": budget.attempts},
        connect_timeout=budget.connect * scale,
        read_timeout=budget.read * scale,
        user_agent_extra=USER_AGENT,
        max_pool_connections=16,
    )
    kwargs: dict[str, Any] = {"config": config, "region_name": region}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return kwargs


# -- writes that must not be repeated blindly ---------------------------------------
#
# botocore retries a call whose answer was lost (a dropped connection, a read
# timeout) or that got a 5xx; for these operations a repeat can make a second
# layer version, version, function, alias or multipart upload. guard() stops
# botocore there and raises Unconfirmed; the caller reads the state and continues
# from what is there (lambdas.py, s3.py). A request that never left (no connection)
# or that was throttled did nothing: botocore may repeat those.
GUARDED = {
    "lambda": ("CreateFunction", "PublishVersion", "CreateAlias", "PublishLayerVersion"),
    "s3": ("CreateMultipartUpload",),
}


class Unconfirmed(Exception):
    """A guarded write failed in a way that leaves its effect unknown (its answer was
    lost, or AWS answered 5xx); botocore did not repeat it."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"{operation}: {detail}")
        self.operation = operation
        self.detail = detail


def _stop_blind_retry(response: Any = None, operation: Any = None, caught_exception: Any = None,
                      **_: Any) -> None:
    """needs-retry handler of a GUARDED operation (runs before botocore's own)."""
    from botocore.exceptions import ConnectionError as NeverSent

    if caught_exception is not None:
        if isinstance(caught_exception, NeverSent):
            return  # no connection: nothing reached AWS
        raise Unconfirmed(operation.name, " ".join(str(caught_exception).split())
                          ) from caught_exception
    if response is not None and response[0].status_code >= 500:
        error = (response[1] or {}).get("Error", {})
        raise Unconfirmed(operation.name, f"HTTP {response[0].status_code}"
                          f" {error.get('Code') or ''}".rstrip())


def _name_the_call(caught_exception: Any = None, operation: Any = None, attempts: int = 0,
                   **_: Any) -> None:
    """needs-retry handler of every call: a failure without an AWS answer (a timeout,
    a dropped connection) remembers which call it was and after how many attempts."""
    if caught_exception is not None and operation is not None:
        with contextlib.suppress(AttributeError):
            caught_exception.dodo_call = (operation.name, attempts)


def guard(client: Any) -> Any:
    """Register the handlers above on a new client; the client."""
    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()
    for op in GUARDED.get(service, ()):
        events.register_first(f"needs-retry.{service}.{op}", _stop_blind_retry,
                              unique_id=f"dodo-guard-{service}-{op}")
    events.register(f"needs-retry.{service}", _name_the_call, unique_id=f"dodo-name-{service}")
    return client


def _prefix(who: str | None) -> str:
    return f"{who}: " if who else ""


def data_loader() -> Any:
    """botocore's service-model loader, to share between sessions of a run
    (parsing the models again costs ~0.1 s per session)."""
    from botocore.loaders import create_loader

    return create_loader()


def _session(profile: str | None, loader: Any) -> Any:
    # Plain botocore (boto3's Session only wraps it, and resources are not needed).
    import botocore.session

    session = botocore.session.Session(profile=profile)
    if loader is not None:
        session.register_component("data_loader", loader)
    return session


def connect(target: AwsTarget | None = None, *, who: str | None = None,
            loader: Any = None) -> Clients:
    """New S3 and Lambda clients for ``target`` (the run keeps them: RunContext.clients)."""
    from botocore.exceptions import (
        BotoCoreError,
        InvalidRegionError,
        NoRegionError,
        ProfileNotFound,
    )

    target = target or AwsTarget()
    pre = _prefix(who)
    bad = _endpoint_problem(target)
    if bad:
        raise DodoLambdaError(pre + bad)
    try:
        session = _session(target.profile, loader)
        # botocore reads AWS_DEFAULT_REGION only; the AWS CLI v2 and the other SDKs
        # prefer AWS_REGION, and users expect it to work here too.
        region = (
            target.region
            or os.environ.get("AWS_REGION")
            or session.get_config_variable("region")
        )
        if not region:
            raise NoRegionError()
        endpoint = target.endpoint or _env_endpoint()
        if not endpoint:
            _check_region_known(session, region, pre)
        kwargs = _client_kwargs(target.endpoint, region)
        s3 = guard(session.create_client("s3", **kwargs))
        lam = guard(session.create_client("lambda", **kwargs))
        credentials = session.get_credentials()
    except ProfileNotFound as exc:
        profile = target.profile or os.environ.get("AWS_PROFILE", "")
        raise DodoLambdaError(
            f"{pre}AWS profile {profile!r} not found ({exc}); fix AWS_PROFILE or profile= in"
            f" lambda_tasks, or run `aws configure --profile {profile or 'NAME'}`"
        ) from exc
    except NoRegionError as exc:
        raise DodoLambdaError(
            f"{pre}no AWS region configured; set AWS_REGION (e.g. AWS_REGION=us-east-1),"
            " region= in lambda_tasks, or a region in your AWS profile"
        ) from exc
    except InvalidRegionError as exc:
        raise DodoLambdaError(
            f"{pre}AWS region {exc.kwargs.get('region_name')!r} is not a valid"
            " region name; fix AWS_REGION or region= in lambda_tasks (e.g. 'us-east-1')"
        ) from exc
    except BotoCoreError as exc:
        raise DodoLambdaError(f"{pre}cannot set up AWS clients: {exc}") from exc
    except ValueError as exc:  # botocore's "Invalid endpoint" and the like
        raise DodoLambdaError(f"{pre}cannot set up AWS clients ({exc}); check endpoint= in"
                              " lambda_tasks and the AWS_ENDPOINT_URL* variables") from exc
    if credentials is None:
        raise DodoLambdaError(
            f"{pre}no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run `aws configure` (or `aws sso login`)"
        )
    return Clients(
        session=session,
        s3=s3,
        lam=lam,
        region=region,
        endpoint=endpoint,
        profile=target.profile or os.environ.get("AWS_PROFILE") or None,
        target=target,
    )


def _endpoint_problem(target: AwsTarget) -> str | None:
    """An endpoint that is not an http(s) URL: botocore would raise a bare ValueError."""
    from urllib.parse import urlsplit

    given = [("endpoint= in lambda_tasks", target.endpoint)] + [
        (key, value) for key, value in sorted(os.environ.items())
        if key.startswith("AWS_ENDPOINT_URL")]
    for where, url in given:
        if not url:
            continue
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises for a port that is not a number
        except ValueError:
            ok = False
        if not ok:
            return (f"{where} is {url!r}, which is not an http(s) URL; write it in full,"
                    f" e.g. 'http://{url.split('://')[-1]}'")
    return None


def _check_region_known(session: Any, region: str, pre: str) -> None:
    # botocore builds an endpoint for any well-formed name, so a typo such as
    # 'us-east1' would only show up as an unreachable host after retries.
    for partition in session.get_available_partitions():
        if region in session.get_available_regions("lambda", partition_name=partition):
            return
    raise DodoLambdaError(
        f"{pre}AWS region {region!r} is unknown to this botocore; fix AWS_REGION or region="
        " in lambda_tasks (e.g. 'us-east-1'), or upgrade boto3 if the region is new"
    )


# --------------------------------------------------------------------------- errors


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def aws_error(
    exc: BaseException, who: str, *, bucket: str | None = None, c: Clients | None = None
) -> DodoLambdaError:
    """Translate a botocore exception into a one-line DodoLambdaError naming the fix."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
        WaiterError,
    )

    if isinstance(exc, DodoLambdaError):
        return exc
    pre = _prefix(who)
    if isinstance(exc, ClientError):
        return _client_error(exc, pre, bucket, c)
    if isinstance(exc, NoCredentialsError):
        return DodoLambdaError(
            f"{pre}no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run `aws configure`"
        )
    call, tries = getattr(exc, "dodo_call", (None, 0))
    how = f" ({call}, {tries} attempt{'s' if tries != 1 else ''})" if call else ""
    if isinstance(exc, Unconfirmed):
        return DodoLambdaError(f"{pre}{exc.operation} failed ({exc.detail}) and AWS does not show"
                               " it done; run again")
    if isinstance(exc, EndpointConnectionError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url", "")
        return DodoLambdaError(
            f"{pre}cannot reach AWS at {url}{how}; check the network, the region, and"
            " AWS_ENDPOINT_URL or endpoint= in lambda_tasks"
        )
    if isinstance(exc, ReadTimeoutError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url", "")
        return DodoLambdaError(f"{pre}no answer from AWS at {url}{how}; check the network and"
                               " the endpoint, and run again")
    if isinstance(exc, ConnectionClosedError):
        return DodoLambdaError(f"{pre}connection to AWS failed{how} ({exc}); run again")
    if isinstance(exc, WaiterError):
        return DodoLambdaError(f"{pre}gave up waiting: {exc}")
    if type(exc).__name__ in _SSO_ERRORS:
        return DodoLambdaError(
            f"{pre}the AWS SSO session is missing or expired ({type(exc).__name__});"
            " run `aws sso login` and run again"
        )
    text = " ".join(str(exc).split()) or type(exc).__name__
    return DodoLambdaError(f"{pre}AWS call failed: {text}")


def _client_error(exc: Any, pre: str, bucket: str | None, c: Clients | None) -> DodoLambdaError:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    message = " ".join(str(err.get("Message", "")).split())
    op = exc.operation_name
    if bucket is not None:
        action = _S3_ACTIONS.get(op, f"s3:{op}")
    else:
        action = f"lambda:{op}"
    if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
        return DodoLambdaError(
            f"{pre}AWS credentials have expired ({code} during {op}); refresh them"
            " (e.g. `aws sso login`) and run again"
        )
    if code in _ACCESS_CODES:
        where = f" on s3://{bucket}" if bucket else ""
        return DodoLambdaError(
            f"{pre}access denied for {op}{where} ({code}: {message or 'no message'});"
            f" check the AWS credentials and that they allow {action}"
        )
    if code == "NoSuchBucket":
        return _no_bucket(pre, bucket)
    if code == "ResourceNotFoundException" and op in _FUNCTION_OPS:
        region = f" in {c.region}" if c else ""
        return DodoLambdaError(
            f"{pre}the Lambda function does not exist{region} ({op}; deleted meanwhile?);"
            " deploy again and dodo_lambda creates it"
        )
    if code in _THROTTLE_CODES:
        return DodoLambdaError(
            f"{pre}AWS kept throttling {op} ({code}) after several retries; run again later"
            " or with fewer parallel jobs (-n)"
        )
    return DodoLambdaError(f"{pre}{op} failed: {code}: {message}")


def _no_bucket(pre: str, bucket: str | None) -> DodoLambdaError:
    return DodoLambdaError(
        f"{pre}S3 bucket {bucket!r} does not exist; create it or fix bucket= for this item"
    )


@contextlib.contextmanager
def translating(
    who: str, *, bucket: str | None = None, c: Clients | None = None
) -> Iterator[None]:
    """Run a block of AWS calls, turning any botocore exception into a DodoLambdaError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError, Unconfirmed) as exc:
        raise aws_error(exc, who, bucket=bucket, c=c) from exc
