"""Deploy: decide first (a plan you can print), act second.

``plan_function`` compares the local package and settings with the deployed
function and returns what would change and why, as data. ``deploy_function``
applies such a plan; ``publish_layer`` does the same for a layer. The remote
state decides: a fresh checkout that rebuilds the same bytes changes nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import archive, aws, lambdas, rules, s3
from .config import Function, Layer, label
from .context import RunContext
from .digest import value_digest
from .errors import DodoLambdaError, NextStep
from .files import locked, read_json, write_json

log = logging.getLogger("dodo_lambda")


def clients(ctx: RunContext, who: str) -> aws.Clients:
    if ctx.emulator:  # the project's own moto server, started if needed
        from . import emulator

        # asked each time (a status request): a server that stopped meanwhile (idle, or
        # `doit emulator-stop` during a watch) is started again, with new clients
        server = emulator.ensure_running(ctx.build_dir)
        return ctx.once(("emulator-clients", server.url, server.id), lambda: emulator.clients(
            server, who, loader=ctx.once(("botocore-loader",), aws.data_loader)))
    return ctx.clients(who)


@dataclass
class FunctionPlan:
    """What deploying one function would do, and why."""

    name: str
    create: bool = False
    code: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    publish: bool = False
    alias: str | None = None
    s3: tuple[str, str] | None = None

    @property
    def changes(self) -> bool:
        return self.create or self.code or bool(self.settings)


@dataclass
class LayerPlan:
    name: str
    publish: bool
    reason: str
    latest: dict[str, Any] | None


@dataclass(frozen=True)
class UploadResult:
    bucket: str
    key: str
    sent: bool  # False: the same bytes were already there


@dataclass(frozen=True)
class DeployResult:
    plan: FunctionPlan
    arn: str | None
    version: str  # the published version, or "$LATEST"
    code_sha256: str


@dataclass(frozen=True)
class LayerResult:
    plan: LayerPlan
    arn: str
    version: int


# -- records written beside the zip (their keys live here, beside their writers) ------


def _write_uploaded(ctx: RunContext, fn: Function, result: UploadResult, sha256: str,
                    region: str) -> None:
    write_json(ctx.layout(fn).uploaded, {
        "bucket": result.bucket, "key": result.key, "prefix": fn.bucket_prefix,
        "sha256": sha256, "region": region, "sent": result.sent, "target": target_key(ctx)})


def upload_is_recorded(fn: Function, ctx: RunContext) -> bool:
    """uptodate for upload: the record says this zip went to this bucket and prefix."""
    return _record_says(ctx.layout(fn).uploaded, {
        "target": target_key(ctx), "bucket": fn.bucket, "prefix": fn.bucket_prefix})


def _write_deployed(ctx: RunContext, fn: Function, result: DeployResult, region: str) -> None:
    write_json(ctx.layout(fn).deployed, {
        "arn": result.arn,
        "region": region,
        "version": result.version,
        "code_sha256": result.code_sha256,
        "settings_digest": settings_digest(fn, ctx),
        "target": target_key(ctx),
        "changed": result.plan.reasons,
    })


def deploy_is_recorded(fn: Function, ctx: RunContext) -> bool:
    """uptodate for deploy: the record says these settings went to this target."""
    return _record_says(ctx.layout(fn).deployed, {
        "target": target_key(ctx), "settings_digest": settings_digest(fn, ctx)})


def _write_published(ctx: RunContext, layer: Layer, version: dict[str, Any], code_sha256: str,
                     region: str) -> None:
    write_json(ctx.layout(layer).published, {
        "arn": version["LayerVersionArn"],
        "version": version["Version"],
        "code_sha256": code_sha256,
        "region": region,
        "target": target_key(ctx),
    })


def layer_is_recorded(layer: Layer, ctx: RunContext) -> bool:
    """uptodate for layer: the record says the zip was published to this target."""
    return _record_says(ctx.layout(layer).published, {"target": target_key(ctx)})


def _record_says(path: Any, expected: dict[str, Any]) -> bool:
    record = read_json(path)
    return isinstance(record, dict) and all(record.get(k) == v for k, v in expected.items())


def manifest(item: Function | Layer, ctx: RunContext) -> dict[str, Any]:
    layout = ctx.layout(item)
    m = read_json(layout.manifest)
    if not m or not layout.zip.is_file():
        raise DodoLambdaError(f"{label(item)}: no package at {layout.zip}",
                              next_step=NextStep("package", item.name))
    return m


def layer_arns(fn: Function, ctx: RunContext, *, planning: bool = False) -> list[str] | None:
    """The function's layer list as version ARNs, in the given order; None when the
    function manages no layers. Local layers come from their publish records."""
    if not fn.layers:
        return None
    arns = []
    for layer in fn.layers:
        if isinstance(layer, str):
            arns.append(layer)
            continue
        record = read_json(ctx.layout(layer).published)
        if not record:
            if planning:
                arns.append(f"<{layer.name}: not published yet>")
                continue
            raise DodoLambdaError(f"{label(fn)}: layer '{layer.name}' is not published",
                                  next_step=NextStep("layer", layer.name))
        arns.append(record["arn"])
    return arns


def desired_settings(fn: Function, ctx: RunContext, *, planning: bool = False
                     ) -> dict[str, Any]:
    """The configuration dodo_lambda manages, in Lambda's field names."""
    out: dict[str, Any] = {"Runtime": fn.runtime, "Handler": fn.handler, **fn.settings()}
    arns = layer_arns(fn, ctx, planning=planning)
    if arns is not None:
        out["Layers"] = arns
    return out


def settings_digest(fn: Function, ctx: RunContext) -> str:
    """Changes when anything deploy would set besides the code changes."""
    try:
        wanted = desired_settings(fn, ctx)
    except DodoLambdaError:
        wanted = {"layers": "unpublished"}
    return value_digest({**wanted, "arch": fn.architecture, "publish": fn.publish,
                         "alias": fn.alias, "bucket": fn.bucket, "prefix": fn.bucket_prefix})


def _deployed_value(config: dict[str, Any], key: str) -> Any:
    if key == "Environment":
        return {"Variables": (config.get("Environment") or {}).get("Variables") or {}}
    if key == "Layers":
        return [layer["Arn"] for layer in config.get("Layers") or []]
    if key == "Description":
        return config.get("Description") or ""
    return config.get(key)


def _change(key: str, old: Any, new: Any) -> str:
    """One plan line for a setting. Environment values may be secrets: name the
    variables only."""
    if key == "Environment":
        before, after = old["Variables"], new["Variables"]
        parts = [f"+{k}" for k in sorted(after.keys() - before.keys())]
        parts += [f"-{k}" for k in sorted(before.keys() - after.keys())]
        parts += [f"~{k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
        return f"Environment {' '.join(parts)}"
    return f"{key} {_show(key, old)} → {_show(key, new)}"


def _show(key: str, value: Any) -> str:
    if key == "Layers":
        return "[" + ", ".join(a.rsplit(":", 2)[-2] + ":" + a.rsplit(":", 1)[-1]
                               if a.startswith("arn:") else a for a in value) + "]"
    return repr(value)


def s3_location(item: Function | Layer, m: dict[str, Any], ctx: RunContext
                ) -> tuple[str, str] | None:
    """Where the code goes through S3, or None for a direct upload. Raises before
    anything is sent when the zip is too big and there is no bucket."""
    if item.bucket:
        return item.bucket, s3.s3_key(item.bucket_prefix, item.name, m["sha256"])
    if m["zip_size"] > ctx.direct_limit:
        raise DodoLambdaError(
            f"{label(item)}: the zip is {m['zip_size']:,} bytes, over the"
            f" {ctx.direct_limit:,}-byte limit for a direct upload; set bucket= (an S3 bucket"
            f" for packages) on the {type(item).__name__}"
        )
    return None


def plan_function(fn: Function, m: dict[str, Any], deployed: dict[str, Any] | None,
                  wanted: dict[str, Any], ctx: RunContext) -> FunctionPlan:
    plan = FunctionPlan(fn.name, s3=s3_location(fn, m, ctx))
    verdict = rules.runtime_verdict(fn.runtime, ctx.today,
                                    allow_deprecated=fn.allow_deprecated_runtime is True)
    if verdict.error:
        raise DodoLambdaError(f"{label(fn)}: {verdict.error}")
    if deployed is None and verdict.create_error:
        raise DodoLambdaError(f"{label(fn)}: {verdict.create_error}")
    if verdict.warning:
        log.warning("%s: %s", label(fn), verdict.warning)
    if deployed is None:
        if not fn.role:
            raise DodoLambdaError(
                f"{label(fn)}: the Lambda function does not exist; create it, or set role="
                " (an IAM role ARN) so dodo_lambda creates it"
            )
        plan.create = True
        plan.reasons.append("would create")
    else:
        if deployed.get("CodeSha256") != m["code_sha256"]:
            plan.code = True
            plan.reasons.append(f"code differs (local {m['code_sha256']} vs deployed"
                                f" {deployed.get('CodeSha256')})")
        arch = (deployed.get("Architectures") or ["x86_64"])[0]
        if arch != fn.architecture:
            plan.code = True
            plan.reasons.append(f"architecture {arch} → {fn.architecture}")
        for key, value in wanted.items():
            old = _deployed_value(deployed, key)
            if old != value:
                plan.settings[key] = value
                plan.reasons.append(_change(key, old, value))
    if fn.publish:
        plan.publish = plan.changes or deployed is None
        plan.alias = fn.alias
    return plan


# -- acting ------------------------------------------------------------------------


def find_function(c: aws.Clients, name: str, many: bool) -> dict[str, Any] | None:
    if many:
        listed = lambdas.list_functions(c)
        if name in listed:
            return listed[name]
    return lambdas.get_function(c, name)


def check_total_size(fn: Function, ctx: RunContext) -> None:
    """Function plus its local layers within Lambda's unzipped limit; a package
    installed by both is reported (it ships twice)."""
    m = manifest(fn, ctx)
    sizes = {f"function {fn.name}": m["unzipped_size"]}
    own = m.get("packages") or {}
    for layer in fn.layers:
        if isinstance(layer, str):
            continue
        lm = manifest(layer, ctx)
        sizes[f"layer {layer.name}"] = lm["unzipped_size"]
        both = sorted(set(own) & set(lm.get("packages") or {}))
        if both:
            log.warning("%s: %s installed by both the function and layer '%s' (it ships"
                        " twice); drop it from one package.json", label(fn), ", ".join(both),
                        layer.name)
    total = sum(sizes.values())
    if total > archive.UNZIPPED_LIMIT:
        top = sorted(sizes.items(), key=lambda kv: -kv[1])
        parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in top)
        raise DodoLambdaError(
            f"{label(fn)}: function plus layers are {total:,} bytes unzipped, over Lambda's limit"
            f" of {archive.UNZIPPED_LIMIT:,} ({parts}); trim the biggest package or layer"
        )


def upload(fn: Function, ctx: RunContext) -> UploadResult | None:
    """Put the zip at its content-addressed S3 key (nothing sent when it is there)."""
    m = manifest(fn, ctx)
    loc = s3_location(fn, m, ctx)
    if loc is None:
        return None
    c = clients(ctx, label(fn))
    sent = s3.upload_zip(c, who=label(fn), bucket=loc[0], key=loc[1],
                         zip_path=ctx.layout(fn).zip, sha256_hex=m["sha256"])
    result = UploadResult(loc[0], loc[1], sent)
    _write_uploaded(ctx, fn, result, m["sha256"], c.region)
    return result


def deploy_function(fn: Function, ctx: RunContext) -> DeployResult:
    who = label(fn)
    check_total_size(fn, ctx)
    m = manifest(fn, ctx)
    s3_location(fn, m, ctx)  # too big without a bucket: say so before any AWS call
    wanted = desired_settings(fn, ctx)
    layout = ctx.layout(fn)
    with locked(layout.deploy_lock):
        c = clients(ctx, who)
        deployed = find_function(c, fn.name, ctx.list_functions)
        plan = plan_function(fn, m, deployed, wanted, ctx)
        zip_path = None if plan.s3 else layout.zip
        if plan.s3 and (plan.code or plan.create) and not s3.s3_object_exists(c, *plan.s3, who=who):
            raise DodoLambdaError(f"{who}: s3://{plan.s3[0]}/{plan.s3[1]} is missing",
                                  next_step=NextStep("upload", fn.name))
        if plan.create:
            config = lambdas.create_function(
                c, fn.name, who=who, role=fn.role or "", runtime=fn.runtime, handler=fn.handler,
                architecture=fn.architecture, zip_path=zip_path, s3=plan.s3,
                settings=fn.settings(), layers=wanted.get("Layers"))
        else:
            config = deployed or {}
            if "Runtime" in plan.settings and rules.update_blocked(config.get("Runtime"),
                                                                   ctx.today):
                # Lambda refuses code updates on the old runtime: move the runtime first
                config = lambdas.update_configuration(
                    c, fn.name, who=who, changes={"Runtime": plan.settings.pop("Runtime")},
                    config=config)
            if plan.code:
                config = lambdas.update_code(c, fn.name, who=who, architecture=fn.architecture,
                                             zip_path=zip_path, s3=plan.s3, config=config)
            if plan.settings:
                config = lambdas.update_configuration(c, fn.name, who=who, changes=plan.settings,
                                                      config=config)
        if config.get("CodeSha256") not in (None, m["code_sha256"]):
            raise DodoLambdaError(f"{who}: Lambda reports CodeSha256 {config.get('CodeSha256')}"
                                  f" after the update, not {m['code_sha256']}; run again")
        version = None
        if plan.publish:
            version = lambdas.publish_version(c, fn.name, who=who, code_sha256=m["code_sha256"])
        elif fn.publish:
            version = lambdas.latest_version(c, fn.name, who=who, code_sha256=m["code_sha256"]) \
                or lambdas.publish_version(
                c, fn.name, who=who, code_sha256=m["code_sha256"])
        if fn.alias and version is not None:
            lambdas.point_alias(c, fn.name, fn.alias, version["Version"], who=who)
        lambdas.invalidate(c, fn.name)
        result = DeployResult(plan, config.get("FunctionArn"),
                              version["Version"] if version else "$LATEST", m["code_sha256"])
        _write_deployed(ctx, fn, result, c.region)
    return result


def layer_plan(layer: Layer, m: dict[str, Any], latest: dict[str, Any] | None) -> LayerPlan:
    if latest is None:
        return LayerPlan(layer.name, True, "would publish version 1: no version published", None)
    deployed = (latest.get("Content") or {}).get("CodeSha256")
    if deployed == m["code_sha256"]:
        return LayerPlan(layer.name, False, f"up to date (version {latest['Version']})", latest)
    return LayerPlan(layer.name, True, f"would publish version {int(latest['Version']) + 1}:"
                     f" content differs (local {m['code_sha256']} vs {deployed})", latest)


def publish_layer(layer: Layer, ctx: RunContext, users: tuple[Function, ...] = ()
                  ) -> LayerResult:
    """Publish a layer version unless the latest one has the same CodeSha256."""
    who = label(layer)
    for runtime in layer.runtimes:
        warning = rules.runtime_verdict(runtime, ctx.today, allow_deprecated=(
            layer.allow_deprecated_runtime is True)).warning
        if warning:
            log.warning("%s: runtimes=: %s", who, warning)
    for fn in users:
        check_total_size(fn, ctx)
    m = manifest(layer, ctx)
    layout = ctx.layout(layer)
    with locked(layout.deploy_lock):
        c = clients(ctx, who)
        plan = layer_plan(layer, m, lambdas.latest_layer_version(c, layer.name, who=who))
        version = plan.latest
        if plan.publish:
            zip_path: Path | None = layout.zip
            location = s3_location(layer, m, ctx)
            if location is not None:
                s3.upload_zip(c, who=who, bucket=location[0], key=location[1],
                              zip_path=layout.zip, sha256_hex=m["sha256"])
                zip_path = None
            version = lambdas.publish_layer(
                c, layer.name, who=who, zip_path=zip_path, s3=location, runtimes=layer.runtimes,
                architectures=layer.architectures, description=layer.description)
        assert version is not None
        _write_published(ctx, layer, version, m["code_sha256"], c.region)
    return LayerResult(plan, version["LayerVersionArn"], int(version["Version"]))


def target_key(ctx: RunContext) -> str:
    """Where deploys go, without importing boto3: the override and the standard
    chain's environment (a change reruns deploy; the remote check decides)."""
    if ctx.emulator:  # which server: a new one is a new target
        from . import emulator

        return emulator.target_key(ctx.build_dir)
    target = ctx.target
    env = {k: os.environ.get(k, "") for k in (
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID")}
    return value_digest({"target": [target.profile, target.region, target.endpoint], **env})


# -- plan (read-only) ----------------------------------------------------------------


@dataclass
class PlanReport:
    """What ``plan`` found: a line per item, and why deploy would refuse (if it would)."""

    lines: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def plan_lines(items: list[Function | Layer], ctx: RunContext) -> list[str]:
    """What deploy would do for each item, and why. Changes nothing in AWS."""
    return plan_report(items, ctx).lines


def plan_report(items: list[Function | Layer], ctx: RunContext) -> PlanReport:
    """What deploy would do for each item and why, and what it would refuse (the
    same checks deploy makes before sending anything). Changes nothing in AWS."""
    report = PlanReport()
    for item in items:
        try:
            report.lines.extend(_plan_item(item, ctx))
        except DodoLambdaError as exc:
            report.lines.append(f"{exc} (deploy would refuse)")
            report.refused.append(str(exc))
    return report


def _plan_item(item: Function | Layer, ctx: RunContext) -> list[str]:
    """The plan lines of one item; raises DodoLambdaError where deploy would refuse."""
    lines = []
    who = label(item)
    c = clients(ctx, who)
    m = manifest(item, ctx)
    if isinstance(item, Layer):
        publishing = layer_plan(item, m, lambdas.latest_layer_version(c, item.name, who=who))
        location = s3_location(item, m, ctx) if publishing.publish else None
        if location is not None:
            s3.s3_object_exists(c, *location, who=who)  # a missing bucket raises
        lines.append(f"{who}: {publishing.reason}")
        return lines
    check_total_size(item, ctx)
    wanted = desired_settings(item, ctx, planning=True)
    for layer in item.layers:
        if isinstance(layer, Layer):
            lp = layer_plan(layer, manifest(layer, ctx),
                            lambdas.latest_layer_version(c, layer.name, who=who))
            if lp.publish:
                wanted.pop("Layers", None)
                lines.append(f"{who}: would move to the new version of layer '{layer.name}'")
    plan = plan_function(item, m, find_function(c, item.name, ctx.list_functions), wanted,
                         ctx)
    if plan.s3 and (plan.code or plan.create):
        s3.s3_object_exists(c, *plan.s3, who=who)  # a missing bucket raises
    what = "; ".join(plan.reasons) or "up to date"
    if plan.publish:
        alias = f" and move alias {plan.alias}" if plan.alias else ""
        what += f"; would publish a version{alias}"
    lines.append(f"{who}: {what}")
    return lines
