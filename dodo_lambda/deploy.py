"""Where deploys go: the target key an uptodate check can compute without AWS, and
the clients of a run (starting the embedded emulator when the project asks for it).

The deploy itself is planned in ``planner`` (remote state read once, a list of
steps as data), carried out by ``executor`` (exactly those steps) and written down
in ``records``.
"""

from __future__ import annotations

import os

from . import aws
from .context import RunContext
from .digest import value_digest

_RUN = os.urandom(8).hex()  # an emulator lives for one run: each run is a new target


def clients(ctx: RunContext, who: str) -> aws.Clients:
    if ctx.emulator:
        from . import local

        local.ensure_started(ctx)
    return ctx.clients(who)


def target_key(ctx: RunContext) -> str:
    """Where deploys go, without importing boto3: the override and the standard
    chain's settings (profile, region, endpoint), never the credentials, so rotating
    keys reruns nothing. A changed key reruns deploy; its action asks STS for the
    account and finds out whether the target really changed (see records)."""
    if ctx.emulator:
        return f"emulator-{_RUN}"
    target = ctx.target
    env = {k: os.environ.get(k, "") for k in (
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL_S3")}
    return value_digest({"target": [target.profile, target.region, target.endpoint], **env})
