"""Decide first: what deploying an item would do, and why, as data.

The planner reads the remote state once per item (``remote``), compares it with
what is wanted (``desired``) and with what dodo_lambda last deployed there
(``records``), and returns a ``Plan``: a list of ``Step``s, each with its reason.
``deploy`` hands the plan to the executor, which runs exactly those steps; ``plan``
prints it. Nothing to do is an empty list.

A step is plain data: ``kind`` names the executor's handler, ``reason`` is what
``plan`` prints, ``args`` carries what the handler needs beyond the item itself
(it may hold environment values: never printed). A new kind of step is a new
handler in executor.HANDLERS and a place here that plans it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from . import desired, iam, records, releases, remote, rules, s3
from .aws import Clients
from .config import Function, Layer, label
from .context import RunContext
from .desired import ARCH, CODE
from .errors import DodoLambdaError, Refused

NEW = "new"  # point_alias's version when it is the one publish_version makes
log = logging.getLogger("dodo_lambda")


@dataclass(frozen=True)
class Step:
    kind: str  # create_role, create, update_code, update_settings, publish_version,
    #            point_alias, delete_version, upload, publish_layer_version,
    #            delete_layer_version, republish_layer
    reason: str
    args: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, str]:
        return {"step": self.kind, "reason": self.reason}


@dataclass
class Plan:
    """What deploying one item would do. ``changed``/``drifted`` name the fields that
    differ locally / in AWS from the record of the last deploy (``known`` is False
    when there is no such record for this target: drift cannot be told)."""

    item: Function | Layer
    steps: list[Step] = field(default_factory=list)
    refused: Refused | None = None
    known: bool = False
    changed: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # what the executor needs: the package, where the code goes, what was read
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)
    s3: tuple[str, str] | None = None
    wanted: dict[str, Any] = field(default_factory=dict, repr=False)
    state: remote.FunctionState | remote.LayerState | None = field(default=None, repr=False)
    version: str | None = None  # the version the alias ends at (NEW: published by this plan)
    alias_from: str | None = None  # where the alias points now
    role: str | None = None  # a function to create: the ARN of the existing role it runs as

    @property
    def action(self) -> str:
        """none, create, update, publish (or refused)."""
        kinds = {s.kind for s in self.steps}
        if self.refused is not None:
            return "refused"
        if not kinds:
            return "none"
        if "create" in kinds:
            return "create"
        if kinds & {"update_code", "update_settings"} or kinds <= {"delete_version",
                                                                    "delete_layer_version"}:
            return "update"
        return "publish"

    @property
    def status(self) -> str:
        """unchanged, changed locally, drifted, or changed locally and drifted (new: not
        in AWS; differs from AWS: no record of a deploy to tell which side changed)."""
        if isinstance(self.state, remote.FunctionState) and self.state.config is None:
            return "new"
        if not self.known:
            return "differs from AWS" if self.steps else "unchanged"
        both = [x for x, v in (("changed locally", self.changed), ("drifted", self.drifted)) if v]
        return " and ".join(both) or "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.item.name, "kind": self.item.kind, "action": self.action,
            "steps": [s.to_json() for s in self.steps], "drift": bool(self.drifted),
            "status": self.status, "changed": self.changed, "drifted": self.drifted,
            "notes": self.notes, "refused": None if self.refused is None else str(self.refused),
        }


def describe(plan: Plan) -> list[str]:
    """The plan as lines a person reads: a head line, then one line per step."""
    who = label(plan.item)
    if plan.refused is not None:
        reason = str(plan.refused).removeprefix(f"{who}: ")
        return [f"{who}: deploy would be refused: {reason}"]
    detail = "; ".join(f"{name}: {', '.join(v)}" for name, v in (
        ("changed locally", plan.changed), ("drifted", plan.drifted)) if v) or plan.status
    lines = [f"{who}: {plan.action if plan.steps else 'nothing to do'} ({detail})"]
    lines += [f"  {s.kind.replace('_', ' ')}: {s.reason}" for s in plan.steps]
    lines += [f"  note: {n}" for n in plan.notes]
    return lines


# -- functions -----------------------------------------------------------------------


def decide(fn: Function, config: Mapping[str, Any] | None, today: date | None = None) -> str:
    """"create" or "update": the one place deploy chooses between them, before any
    step and any write request. Lambda's rules belong here: raise ``Refused`` and
    ``plan`` reports "deploy would be refused: ..." (exiting nonzero) while deploy
    stops before sending anything."""
    verdict = rules.runtime_verdict(fn.runtime, today,
                                    allow_deprecated=fn.allow_deprecated_runtime is True)
    if verdict.error:
        raise Refused(f"{label(fn)}: {verdict.error}")
    if config is None and verdict.create_error:
        raise Refused(f"{label(fn)}: {verdict.create_error}")
    if verdict.warning:
        log.warning("%s: %s", label(fn), verdict.warning)
    return "create" if config is None else "update"


def plan_function(fn: Function, ctx: RunContext, c: Clients, *, record: Mapping[str, Any] | None,
                  expected: int = 1, pending: Mapping[str, str] | None = None) -> Plan:
    """``record``: the deploy record of this target (None: no baseline for drift);
    ``expected``: how many functions this run reads; ``pending``: layer name -> the
    ARN a layer plan of the same run will leave (planning only)."""
    m = desired.manifest(fn, ctx)
    plan = Plan(fn, manifest=m)
    try:
        desired.check_total_size(fn, ctx)
        plan.s3 = desired.s3_location(fn, m, ctx)
        plan.wanted = desired.settings(fn, ctx, pending)
        state = plan.state = remote.read_function(c, fn, ctx, expected=expected)
        how = decide(fn, state.config, ctx.today)
        role = _plan_role(plan, fn, ctx, c) if how == "create" else None
    except Refused as exc:
        plan.refused = exc
        return plan
    local = desired.fields(m["code_sha256"], fn.architecture, plan.wanted)
    if how == "create":
        plan.steps.append(Step("create", f"does not exist in {c.region}; runs as role {role}",
                               {"role": fn.role or plan.role}))
    else:
        assert state.config is not None
        _updates(plan, local, desired.deployed_fields(state.config, local), record, ctx.today)
    if plan.s3 and any(s.kind in ("create", "update_code") for s in plan.steps):
        try:  # the code goes through a bucket: one that does not exist is a refusal now
            _object_there(plan, c)
        except DodoLambdaError as exc:
            plan.refused = Refused(str(exc))
            plan.steps.clear()
            return plan
    if pending is None:
        _layers_there(plan, fn, c)
    if record is not None and not records.finished(record):
        began = (record.get("in_progress") or {}).get("at", "earlier")
        plan.notes.append(f"the deploy begun at {began} did not finish: AWS is compared with the"
                          " local files whatever the last finished deploy recorded")
    if fn.publish:
        _release(plan, fn, local, changes=bool(plan.steps), record=record)
    return plan


def _plan_role(plan: Plan, fn: Function, ctx: RunContext, c: Clients) -> str:
    """The role a function to create runs as: ``role=`` as given, else the one
    dodo_lambda makes (a create_role step when IAM has no role of that name yet; one
    that exists is used as it is). Its name, for the create step's reason."""
    if fn.role:
        return fn.role
    name = iam.role_name(fn.name, ctx.role_name)
    found = iam.read_role(c, name, who=label(fn))
    if found is not None:
        plan.role = found["Arn"]
        ours = iam.TAG in (found.get("Tags") or [])
        plan.notes.append(f"role {name} exists{'' if ours else ' (not made by dodo_lambda)'}:"
                          " used as it is")
        return name
    policies = iam.policy_arns(_role_policies(fn, ctx), iam.partition(c))
    plan.steps.append(Step("create_role", f"{name}: trusted by lambda.amazonaws.com, with "
                           f"{', '.join(iam.short(p) for p in policies)}; tagged created-by:"
                           " dodo_lambda", {"name": name, "policies": policies}))
    return name


def _role_policies(fn: Function, ctx: RunContext) -> list[str]:
    """A function's own role_policies, or, for the project's shared role, those of every
    function of the project that runs as it."""
    if not ctx.role_name:
        return list(fn.role_policies)
    return [p for f in ctx.items if isinstance(f, Function) and not f.role
            for p in f.role_policies] or list(fn.role_policies)


def _first(plan: Plan, kinds: Any) -> int:
    """Where the first step that sends what ``kinds`` matches is (the end when none)."""
    return next((i for i, s in enumerate(plan.steps) if kinds(s)), len(plan.steps))


def _object_there(plan: Plan, c: Clients) -> None:
    """The code goes through S3: when the object at its content-addressed key is
    missing or holds other bytes (compared by checksum), upload it first."""
    assert plan.s3 is not None
    m = plan.manifest
    state = s3.object_state(c, *plan.s3, sha256_hex=m["sha256"], size=m["zip_size"],
                            who=label(plan.item))
    if state == "same":
        return
    why = "is missing" if state == "missing" else \
        "holds other bytes than the zip (its checksum differs)"
    plan.steps.insert(_first(plan, lambda s: s.kind in ("create", "update_code")), Step(
        "upload", f"s3://{plan.s3[0]}/{plan.s3[1]} {why}: put the zip there first"))


def _layers_there(plan: Plan, fn: Function, c: Clients) -> None:
    """A layer version the plan sends (creating the function, or a new layer list) that
    is gone from AWS: publish that layer again first (Lambda refuses a missing one)."""
    def sends(s: Step) -> bool:
        return s.kind == "create" or s.kind == "update_settings" and "Layers" in s.args["changes"]

    at = _first(plan, sends)
    if at == len(plan.steps):
        return
    for layer, arn in zip(fn.layers, plan.wanted.get("Layers") or [], strict=False):
        if isinstance(layer, Layer) and not releases.layer_version_exists(c, arn, who=label(fn)):
            plan.steps.insert(at, Step("republish_layer", f"layer '{layer.name}': {arn} (its"
                                       " recorded version) is gone from AWS: publish the layer"
                                       " again", {"layer": layer}))
            at += 1


def _updates(plan: Plan, local: dict[str, Any], deployed: dict[str, Any],
             record: Mapping[str, Any] | None, today: date | None = None) -> None:
    if record is not None:
        plan.known = True
        rec = record.get("fields") or {}
        ours, theirs = desired.fingerprint(local), desired.fingerprint(deployed)
        # a deploy that did not finish may have set its fields: that is no drift
        meant = (record.get("in_progress") or {}).get("fields") or {}
        plan.changed = [_name(k) for k in local if ours[k] != rec.get(k)]
        plan.drifted = [_name(k) for k in local if k in rec and theirs[k] != rec[k]
                        and theirs[k] != meant.get(k)]

    def why(key: str) -> str:
        line = desired.change(key, deployed[key], local[key])
        if _name(key) in plan.drifted and _name(key) not in plan.changed:
            line += " (drift: changed in AWS since the last deploy)"
        return line

    changes = desired.settings_changes(local, deployed)
    if "Runtime" in changes and rules.update_blocked(deployed["Runtime"], today):
        # Lambda refuses any other update on a blocked runtime: move the runtime first
        plan.steps.append(Step("update_settings", why("Runtime") + " (first: Lambda refuses"
                               " other updates on the old runtime)",
                               {"changes": {"Runtime": changes.pop("Runtime")}}))
    code = desired.code_differences(local, deployed)
    if code:
        plan.steps.append(Step("update_code", "; ".join(why(k) for k in code)))
    if changes:
        plan.steps.append(Step("update_settings", "; ".join(why(k) for k in changes),
                               {"changes": changes}))


def _name(key: str) -> str:
    """How plan names a field: Lambda's name, but "code" and "architecture"."""
    return {CODE: "code", ARCH: "architecture"}.get(key, key)


def _release(plan: Plan, fn: Function, local: dict[str, Any], *, changes: bool,
             record: Mapping[str, Any] | None) -> None:
    """publish_version, point_alias and delete_version steps."""
    state = plan.state
    assert isinstance(state, remote.FunctionState)
    versions = state.versions or []
    same = [str(v["Version"]) for v in versions if desired.deployed_fields(v, local) == local]
    if changes or not same:
        why = "the code or settings change" if changes else \
            "no published version has this code and these settings"
        plan.steps.append(Step("publish_version", why))
    plan.version = NEW if changes or not same else same[-1]
    known = dict((record or {}).get("alias") or {})
    if fn.alias:
        alias = (state.aliases or {}).get(fn.alias)
        now = plan.alias_from = None if alias is None else str(alias["FunctionVersion"])
        if known.get("name") == fn.alias and known.get("version") not in (None, now) \
                and records.finished(record):
            plan.drifted.append("alias")
        if now != plan.version:
            _point(plan, fn.alias, now, exists=alias is not None, known=known)
    if fn.keep_versions:
        _prune(plan, fn.keep_versions, versions, state.aliases, known)


def _point(plan: Plan, alias: str, now: str | None, *, exists: bool,
           known: Mapping[str, Any]) -> None:
    to = plan.version
    if to != NEW and known.get("rolled_back_from") == to and known.get("version") == now:
        plan.notes.append(
            f"alias {alias} points at version {now}, local is version {to}: rolled back by"
            f" `doit rollback:{plan.item.name}`; it stays there until the code or settings change")
        plan.version = now
        return
    shown = "the new version" if to == NEW else f"version {to}"
    if not exists:
        reason = f"create alias {alias} → {shown}"
    else:
        reason = f"alias {alias}: version {now} → {shown}"
        if to != NEW:
            reason += f" (version {to} has the local code and settings)"
    plan.steps.append(Step("point_alias", reason, {"alias": alias, "version": to,
                                                   "previous": now, "exists": exists}))


def _prune(plan: Plan, keep: int, versions: list[dict[str, Any]],
           aliases: dict[str, dict[str, Any]] | None, known: Mapping[str, Any]) -> None:
    """Versions beyond the newest ``keep`` (the one being published counts), never one
    an alias points at, nor the one a rollback would go back to."""
    numbers = [str(v["Version"]) for v in versions]
    room = keep - 1 if plan.version == NEW else keep
    newest = set(numbers[-room:]) if room > 0 else set()
    # where a rollback would go after this deploy: the alias's version now when it moves
    moves = any(s.kind == "point_alias" for s in plan.steps)
    back = plan.alias_from if moves else known.get("previous")
    protected = remote.aliased(aliases) | {plan.version, plan.alias_from, back}
    for v in numbers:
        if v not in newest and v not in protected:
            plan.steps.append(Step("delete_version", f"version {v}: beyond the newest {keep}"
                                   f" (keep_versions={keep}); no alias points at it",
                                   {"version": v}))


# -- layers --------------------------------------------------------------------------


def plan_layer(layer: Layer, ctx: RunContext, c: Clients, *, record: Mapping[str, Any] | None
               ) -> Plan:
    m = desired.manifest(layer, ctx)
    plan = Plan(layer, manifest=m)
    for runtime in layer.runtimes:
        warning = rules.runtime_verdict(runtime, ctx.today, allow_deprecated=(
            layer.allow_deprecated_runtime is True)).warning
        if warning:
            log.warning("%s: runtimes=: %s", label(layer), warning)
    try:
        plan.s3 = desired.s3_location(layer, m, ctx)
    except Refused as exc:
        plan.refused = exc
        return plan
    state = plan.state = remote.read_layer(c, layer)
    local, latest = m["code_sha256"], state.latest_sha
    if record is not None:
        plan.known = True
        meant = (record.get("in_progress") or {}).get("code_sha256")
        plan.changed = ["code"] if record.get("code_sha256") != local else []
        plan.drifted = ["code"] if latest not in (record.get("code_sha256"), meant) else []
        if meant is not None:
            plan.notes.append("the publish begun at"
                              f" {record['in_progress'].get('at', 'earlier')} did not finish:"
                              " the newest version in AWS decides")
    if latest != local:
        if plan.s3:
            plan.steps.append(Step("upload", f"put the zip at s3://{plan.s3[0]}/{plan.s3[1]}"
                                   " (nothing is sent when it is there)"))
        why = "no version published yet" if state.latest is None else \
            f"content differs (local {local} vs version {state.latest['Version']}'s {latest})"
        plan.steps.append(Step("publish_layer_version", why))
    if layer.keep_layer_versions:
        _prune_layer(plan, layer.keep_layer_versions, c)
    return plan


def _prune_layer(plan: Plan, keep: int, c: Clients) -> None:
    """Versions beyond the newest ``keep`` that no function of the account uses (the
    project's functions still on the old version keep it until their deploy moves them)."""
    state = plan.state
    assert isinstance(state, remote.LayerState)
    room = keep - 1 if any(s.kind == "publish_layer_version" for s in plan.steps) else keep
    old = state.versions[max(room, 0):]
    if not old:
        return
    users = remote.layer_users(c, [v["LayerVersionArn"] for v in old])
    for v in sorted(old, key=lambda v: int(v["Version"])):
        if not users[v["LayerVersionArn"]]:
            plan.steps.append(Step(
                "delete_layer_version", f"version {v['Version']}: beyond the newest {keep}"
                f" (keep_layer_versions={keep}); no function uses it", {"version": v["Version"]}))


# -- a whole project (the plan task) -------------------------------------------------


def plan_items(items: list[Function | Layer], ctx: RunContext, c: Clients) -> list[Plan]:
    """Every item's plan, in the given order. Layers are planned first: a function
    using a layer that would publish is planned against the new version."""
    plans: dict[int, Plan] = {}
    pending: dict[str, str] = {}
    for i, item in enumerate(items):
        if isinstance(item, Layer):
            p = plans[i] = plan_layer(item, ctx, c, record=_here(item, ctx))
            st = p.state
            if any(s.kind == "publish_layer_version" for s in p.steps) or not isinstance(
                    st, remote.LayerState) or st.latest is None:
                pending[item.name] = f"<{item.name}: the version deploy publishes>"
            else:
                pending[item.name] = st.latest["LayerVersionArn"]
    functions = [i for i, item in enumerate(items) if isinstance(item, Function)]
    for i in functions:
        fn = items[i]
        assert isinstance(fn, Function)
        plans[i] = plan_function(fn, ctx, c, record=_here(fn, ctx), expected=len(functions),
                                 pending=pending)
    return [plans[i] for i in range(len(items))]


def _here(item: Function | Layer, ctx: RunContext) -> dict[str, Any] | None:
    """The item's record when it was written for the target this machine reaches
    (plan asks no STS: a record of elsewhere is no baseline)."""
    layout = ctx.layout(item)
    record = records.read(layout.published if isinstance(item, Layer) else layout.deployed)
    return record if records.here(record, ctx) else None
