"""What a deploy publishes once its function is in place: versions and the alias
that serves one, and layer versions. PublishVersion, CreateAlias and
PublishLayerVersion are not repeated blindly (aws.GUARDED): after a lost answer or a
5xx, what is there is read first (``lambdas.sent_once``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .aws import Clients, _error_code, translating
from .lambdas import _clean, _clean_or_none, _code, _wait, retry_conflicts, sent_once

log = logging.getLogger("dodo_lambda")


def publish_version(
    c: Clients, name: str, *, who: str, code_sha256: str, description: str | None = None,
    known: list[str] | None = None,
) -> dict:
    """Publish $LATEST as a version, refused by AWS unless its CodeSha256 is ``code_sha256``.
    ``known``: the versions there before (read by the plan); a version that appears
    beside them with this code after a lost answer is the one published."""
    kwargs: dict[str, Any] = {"FunctionName": name, "CodeSha256": code_sha256}
    if description is not None:
        kwargs["Description"] = description

    def published() -> dict | None:
        if known is None:
            return None
        return _new_version(c, name, code_sha256, {str(v) for v in known})

    with translating(who, c=c):
        version = _clean(sent_once(
            lambda: retry_conflicts(lambda: c.lam.publish_version(**kwargs), c=c, name=name,
                                    who=who), published, who=who))
    if version.get("State", "Active") != "Active":
        _wait(c, "published_version_active", who=who,
              what=f"activation of version {version['Version']}", FunctionName=name,
              Qualifier=version["Version"])
    return version


def _new_version(c: Clients, name: str, code_sha256: str, known: set[str]) -> dict | None:
    """The newest published version not in ``known`` whose code is ``code_sha256``."""
    found = [v for page in c.lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=name) for v in page.get("Versions", [])
        if str(v.get("Version")).isdigit() and str(v["Version"]) not in known
        and v.get("CodeSha256") == code_sha256]
    return max(found, key=lambda v: int(v["Version"])) if found else None


def point_alias(c: Clients, name: str, alias: str, version: str, *, who: str,
                exists: bool | None = None) -> dict:
    """Point ``alias`` at ``version``; the alias. ``exists`` says whether the alias is
    there (one UpdateAlias or one CreateAlias); when it is wrong (an alias created or
    deleted meanwhile, a CreateAlias whose answer was lost) the other call follows."""
    from botocore.exceptions import ClientError

    args = {"FunctionName": name, "Name": alias, "FunctionVersion": version}

    def update() -> dict:
        return retry_conflicts(lambda: c.lam.update_alias(**args), c=c, name=name, who=who)

    def create() -> dict | None:
        """The alias created (or found) at ``version``; None when it points elsewhere."""
        try:
            made = sent_once(lambda: c.lam.create_alias(**args), lambda: _clean_or_none(
                c.lam.get_alias, FunctionName=name, Name=alias), who=who)
        except ClientError as exc:
            # 409: it exists (Lambda's ResourceConflictException; moto's ConflictException)
            if _error_code(exc) not in ("ResourceConflictException", "ConflictException"):
                raise
            made = _clean_or_none(c.lam.get_alias, FunctionName=name, Name=alias) or {}
            if str(made.get("FunctionVersion")) != str(version):
                log.info("%s: alias %s exists already (at version %s); pointing it at version"
                         " %s", who, alias, made.get("FunctionVersion"), version)
        return made if str(made.get("FunctionVersion")) == str(version) else None

    with translating(who, c=c):
        if exists is False:
            return _clean(create() or update())
        try:
            found = update()
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            found = create() or update()  # gone meanwhile (or the function is: create says so)
    return _clean(found)


def delete_version(c: Clients, name: str, version: str, *, who: str) -> None:
    """Delete one published version (never $LATEST: the qualifier must be a number)."""
    if not str(version).isdigit():
        raise ValueError(f"not a published version: {version!r}")
    from botocore.exceptions import ClientError

    with translating(who, c=c):
        try:
            retry_conflicts(lambda: c.lam.delete_function(FunctionName=name,
                                                          Qualifier=str(version)),
                            c=c, name=name, who=who)
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise  # not found: already gone (a repeat after a lost answer, or by hand)


def delete_layer_version(c: Clients, layer_name: str, version: int, *, who: str) -> None:
    with translating(who, c=c):
        c.lam.delete_layer_version(LayerName=layer_name, VersionNumber=int(version))


def publish_layer(
    c: Clients,
    layer_name: str,
    *,
    who: str,
    zip_path: Path | None = None,
    s3: tuple[str, str] | None = None,
    runtimes: list[str] | tuple[str, ...] = (),
    architectures: list[str] | tuple[str, ...] = (),
    description: str | None = None,
    code_sha256: str | None = None,
    newest_before: int | None = None,
) -> dict:
    """Publish a new layer version from a zip or an S3 object; PublishLayerVersion's answer.
    ``code_sha256``/``newest_before``: the content's CodeSha256 and the newest version
    before (None: there was none); a newer version with this content after a lost
    answer is the one published."""
    kwargs: dict[str, Any] = {"LayerName": layer_name, "Content": _code(who, zip_path, s3)}
    if runtimes:
        kwargs["CompatibleRuntimes"] = list(runtimes)
    if architectures:
        kwargs["CompatibleArchitectures"] = list(architectures)
    if description is not None:
        kwargs["Description"] = description
    def published() -> dict | None:
        if code_sha256 is None:
            return None
        latest = newest_layer_version(c, layer_name)
        if latest is None or latest.get("Content", {}).get("CodeSha256") != code_sha256:
            return None
        return latest if int(latest["Version"]) > (newest_before or 0) else None

    with translating(who, bucket=s3[0] if s3 else None, c=c):
        return _clean(sent_once(lambda: c.lam_for(kwargs["Content"]).publish_layer_version(
            **kwargs), published, who=who))


def newest_layer_version(c: Clients, layer_name: str) -> dict | None:
    """The layer's newest version (GetLayerVersion: with its Content.CodeSha256), or None."""
    from botocore.exceptions import ClientError

    try:
        numbers = [int(v["Version"]) for page in c.lam.get_paginator("list_layer_versions")
                   .paginate(LayerName=layer_name) for v in page.get("LayerVersions", [])]
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    if not numbers:
        return None
    return _clean_or_none(c.lam.get_layer_version, LayerName=layer_name,
                          VersionNumber=max(numbers))


def layer_version_exists(c: Clients, arn: str, *, who: str) -> bool:
    """Whether the layer version ``arn`` is still there (GetLayerVersion, which takes
    the layer's ARN as its name)."""
    layer, _, number = arn.rpartition(":")
    if not number.isdigit():
        return True  # not a version ARN: Lambda will say what is wrong with it
    with translating(who, c=c):
        return _clean_or_none(c.lam.get_layer_version, LayerName=layer,
                              VersionNumber=int(number)) is not None
