"""Act second: carry out exactly the steps of a plan, nothing else, and record them.

Each kind of step has one small handler in ``HANDLERS``; the handlers hand each
other what they learn (the function's configuration, the version just published)
through ``Progress``, as Chalice's executor does through its variables. The deploy
entry points (``deploy_function``, ``publish_layer``, ``upload``, ``rollback``) hold
the item's lock, ask STS which account they are in (once per run, only here), plan,
execute and write the record: "in progress" before the first write request, "done"
when every step has (see records).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import deploy, desired, iam, lambdas, records, releases, s3
from .aws import Clients
from .config import Function, Layer, label
from .context import RunContext
from .errors import DodoLambdaError, NextStep
from .files import locked
from .planner import NEW, Plan, Step, plan_function, plan_layer

log = logging.getLogger("dodo_lambda")


@dataclass
class Progress:
    """What the steps of one plan hand each other."""

    c: Clients
    plan: Plan
    who: str
    zip: Path
    config: dict[str, Any] | None  # the function as last seen
    version: dict[str, Any] | None = None  # published by publish_version / publish_layer_version
    alias: tuple[str, str | None, str] | None = None  # (name, from, to) when it moved
    role: str | None = None  # the ARN of the execution role create_role made
    done: list[Step] = field(default_factory=list)
    ctx: RunContext | None = None  # for steps that act on another item (republish_layer)

    @property
    def name(self) -> str:
        return self.plan.item.name


@dataclass(frozen=True)
class Outcome:
    """What a deploy did: the plan, the steps it executed (always the plan's own),
    and where the item ended."""

    plan: Plan
    executed: tuple[Step, ...]
    arn: str | None
    version: str | None  # function: the published version or "$LATEST"; layer: its version
    code_sha256: str
    alias: tuple[str, str | None, str] | None
    seconds: float

    @property
    def action(self) -> str:
        return self.plan.action


def _code(p: Progress) -> dict[str, Any]:
    """zip_path= or s3= for the code of the plan's item."""
    if p.plan.s3 is not None:
        return {"s3": p.plan.s3}
    return {"zip_path": p.zip}


def _create_role(p: Progress, step: Step) -> None:
    p.role = iam.create_role(p.c, step.args["name"], who=p.who,
                             policies=list(step.args["policies"]), function=p.name)


def _create(p: Progress, step: Step) -> None:
    fn = p.plan.item
    assert isinstance(fn, Function)
    role = step.args.get("role") or p.role or fn.role or ""  # p.role: made by create_role
    p.config = lambdas.create_function(
        p.c, fn.name, who=p.who, role=role, runtime=fn.runtime, handler=fn.handler,
        architecture=fn.architecture, settings=fn.settings(), layers=p.plan.wanted.get("Layers"),
        **_code(p))
    _make_it_ours(p, fn)


def _make_it_ours(p: Progress, fn: Function) -> None:
    """CreateFunction found the function there (made meanwhile, elsewhere): continue
    from what is there, updating what differs from the plan."""
    assert p.config is not None
    local = desired.fields(p.plan.manifest["code_sha256"], fn.architecture, p.plan.wanted)
    there = desired.deployed_fields(p.config, local)
    if there == local:
        return
    log.info("%s: it was there already, not as planned: updating it", p.who)
    if desired.code_differences(local, there):
        p.config = lambdas.update_code(p.c, fn.name, who=p.who, architecture=fn.architecture,
                                       config=p.config, **_code(p))
    changes = desired.settings_changes(local, there)
    if changes:
        p.config = lambdas.update_configuration(p.c, fn.name, who=p.who, changes=changes,
                                                config=p.config)


def _update_code(p: Progress, step: Step) -> None:
    fn = p.plan.item
    assert isinstance(fn, Function)
    p.config = lambdas.update_code(p.c, fn.name, who=p.who, architecture=fn.architecture,
                                   config=p.config, **_code(p))


def _update_settings(p: Progress, step: Step) -> None:
    changes = dict(step.args["changes"])
    if "Layers" in changes:  # a republish_layer step before may have moved them
        changes["Layers"] = p.plan.wanted["Layers"]
    p.config = lambdas.update_configuration(p.c, p.name, who=p.who, changes=changes,
                                            config=p.config)


def _publish_version(p: Progress, step: Step) -> None:
    state = p.plan.state
    known = [str(v["Version"]) for v in getattr(state, "versions", None) or []]
    p.version = releases.publish_version(p.c, p.name, who=p.who, known=known,
                                        code_sha256=p.plan.manifest["code_sha256"])


def _point_alias(p: Progress, step: Step) -> None:
    to = step.args["version"]
    if to == NEW:
        assert p.version is not None, "point_alias to a new version needs publish_version first"
        to = str(p.version["Version"])
    releases.point_alias(p.c, p.name, step.args["alias"], to, who=p.who,
                        exists=step.args["exists"])
    p.alias = (step.args["alias"], step.args["previous"], to)


def _delete_version(p: Progress, step: Step) -> None:
    releases.delete_version(p.c, p.name, step.args["version"], who=p.who)


def _upload(p: Progress, step: Step) -> None:
    assert p.plan.s3 is not None and p.ctx is not None
    _send_zip(p.c, p.plan.item, p.ctx, p.plan.s3, p.plan.manifest["sha256"])


def _send_zip(c: Clients, item: Function | Layer, ctx: RunContext, where: tuple[str, str],
              sha256_hex: str) -> bool:
    """The zip to its S3 key, one upload of the item at a time; True when sent."""
    layout = ctx.layout(item)
    who = label(item)
    with locked(layout.upload_lock, on_wait=lambda: log.info(
            "%s: waiting for another upload of %s", who, layout.zip.name)):
        return s3.upload_zip(c, who=who, bucket=where[0], key=where[1], zip_path=layout.zip,
                             sha256_hex=sha256_hex, journal=layout.upload_journal)


def _publish_layer_version(p: Progress, step: Step) -> None:
    layer = p.plan.item
    assert isinstance(layer, Layer)
    latest = getattr(p.plan.state, "latest", None)
    p.version = releases.publish_layer(
        p.c, layer.name, who=p.who, runtimes=layer.runtimes, architectures=layer.architectures,
        description=layer.description, code_sha256=p.plan.manifest["code_sha256"],
        newest_before=int(latest["Version"]) if latest else None, **_code(p))


def _republish_layer(p: Progress, step: Step) -> None:
    """A layer version the function needs is gone: publish the layer (its own lock,
    plan and record), then send the version that leaves."""
    assert p.ctx is not None and isinstance(p.plan.item, Function)
    publish_layer(step.args["layer"], p.ctx, check_aws=True)
    p.plan.wanted["Layers"] = desired.layer_arns(p.plan.item, p.ctx)


def _delete_layer_version(p: Progress, step: Step) -> None:
    releases.delete_layer_version(p.c, p.name, step.args["version"], who=p.who)


HANDLERS: dict[str, Callable[[Progress, Step], None]] = {
    "create_role": _create_role,
    "create": _create, "update_code": _update_code, "update_settings": _update_settings,
    "publish_version": _publish_version, "point_alias": _point_alias,
    "delete_version": _delete_version, "upload": _upload,
    "publish_layer_version": _publish_layer_version, "delete_layer_version": _delete_layer_version,
    "republish_layer": _republish_layer,
}


def execute(plan: Plan, c: Clients, ctx: RunContext) -> Progress:
    """Run the plan's steps in order, each through its handler; nothing else is sent."""
    config = getattr(plan.state, "config", None)
    p = Progress(c, plan, label(plan.item), ctx.layout(plan.item).zip,
                 dict(config) if config else None, ctx=ctx)
    for step in plan.steps:
        log.info("%s: %s: %s", p.who, step.kind.replace("_", " "), step.reason)
        HANDLERS[step.kind](p, step)
        p.done.append(step)
    return p


# -- entry points --------------------------------------------------------------------


def _expected(ctx: RunContext) -> int:
    """How many functions this run's deploy tasks read (for the listing decision)."""
    return ctx.once(("functions to read",), lambda: sum(
        1 for i in ctx.items if isinstance(i, Function) and not records.deploy_is_recorded(i, ctx)))


def deploy_function(fn: Function, ctx: RunContext) -> Outcome:
    started = time.monotonic()
    who = label(fn)
    m = desired.manifest(fn, ctx)
    desired.check_total_size(fn, ctx)  # refusals that need no AWS come before any request
    desired.s3_location(fn, m, ctx)
    desired.settings(fn, ctx)  # every layer published
    layout = ctx.layout(fn)
    with locked(layout.deploy_lock):
        c = deploy.clients(ctx, who)
        target = records.identity(c)
        record = records.for_target(records.read(layout.deployed), target)
        if not records.verifying(ctx) and records.same_deploy(record, fn, ctx, m["code_sha256"]):
            assert record is not None  # another profile of the same account: nothing to do
            records.remember_key(layout.deployed, ctx, target)
            return Outcome(Plan(fn, known=True), (), record.get("arn"), record.get("version"),
                           m["code_sha256"], None, time.monotonic() - started)
        plan = plan_function(fn, ctx, c, record=record, expected=_expected(ctx))
        if plan.refused is not None:
            raise plan.refused
        if plan.steps:  # intent before action: a run stopped from here on is not "done"
            records.mark_started(layout.deployed, ctx, target, _intent(plan))
        p = execute(plan, c, ctx)
        if p.done:
            lambdas.invalidate(c, fn.name)
        config = p.config or {}
        if config.get("CodeSha256") not in (None, m["code_sha256"]):
            raise DodoLambdaError(f"{who}: Lambda reports CodeSha256 {config.get('CodeSha256')}"
                                  f" after the update, not {m['code_sha256']}; run again")
        version = str(p.version["Version"]) if p.version else plan.version or "$LATEST"
        outcome = Outcome(plan, tuple(p.done), config.get("FunctionArn"), version,
                          m["code_sha256"], p.alias, time.monotonic() - started)
        records.write_deployed(ctx, fn, target, body=_deployed_body(outcome, record))
    return outcome


def _intent(plan: Plan) -> dict[str, Any]:
    """What an in-progress record says the deploy set out to do."""
    fn = plan.item
    local = desired.fields(plan.manifest["code_sha256"], fn.architecture, plan.wanted) \
        if isinstance(fn, Function) else {}
    return {"code_sha256": plan.manifest["code_sha256"], "steps": [s.kind for s in plan.steps],
            "fields": desired.fingerprint(local), "alias_from": plan.alias_from}


def _deployed_body(o: Outcome, record: dict[str, Any] | None) -> dict[str, Any]:
    fn = o.plan.item
    assert isinstance(fn, Function)
    known = dict((record or {}).get("alias") or {})
    # where the alias was before a deploy that did not finish (it may have moved it)
    start = ((record or {}).get("in_progress") or {}).get("alias_from")
    alias = None
    moved = o.alias is not None
    if o.alias is not None:
        back = start if start not in (None, o.alias[2]) else o.alias[1]
        alias = {"name": o.alias[0], "version": o.alias[2], "previous": back}
    elif fn.alias and start is not None and o.plan.alias_from not in (None, start):
        alias = {"name": fn.alias, "version": o.plan.alias_from, "previous": start}
        moved = True  # by the deploy this one finished
    elif fn.alias and known.get("name") == fn.alias and known.get("version") == o.plan.alias_from:
        alias = known  # unmoved: the way back stays recorded
    elif fn.alias and o.plan.alias_from is not None:
        alias = {"name": fn.alias, "version": o.plan.alias_from, "previous": None}
    local = desired.fields(o.code_sha256, fn.architecture, o.plan.wanted)
    return {"arn": o.arn, "version": o.version, "code_sha256": o.code_sha256,
            "fields": desired.fingerprint(local), "action": o.action,
            "steps": [s.kind for s in o.executed], "alias": alias,
            "alias_moved": moved, "seconds": round(o.seconds, 3)}


def publish_layer(layer: Layer, ctx: RunContext, users: tuple[Function, ...] = (),
                  check_aws: bool = False) -> Outcome:
    """Publish a layer version unless the newest one has the same CodeSha256.
    ``check_aws``: compare with AWS even when the record says it is published."""
    started = time.monotonic()
    who = label(layer)
    for fn in users:
        desired.check_total_size(fn, ctx)
    m = desired.manifest(layer, ctx)
    layout = ctx.layout(layer)
    with locked(layout.deploy_lock):
        c = deploy.clients(ctx, who)
        target = records.identity(c)
        record = records.for_target(records.read(layout.published), target)
        if not (records.verifying(ctx) or check_aws) and records.same_publish(record,
                                                                             m["code_sha256"]):
            records.remember_key(layout.published, ctx, target)
            return Outcome(Plan(layer, known=True), (), record.get("arn"),
                           str(record.get("version")), m["code_sha256"], None,
                           time.monotonic() - started)
        plan = plan_layer(layer, ctx, c, record=record)
        if plan.refused is not None:
            raise plan.refused
        if plan.steps:
            records.mark_started(layout.published, ctx, target, _intent(plan))
        p = execute(plan, c, ctx)
        state = plan.state
        version = p.version or getattr(state, "latest", None)
        assert version is not None
        outcome = Outcome(plan, tuple(p.done), version["LayerVersionArn"], str(version["Version"]),
                          m["code_sha256"], None, time.monotonic() - started)
        records.write_published(ctx, layer, target, body={
            "arn": outcome.arn, "version": int(version["Version"]), "code_sha256": m["code_sha256"],
            "action": outcome.action, "steps": [s.kind for s in outcome.executed],
            "seconds": round(outcome.seconds, 3)})
    return outcome


@dataclass(frozen=True)
class UploadResult:
    bucket: str
    key: str
    sent: bool  # False: the same bytes were already there


def upload(fn: Function, ctx: RunContext) -> UploadResult | None:
    """Put the zip at its content-addressed S3 key (nothing sent when it is there)."""
    m = desired.manifest(fn, ctx)
    loc = desired.s3_location(fn, m, ctx)
    if loc is None:
        return None
    c = deploy.clients(ctx, label(fn))
    sent = _send_zip(c, fn, ctx, loc, m["sha256"])
    records.write_uploaded(ctx, fn, records.identity(c), bucket=loc[0], key=loc[1],
                           sha256=m["sha256"], sent=sent)
    return UploadResult(loc[0], loc[1], sent)


@dataclass(frozen=True)
class Rollback:
    alias: str
    came_from: str
    to: str


def rollback(fn: Function, ctx: RunContext) -> Rollback:
    """Point the alias back at the version it served before the last deploy that moved
    it: one UpdateAlias request, nothing built or uploaded."""
    who = label(fn)
    if not fn.alias:
        raise DodoLambdaError(f"{who}: has no alias to roll back; rollback moves an alias: set"
                              " alias= (with publish=True) and deploy")
    layout = ctx.layout(fn)
    with locked(layout.deploy_lock):
        record = records.read(layout.deployed)
        known = dict((record or {}).get("alias") or {})
        if record is None or known.get("name") != fn.alias:
            raise DodoLambdaError(f"{who}: no deploy of alias {fn.alias} is recorded in"
                                  f" {layout.deployed}; rollback goes back from a deploy made here",
                                  next_step=NextStep("deploy", fn.name))
        if not records.finished(record):
            raise DodoLambdaError(f"{who}: the deploy begun at"
                                  f" {record['in_progress'].get('at', '?')} did not finish; deploy"
                                  " first (it compares with AWS and finishes it), then roll back",
                                  next_step=NextStep("deploy", fn.name))
        if not known.get("previous"):
            earlier = f" (it already went back from version {known['rolled_back_from']})" \
                if known.get("rolled_back_from") else ""
            raise DodoLambdaError(f"{who}: no version before {known.get('version')} is recorded"
                                  f" for alias {fn.alias}{earlier}; nothing to roll back to")
        c = deploy.clients(ctx, who)
        target = record["target"] if records.here(record, ctx) else records.identity(c)
        if record.get("target") != target:
            raise DodoLambdaError(f"{who}: the deploy record is for {record.get('target')}, not"
                                  f" {target}; switch back to that account and region to roll back")
        releases.point_alias(c, fn.name, fn.alias, known["previous"], who=who, exists=True)
        lambdas.invalidate(c, fn.name)
        done = Rollback(fn.alias, known["version"], known["previous"])
        body = {k: v for k, v in record.items() if k not in ("format", "target", "seen_as")}
        body.update(alias={"name": fn.alias, "version": done.to, "previous": None,
                           "rolled_back_from": done.came_from}, version=done.to, alias_moved=True,
                    action="rollback", steps=["point_alias"])
        records.write_deployed(ctx, fn, target, body=body)
    return done

