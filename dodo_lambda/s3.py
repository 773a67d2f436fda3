"""Zip uploads to S3 at content-addressed keys: skipped when the same bytes are there,
checked by SHA-256, in parallel parts when big, with progress lines.

No multipart upload is left open: a multipart upload's ``journal`` (a local file,
written before CreateMultipartUpload) names the uploads at the key before it began,
so that any other one there afterwards is its own — a lost CreateMultipartUpload
answer, a failed abort, a killed run — and is aborted (right away, or by the next
upload of the item). Uploads under the item's prefix older than STALE_UPLOAD_AGE
that no journal explains (another machine's killed run) are aborted too. The
caller holds the item's upload lock (one upload of an item at a time).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .aws import Clients, MiB, Unconfirmed, _error_code, _no_bucket, _prefix, translating
from .errors import DodoLambdaError
from .files import read_json, write_json

log = logging.getLogger("dodo_lambda")

PROGRESS_MIN_SIZE = 8 * MiB  # smaller uploads are quick: no progress lines
PROGRESS_INTERVAL = 10.0  # seconds; also a line at each 25% step
# A multipart upload under an item's prefix this old (seconds, by S3's clock) that no
# journal of ours explains is abandoned: a killed run of another machine.
STALE_UPLOAD_AGE = 15 * 60
UPLOAD_ATTEMPTS = 2  # a transfer whose CreateMultipartUpload answer was lost is sent again


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
    journal: Path | None = None,
) -> bool:
    """Put ``zip_path`` at s3://bucket/key unless identical bytes are there; True when sent.

    The bytes sent are known to be those whose SHA-256 is ``sha256_hex``: a single
    put carries the checksum (S3 refuses other bytes); a multipart upload reads the
    file it hashed through the same open handle (zips are replaced by rename, never
    rewritten in place). boto3's transfer manager (s3transfer) does the sending.
    ``journal``: where a multipart upload notes what it began (see the module's docstring).
    """
    zip_path = Path(zip_path)
    size = zip_path.stat().st_size
    with translating(who, bucket=bucket, c=c):
        if journal is not None:
            finish_journal(c, journal, who=who)
        if _object_matches(c, bucket, key, sha256_hex, size):
            return False
        _require_bucket(c, who, bucket)
        multipart = size > multipart_threshold
        before: set[str] | None = None  # the uploads at the key before ours (multipart)
        if multipart:
            abort_abandoned(c, bucket, key.rsplit("/", 1)[0] + "/", who=who)
            before = _uploads_at(c, bucket, key)
            if journal is not None and before is not None:
                write_json(journal, {"bucket": bucket, "key": key, "before": sorted(before)})
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
            for attempt in range(UPLOAD_ATTEMPTS):
                fh.seek(0)
                try:
                    _transfer(c, fh, bucket, key, extra, report,
                              multipart_threshold=multipart_threshold, part_size=part_size,
                              size=size)
                    break
                except Exception as exc:
                    if before is not None:
                        _abort_uploads(c, bucket, key, before, who=who)
                    if _object_matches(c, bucket, key, sha256_hex, size):
                        break  # the answer to CompleteMultipartUpload was lost: it is there
                    if attempt == UPLOAD_ATTEMPTS - 1 or not isinstance(exc, Unconfirmed):
                        raise
                    log.info("%s: %s; sending %s again", who, exc, zip_path.name)
        if journal is not None and before is not None and \
                _abort_uploads(c, bucket, key, before, who=who):
            journal.unlink(missing_ok=True)
        report.done()
    return True


# -- multipart uploads that must not stay open ---------------------------------------


def _list_uploads(c: Clients, bucket: str, prefix: str) -> list[dict[str, Any]] | None:
    """Open multipart uploads under ``prefix``; None when the credentials may not list
    them (s3:ListBucketMultipartUploads): nothing is aborted then."""
    from botocore.exceptions import ClientError

    try:
        return [u for page in c.s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix) for u in page.get("Uploads", [])]
    except ClientError as exc:
        if _http_status(exc) == 403:
            return None
        raise


def _uploads_at(c: Clients, bucket: str, key: str) -> set[str] | None:
    listed = _list_uploads(c, bucket, key)
    return None if listed is None else {u["UploadId"] for u in listed if u.get("Key") == key}


def _abort(c: Clients, bucket: str, key: str, upload_id: str, *, who: str) -> bool:
    """Abort one multipart upload (botocore retries a failed abort); False when it
    could not be (the journal keeps it for the next upload)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        c.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if _error_code(exc) != "NoSuchUpload" and _http_status(exc) != 404:
            log.warning("%s: could not abort multipart upload %s of s3://%s/%s (%s); the next"
                        " upload of this item tries again", who, upload_id[:16], bucket, key,
                        _error_code(exc) or exc)
            return False
    except BotoCoreError as exc:
        log.warning("%s: could not abort multipart upload %s of s3://%s/%s (%s); the next"
                    " upload of this item tries again", who, upload_id[:16], bucket, key, exc)
        return False
    return True


def _abort_uploads(c: Clients, bucket: str, key: str, before: set[str], *, who: str) -> bool:
    """Abort every upload at ``key`` not among ``before`` (ours); True when none is left."""
    now = _uploads_at(c, bucket, key)
    if now is None:
        return False
    return all([_abort(c, bucket, key, u, who=who) for u in sorted(now - before)])


def finish_journal(c: Clients, journal: Path, *, who: str) -> None:
    """Abort what a multipart upload that did not finish (a killed run) left open."""
    noted = read_json(journal)
    if not isinstance(noted, dict):
        journal.unlink(missing_ok=True)
        return
    bucket, key = str(noted.get("bucket")), str(noted.get("key"))
    if _abort_uploads(c, bucket, key, set(noted.get("before") or ()), who=who):
        journal.unlink(missing_ok=True)


_CONTENT_KEY = re.compile(r"/[0-9a-f]{64}\.zip$")


def abort_abandoned(c: Clients, bucket: str, prefix: str, *, who: str) -> None:
    """Abort content-addressed uploads under ``prefix`` (an item's keys) begun more than
    STALE_UPLOAD_AGE ago: a run that died elsewhere."""
    listed = _list_uploads(c, bucket, prefix) or []
    for upload in listed:
        started = upload.get("Initiated")
        if not _CONTENT_KEY.search(upload.get("Key", "")) or started is None:
            continue
        age = time.time() - calendar.timegm(started.utctimetuple())
        if age > STALE_UPLOAD_AGE:
            log.info("%s: aborting multipart upload of s3://%s/%s begun %.0f minutes ago and"
                     " never finished", who, bucket, upload["Key"], age / 60)
            _abort(c, bucket, upload["Key"], upload["UploadId"], who=who)


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
    return _holds(head, sha256_hex, size)


def object_state(c: Clients, bucket: str, key: str, *, sha256_hex: str, size: int,
                 who: str) -> str:
    """"same" when s3://bucket/key holds the zip (by its checksum, not its existence),
    "missing" or "differs"; a missing bucket or no permission is an error."""
    from botocore.exceptions import ClientError

    with translating(who, bucket=bucket, c=c):
        try:
            head = c.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            status = _http_status(exc)
            if status == 403:
                raise _denied(who, bucket, key) from exc
            if status != 404:
                raise
            _require_bucket(c, who, bucket)
            return "missing"
    return "same" if _holds(head, sha256_hex, size) else "differs"


def _holds(head: dict[str, Any], sha256_hex: str, size: int) -> bool:
    """Whether a HeadObject answer (with ChecksumMode) is of the zip's bytes."""
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


def _denied(who: str, bucket: str, key: str) -> DodoLambdaError:
    return DodoLambdaError(
        f"{_prefix(who)}access denied reading s3://{bucket}/{key}; the credentials need"
        " s3:GetObject on it (and s3:ListBucket, or S3 answers 403 for a missing key)")


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
