"""Refusals that need the AWS side (moto): the runtime lifecycle where deploy
decides create or update, plan telling the truth about what deploy would
refuse, and IAM role waits that show progress and give up in time."""

from __future__ import annotations

import base64
import io
import logging
import os
import zipfile
from datetime import date
from pathlib import Path

import pytest
from awsfixtures import inject_fault
from projects import Project

from dodo_lambda import DodoLambdaError, Function, aws, build, executor, lambdas
from dodo_lambda.context import RunContext

NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."


def _function(tmp_path: Path, aws_env, **kw) -> Function:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "index.js").write_text("exports.handler = async () => 'v2';\n")
    return Function("orders", str(src), "index.handler", role=aws_env.role_arn(), **kw)


def _deployed_elsewhere(aws_env, runtime: str) -> None:
    """The function as another tool left it: other code, on ``runtime``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("index.js", "exports.handler = async () => 'v1';\n")
    aws_env.boto("lambda").create_function(
        FunctionName="orders", Runtime=runtime, Role=aws_env.role_arn(), Handler="index.handler",
        Code={"ZipFile": buffer.getvalue()})


def test_no_create_past_block_create_but_update_goes(tmp_path: Path, aws_env, fast_aws,
                                                     caplog) -> None:
    fn = _function(tmp_path, aws_env, runtime="nodejs22.x")
    build.package(fn, RunContext(tmp_path / "build"))
    # past block-create, before block-update
    ctx = RunContext(tmp_path / "build", today=date(2027, 6, 15))
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match=r"^function 'orders': Lambda refuses to create"
                                              r" functions on runtime nodejs22.x since 2027-06-01"):
        executor.deploy_function(fn, ctx)
    assert aws_env.count("POST", r"/functions$", mark) == 0  # nothing sent

    _deployed_elsewhere(aws_env, "nodejs22.x")
    with caplog.at_level(logging.WARNING, logger="dodo_lambda"):
        kinds = {s.kind for s in executor.deploy_function(fn, ctx).plan.steps}
    assert "update_code" in kinds and "create" not in kinds
    assert any("2027-07-01" in r.getMessage() for r in caplog.records)
    # past block-update, an update is refused (a deploy with nothing to do sends nothing)
    (Path(fn.source) / "index.js").write_text("exports.handler = async () => 'v3';\n")
    build.package(fn, RunContext(tmp_path / "build"))
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match="refuses to create or update.*2027-07-01"):
        executor.deploy_function(fn, RunContext(tmp_path / "build", today=date(2027, 7, 1)))
    # nothing written: only reads (STS GetCallerIdentity is a POST to /)
    assert [r for r in aws_env.requests(mark) if r.method not in ("GET", "HEAD")
            and r.path != "/"] == []


def test_moving_off_a_blocked_runtime_sets_the_runtime_first(tmp_path: Path, aws_env,
                                                             fast_aws) -> None:
    _deployed_elsewhere(aws_env, "nodejs20.x")  # moto takes it; Lambda blocks its updates now
    fn = _function(tmp_path, aws_env)
    build.package(fn, RunContext(tmp_path / "build"))
    mark = aws_env.mark()
    executor.deploy_function(fn, RunContext(tmp_path / "build", today=date(2026, 11, 30)))
    writes = [r.path for r in aws_env.requests(mark) if r.method == "PUT"]
    assert writes[0].endswith("/functions/orders/configuration"), writes
    assert "/2015-03-31/functions/orders/code" in writes
    config = aws_env.boto("lambda").get_function_configuration(FunctionName="orders")
    assert config["Runtime"] == "nodejs24.x"


def test_plan_exits_nonzero_and_says_why(project: Project, aws_env) -> None:
    plain = project.root / "plain"
    plain.mkdir()
    noise = base64.b64encode(os.urandom(3000)).decode()  # does not compress below 1000 bytes
    (plain / "index.js").write_text(f"exports.handler = async () => 'plain';\n// {noise}\n")
    role = aws_env.role_arn()
    bucket = aws_env.bucket()
    common = {"source": "plain", "handler": "index.handler", "role": role}
    project.configure([
        {"name": "fine", **common, "bucket": bucket},
        {"name": "toobig", **common},
        {"name": "nobucket", **common, "bucket": "no-such-bucket-here"},
        {"name": "old", **common, "runtime": "nodejs20.x"},
    ], options={"direct_upload_limit": 1000})
    mark = aws_env.mark()
    run = project.doit("plan")
    assert run.rc != 0, run.text
    assert "Traceback" not in run.text, run.text
    assert "function 'fine': create (new)" in run.out
    assert "deploy would refuse 3 item(s)" in run.text
    lines = run.text.splitlines()
    assert any("function 'toobig'" in ln and "bucket=" in ln for ln in lines), run.text
    assert any("function 'nobucket'" in ln and "'no-such-bucket-here' does not exist" in ln
               for ln in lines), run.text
    assert any("function 'old'" in ln and "2026-09-30" in ln for ln in lines), run.text
    assert [r for r in aws_env.requests(mark) if r.method not in ("GET", "HEAD")] == []


def test_role_waits_show_progress_and_give_up_in_time(tmp_path: Path, aws_env, make_zip,
                                                      fast_aws, caplog) -> None:
    # the schedule itself: under 45 s of pauses at the real pace
    assert sum(lambdas.ROLE_RETRY_STEPS) <= lambdas.ROLE_WAIT_LIMIT < 45
    c = aws.connect()
    role = aws_env.role_arn()
    with caplog.at_level(logging.INFO, logger="dodo_lambda"), \
            inject_fault(c.lam, "CreateFunction", status=400,
                         code="InvalidParameterValueException", message=NOT_ASSUMABLE,
                         times=100) as fault, pytest.raises(DodoLambdaError) as info:
        lambdas.create_function(c, "orders", who="function 'orders'", role=role,
                                runtime="nodejs24.x", handler="index.handler",
                                architecture="x86_64", zip_path=make_zip("orders"))
    message = str(info.value)
    assert message.startswith(f"function 'orders': Lambda rejected role {role} after")
    assert "lambda.amazonaws.com" in message
    assert fault.calls == len(lambdas.ROLE_RETRY_STEPS) + 1
    progress = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(progress) == len(lambdas.ROLE_RETRY_STEPS)
    assert all(role in line and "trying again" in line for line in progress)


def test_role_that_becomes_assumable_is_used(aws_env, make_zip, fast_aws, caplog) -> None:
    c = aws.connect()
    with caplog.at_level(logging.INFO, logger="dodo_lambda"), \
            inject_fault(c.lam, "CreateFunction", status=400,
                         code="InvalidParameterValueException", message=NOT_ASSUMABLE,
                         times=2) as fault:
        config = lambdas.create_function(
            c, "orders", who="function 'orders'", role=aws_env.role_arn(), runtime="nodejs24.x",
            handler="index.handler", architecture="x86_64", zip_path=make_zip("orders"))
    assert config["State"] == "Active" and fault.calls == 3
    assert len([r for r in caplog.records if "trying again" in r.getMessage()]) == 2
