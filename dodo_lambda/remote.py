"""What a plan reads from AWS, once per item: a function's configuration (and its
aliases and published versions when it publishes), a layer's versions (and the
newest one's content). Reads only: nothing here changes anything in AWS.

Several functions may share one ListFunctions listing: it is used when its pages
cost fewer calls than one GetFunctionConfiguration per function (see
``listing_pays``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import lambdas
from .aws import Clients, _error_code, translating
from .config import Function, Layer, label
from .context import RunContext

PAGE = 50  # functions per ListFunctions page (Lambda's maximum)


@dataclass
class FunctionState:
    """A function as deployed; ``aliases``/``versions`` are None when not read."""

    config: dict[str, Any] | None
    aliases: dict[str, dict[str, Any]] | None = None  # name -> FunctionVersion, RoutingConfig
    versions: list[dict[str, Any]] | None = None  # published versions, oldest first


@dataclass
class LayerState:
    versions: list[dict[str, Any]]  # every version, newest first (no CodeSha256)
    latest: dict[str, Any] | None  # the newest, with Content.CodeSha256

    @property
    def latest_sha(self) -> str | None:
        return (self.latest or {}).get("Content", {}).get("CodeSha256")


def read_function(c: Clients, fn: Function, ctx: RunContext, *, expected: int) -> FunctionState:
    """``expected``: how many functions this run reads (for the listing decision)."""
    config = read_config(c, fn.name, ctx, expected=expected)
    if config is None or not fn.publish:
        return FunctionState(config)
    who = label(fn)
    return FunctionState(config, list_aliases(c, fn.name, who=who),
                         list_versions(c, fn.name, who=who))


def read_config(c: Clients, name: str, ctx: RunContext, *, expected: int) -> dict[str, Any] | None:
    if ctx.once(("listing pays",), lambda: listing_pays(c, expected)):
        listed = lambdas.list_functions(c)
        if name in listed:
            return listed[name]
    return lambdas.get_function(c, name)


def listing_pays(c: Clients, expected: int) -> bool:
    """Whether one ListFunctions listing costs fewer calls than reading ``expected``
    functions one by one. Its page count comes from GetAccountSettings (the region's
    function count), asked only when a listing could pay (3 or more functions); when
    that cannot be asked, functions are read one by one."""
    if expected < 3:
        return False
    count = function_count(c)
    return count is not None and max(1, math.ceil(count / PAGE)) < expected


def function_count(c: Clients) -> int | None:
    """How many functions the region holds (GetAccountSettings), or None when that
    cannot be asked (no permission for it, an emulator without it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        usage = c.lam.get_account_settings().get("AccountUsage") or {}
    except (BotoCoreError, ClientError):
        return None
    count = usage.get("FunctionCount")
    return count if isinstance(count, int) else None


def list_versions(c: Clients, name: str, *, who: str) -> list[dict[str, Any]]:
    """The function's published versions (not $LATEST), oldest first, each with its
    configuration (CodeSha256 and settings)."""
    with translating(who, c=c):
        versions = [
            v for page in c.lam.get_paginator("list_versions_by_function").paginate(
                FunctionName=name)
            for v in page.get("Versions", []) if str(v.get("Version", "")).isdigit()
        ]
    return sorted(versions, key=lambda v: int(v["Version"]))


def list_aliases(c: Clients, name: str, *, who: str) -> dict[str, dict[str, Any]]:
    with translating(who, c=c):
        return {a["Name"]: a for page in c.lam.get_paginator("list_aliases").paginate(
            FunctionName=name) for a in page.get("Aliases", [])}


def aliased(aliases: dict[str, dict[str, Any]] | None) -> set[str]:
    """Every version an alias points at, including weighted routing."""
    out = set()
    for alias in (aliases or {}).values():
        out.add(str(alias.get("FunctionVersion")))
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        out.update(str(v) for v in weights)
    return out


def read_layer(c: Clients, layer: Layer) -> LayerState:
    from botocore.exceptions import ClientError

    who = label(layer)
    with translating(who, c=c):
        try:
            listed = [v for page in c.lam.get_paginator("list_layer_versions").paginate(
                LayerName=layer.name) for v in page.get("LayerVersions", [])]
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            listed = []
        listed.sort(key=lambda v: -int(v["Version"]))
        latest = None
        if listed:
            latest = lambdas._clean(c.lam.get_layer_version(
                LayerName=layer.name, VersionNumber=int(listed[0]["Version"])))
    return LayerState(listed, latest)


def layer_users(c: Clients, arns: Iterable[str]) -> dict[str, list[str]]:
    """Which functions of the account use each of ``arns`` (as far as a listing of
    every function's $LATEST configuration shows)."""
    wanted = set(arns)
    users: dict[str, list[str]] = {arn: [] for arn in wanted}
    for name, config in sorted(lambdas.list_functions(c).items()):
        for layer in config.get("Layers") or []:
            if layer.get("Arn") in wanted:
                users[layer["Arn"]].append(name)
    return users
