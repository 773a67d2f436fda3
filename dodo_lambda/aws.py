"""boto3 clients, S3 uploads and the Lambda calls a deploy needs, with waits and retries.

Every failure leaves this module as a one-line ``DodoLambdaError``; botocore
exceptions never escape. botocore (the core of boto3; nothing here needs boto3's
resources) is imported inside functions only, so that loading a dodo.py or a
no-op ``doit package`` does not pay for it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import DodoLambdaError

MiB = 2**20

# Lambda's cap on a direct (ZipFile) upload: a 69,905,067-byte request body is
# 50 MiB once base64-encoded. Bigger zips must go through S3.
DIRECT_UPLOAD_LIMIT = 50 * MiB

# Polling a function's state. Module-level so that tests can make it fast.
POLL_DELAY = 1.0  # seconds between GetFunctionConfiguration calls
POLL_TIMEOUT = 900.0  # give up waiting after this long (Lambda's own limit is minutes)

# ResourceConflictException backoff: base * 2**attempt, capped.
CONFLICT_BASE_DELAY = 1.0
CONFLICT_MAX_DELAY = 20.0

# A freshly created IAM role takes seconds to become assumable by Lambda.
ROLE_PROPAGATION_ATTEMPTS = 8

PROGRESS_MIN_SIZE = 8 * MiB  # smaller uploads are quick: no progress lines
PROGRESS_INTERVAL = 10.0  # seconds; also a line at each 25% step

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


@dataclass(frozen=True)
class AwsTarget:
    """Where deploys go; None fields fall back to boto3's standard chain (env, profile)."""

    profile: str | None = None
    region: str | None = None
    endpoint: str | None = None


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
        return self.session.create_client(
            "sts", **_client_kwargs(self.target.endpoint, self.region)
        )

    @cached_property
    def account_id(self) -> str:
        """The account the credentials belong to (one STS call, then remembered)."""
        with translating("AWS"):
            return str(self.sts.get_caller_identity()["Account"])


_memo: dict[tuple, Clients] = {}
_memo_lock = threading.Lock()


def _env_key() -> tuple[tuple[str, str], ...]:
    # The standard chain reads AWS_* variables; a change of them (tests, a
    # dodo.py setting AWS_PROFILE) must not reuse clients made for other values.
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def _env_endpoint() -> str | None:
    # botocore honours these itself; we only need to know that one is set.
    env = os.environ
    return env.get("AWS_ENDPOINT_URL_LAMBDA") or env.get("AWS_ENDPOINT_URL") or None


def _client_kwargs(endpoint: str | None, region: str) -> dict[str, Any]:
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"mode": "standard", "total_max_attempts": 8},
        connect_timeout=10,
        # Lambda may take a while to answer an UpdateFunctionCode of 50 MiB.
        read_timeout=120,
        user_agent_extra=USER_AGENT,
        max_pool_connections=16,
    )
    kwargs: dict[str, Any] = {"config": config, "region_name": region}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return kwargs


def _prefix(who: str | None) -> str:
    return f"{who}: " if who else ""


def clients(target: AwsTarget | None = None, *, who: str | None = None) -> Clients:
    """The S3 and Lambda clients for ``target``, made once per process and environment."""
    target = target or AwsTarget()
    key = (target, _env_key())
    with _memo_lock:
        found = _memo.get(key)
        if found is None:
            found = _make_clients(target, who)
            _memo[key] = found
    return found


def reset_clients() -> None:
    """Forget every memoised client and cache (tests; a long-lived process after env changes)."""
    with _memo_lock:
        _memo.clear()


_loader: Any = None  # botocore's data loader, shared: parsing service models costs ~0.1 s


def _session(profile: str | None) -> Any:
    # Plain botocore (boto3's Session only wraps it, and resources are not needed).
    import botocore.session

    global _loader
    session = botocore.session.Session(profile=profile)
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return session


def _make_clients(target: AwsTarget, who: str | None) -> Clients:
    from botocore.exceptions import (
        BotoCoreError,
        InvalidRegionError,
        NoRegionError,
        ProfileNotFound,
    )

    pre = _prefix(who)
    try:
        session = _session(target.profile)
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
        s3 = session.create_client("s3", **kwargs)
        lam = session.create_client("lambda", **kwargs)
        credentials = session.get_credentials()
    except ProfileNotFound as exc:
        profile = target.profile or os.environ.get("AWS_PROFILE", "")
        raise DodoLambdaError(
            f"{pre}AWS profile {profile!r} not found ({exc}); fix AWS_PROFILE or profile= in"
            f" lambda_tasks, or run `aws configure --profile {profile or 'NAME'}`"
        ) from None
    except NoRegionError:
        raise DodoLambdaError(
            f"{pre}no AWS region configured; set AWS_REGION (e.g. AWS_REGION=us-east-1),"
            " region= in lambda_tasks, or a region in your AWS profile"
        ) from None
    except InvalidRegionError as exc:
        raise DodoLambdaError(
            f"{pre}AWS region {exc.kwargs.get('region_name')!r} is not a valid"
            " region name; fix AWS_REGION or region= in lambda_tasks (e.g. 'us-east-1')"
        ) from None
    except BotoCoreError as exc:
        raise DodoLambdaError(f"{pre}cannot set up AWS clients: {exc}") from None
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


def target_id(target: AwsTarget | None = None) -> str:
    """A stable name for where deploys go (profile, region, endpoints), for uptodate checks."""
    c = clients(target)
    return (
        f"profile={c.profile or ''} region={c.region}"
        f" lambda={c.lam.meta.endpoint_url} s3={c.s3.meta.endpoint_url}"
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
    if isinstance(exc, EndpointConnectionError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url", "")
        return DodoLambdaError(
            f"{pre}cannot reach AWS at {url}; check the network, the region, and"
            " AWS_ENDPOINT_URL or endpoint= in lambda_tasks"
        )
    if isinstance(exc, (ConnectionClosedError, ReadTimeoutError)):
        return DodoLambdaError(f"{pre}connection to AWS failed ({exc}); run again")
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
        return DodoLambdaError(
            f"{pre}S3 bucket {bucket!r} does not exist; create it or fix bucket= for this item"
        )
    if code == "ResourceNotFoundException" and op in _FUNCTION_OPS:
        region = f" in {c.region}" if c else ""
        return DodoLambdaError(
            f"{pre}the Lambda function does not exist{region} ({op}); create it, or give"
            " role= so dodo_lambda creates it"
        )
    if code in _THROTTLE_CODES:
        return DodoLambdaError(
            f"{pre}AWS kept throttling {op} ({code}) after several retries; run again later"
            " or with fewer parallel jobs (-n)"
        )
    return DodoLambdaError(f"{pre}{op} failed: {code}: {message}")


@contextlib.contextmanager
def translating(
    who: str, *, bucket: str | None = None, c: Clients | None = None
) -> Iterator[None]:
    """Run a block of AWS calls, turning any botocore exception into a DodoLambdaError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, who, bucket=bucket, c=c) from exc


# --------------------------------------------------------------------------- S3


def s3_key(prefix: str, name: str, sha256_hex: str) -> str:
    """The content-addressed key of a zip: the same bytes always land at the same key."""
    return f"{prefix}{name}/{sha256_hex}.zip"


def b64_sha256(sha256_hex: str) -> str:
    """The base64 form of a hex SHA-256 (how S3 and Lambda report it)."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def upload_zip(
    c: Clients,
    *,
    who: str,
    bucket: str,
    key: str,
    zip_path: Path,
    sha256_hex: str,
    multipart_threshold: int = 64 * MiB,
    part_size: int = 16 * MiB,
    progress: Callable[[str], None] | None = print,
) -> bool:
    """Put ``zip_path`` at s3://bucket/key unless identical bytes are there; True when sent."""
    zip_path = Path(zip_path)
    size = zip_path.stat().st_size
    with translating(who, bucket=bucket, c=c):
        if _object_matches(c, bucket, key, sha256_hex, size):
            return False
        _require_bucket(c, who, bucket)
        report = _Progress(progress, f"{zip_path.name} to s3://{bucket}/{key}", size)
        extra = {
            "ServerSideEncryption": "AES256",
            "Metadata": {"sha256": sha256_hex},
            "ContentType": "application/zip",
        }
        if size > multipart_threshold:
            _multipart_upload(c, who, bucket, key, zip_path, sha256_hex, size, part_size,
                              extra, report)
        else:
            with zip_path.open("rb") as fh:
                c.s3.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=_ProgressReader(fh, report),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=b64_sha256(sha256_hex),  # S3 refuses other bytes
                    **extra,
                )
            report.done()
    return True


def _object_matches(c: Clients, bucket: str, key: str, sha256_hex: str, size: int) -> bool:
    from botocore.exceptions import ClientError

    try:
        head = c.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        # 404: missing key (or bucket: checked before sending). 403: without
        # s3:ListBucket S3 answers 403 for a missing key; the put will tell.
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (403, 404):
            return False
        raise
    if head.get("ContentLength") != size:
        return False
    checksum = head.get("ChecksumSHA256")
    if checksum == b64_sha256(sha256_hex):  # S3 computed it over the bytes it holds
        return True
    # A multipart object's checksum is one of part checksums ("...-N"), not
    # comparable with ours: rely on the metadata only our verified uploads set.
    multipart = (
        head.get("ChecksumType") == "COMPOSITE"
        or "-" in (checksum or "")
        or re.search(r"-\d+\"?$", head.get("ETag", "")) is not None
    )
    if checksum and not multipart:
        return False
    return bool(head.get("Metadata", {}).get("sha256") == sha256_hex)


def s3_object_exists(c: Clients, bucket: str, key: str, *, who: str) -> bool:
    """Whether s3://bucket/key exists; a missing bucket or no permission is an error."""
    from botocore.exceptions import ClientError

    with translating(who, bucket=bucket, c=c):
        try:
            c.s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                raise DodoLambdaError(
                    f"{_prefix(who)}access denied reading s3://{bucket}/{key}; the credentials"
                    " need s3:GetObject on it (and s3:ListBucket, or S3 answers 403 for a"
                    " missing key)"
                ) from None
            if status != 404:
                raise
        _require_bucket(c, who, bucket)
        return False


def _require_bucket(c: Clients, who: str, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        c.s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            raise DodoLambdaError(
                f"{_prefix(who)}S3 bucket {bucket!r} does not exist; create it or fix bucket="
                " for this item"
            ) from None
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
            return  # may lack s3:ListBucket yet be allowed to put; the put will tell
        raise


def _multipart_upload(
    c: Clients,
    who: str,
    bucket: str,
    key: str,
    zip_path: Path,
    sha256_hex: str,
    size: int,
    part_size: int,
    extra: dict[str, Any],
    report: _Progress,
) -> None:
    # S3 allows 10,000 parts; each but the last must be at least 5 MiB.
    part_size = max(part_size, -(-size // 10_000))
    upload_id = c.s3.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **extra
    )["UploadId"]
    try:
        parts = _send_parts(c, who, bucket, key, upload_id, zip_path, sha256_hex, part_size,
                            report)
        c.s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the original error is the one to report
            c.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    report.done()


def _send_parts(
    c: Clients,
    who: str,
    bucket: str,
    key: str,
    upload_id: str,
    zip_path: Path,
    sha256_hex: str,
    part_size: int,
    report: _Progress,
) -> list[dict[str, Any]]:
    # One reader hashes the whole file in order while a few threads send parts:
    # the object is then known to hold exactly the bytes whose hash we were given,
    # even if the file changed since it was digested. At most workers+2 parts
    # are in memory.
    workers = 4
    whole = hashlib.sha256()
    slots = threading.Semaphore(workers + 2)
    failed = threading.Event()

    def send(number: int, data: bytes) -> dict[str, Any]:
        try:
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
            etag = c.s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=digest,
            )["ETag"]
            report.add(len(data))
            return {"PartNumber": number, "ETag": etag, "ChecksumSHA256": digest}
        except BaseException:
            failed.set()  # stop reading; the error is raised from the future
            raise
        finally:
            slots.release()

    with ThreadPoolExecutor(workers) as pool, zip_path.open("rb") as fh:
        futures = []
        number = 0
        while True:
            slots.acquire()
            data = b"" if failed.is_set() else fh.read(part_size)
            if not data:
                slots.release()
                break
            whole.update(data)
            number += 1
            futures.append(pool.submit(send, number, data))
        parts = [f.result() for f in futures]
    if whole.hexdigest() != sha256_hex:
        raise DodoLambdaError(
            f"{_prefix(who)}{zip_path} changed while it was being uploaded; run again"
        )
    return parts


class _Progress:
    """Throttled 'uploading x: 45% (30.1/66.0 MiB)' lines for big uploads (thread-safe)."""

    def __init__(self, sink: Callable[[str], None] | None, what: str, size: int) -> None:
        self.sink = sink if size >= PROGRESS_MIN_SIZE else None
        self.what = what
        self.size = size
        self.sent = 0
        self.step = 0  # the last 25% step reported
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def reached(self, position: int) -> None:
        """The upload has got this far (a single put's read position)."""
        with self.lock:
            self._move(max(self.sent, position))

    def add(self, n: int) -> None:
        """Another ``n`` bytes were sent (a multipart part)."""
        with self.lock:
            self._move(self.sent + n)

    def done(self) -> None:
        with self.lock:
            self.sent = self.size
            self._line()

    def _move(self, sent: int) -> None:
        self.sent = min(sent, self.size)
        if self.sent == self.size:
            return  # done() reports the end, once
        step = self.sent * 4 // max(self.size, 1)
        now = time.monotonic()
        if step > self.step or now - self.last >= PROGRESS_INTERVAL:
            self.step, self.last = step, now
            self._line()

    def _line(self) -> None:
        if self.sink is None:
            return
        pct = 100 * self.sent // max(self.size, 1)
        self.sink(
            f"uploading {self.what}: {pct}% ({self.sent / MiB:.1f}/{self.size / MiB:.1f} MiB)"
        )


class _ProgressReader:
    """A seekable file wrapper reporting how far into the file a single put has read."""

    def __init__(self, fh: Any, report: _Progress) -> None:
        self._fh = fh
        self._report = report

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        # The furthest position reached: signing may read the body once before
        # sending it, and a retry rereads from the start.
        self._report.reached(self._fh.tell())
        return bytes(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._fh.seek(offset, whence))

    def tell(self) -> int:
        return int(self._fh.tell())


# --------------------------------------------------------------------------- Lambda


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


def get_function(c: Clients, name: str, *, who: str | None = None) -> dict | None:
    """The function's configuration (GetFunctionConfiguration), or None when it does not exist."""
    from botocore.exceptions import ClientError

    with translating(who or _default_who(name), c=c):
        try:
            return _clean(c.lam.get_function_configuration(FunctionName=name))
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return None
            raise


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
    for attempt in range(ROLE_PROPAGATION_ATTEMPTS):
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
                # New roles take a few seconds to become assumable by Lambda.
                if "cannot be assumed" in message and attempt < ROLE_PROPAGATION_ATTEMPTS - 1:
                    time.sleep(min(wait * 2**attempt, CONFLICT_MAX_DELAY))
                    continue
                raise DodoLambdaError(
                    f"{who}: Lambda rejected role {arn} ({message}); fix role= (an IAM role"
                    " that lambda.amazonaws.com may assume)"
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
    from botocore.exceptions import ClientError

    who = who or f"layer '{layer_name}'"
    with translating(who, c=c):
        try:
            listed = c.lam.list_layer_versions(LayerName=layer_name).get("LayerVersions", [])
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return None
            raise
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
