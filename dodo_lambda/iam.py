"""Execution roles: the IAM role a function runs as, made once when ``role=`` is not given.

A function that does not exist yet and has no ``role=`` runs as a role dodo_lambda
creates for it (the planner's ``create_role`` step): ``dodo-lambda-<function>``, or
one role for the whole project (``lambda_tasks(..., role_name=...)``). It trusts
lambda.amazonaws.com only, has the AWS-managed AWSLambdaBasicExecutionRole attached
(the function may write its logs to CloudWatch Logs), the VPC and X-Ray ones only
when ``Function(role_policies=...)`` asks for them, and is tagged
``created-by: dodo_lambda``. A role of that name that already exists is used as it is;
a function that exists keeps the role it has (no IAM request at all).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from .aws import _ACCESS_CODES, Clients, _error_code, translating
from .errors import DodoLambdaError, Refused
from .lambdas import waiter_config
from .rules import MANAGED

PREFIX = "dodo-lambda-"
MAX_NAME = 64  # IAM's limit on a role name (CreateRole, RoleName)
TAG = {"Key": "created-by", "Value": "dodo_lambda"}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}
ROLE_WAIT = 20  # seconds: GetRole once a second until IAM shows the new role
# IAM's answer names the action: "... is not authorized to perform: iam:CreateRole on ..."
_ACTION_RE = re.compile(r"perform: ([a-z0-9-]+:[A-Za-z]+)")

log = logging.getLogger("dodo_lambda")


def role_name(function: str, project_role: str | None = None) -> str:
    """The role a function without ``role=`` runs as: the project's, else
    ``dodo-lambda-<function>`` (a long name is cut and given a digest of the whole,
    so two long names never share a role by accident)."""
    if project_role:
        return project_role
    name = PREFIX + function
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(function.encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME - len(digest) - 1]}-{digest}"


def policy_arns(words: Iterable[str], partition: str = "aws") -> list[str]:
    """The ARNs to attach: the basic execution policy first, then ``words`` (each a word
    of MANAGED or an ARN), each once."""
    out: list[str] = []
    for word in ["basic", *words]:
        arn = f"arn:{partition}:iam::aws:policy/{MANAGED[word]}" if word in MANAGED else word
        if arn not in out:
            out.append(arn)
    return out


def short(arn: str) -> str:
    """A policy as plan names it: the name of an AWS-managed one, else its ARN."""
    return arn.rpartition("/")[2] if ":iam::aws:policy/" in arn else arn


def partition(c: Clients) -> str:
    return str(c.session.get_partition_for_region(c.region))


def read_role(c: Clients, name: str, *, who: str) -> dict[str, Any] | None:
    """The role (GetRole), or None when there is none of that name. A caller not allowed
    to ask is a refusal: deploy could not make the role either."""
    from botocore.exceptions import ClientError

    with translating(who, c=c):
        try:
            return dict(c.iam.get_role(RoleName=name)["Role"])
        except ClientError as exc:
            if _error_code(exc) == "NoSuchEntity":
                return None
            if _error_code(exc) in _ACCESS_CODES:
                raise Refused(denied(exc, who, f"look up its execution role {name}")) from exc
            raise


def create_role(c: Clients, name: str, *, who: str, policies: list[str], function: str) -> str:
    """Create the role (or take the one a concurrent deploy just made), attach the
    policies, wait until IAM shows it; its ARN. Lambda may still refuse to assume it
    for a few seconds: lambdas.create_function waits that out."""
    from botocore.exceptions import ClientError

    doing = f"create its execution role {name}"
    with translating(who, c=c):  # the waiter's WaiterError too
        try:
            try:
                arn = c.iam.create_role(
                    RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST), Tags=[TAG],
                    Description=f"Execution role of Lambda function {function}, created by"
                                " dodo_lambda")["Role"]["Arn"]
            except ClientError as exc:
                if _error_code(exc) != "EntityAlreadyExists":
                    raise
                arn = c.iam.get_role(RoleName=name)["Role"]["Arn"]  # made meanwhile: same name
            for policy in policies:
                doing = f"attach {short(policy)} to its execution role {name}"
                c.iam.attach_role_policy(RoleName=name, PolicyArn=policy)
            log.info("%s: role %s created; waiting until IAM shows it (at most %d s)", who,
                     name, ROLE_WAIT)
            waiter = c.iam.get_waiter("role_exists")
            doing = f"wait for its execution role {name}"
            waiter.wait(RoleName=name, WaiterConfig=waiter_config(1.0, ROLE_WAIT))
        except ClientError as exc:
            if _error_code(exc) in _ACCESS_CODES:
                raise DodoLambdaError(denied(exc, who, doing)) from exc
            raise
    return str(arn)


def denied(exc: Any, who: str, doing: str) -> str:
    """One line: the permission the caller lacks, and the role= way around it."""
    message = str(exc.response.get("Error", {}).get("Message", ""))
    found = _ACTION_RE.search(message)
    action = found.group(1) if found else f"iam:{exc.operation_name}"
    return (f"{who}: cannot {doing}: the AWS credentials are not allowed {action}"
            f" ({_error_code(exc)}); give role= (the ARN of an existing role Lambda may"
            f" assume), or allow {action}")
