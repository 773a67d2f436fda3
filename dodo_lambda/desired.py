"""What deploy wants in AWS for an item, known without asking AWS: the package (its
manifest), the function's settings in Lambda's field names, its layer ARNs, where
the code goes (direct or S3), and the per-field fingerprints drift is measured with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from . import archive, s3
from .config import Function, Layer, label
from .context import RunContext
from .digest import value_digest
from .errors import DodoLambdaError, NextStep, Refused
from .files import read_json

log = logging.getLogger("dodo_lambda")

# The fields a function's fingerprint is made of besides its managed settings.
CODE = "CodeSha256"
ARCH = "Architectures"


def manifest(item: Function | Layer, ctx: RunContext) -> dict[str, Any]:
    layout = ctx.layout(item)
    m = read_json(layout.manifest)
    if not m or not layout.zip.is_file():
        raise DodoLambdaError(f"{label(item)}: no package at {layout.zip}",
                              next_step=NextStep("package", item.name))
    return m


def layer_arns(fn: Function, ctx: RunContext, pending: Mapping[str, str] | None = None
               ) -> list[str] | None:
    """The function's layer list as version ARNs, in the given order; None when the
    function manages no layers. Local layers come from their publish records, or from
    ``pending`` (layer name -> the ARN a plan expects) when planning."""
    if not fn.layers:
        return None
    arns = []
    for layer in fn.layers:
        if isinstance(layer, str):
            arns.append(layer)
        elif pending is not None and layer.name in pending:
            arns.append(pending[layer.name])
        else:
            record = read_json(ctx.layout(layer).published)
            if not isinstance(record, dict) or "arn" not in record or "in_progress" in record:
                how = "did not finish publishing" if isinstance(record, dict) and "arn" in record \
                    else "is not published"
                raise DodoLambdaError(f"{label(fn)}: layer '{layer.name}' {how}",
                                      next_step=NextStep("layer", layer.name))
            arns.append(record["arn"])
    return arns


def settings(fn: Function, ctx: RunContext, pending: Mapping[str, str] | None = None
             ) -> dict[str, Any]:
    """The configuration dodo_lambda manages, in Lambda's field names."""
    out: dict[str, Any] = {"Runtime": fn.runtime, "Handler": fn.handler, **fn.settings()}
    arns = layer_arns(fn, ctx, pending)
    if arns is not None:
        out["Layers"] = arns
    return out


def settings_digest(fn: Function, ctx: RunContext) -> str:
    """Changes when anything deploy would set besides the code changes."""
    try:
        wanted = settings(fn, ctx)
    except DodoLambdaError:
        wanted = {"layers": "unpublished"}
    return value_digest({**wanted, "arch": fn.architecture, "publish": fn.publish,
                         "alias": fn.alias, "bucket": fn.bucket, "prefix": fn.bucket_prefix,
                         "keep": fn.keep_versions})


def fields(code_sha256: str, architecture: str, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """A function's fingerprint fields: code, architecture and managed settings."""
    return {CODE: code_sha256, ARCH: architecture, **wanted}


def deployed_value(config: Mapping[str, Any], key: str) -> Any:
    """A field of a deployed configuration, shaped like the local value."""
    if key == ARCH:
        return (config.get(ARCH) or ["x86_64"])[0]
    if key == "Environment":
        return {"Variables": (config.get("Environment") or {}).get("Variables") or {}}
    if key == "Layers":
        return [layer["Arn"] for layer in config.get("Layers") or []]
    if key == "Description":
        return config.get("Description") or ""
    return config.get(key)


def deployed_fields(config: Mapping[str, Any], keys: Any) -> dict[str, Any]:
    return {key: deployed_value(config, key) for key in keys}


def code_differences(local: Mapping[str, Any], deployed: Mapping[str, Any]) -> list[str]:
    """The fields an UpdateFunctionCode sets (code, architecture) that differ."""
    return [k for k in (CODE, ARCH) if deployed[k] != local[k]]


def settings_changes(local: Mapping[str, Any], deployed: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an UpdateFunctionConfiguration sets that differ, with their values."""
    return {k: v for k, v in local.items() if k not in (CODE, ARCH) and deployed[k] != v}


def fingerprint(values: Mapping[str, Any]) -> dict[str, str]:
    """One digest per field: what a record keeps (environment values may be secrets)."""
    return {key: value_digest(value) for key, value in values.items()}


def change(key: str, old: Any, new: Any) -> str:
    """One plan line for a field. Environment values may be secrets: name the
    variables only."""
    if key == "Environment":
        before, after = old["Variables"], new["Variables"]
        parts = [f"+{k}" for k in sorted(after.keys() - before.keys())]
        parts += [f"-{k}" for k in sorted(before.keys() - after.keys())]
        parts += [f"~{k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
        return f"Environment {' '.join(parts)}"
    if key == CODE:
        return f"code differs (local {new} vs deployed {old})"
    if key == ARCH:
        return f"architecture {old} → {new}"
    return f"{key} {_show(key, old)} → {_show(key, new)}"


def _show(key: str, value: Any) -> str:
    if key == "Layers":
        return "[" + ", ".join(a.rsplit(":", 2)[-2] + ":" + a.rsplit(":", 1)[-1]
                               if a.startswith("arn:") else a for a in value) + "]"
    return repr(value)


def s3_location(item: Function | Layer, m: Mapping[str, Any], ctx: RunContext
                ) -> tuple[str, str] | None:
    """Where the code goes through S3, or None for a direct upload. Refuses, before
    anything is sent, a zip too big for a direct upload when there is no bucket."""
    if item.bucket:
        # the build's name: every stage's copy of the item has the same bytes
        return item.bucket, s3.s3_key(item.bucket_prefix, item.build_name, m["sha256"])
    if m["zip_size"] > ctx.direct_limit:
        raise Refused(
            f"{label(item)}: the zip is {m['zip_size']:,} bytes, over the"
            f" {ctx.direct_limit:,}-byte limit for a direct upload; set bucket= (an S3 bucket"
            f" for packages) on the {type(item).__name__}"
        )
    return None


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
        raise Refused(
            f"{label(fn)}: function plus layers are {total:,} bytes unzipped, over Lambda's limit"
            f" of {archive.UNZIPPED_LIMIT:,} ({parts}); trim the biggest package or layer"
        )
