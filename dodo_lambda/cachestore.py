"""The shared build cache's bucket: reading an entry, downloading a zip with its
SHA-256 checked, putting a zip and its entry; and giving the cache up for the rest
of a run when it cannot be used (one warning, never a failure).

Two kinds of object under the prefix (as Bazel's action cache and content store):

    entries/<key>.json   what the inputs ``key`` (cachekey) gave: the package's
                         manifest, the zip's key, and the files outside the source folder
                         that a bundle read (path -> SHA-256)
    zips/<sha256>.zip    the zips, content-addressed: the same bytes are stored once

A zip is put before its entry, so an entry only names a complete zip; both carry a
SHA-256 checksum S3 verifies, and server-side encryption, as uploads do.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import records, rules, s3
from .aws import USER_AGENT, AwsTarget, Clients, translating
from .config import Function, Layer, label
from .context import RunContext
from .errors import DodoLambdaError
from .files import read_json, write_json
from .layout import BuildDir

log = logging.getLogger("dodo_lambda")

FORMAT = 1  # of an entry
DEFAULT_PREFIX = "dodo-lambda-cache/"
CONNECT_TIMEOUT = 5  # seconds: an unreachable cache must not hold the build up for long
ATTEMPTS = 3  # botocore's attempts per request (the deploy's clients make 8)


@dataclass(frozen=True)
class CacheSettings:
    """``lambda_tasks(cache_bucket=, cache_prefix=, cache_read_only=)``; ``target`` is
    lambda_tasks' own profile, region and endpoint (never a stage's: every stage
    shares one build)."""

    bucket: str
    prefix: str = DEFAULT_PREFIX
    read_only: bool = False
    target: AwsTarget = AwsTarget()

    def entry_key(self, key: str) -> str:
        return f"{self.prefix}entries/{key}.json"

    def zip_key(self, sha256_hex: str) -> str:
        return f"{self.prefix}zips/{sha256_hex}.zip"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def settings(bucket: Any, prefix: Any, read_only: Any, target: AwsTarget
             ) -> tuple[CacheSettings | None, str | None]:
    """The cache lambda_tasks was given (None: no cache), or what is wrong with it."""
    if bucket is None:
        return None, None
    prefix = DEFAULT_PREFIX if prefix is None else prefix
    problem = rules.bucket_problem(bucket)
    if problem:
        return None, f"lambda_tasks(cache_bucket=...): {problem.replace('bucket=', 'cache_bucket=')}"
    if not isinstance(prefix, str) or rules.bucket_prefix_problem(prefix):
        return None, (f"lambda_tasks(cache_prefix={prefix!r}) must be a plain key prefix such"
                      f" as '{DEFAULT_PREFIX}' (no leading '/', no '..')")
    if not isinstance(read_only, bool):
        return None, f"lambda_tasks(cache_read_only={read_only!r}) must be True or False"
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return CacheSettings(bucket, prefix, read_only, target), None


@dataclass(frozen=True)
class Found:
    """A cache entry for an item's inputs (its zip not yet fetched)."""

    key: str
    manifest: dict[str, Any]
    zip_key: str
    extras: dict[str, str]  # files a bundle read outside its folder -> SHA-256
    url: str  # of the entry, for messages


def _cache(ctx: RunContext) -> CacheSettings:
    assert ctx.cache is not None
    return ctx.cache


def clients(ctx: RunContext) -> Clients:
    """The cache's clients: lambda_tasks' target, and an S3 client that gives up
    sooner than the deploy's (a cache is worth a few seconds, not minutes)."""
    cache = _cache(ctx)

    def make() -> Clients:
        from botocore.config import Config

        base = ctx.clients("build cache", cache.target)
        config = Config(region_name=base.region, connect_timeout=CONNECT_TIMEOUT,
                        read_timeout=60, user_agent_extra=USER_AGENT, max_pool_connections=16,
                        retries={"mode": "standard", "total_max_attempts": ATTEMPTS})
        kwargs: dict[str, Any] = {"config": config, "region_name": base.region}
        if cache.target.endpoint:
            kwargs["endpoint_url"] = cache.target.endpoint
        return dataclasses.replace(base, s3=base.session.create_client("s3", **kwargs))

    return ctx.once(("build cache clients", cache.target), make, wait=False)


# -- giving up ---------------------------------------------------------------------------


def _down_file(ctx: RunContext) -> Path:
    return BuildDir(ctx.build_dir).build_cache_down


def down(ctx: RunContext, op: str) -> bool:
    """Whether the cache was given up for ``op`` ("read" or "write") in this run, in
    this process or another one (doit -P process)."""
    with ctx.caches.lock:
        said = ctx.caches.made.get(("build cache down",))
    if said is None:
        record = read_json(_down_file(ctx))
        if not isinstance(record, dict) or record.get("run") != ctx.run_id:
            return False
        said = record.get("ops") or []
    return op in said


def give_up(ctx: RunContext, why: str, ops: tuple[str, ...] = ("read", "write")) -> None:
    """Stop using the cache (for ``ops``) for the rest of the run, with one warning
    across processes."""
    with ctx.caches.lock:  # threads of one process share the record's temporary file
        ctx.caches.made[("build cache down",)] = list(ops)
        write_json(_down_file(ctx), {"run": ctx.run_id, "ops": list(ops), "why": why})
    if records.first_to_report(ctx, f"build cache down: {' '.join(ops)}"):
        what = "used" if "read" in ops else "written to"
        log.warning("build cache: %s; it is not %s for the rest of this run (the packages are"
                    " built here)", why, what)


def _status(exc: Any) -> tuple[Any, str]:
    response = getattr(exc, "response", None) or {}
    return (response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            str(response.get("Error", {}).get("Code", "")))


def _missing(exc: Any) -> bool:
    status, code = _status(exc)
    return code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket")


def _problem(exc: BaseException, cache: CacheSettings, what: str) -> str:
    status, code = _status(exc)
    if code == "NoSuchBucket":
        return f"bucket {cache.bucket!r} does not exist (cache_bucket=)"
    if status == 403 or code in ("AccessDenied", "Forbidden", "403"):
        verbs = "s3:GetObject and s3:ListBucket" if what == "read" else "s3:PutObject"
        return (f"access denied to s3://{cache.bucket}/{cache.prefix} ({code or status}); the"
                f" credentials need {verbs} there")
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot {what} s3://{cache.bucket}/{cache.prefix} ({text})"


# -- reading -------------------------------------------------------------------------------


def read_entry(item: Function | Layer, ctx: RunContext, key: str) -> Found | None:
    """The entry for ``key``, or None: a miss, an entry not to be trusted (a warning),
    or a cache that cannot be read (given up)."""
    from botocore.exceptions import BotoCoreError, ClientError

    cache = _cache(ctx)
    try:
        answer = clients(ctx).s3.get_object(Bucket=cache.bucket, Key=cache.entry_key(key))
        body = answer["Body"].read()
    except ClientError as exc:
        if not _missing(exc):
            give_up(ctx, _problem(exc, cache, "read"))
        return None
    except (BotoCoreError, DodoLambdaError) as exc:
        give_up(ctx, _problem(exc, cache, "read"))
        return None
    return _parse(body, item, cache, key)


def _parse(body: bytes, item: Function | Layer, cache: CacheSettings, key: str) -> Found | None:
    """The entry, when it is one for these inputs and well formed; else a warning."""
    url = cache.url(cache.entry_key(key))
    why = None
    try:
        entry = json.loads(body)
    except ValueError:
        entry, why = None, "it is not JSON"
    if why is None:
        m = entry.get("manifest") if isinstance(entry, dict) else None
        extras = entry.get("extras") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            why = "it is not an entry of this dodo_lambda's format"
        elif entry.get("key") != key or (entry.get("kind"), entry.get("name")) != (
                item.kind, item.build_name):
            why = f"it describes other inputs ({entry.get('kind')} {entry.get('name')!r})"
        elif not isinstance(m, dict) or not _manifest_ok(m):
            why = "its manifest is incomplete"
        elif entry.get("zip") != cache.zip_key(m["sha256"]):
            why = "its zip key does not match the manifest's SHA-256"
        elif not isinstance(extras, dict) or not all(
                isinstance(p, str) and isinstance(s, str) for p, s in extras.items()):
            why = "its list of extra inputs is malformed"
        else:
            return Found(key, m, entry["zip"], dict(extras), url)
    log.warning("%s: build cache entry %s is not used: %s; building here", label(item), url, why)
    return None


def _manifest_ok(m: dict[str, Any]) -> bool:
    sha = m.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(ch not in "0123456789abcdef"
                                                          for ch in sha):
        return False
    ints = all(isinstance(m.get(k), int) for k in ("zip_size", "unzipped_size", "files"))
    return ints and m.get("code_sha256") == s3.b64_sha256(sha) and isinstance(
        m.get("content_digest"), str)


def download(item: Function | Layer, ctx: RunContext, found: Found, dest: Path) -> bool:
    """Write the entry's zip to ``dest``; True when its SHA-256 and size are the
    entry's (else a warning, or the cache given up, and False)."""
    from botocore.exceptions import BotoCoreError, ClientError

    cache, who, m = _cache(ctx), label(item), found.manifest
    url = cache.url(found.zip_key)
    h, size = hashlib.sha256(), 0
    try:
        body = clients(ctx).s3.get_object(Bucket=cache.bucket, Key=found.zip_key)["Body"]
        with open(dest, "wb") as f:
            for chunk in body.iter_chunks(1 << 20):
                h.update(chunk)
                f.write(chunk)
                size += len(chunk)
    except ClientError as exc:
        if _missing(exc):
            log.warning("%s: build cache entry %s names %s, which is missing (a partial"
                        " entry); building here", who, found.url, url)
        else:
            give_up(ctx, _problem(exc, cache, "read"))
        return False
    except (BotoCoreError, DodoLambdaError) as exc:
        give_up(ctx, _problem(exc, cache, "read"))
        return False
    if h.hexdigest() != m["sha256"] or size != m["zip_size"]:
        log.warning("%s: build cache entry %s is not used: %s has SHA-256 %s (%s bytes), the"
                    " entry says %s (%s bytes); building here", who, found.url, url,
                    h.hexdigest(), f"{size:,}", m["sha256"], f"{m['zip_size']:,}")
        return False
    return True


# -- writing -------------------------------------------------------------------------------


def put(item: Function | Layer, ctx: RunContext, key: str, zip_path: Path, sha256_hex: str,
        manifest: dict[str, Any], extras: dict[str, str]) -> bool:
    """Put the zip (nothing sent when those bytes are there), then its entry; True when
    both are stored (else the cache is given up for writing)."""
    from botocore.exceptions import BotoCoreError, ClientError

    cache, who = _cache(ctx), label(item)
    zip_key = cache.zip_key(sha256_hex)
    entry = {"format": FORMAT, "key": key, "kind": item.kind, "name": item.build_name,
             "zip": zip_key, "manifest": manifest, "extras": extras,
             "made": {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "by": "dodo_lambda"}}
    data = json.dumps(entry, indent=1, sort_keys=True).encode()
    try:
        c = clients(ctx)
        s3.upload_zip(c, who=who, bucket=cache.bucket, key=zip_key, zip_path=zip_path,
                      sha256_hex=sha256_hex)
        with translating(who, bucket=cache.bucket, c=c):
            c.s3.put_object(
                Bucket=cache.bucket, Key=cache.entry_key(key), Body=data,
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                ServerSideEncryption="AES256", ContentType="application/json")
    except (DodoLambdaError, BotoCoreError, ClientError) as exc:
        cause = exc.__cause__ if isinstance(exc, DodoLambdaError) and exc.__cause__ else exc
        give_up(ctx, _problem(cause, cache, "write"), ("write",))
        return False
    return True
