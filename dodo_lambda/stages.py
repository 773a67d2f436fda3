"""Stages: one definition of the functions and layers, deployed to several targets.

A ``Stage`` names a target (region, profile, endpoint) and what changes there: a
suffix on every function and layer name, environment variables merged over each
function's, the S3 bucket for code. The build does not depend on the stage: one
zip per function serves every stage. What a stage deploys is a *staged copy* of
each item (``staged``): the same package (``build_name``), deployed under the
stage's name, with the stage's settings; its records live under the stage
(``Layout.stage``).

Like ``Function``, a ``Stage`` never raises when it is made: what is wrong with it
is kept and reported by the tasks as one line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import rules
from .config import Function, Layer, label

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SUFFIX_RE = re.compile(r"[A-Za-z0-9_-]*")  # what function and layer names allow


@dataclass(frozen=True)
class Stage:
    """A deploy target of the project: ``doit deploy stage=<name>``.

    ``suffix`` is added to every function and layer name (``orders`` becomes
    ``orders-prod``; none by default); ``region``, ``profile`` and ``endpoint``
    override lambda_tasks' (and boto3's chain); ``environment`` is merged over each
    function's own (the stage's value wins); ``bucket`` replaces the bucket of every
    function and layer that has one (Lambda reads code from a bucket in its own
    region)."""

    name: str
    suffix: str = ""
    region: str | None = None
    profile: str | None = None
    endpoint: str | None = None
    environment: Mapping[str, str] | None = field(default=None, repr=False)
    bucket: str | None = None
    _problems: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            problems.append(f"Stage name {self.name!r} must be 1-64 letters, digits, '-' or '_',"
                            " starting with a letter or digit (it is typed as `doit deploy"
                            " stage=NAME` and names a folder of records)")
        who = f"stage {self.name!r}"
        if not isinstance(self.suffix, str) or not SUFFIX_RE.fullmatch(self.suffix):
            problems.append(f"{who}: suffix={self.suffix!r} must hold only letters, digits,"
                            " '-' and '_' (it is added to function and layer names)")
        for key in ("region", "profile", "endpoint"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{who}: {key}={value!r} must be a non-empty string or None")
        env = rules.environment_problem(self.environment)
        if env:
            problems.append(f"{who}: {env}")
        bucket = rules.bucket_problem(self.bucket)
        if bucket:
            problems.append(f"{who}: {bucket}")
        object.__setattr__(self, "_problems", tuple(problems))

    @property
    def problem(self) -> str | None:
        return self._problems[0] if self._problems else None


def problem(stages: Any) -> str | None:
    """What is wrong with ``lambda_tasks(stages=...)`` as a whole, or None."""
    if isinstance(stages, (str, bytes, Stage, Mapping)) or not isinstance(stages, Iterable):
        return f"stages={stages!r} must be a list of Stage objects"
    stages = list(stages)
    if not stages:
        return "stages=[] names no stage; give at least one Stage, or leave stages= out"
    seen: dict[str, Stage] = {}
    places: dict[tuple[Any, ...], Stage] = {}
    for stage in stages:
        if not isinstance(stage, Stage):
            return f"stages= takes Stage objects, not {stage!r}"
        if stage.problem:
            return stage.problem
        if stage.name in seen:
            return f"two stages are named {stage.name!r}; stage names must be unique"
        seen[stage.name] = stage
        place = (stage.suffix, stage.region, stage.profile, stage.endpoint)
        if place in places:
            return (f"stages {places[place].name!r} and {stage.name!r} deploy the same names to"
                    " the same place; give one a suffix= (or another region=/profile=)")
        places[place] = stage
    return None


def choose(stages: Sequence[Stage], name: str | None) -> tuple[Stage | None, str | None]:
    """The stage ``doit ... stage=<name>`` asks for (the first one by default), or
    why there is none."""
    if name is None or name == "":
        return stages[0], None
    for stage in stages:
        if stage.name == name:
            return stage, None
    known = ", ".join(s.name for s in stages)
    return None, (f"stage={name} is not a stage of this project ({known}); choose one with"
                  f" `doit deploy stage={stages[0].name}`")


def staged(item: Function | Layer, stage: Stage | None) -> Function | Layer:
    """What ``stage`` deploys of ``item``: its name plus the suffix, the stage's bucket,
    the function's environment merged with the stage's; built as ``item`` is."""
    if stage is None:
        return item
    changes: dict[str, Any] = {"name": f"{item.name}{stage.suffix}"}
    if stage.bucket and item.bucket:
        changes["bucket"] = stage.bucket
    if isinstance(item, Function):
        if stage.environment is not None:
            base = item.environment if isinstance(item.environment, Mapping) else {}
            changes["environment"] = {**base, **stage.environment}
        changes["layers"] = tuple(staged(x, stage) if isinstance(x, Layer) else x
                                  for x in item.layers)
    copy = dataclasses.replace(item, **changes)
    object.__setattr__(copy, "_build_name", item.build_name)
    if isinstance(item, Layer):
        object.__setattr__(copy, "_users_architecture", item._users_architecture)
    return copy


def staged_problem(item: Function | Layer, copy: Function | Layer, stage: Stage | None
                   ) -> str | None:
    """What is wrong with a stage's copy that is not wrong with the item itself (a
    name over Lambda's limit once suffixed, an environment over 4 KB once merged)."""
    if stage is None or copy is item:
        return None
    problem = copy.problem
    if not problem:
        return None
    return (f"{problem} (stage {stage.name!r}: {label(item)} deployed as {copy.name!r}"
            f"{' with the stage environment' if stage.environment else ''}); shorten the"
            " name or the suffix, or fix the stage's settings")
