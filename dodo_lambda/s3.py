"""Zip uploads to S3 at content-addressed keys: skipped when the same bytes are there,
checked by SHA-256, in parallel parts when big, with progress lines."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .aws import Clients, MiB, _no_bucket, _prefix, translating
from .errors import DodoLambdaError

log = logging.getLogger("dodo_lambda")

PROGRESS_MIN_SIZE = 8 * MiB  # smaller uploads are quick: no progress lines
PROGRESS_INTERVAL = 10.0  # seconds; also a line at each 25% step


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
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Put ``zip_path`` at s3://bucket/key unless identical bytes are there; True when sent.

    The bytes sent are known to be those whose SHA-256 is ``sha256_hex``: a single
    put carries the checksum (S3 refuses other bytes); a multipart upload reads the
    file it hashed through the same open handle (zips are replaced by rename, never
    rewritten in place). boto3's transfer manager (s3transfer) does the sending.
    """
    zip_path = Path(zip_path)
    size = zip_path.stat().st_size
    with translating(who, bucket=bucket, c=c):
        if _object_matches(c, bucket, key, sha256_hex, size):
            return False
        _require_bucket(c, who, bucket)
        report = _Progress(progress or _log_progress, f"{zip_path.name} to s3://{bucket}/{key}",
                           size)
        extra: dict[str, Any] = {
            "ServerSideEncryption": "AES256",
            "Metadata": {"sha256": sha256_hex},
            "ContentType": "application/zip",
        }
        with zip_path.open("rb") as fh:
            if size > multipart_threshold:
                if _sha256_of(fh) != sha256_hex:
                    raise DodoLambdaError(
                        f"{_prefix(who)}{zip_path} changed since it was packaged (its SHA-256 is"
                        " not the manifest's); build it again"
                    )
                fh.seek(0)
            else:
                extra["ChecksumSHA256"] = b64_sha256(sha256_hex)
            extra["ChecksumAlgorithm"] = "SHA256"  # multipart: per part, S3 checks each
            _transfer(c, fh, bucket, key, extra, report,
                      multipart_threshold=multipart_threshold, part_size=part_size, size=size)
        report.done()
    return True


def _sha256_of(fh: Any) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _transfer(c: Clients, fh: Any, bucket: str, key: str, extra: dict[str, Any],
              report: _Progress, *, multipart_threshold: int, part_size: int, size: int) -> None:
    from s3transfer.manager import TransferConfig, TransferManager
    from s3transfer.subscribers import BaseSubscriber

    class Subscriber(BaseSubscriber):
        def on_progress(self, bytes_transferred: int, **_: Any) -> None:
            report.add(bytes_transferred)  # negative when a part is retried

    config = TransferConfig(
        multipart_threshold=multipart_threshold + 1,  # up to the threshold: one put
        # S3 allows 10,000 parts; each but the last must be at least 5 MiB.
        multipart_chunksize=max(part_size, -(-size // 10_000)),
        max_request_concurrency=4,
    )
    with TransferManager(c.s3, config) as manager:
        manager.upload(fh, bucket, key, extra_args=extra, subscribers=[Subscriber()]).result()


def _http_status(exc: Any) -> Any:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _object_matches(c: Clients, bucket: str, key: str, sha256_hex: str, size: int) -> bool:
    from botocore.exceptions import ClientError

    try:
        head = c.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        # 404: missing key (or bucket: checked before sending). 403: without
        # s3:ListBucket S3 answers 403 for a missing key; the put will tell.
        if _http_status(exc) in (403, 404):
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
            status = _http_status(exc)
            if status == 403:
                raise DodoLambdaError(
                    f"{_prefix(who)}access denied reading s3://{bucket}/{key}; the credentials"
                    " need s3:GetObject on it (and s3:ListBucket, or S3 answers 403 for a"
                    " missing key)"
                ) from exc
            if status != 404:
                raise
        _require_bucket(c, who, bucket)
        return False


def _require_bucket(c: Clients, who: str, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        c.s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = _http_status(exc)
        if status == 404:
            raise _no_bucket(_prefix(who), bucket) from exc
        if status == 403:
            return  # may lack s3:ListBucket yet be allowed to put; the put will tell
        raise


def _log_progress(line: str) -> None:
    log.info("%s", line)


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

    def add(self, n: int) -> None:
        """Another ``n`` bytes were sent (negative: a retry starts a part again)."""
        with self.lock:
            self._move(self.sent + n)

    def done(self) -> None:
        with self.lock:
            self.sent = self.size
            self._line()

    def _move(self, sent: int) -> None:
        self.sent = max(0, min(sent, self.size))
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
