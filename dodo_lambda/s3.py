"""Zip uploads to S3 at content-addressed keys: skipped when the same bytes are there,
checked by SHA-256, in parallel parts when big, with progress lines."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .aws import Clients, MiB, _no_bucket, _prefix, translating
from .errors import DodoLambdaError

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
    """Put ``zip_path`` at s3://bucket/key unless identical bytes are there; True when sent."""
    zip_path = Path(zip_path)
    size = zip_path.stat().st_size
    with translating(who, bucket=bucket, c=c):
        if _object_matches(c, bucket, key, sha256_hex, size):
            return False
        _require_bucket(c, who, bucket)
        report = _Progress(progress or _to_stderr, f"{zip_path.name} to s3://{bucket}/{key}",
                           size)
        up = _Upload(c, who, bucket, key, zip_path, sha256_hex, size, report)
        if size > multipart_threshold:
            _multipart_upload(up, part_size)
        else:
            _single_put(up)
        report.done()
    return True


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
        status = _http_status(exc)
        if status == 404:
            raise _no_bucket(_prefix(who), bucket) from None
        if status == 403:
            return  # may lack s3:ListBucket yet be allowed to put; the put will tell
        raise


@dataclass(frozen=True)
class _Upload:
    """One zip on its way to s3://bucket/key: what each step of sending it needs."""

    c: Clients
    who: str
    bucket: str
    key: str
    zip_path: Path
    sha256_hex: str
    size: int
    report: _Progress

    @property
    def extra(self) -> dict[str, Any]:
        """The object's settings, alike for a single put and a multipart upload."""
        return {
            "ServerSideEncryption": "AES256",
            "Metadata": {"sha256": self.sha256_hex},
            "ContentType": "application/zip",
        }


def _single_put(up: _Upload) -> None:
    with up.zip_path.open("rb") as fh:
        up.c.s3.put_object(
            Bucket=up.bucket,
            Key=up.key,
            Body=_ProgressReader(fh, up.report),
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=b64_sha256(up.sha256_hex),  # S3 refuses other bytes
            **up.extra,
        )


def _multipart_upload(up: _Upload, part_size: int) -> None:
    c, bucket, key = up.c, up.bucket, up.key
    # S3 allows 10,000 parts; each but the last must be at least 5 MiB.
    part_size = max(part_size, -(-up.size // 10_000))
    upload_id = c.s3.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **up.extra
    )["UploadId"]
    try:
        parts = _send_parts(up, upload_id, part_size)
        c.s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the original error is the one to report
            c.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def _send_parts(up: _Upload, upload_id: str, part_size: int) -> list[dict[str, Any]]:
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
            digest = b64_sha256(hashlib.sha256(data).hexdigest())
            etag = up.c.s3.upload_part(
                Bucket=up.bucket, Key=up.key, UploadId=upload_id, PartNumber=number, Body=data,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=digest,
            )["ETag"]
            up.report.add(len(data))
            return {"PartNumber": number, "ETag": etag, "ChecksumSHA256": digest}
        except BaseException:
            failed.set()  # stop reading; the error is raised from the future
            raise
        finally:
            slots.release()

    with ThreadPoolExecutor(workers) as pool, up.zip_path.open("rb") as fh:
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
    if whole.hexdigest() != up.sha256_hex:
        raise DodoLambdaError(
            f"{_prefix(up.who)}{up.zip_path} changed while it was being uploaded; run again"
        )
    return parts


def _to_stderr(line: str) -> None:
    # doit keeps a task's stdout to itself at its default verbosity; stderr shows
    print(line, file=sys.stderr, flush=True)


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


