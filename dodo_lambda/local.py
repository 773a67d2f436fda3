"""The embedded local AWS emulator (moto server) for trying dodo_lambda without
an AWS account. Only used when a project asks for it (``lambda_tasks(...,
emulator=True)``): nothing ever falls back to it on its own."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from .context import RunContext
from .errors import DodoLambdaError

ACCOUNT = "123456789012"  # moto's account
ROLE_NAME = "dodo-lambda-local"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
REGION = "us-east-1"


def _executable() -> str:
    beside = Path(sys.executable).with_name("moto_server")
    found = str(beside) if beside.is_file() else shutil.which("moto_server")
    if not found:
        raise DodoLambdaError(
            "the local AWS emulator needs moto's server; install it in the environment that"
            " runs doit with `pip install 'moto[server]>=5'` (or install dodo_lambda with its"
            " local extra, `pip install -e '.[local]'` in its checkout), or drop"
            " emulator=True to deploy to AWS"
        )
    return found


def ensure_started(ctx: RunContext) -> str:
    """Start the emulator once per run, point this process's AWS settings at
    it (dummy credentials, no config files) and return its URL."""
    return ctx.once(("emulator",), _start)


def _start() -> str:
    # AWS-managed policies (AWSLambdaBasicExecutionRole, for the execution roles
    # dodo_lambda creates) exist in moto only when it is asked to load them
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    proc = subprocess.Popen([_executable(), "-H", "127.0.0.1", "-p", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    atexit.register(proc.terminate)
    url = None
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            url = found.group(1)
            break
    if url is None:
        raise DodoLambdaError(f"the local AWS emulator did not start (exit {proc.wait()});"
                              " run `moto_server -p 0` to see why")
    # keep draining its request log so it never blocks on a full pipe
    threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(
        AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local",
        AWS_SESSION_TOKEN="local", AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    banner = f"LOCAL EMULATOR: deploying to moto at {url}, NOT to AWS (emulator=True)"
    print(f"{'=' * len(banner)}\n{banner}\n{'=' * len(banner)}", file=sys.stderr)
    _create_role()
    return url


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def _create_role() -> None:
    import boto3

    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    boto3.client("iam").create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
