"""Execution roles: a function created without role= runs as a role dodo_lambda makes
once (trust policy, AWS-managed policies, tag), reused afterwards; a caller who may not
create roles gets one line. Against a moto server of this module's own that loads
AWS's managed policies (loading them costs moto ~1.5 s per reset, which the rest of
the suite does not pay). The missing-permission case is in test_newcomer.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from awsfixtures import AwsEnv, MotoServer
from helpers import Lab

from dodo_lambda import Function, executor, planner
from dodo_lambda.context import RunContext

pytestmark = pytest.mark.usefixtures("fast_aws")

BASIC = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
VPC = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
XRAY = "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """Overrides the session's server for this module: one with AWS's managed policies."""
    server = MotoServer(MOTO_IAM_LOAD_MANAGED_POLICIES="true")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every AWS call made in this process, as (service, operation): botocore's own
    entry point, observed and passed through."""
    from botocore.client import BaseClient

    seen: list[tuple[str, str]] = []
    original = BaseClient._make_api_call

    def spy(self, operation_name: str, api_params: dict) -> dict:
        seen.append((self.meta.service_model.service_name, operation_name))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    return seen


def _lab(tmp_path: Path, aws_env: AwsEnv) -> Lab:
    return Lab(tmp_path, aws_env)


def _fn(lab: Lab, name: str, code: str = "v1", **settings) -> Function:
    """A function of the lab without role= (its source: one index.js returning ``code``)."""
    src = lab.root / name
    src.mkdir(exist_ok=True)
    (src / "index.js").write_text(f"exports.handler = async () => '{code}';\n")
    return Function(name, source=str(src), handler="index.handler", **settings)


def _deploy(lab: Lab, fn: Function, *, role_name: str | None = None,
            items: tuple[Function, ...] = ()) -> executor.Outcome:
    ctx = lab.run(*(items or (fn,)))
    ctx.role_name = role_name
    return executor.deploy_function(fn, ctx)


def _role(aws_env: AwsEnv, name: str) -> tuple[dict, list[str], dict[str, str]]:
    iam = aws_env.boto("iam")
    role = iam.get_role(RoleName=name)["Role"]
    attached = [p["PolicyArn"] for p in
                iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]]
    tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name)["Tags"]}
    return role, attached, tags


def test_a_function_without_role_gets_one_made_once(tmp_path: Path, aws_env: AwsEnv,
                                                    calls: list) -> None:
    lab = _lab(tmp_path, aws_env)
    fn = _fn(lab, "orders")
    (plan,) = planner.plan_items([fn], lab.run(fn), lab.run(fn).clients())
    assert [s.kind for s in plan.steps] == ["create_role", "create"]
    assert planner.describe(plan)[1:] == [
        "  create role: dodo-lambda-orders: trusted by lambda.amazonaws.com, with"
        " AWSLambdaBasicExecutionRole; tagged created-by: dodo_lambda",
        "  create: does not exist in us-east-1; runs as role dodo-lambda-orders"]

    done = _deploy(lab, fn)
    assert [s.kind for s in done.executed] == ["create_role", "create"]
    role, attached, tags = _role(aws_env, "dodo-lambda-orders")
    statement = role["AssumeRolePolicyDocument"]
    if isinstance(statement, str):
        statement = json.loads(unquote(statement))
    assert statement["Statement"] == [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                       "Principal": {"Service": "lambda.amazonaws.com"}}]
    assert attached == [BASIC]
    assert tags == {"created-by": "dodo_lambda"}
    deployed = aws_env.boto("lambda").get_function_configuration(FunctionName="orders")
    assert deployed["Role"] == role["Arn"]

    # a no-op only asks STS which account this is (doit's uptodate check, which runs
    # first, not even that); a code change updates the code and asks IAM nothing
    calls.clear()
    assert _deploy(lab, fn).executed == ()
    assert calls == [("sts", "GetCallerIdentity")]
    fn = _fn(lab, "orders", code="v2")
    assert [s.kind for s in _deploy(lab, fn).executed] == ["update_code"]
    assert not [c for c in calls if c[0] == "iam"]

    # the function deleted by hand: created again, as the role it had (not made again)
    aws_env.boto("lambda").delete_function(FunctionName="orders")
    fn = _fn(lab, "orders", code="v3")
    (plan,) = planner.plan_items([fn], lab.run(fn), lab.run(fn).clients())
    assert plan.notes == ["role dodo-lambda-orders exists: used as it is"]
    calls.clear()
    assert [s.kind for s in _deploy(lab, fn).executed] == ["create"]
    assert ("iam", "CreateRole") not in calls and ("iam", "GetRole") in calls
    assert aws_env.boto("lambda").get_function_configuration(
        FunctionName="orders")["Role"] == role["Arn"]


def test_a_project_role_is_shared_with_the_policies_asked_for(
        tmp_path: Path, aws_env: AwsEnv, calls: list) -> None:
    lab = _lab(tmp_path, aws_env)
    orders = _fn(lab, "orders", role_policies=["vpc"])
    billing = _fn(lab, "billing", role_policies=["xray"])
    mine = lab.function("own")  # role= given: used as it is
    both = (orders, billing, mine)
    first = _deploy(lab, orders, role_name="shop-lambda", items=both)
    assert [s.kind for s in first.executed] == ["create_role", "create"]
    _, attached, tags = _role(aws_env, "shop-lambda")
    assert attached == [BASIC, VPC, XRAY] and tags == {"created-by": "dodo_lambda"}
    calls.clear()
    assert [s.kind for s in _deploy(lab, billing, role_name="shop-lambda",
                                    items=both).executed] == ["create"]
    assert ("iam", "CreateRole") not in calls
    calls.clear()
    _deploy(lab, mine, role_name="shop-lambda", items=both)
    assert not [c for c in calls if c[0] == "iam"]
    lam = aws_env.boto("lambda")
    roles = {n: lam.get_function_configuration(FunctionName=n)["Role"] for n in
             ("orders", "billing", "own")}
    assert roles["orders"] == roles["billing"] == f"arn:aws:iam::{aws_env.account}:role/shop-lambda"
    assert roles["own"] == mine.role


def test_role_settings_are_checked(tmp_path: Path) -> None:
    (tmp_path / "index.js").write_text("exports.handler = async () => 1;\n")

    def problem(**settings) -> str | None:
        return Function("orders", source=str(tmp_path), handler="index.handler",
                        **settings).problem

    assert problem(role_policies=["vpc", "xray", "arn:aws:iam::123456789012:policy/reads"]) is None
    assert problem(role_policies=["s3"]) == (
        "function 'orders': role_policies: 's3' is neither 'vpc', 'xray' nor an IAM policy ARN"
        " (arn:aws:iam::ACCOUNT:policy/NAME)")
    assert problem(role="runner", role_policies=["vpc"]) == (
        "function 'orders': role_policies= is for the role dodo_lambda creates when role= is"
        " not given; attach them to role runner yourself, or drop role=")
    from dodo_lambda.iam import role_name

    long = "f" * 64
    assert role_name("orders") == "dodo-lambda-orders"
    assert len(role_name(long)) == 64 and role_name(long) != role_name(long[:-1] + "g")
    assert role_name("orders", "shop") == "shop"
    assert RunContext(tmp_path).role_name is None
