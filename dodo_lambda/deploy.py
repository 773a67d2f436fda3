"""Where deploys go: the target key an uptodate check can compute without AWS, and
the clients of a run (starting the project's emulator when it asks for it).

The deploy itself is planned in ``planner`` (remote state read once, a list of
steps as data), carried out by ``executor`` (exactly those steps) and written down
in ``records``.
"""

from __future__ import annotations

import os

from . import aws
from .context import RunContext
from .digest import value_digest


def clients(ctx: RunContext, who: str) -> aws.Clients:
    if ctx.emulator:  # the project's own moto server, started if needed
        from . import emulator

        # asked each time (a status request): a server that stopped meanwhile (idle, or
        # `doit emulator-stop` during a watch) is started again, with new clients
        server = emulator.ensure_running(ctx.build_dir)
        return ctx.once(("emulator-clients", server.url, server.id), lambda: emulator.clients(
            server, who, loader=ctx.once(("botocore-loader",), aws.data_loader)))
    return ctx.clients(who)


def target_key(ctx: RunContext) -> str:
    """Where deploys go, without importing boto3: the override and the standard
    chain's settings (profile, region, endpoint), never the credentials, so rotating
    keys reruns nothing. A changed key reruns deploy; its action asks STS for the
    account and finds out whether the target really changed (see records)."""
    if ctx.emulator:  # which server: a new one is a new target
        from . import emulator

        return emulator.target_key(ctx.build_dir)
    target = ctx.target
    env = {k: os.environ.get(k, "") for k in (
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL_S3")}
    return value_digest({"target": [target.profile, target.region, target.endpoint], **env})
