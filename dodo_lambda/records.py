"""The records of what dodo_lambda sent where, kept beside the zip, and the uptodate
checks that read them without asking AWS.

Every record (JSON, ``format`` 2) says where it went and how this machine got there:

    target    {"account": "123456789012", "region": "eu-west-1", "endpoint": null}
              the deploy target: the account (from STS GetCallerIdentity, asked only
              by a task that runs), the region and the endpoint; never the credentials
    seen_as   local target keys (digests of the profile, region and endpoint settings,
              see ``deploy.target_key``) known to lead to that target
    run, at, seconds   the doit run that wrote it (the end-of-run summary), when, how long

An uptodate check compares the local key with ``seen_as``: rotating keys changes
nothing there, a new profile of the same account costs its first run one STS call
(the action then finds the same target and only adds the key), another account or
region reruns. The deploy record (``<name>.deployed.json``) adds

    code_sha256, settings_digest   what was deployed (the uptodate check's inputs)
    fields      one digest per deployed field (code, architecture, managed settings):
                the third fingerprint drift is measured against
    arn, version, action, steps    the function, the version the alias serves (or
                $LATEST), what the deploy did ("create", "update", "publish", "none")
    alias       {"name", "version", "previous", "rolled_back_from"}: where the alias
                points, where it pointed before the last deploy that moved it
                (``doit rollback`` goes there), and the version a rollback left

A deploy or layer record has two states. *Done*: written when a deploy finished.
*In progress*: written before the first write request of a deploy (``mark_started``),
the done record's fields kept and ``in_progress`` added

    in_progress {"run", "at", "code_sha256", "steps", "fields", "alias_from"}: what
                the unfinished deploy set out to do

so that a run killed (or failed) half-way is never taken as up to date: the next
deploy plans against AWS, whatever the local source says, and writes a done record
when it has finished. Upload records are written after the upload only: a
deploy checks the object's checksum itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from .aws import Clients
from .config import Function, Layer
from .context import RunContext
from .files import locked, read_json, write_json
from .layout import BuildDir

FORMAT = 2
MAX_SEEN = 8  # local keys remembered per record (profiles of the same account)


def verifying(ctx: RunContext) -> bool:
    """DODO_LAMBDA_VERIFY=1 or ``lambda_tasks(verify=True)``: every deploy task compares
    with AWS and repairs what differs, whatever the records say."""
    return ctx.verify or os.environ.get("DODO_LAMBDA_VERIFY", "") not in ("", "0")


def local_key(ctx: RunContext) -> str:
    from .deploy import target_key

    return target_key(ctx)


def identity(c: Clients) -> dict[str, Any]:
    """Where ``c`` deploys: account (one STS call per run), region, endpoint."""
    return {"account": c.account_id, "region": c.region, "endpoint": c.endpoint}


def read(path: Path) -> dict[str, Any] | None:
    record = read_json(path)
    if isinstance(record, dict) and record.get("format") == FORMAT:
        return record
    return None


def here(record: Mapping[str, Any] | None, ctx: RunContext) -> bool:
    """The record was written for the target this machine's settings lead to."""
    return record is not None and local_key(ctx) in (record.get("seen_as") or ())


def for_target(record: dict[str, Any] | None, target: Mapping[str, Any]
               ) -> dict[str, Any] | None:
    """The record when it describes ``target``, else None (a record of elsewhere)."""
    return record if record is not None and record.get("target") == dict(target) else None


def _write(path: Path, ctx: RunContext, target: Mapping[str, Any], body: Mapping[str, Any], *,
           stamp: bool = True) -> None:
    old = for_target(read(path), target)
    seen = [k for k in (old or {}).get("seen_as", []) if k != local_key(ctx)]
    meta = {"run": ctx.run_id, "at": _now()} if stamp else {}
    write_json(path, {**body, **meta, "format": FORMAT, "target": dict(target),
                      "seen_as": [local_key(ctx), *seen][:MAX_SEEN]})


def finished(record: Mapping[str, Any] | None) -> bool:
    """The record is a done one (not left by a deploy that did not finish)."""
    return record is not None and "in_progress" not in record


def mark_started(path: Path, ctx: RunContext, target: Mapping[str, Any],
                 intent: Mapping[str, Any]) -> None:
    """Before a deploy's first write request: the record says in progress (see the
    module's docstring); what it said of the last finished deploy stays."""
    old = for_target(read(path), target) or {}
    body = {k: v for k, v in old.items() if k not in ("format", "target", "seen_as")}
    body["in_progress"] = {"run": ctx.run_id, "at": _now(), **intent}
    _write(path, ctx, target, body, stamp=False)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def remember_key(path: Path, ctx: RunContext, target: Mapping[str, Any]) -> None:
    """Add this machine's local key to a record of ``target`` (nothing else changes)."""
    old = for_target(read(path), target)
    if old is not None and not here(old, ctx):
        _write(path, ctx, target, old, stamp=False)


# -- the upload record ---------------------------------------------------------------


def write_uploaded(ctx: RunContext, fn: Function, target: Mapping[str, Any], *, bucket: str,
                   key: str, sha256: str, sent: bool) -> None:
    _write(ctx.layout(fn).uploaded, ctx, target, {
        "bucket": bucket, "key": key, "prefix": fn.bucket_prefix, "sha256": sha256,
        "sent": sent})


def upload_is_recorded(fn: Function, ctx: RunContext) -> bool:
    """uptodate for upload: the record says this zip went to this bucket and prefix."""
    if verifying(ctx):
        return False
    record = read(ctx.layout(fn).uploaded)
    return here(record, ctx) and record is not None and (record.get("bucket"), record.get(
        "prefix")) == (fn.bucket, fn.bucket_prefix)


# -- the deploy record ---------------------------------------------------------------


def write_deployed(ctx: RunContext, fn: Function, target: Mapping[str, Any], *,
                   body: dict[str, Any]) -> None:
    from .desired import settings_digest

    _write(ctx.layout(fn).deployed, ctx, target, {
        "settings_digest": settings_digest(fn, ctx), **body})


def deploy_is_recorded(fn: Function, ctx: RunContext) -> bool:
    """uptodate for deploy: the record says this code and these settings went to the
    target this machine's settings lead to. Local only: no AWS request."""
    if verifying(ctx):
        return False
    record = read(ctx.layout(fn).deployed)
    m = read_json(ctx.layout(fn).manifest)
    return here(record, ctx) and isinstance(m, dict) and \
        same_deploy(record, fn, ctx, m.get("code_sha256"))


def same_deploy(record: Mapping[str, Any] | None, fn: Function, ctx: RunContext,
                code_sha256: str | None) -> bool:
    """The record (of this target) says exactly this was deployed: nothing to ask AWS
    unless verifying."""
    from .desired import settings_digest

    return (finished(record) and record is not None and record.get("code_sha256") == code_sha256
            and record.get("settings_digest") == settings_digest(fn, ctx))


# -- the layer record ----------------------------------------------------------------


def write_published(ctx: RunContext, layer: Layer, target: Mapping[str, Any], *,
                    body: dict[str, Any]) -> None:
    _write(ctx.layout(layer).published, ctx, target, body)


def layer_is_recorded(layer: Layer, ctx: RunContext) -> bool:
    """uptodate for layer: the record says this zip was published to this target."""
    if verifying(ctx):
        return False
    record = read(ctx.layout(layer).published)
    m = read_json(ctx.layout(layer).manifest)
    return here(record, ctx) and isinstance(m, dict) and same_publish(record, m.get("code_sha256"))


def same_publish(record: Mapping[str, Any] | None, code_sha256: str | None
                 ) -> TypeGuard[Mapping[str, Any]]:
    """The record (of this target) says a version of exactly this zip was published."""
    return finished(record) and record is not None and record.get("code_sha256") == code_sha256


# -- this run's results, for the summary ---------------------------------------------


@dataclass(frozen=True)
class Done:
    """What one item's deploy did in this run (read back from its record)."""

    item: Function | Layer
    action: str  # "create", "update", "publish" or "none"
    steps: Sequence[str]
    version: str | None
    code_sha256: str
    seconds: float
    alias: Mapping[str, Any] | None


def first_to_report(ctx: RunContext, what: str) -> bool:
    """True the first time ``what`` is asked for in this run, across processes (under
    ``doit -P process`` each worker runs the teardowns of its own tasks)."""
    path = BuildDir(ctx.build_dir).run_summary
    with locked(path.with_suffix(".lock")):
        said = read_json(path)
        if not isinstance(said, dict) or said.get("run") != ctx.run_id:
            said = {"run": ctx.run_id, "said": []}
        if what in said["said"]:
            return False
        said["said"].append(what)
        write_json(path, said)
    return True


def done_in_this_run(item: Function | Layer, ctx: RunContext) -> Done | None:
    layout = ctx.layout(item)
    record = read(layout.published if isinstance(item, Layer) else layout.deployed)
    if not finished(record) or record is None or record.get("run") != ctx.run_id:
        return None
    return Done(item, record.get("action", "none"), record.get("steps") or [],
                None if record.get("version") is None else str(record["version"]),
                record.get("code_sha256", ""), float(record.get("seconds") or 0.0),
                record.get("alias") if record.get("alias_moved") else None)
