"""Deploy: decide first (a plan you can print), act second.

``plan_function`` compares the local package and settings with the deployed
function and returns what would change and why, as data. ``deploy_function``
applies such a plan; ``publish_layer`` does the same for a layer. The remote
state decides: a fresh checkout that rebuilds the same bytes changes nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from . import archive, aws, build, lambdas, rules, s3
from .config import Function, Layer, label
from .digest import value_digest
from .errors import DodoLambdaError
from .files import locked, read_json, write_json

DIRECT_UPLOAD_LIMIT = lambdas.DIRECT_UPLOAD_LIMIT  # 50 MiB: above it, code goes through S3


@dataclass(frozen=True)
class Options:
    """Per-project deploy options (from lambda_tasks)."""

    target: aws.AwsTarget = aws.AwsTarget()
    direct_limit: int = DIRECT_UPLOAD_LIMIT
    many: bool = False  # several functions: one ListFunctions answers for all
    emulator: bool = False  # the project asked for the embedded local emulator
    today: date | None = None  # the date Lambda's runtime schedule is read at (tests)


log = logging.getLogger("dodo_lambda")
_RUN = os.urandom(8).hex()  # an emulator lives for one run: each run is a new target


def clients(opts: Options, who: str) -> aws.Clients:
    if opts.emulator:
        from . import local

        local.ensure_started()
    return aws.clients(opts.target, who=who)


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


# -- records written beside the zip --------------------------------------------


def record_paths(item: Function | Layer, build_dir: str | Path) -> dict[str, Path]:
    p = build.paths(item, build_dir)
    stem = p.zip.with_suffix("")
    return {
        "uploaded": stem.with_name(stem.name + ".uploaded.json"),
        "deployed": stem.with_name(stem.name + ".deployed.json"),
        "published": stem.with_name(stem.name + ".published.json"),
        "lock": stem.with_name(stem.name + ".deploy.lock"),
    }


def manifest(item: Function | Layer, build_dir: str | Path) -> dict[str, Any]:
    m = read_json(build.paths(item, build_dir).manifest)
    if not m or not build.paths(item, build_dir).zip.is_file():
        raise DodoLambdaError(f"{label(item)}: no package at {build.paths(item, build_dir).zip};"
                              f" run `doit package:{item.name}` first")
    return m


def layer_arns(fn: Function, build_dir: str | Path, *, planning: bool = False) -> list[str] | None:
    """The function's layer list as version ARNs, in the given order; None when the
    function manages no layers. Local layers come from their publish records."""
    if not fn.layers:
        return None
    arns = []
    for layer in fn.layers:
        if isinstance(layer, str):
            arns.append(layer)
            continue
        record = read_json(record_paths(layer, build_dir)["published"])
        if not record:
            if planning:
                arns.append(f"<{layer.name}: not published yet>")
                continue
            raise DodoLambdaError(f"{label(fn)}: layer '{layer.name}' is not published;"
                                  f" run `doit layer:{layer.name}` first")
        arns.append(record["arn"])
    return arns


def desired_settings(fn: Function, build_dir: str | Path, *, planning: bool = False
                     ) -> dict[str, Any]:
    """The configuration dodo_lambda manages, in Lambda's field names."""
    out: dict[str, Any] = {"Runtime": fn.runtime, "Handler": fn.handler, **fn.settings()}
    arns = layer_arns(fn, build_dir, planning=planning)
    if arns is not None:
        out["Layers"] = arns
    return out


def settings_digest(fn: Function, build_dir: str | Path) -> str:
    """Changes when anything deploy would set besides the code changes."""
    try:
        wanted = desired_settings(fn, build_dir)
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


def s3_location(item: Function | Layer, m: dict[str, Any], opts: Options
                ) -> tuple[str, str] | None:
    """Where the code goes through S3, or None for a direct upload. Raises before
    anything is sent when the zip is too big and there is no bucket."""
    if item.bucket:
        return item.bucket, s3.s3_key(item.bucket_prefix, item.name, m["sha256"])
    if m["zip_size"] > opts.direct_limit:
        raise DodoLambdaError(
            f"{label(item)}: the zip is {m['zip_size']:,} bytes, over the"
            f" {opts.direct_limit:,}-byte limit for a direct upload; set bucket= (an S3 bucket"
            f" for packages) on the {type(item).__name__}"
        )
    return None


def plan_function(fn: Function, m: dict[str, Any], deployed: dict[str, Any] | None,
                  wanted: dict[str, Any], opts: Options) -> FunctionPlan:
    plan = FunctionPlan(fn.name, s3=s3_location(fn, m, opts))
    verdict = rules.runtime_verdict(fn.runtime, opts.today,
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


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def check_total_size(fn: Function, build_dir: str | Path) -> None:
    """Function plus its local layers within Lambda's unzipped limit; a package
    installed by both is reported (it ships twice)."""
    m = manifest(fn, build_dir)
    sizes = {f"function {fn.name}": m["unzipped_size"]}
    own = m.get("packages") or {}
    for layer in fn.layers:
        if isinstance(layer, str):
            continue
        lm = manifest(layer, build_dir)
        sizes[f"layer {layer.name}"] = lm["unzipped_size"]
        both = sorted(set(own) & set(lm.get("packages") or {}))
        if both:
            warn(f"{label(fn)}: {', '.join(both)} installed by both the function and layer"
                 f" '{layer.name}' (it ships twice); drop it from one package.json")
    total = sum(sizes.values())
    if total > archive.UNZIPPED_LIMIT:
        top = sorted(sizes.items(), key=lambda kv: -kv[1])
        parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in top)
        raise DodoLambdaError(
            f"{label(fn)}: function plus layers are {total:,} bytes unzipped, over Lambda's limit"
            f" of {archive.UNZIPPED_LIMIT:,} ({parts}); trim the biggest package or layer"
        )


def upload(fn: Function, build_dir: str | Path, opts: Options) -> bool:
    """Put the zip at its content-addressed S3 key (nothing sent when it is there)."""
    m = manifest(fn, build_dir)
    loc = s3_location(fn, m, opts)
    if loc is None:
        return False
    c = clients(opts, label(fn))
    sent = s3.upload_zip(c, who=label(fn), bucket=loc[0], key=loc[1],
                            zip_path=build.paths(fn, build_dir).zip, sha256_hex=m["sha256"])
    write_json(record_paths(fn, build_dir)["uploaded"], {
        "bucket": loc[0], "key": loc[1], "prefix": fn.bucket_prefix, "sha256": m["sha256"],
        "region": c.region, "sent": sent, "target": target_key(opts)})
    return sent


def deploy_function(fn: Function, build_dir: str | Path, opts: Options) -> FunctionPlan:
    who = label(fn)
    check_total_size(fn, build_dir)
    m = manifest(fn, build_dir)
    s3_location(fn, m, opts)  # too big without a bucket: say so before any AWS call
    wanted = desired_settings(fn, build_dir)
    records = record_paths(fn, build_dir)
    with locked(records["lock"]):
        c = clients(opts, who)
        deployed = find_function(c, fn.name, opts.many)
        plan = plan_function(fn, m, deployed, wanted, opts)
        zip_path = None if plan.s3 else build.paths(fn, build_dir).zip
        if plan.s3 and (plan.code or plan.create) and not s3.s3_object_exists(c, *plan.s3, who=who):
            raise DodoLambdaError(f"{who}: s3://{plan.s3[0]}/{plan.s3[1]} is missing; run"
                                  f" `doit upload:{fn.name}`")
        if plan.create:
            config = lambdas.create_function(
                c, fn.name, who=who, role=fn.role or "", runtime=fn.runtime, handler=fn.handler,
                architecture=fn.architecture, zip_path=zip_path, s3=plan.s3,
                settings=fn.settings(), layers=wanted.get("Layers"))
        else:
            config = deployed or {}
            if "Runtime" in plan.settings and rules.update_blocked(config.get("Runtime"),
                                                                   opts.today):
                # Lambda refuses code updates on the old runtime: move the runtime first
                config = lambdas.update_configuration(
                    c, fn.name, who=who, changes={"Runtime": plan.settings.pop("Runtime")})
            if plan.code:
                config = lambdas.update_code(c, fn.name, who=who, architecture=fn.architecture,
                                             zip_path=zip_path, s3=plan.s3)
            if plan.settings:
                config = lambdas.update_configuration(c, fn.name, who=who, changes=plan.settings)
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
        write_json(records["deployed"], {
            "arn": config.get("FunctionArn"),
            "region": c.region,
            "version": version["Version"] if version else "$LATEST",
            "code_sha256": m["code_sha256"],
            "settings_digest": settings_digest(fn, build_dir),
            "target": target_key(opts),
            "changed": plan.reasons,
        })
    return plan


def layer_plan(layer: Layer, m: dict[str, Any], latest: dict[str, Any] | None) -> LayerPlan:
    if latest is None:
        return LayerPlan(layer.name, True, "would publish version 1: no version published", None)
    deployed = (latest.get("Content") or {}).get("CodeSha256")
    if deployed == m["code_sha256"]:
        return LayerPlan(layer.name, False, f"up to date (version {latest['Version']})", latest)
    return LayerPlan(layer.name, True, f"would publish version {int(latest['Version']) + 1}:"
                     f" content differs (local {m['code_sha256']} vs {deployed})", latest)


def publish_layer(layer: Layer, build_dir: str | Path, opts: Options,
                  users: tuple[Function, ...] = ()) -> LayerPlan:
    """Publish a layer version unless the latest one has the same CodeSha256."""
    who = label(layer)
    for runtime in layer.runtimes:
        warning = rules.runtime_verdict(runtime, opts.today, allow_deprecated=(
            layer.allow_deprecated_runtime is True)).warning
        if warning:
            log.warning("%s: runtimes=: %s", who, warning)
    for fn in users:
        check_total_size(fn, build_dir)
    m = manifest(layer, build_dir)
    records = record_paths(layer, build_dir)
    with locked(records["lock"]):
        c = clients(opts, who)
        plan = layer_plan(layer, m, lambdas.latest_layer_version(c, layer.name, who=who))
        version = plan.latest
        if plan.publish:
            zip_path: Path | None = build.paths(layer, build_dir).zip
            location = s3_location(layer, m, opts)
            if location is not None:
                s3.upload_zip(c, who=who, bucket=location[0], key=location[1],
                              zip_path=zip_path, sha256_hex=m["sha256"])
                zip_path = None
            version = lambdas.publish_layer(
                c, layer.name, who=who, zip_path=zip_path, s3=location, runtimes=layer.runtimes,
                architectures=layer.architectures, description=layer.description)
        assert version is not None
        write_json(records["published"], {
            "arn": version["LayerVersionArn"],
            "version": version["Version"],
            "code_sha256": m["code_sha256"],
            "region": c.region,
            "target": target_key(opts),
        })
    return plan


def target_key(opts: Options) -> str:
    """Where deploys go, without importing boto3: the override and the standard
    chain's environment (a change reruns deploy; the remote check decides)."""
    if opts.emulator:
        return f"emulator-{_RUN}"
    target = opts.target
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


def plan_lines(items: list[Function | Layer], build_dir: str | Path, opts: Options) -> list[str]:
    """What deploy would do for each item, and why. Changes nothing in AWS."""
    return plan_report(items, build_dir, opts).lines


def plan_report(items: list[Function | Layer], build_dir: str | Path, opts: Options
                ) -> PlanReport:
    """What deploy would do for each item and why, and what it would refuse (the
    same checks deploy makes before sending anything). Changes nothing in AWS."""
    report = PlanReport()
    for item in items:
        try:
            report.lines.extend(_plan_item(item, build_dir, opts))
        except DodoLambdaError as exc:
            report.lines.append(f"{exc} (deploy would refuse)")
            report.refused.append(str(exc))
    return report


def _plan_item(item: Function | Layer, build_dir: str | Path, opts: Options) -> list[str]:
    """The plan lines of one item; raises DodoLambdaError where deploy would refuse."""
    lines = []
    who = label(item)
    c = clients(opts, who)
    m = manifest(item, build_dir)
    if isinstance(item, Layer):
        publishing = layer_plan(item, m, lambdas.latest_layer_version(c, item.name, who=who))
        location = s3_location(item, m, opts) if publishing.publish else None
        if location is not None:
            s3.s3_object_exists(c, *location, who=who)  # a missing bucket raises
        lines.append(f"{who}: {publishing.reason}")
        return lines
    check_total_size(item, build_dir)
    wanted = desired_settings(item, build_dir, planning=True)
    for layer in item.layers:
        if isinstance(layer, Layer):
            lp = layer_plan(layer, manifest(layer, build_dir),
                            lambdas.latest_layer_version(c, layer.name, who=who))
            if lp.publish:
                wanted.pop("Layers", None)
                lines.append(f"{who}: would move to the new version of layer '{layer.name}'")
    plan = plan_function(item, m, find_function(c, item.name, opts.many), wanted, opts)
    if plan.s3 and (plan.code or plan.create):
        s3.s3_object_exists(c, *plan.s3, who=who)  # a missing bucket raises
    what = "; ".join(plan.reasons) or "up to date"
    if plan.publish:
        alias = f" and move alias {plan.alias}" if plan.alias else ""
        what += f"; would publish a version{alias}"
    lines.append(f"{who}: {what}")
    return lines
