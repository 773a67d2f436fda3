"""dodo_lambda.lambdas against a moto server: real HTTP, real botocore, no mocks of our code."""

from __future__ import annotations

import pytest
from awsfixtures import (
    CODE_PATH,
    CONFIG_PATH,
    WHO,
    AwsEnv,
    MakeZip,
    fake_answer,
    fake_function_state,
    inject_fault,
    sha,
)
from awsfixtures import create_function as create

from dodo_lambda import Layer, aws, lambdas, releases, remote
from dodo_lambda import s3 as s3mod
from dodo_lambda.errors import DodoLambdaError

pytestmark = pytest.mark.usefixtures("fast_aws")


# ------------------------------------------------------------------ Lambda: create and update


def test_create_function_and_get(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    zip_path = make_zip("orders")
    _, b64 = sha(zip_path)
    c = aws.connect()
    assert lambdas.get_function(c, "orders") is None
    config = lambdas.create_function(
        c, "orders", who=WHO, role=aws_env.role_arn(), runtime="nodejs24.x",
        handler="index.handler", architecture="arm64", zip_path=zip_path,
        settings={"MemorySize": 256, "Timeout": 10})
    assert config["State"] == "Active"
    got = lambdas.get_function(c, "orders")
    assert got is not None
    assert got["CodeSha256"] == b64
    assert got["CodeSize"] == zip_path.stat().st_size
    assert got["Architectures"] == ["arm64"]
    assert (got["MemorySize"], got["Timeout"]) == (256, 10)
    assert "ResponseMetadata" not in got


def test_create_function_with_a_role_name(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    aws_env.role_arn("runner")
    config = lambdas.create_function(
        aws.connect(), "orders", who=WHO, role="runner", runtime="nodejs24.x",
        handler="index.handler", architecture="x86_64", zip_path=make_zip("orders"),
    )
    assert config["Role"] == f"arn:aws:iam::{aws_env.account}:role/runner"


def test_create_function_without_role(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: the function does not exist; give role="):
        lambdas.create_function(aws.connect(), "orders", who=WHO, role="", runtime="nodejs24.x",
                            handler="index.handler", architecture="x86_64",
                            zip_path=make_zip("orders"))
    assert aws_env.requests(mark) == []


def test_create_function_with_unknown_role(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: .*role.* fix role="):
        lambdas.create_function(
            aws.connect(), "orders", who=WHO,
            role=f"arn:aws:iam::{aws_env.account}:role/missing", runtime="nodejs24.x",
            handler="index.handler", architecture="x86_64", zip_path=make_zip("orders"),
        )


def test_update_code_from_zip_and_from_s3(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    v2 = make_zip("v2")
    mark = aws_env.mark()
    config = lambdas.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2)
    assert config["CodeSha256"] == sha(v2)[1]
    assert config["LastUpdateStatus"] == "Successful"
    assert aws_env.count("PUT", CODE_PATH, since=mark) == 1

    v3 = make_zip("v3")
    bucket = aws_env.bucket("artifacts")
    key = s3mod.s3_key("", "orders", sha(v3)[0])
    s3mod.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=v3, sha256_hex=sha(v3)[0])
    sent: list[dict] = []  # moto ignores Architectures on update: check what was asked

    def capture(params: dict, **_: object) -> None:
        sent.append(params)

    c.lam.meta.events.register("provide-client-params.lambda.UpdateFunctionCode", capture)
    try:
        config = lambdas.update_code(c, "orders", who=WHO, architecture="arm64", s3=(bucket, key))
    finally:
        c.lam.meta.events.unregister("provide-client-params.lambda.UpdateFunctionCode", capture)
    assert config["CodeSha256"] == sha(v3)[1]
    assert sent == [{"FunctionName": "orders", "Architectures": ["arm64"],
                     "S3Bucket": bucket, "S3Key": key}]


def test_update_code_of_missing_function(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: the Lambda function does not exist .*deploy again"):
        lambdas.update_code(aws.connect(), "orders", who=WHO, architecture="x86_64",
                        zip_path=make_zip("v1"))
    assert [r.status for r in aws_env.requests(mark) if r.method == "PUT"] == [404]


def test_direct_upload_limit(aws_env: AwsEnv, make_zip: MakeZip,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambdas, "DIRECT_UPLOAD_LIMIT", 10)
    with pytest.raises(DodoLambdaError, match="over Lambda's 50 MiB limit .* set bucket="):
        lambdas.update_code(aws.connect(), "orders", who=WHO, architecture="x86_64",
                        zip_path=make_zip("v1"))


def test_update_configuration(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    config = lambdas.update_configuration(
        aws.connect(), "orders", who=WHO,
        changes={"MemorySize": 512, "Environment": {"Variables": {"A": "1"}}},
    )
    assert config["MemorySize"] == 512
    assert config["Environment"] == {"Variables": {"A": "1"}}


def test_list_functions_costs_one_request(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    zip_path = make_zip("v1")
    for i in range(5):
        create(aws_env, zip_path, name=f"fn{i}")
    c = aws.connect()
    mark = aws_env.mark()
    listed = lambdas.list_functions(c)
    assert sorted(listed) == [f"fn{i}" for i in range(5)]
    assert listed["fn3"]["CodeSha256"] == sha(zip_path)[1]
    for _ in range(3):
        assert len(lambdas.list_functions(c)) == 5
    assert len(aws_env.requests(mark)) == 1
    assert aws_env.count("GET", r"^/2015-03-31/functions/?(\?|$)", since=mark) == 1

    # An update refreshes the listed entry; invalidate() forces a new listing.
    lambdas.update_code(c, "fn1", who="function 'fn1'", architecture="x86_64",
                    zip_path=make_zip("v2"))
    assert lambdas.list_functions(c)["fn1"]["CodeSha256"] == sha(make_zip("v2"))[1]
    lambdas.invalidate(c)
    mark = aws_env.mark()
    lambdas.list_functions(c)
    assert aws_env.count("GET", r"^/2015-03-31/functions/?(\?|$)", since=mark) == 1


# ------------------------------------------------------------------ Lambda: faults and waits


def test_conflict_is_retried_after_waiting(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    v2 = make_zip("v2")
    with inject_fault(c.lam, "UpdateFunctionCode", status=409,
                      code="ResourceConflictException", times=2) as fault:
        config = lambdas.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2)
    assert (fault.calls, fault.injected) == (3, 2)
    assert config["CodeSha256"] == sha(v2)[1]


def test_conflict_gives_up(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    with inject_fault(c.lam, "UpdateFunctionConfiguration", status=409,
                      code="ResourceConflictException", times=99) as fault, \
            pytest.raises(DodoLambdaError, match=f"^{WHO}: .*update in progress.* 4 attempts"):
        lambdas.retry_conflicts(
            lambda: c.lam.update_function_configuration(FunctionName="orders", MemorySize=256),
            c=c, name="orders", who=WHO, attempts=4)
    assert fault.calls == 4


def test_throttling_is_retried_by_botocore(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    with inject_fault(c.lam, "GetFunctionConfiguration", status=429,
                      code="TooManyRequestsException", times=2) as fault:
        assert lambdas.get_function(c, "orders") is not None
    assert fault.calls == 3
    with inject_fault(c.lam, "UpdateFunctionCode", status=500, code="ServiceException") as fault:
        lambdas.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=make_zip("v2"))
    assert fault.calls == 2


def test_throttling_without_end(aws_env: AwsEnv) -> None:
    c = aws.connect()
    with inject_fault(c.lam, "GetFunctionConfiguration", status=429,
                      code="TooManyRequestsException", times=99) as fault, \
            pytest.raises(DodoLambdaError, match=f"^{WHO}: AWS kept throttling"):
        lambdas.get_function(c, "orders", who=WHO)
    assert fault.calls == aws.CALLS.attempts == 3  # total_max_attempts: bounded in time


def test_in_progress_is_waited_out(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    v2 = make_zip("v2")
    before = lambdas.get_function(c, "orders")
    assert before is not None
    mark = aws_env.mark()
    # busy before (as last read) and after the update (as Lambda answers it): both waited out
    with fake_answer(c.lam, "UpdateFunctionCode", LastUpdateStatus="InProgress"), \
            fake_function_state(c.lam, times=3, LastUpdateStatus="InProgress") as state:
        config = lambdas.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2,
                                     config={**before, "LastUpdateStatus": "InProgress"})
    assert state.injected == 3
    assert config["LastUpdateStatus"] == "Successful"
    assert config["CodeSha256"] == sha(v2)[1]
    assert aws_env.count("PUT", CODE_PATH, since=mark) == 1
    # botocore's waiter asks GetFunction until it says Successful (4 times before the
    # update, once after), then one read of the result each time
    assert aws_env.count("GET", r"^/2015-03-31/functions/orders$", since=mark) == 5
    assert aws_env.count("GET", CONFIG_PATH, since=mark) == 2


def test_failed_update_reports_the_reason(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    with fake_answer(c.lam, "UpdateFunctionConfiguration", LastUpdateStatus="InProgress"), \
            fake_function_state(c.lam, times=99, LastUpdateStatus="Failed",
                                LastUpdateStatusReason="Lambda was unable to unzip the file",
                                LastUpdateStatusReasonCode="InvalidZipFileException"), \
            pytest.raises(DodoLambdaError) as caught:
        lambdas.update_configuration(c, "orders", who=WHO, changes={"MemorySize": 256})
    assert str(caught.value) == (
        f"{WHO}: the update ended Failed: Lambda was unable to unzip the file"
        " (InvalidZipFileException); fix the cause and run again"
    )
    assert caught.value.__cause__ is not None  # the waiter's error is kept


def _create(c: object, aws_env: AwsEnv, zip_path: object) -> dict:
    return lambdas.create_function(
        c, "orders", who=WHO, role=aws_env.role_arn(), runtime="nodejs24.x",  # type: ignore
        handler="index.handler", architecture="x86_64", zip_path=zip_path)  # type: ignore


def test_pending_is_waited_out_after_create(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.connect()
    with fake_answer(c.lam, "CreateFunction", State="Pending"), \
            fake_function_state(c.lam, times=2, State="Pending") as state:
        config = _create(c, aws_env, make_zip("v1"))
    assert state.injected == 2
    assert config["State"] == "Active"


def test_update_waits_out_a_pending_function(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    with fake_function_state(c.lam, times=3, State="Pending") as state:
        config = lambdas.wait_ready(c, "orders", who=WHO)
    assert state.injected == 3
    assert config["State"] == "Active"


def test_failed_state_reports_the_reason(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.connect()
    with fake_answer(c.lam, "CreateFunction", State="Pending"), \
            fake_function_state(c.lam, times=99, State="Failed",
                                StateReason="The role is invalid"), \
            pytest.raises(DodoLambdaError, match=f"^{WHO}: activation ended Failed: The role"):
        _create(c, aws_env, make_zip("v1"))


def test_waiting_gives_up(aws_env: AwsEnv, make_zip: MakeZip,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    create(aws_env, make_zip("v1"))
    monkeypatch.setattr(lambdas, "WAIT_TIMEOUT", 3.0)
    c = aws.connect()
    with fake_function_state(c.lam, times=99, LastUpdateStatus="InProgress") as state, \
            pytest.raises(DodoLambdaError, match="still InProgress after 3 s waiting for the up"):
        lambdas.wait_ready(c, "orders", who=WHO)
    assert state.calls == 4  # one read, then the waiter's 3 attempts 1 s apart (scaled to 0)


# ------------------------------------------------------------------ versions, aliases, layers


def test_publish_version_and_alias(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.connect()
    first = create(aws_env, make_zip("v1"))
    v1 = releases.publish_version(c, "orders", who=WHO, code_sha256=first["CodeSha256"])
    mark = aws_env.mark()
    alias = releases.point_alias(c, "orders", "live", v1["Version"], who=WHO)
    assert alias["FunctionVersion"] == v1["Version"]
    assert aws_env.count("POST", r"^/2015-03-31/functions/orders/aliases$", since=mark) == 1

    second = lambdas.update_code(c, "orders", who=WHO, architecture="x86_64",
                             zip_path=make_zip("v2"))
    v2 = releases.publish_version(c, "orders", who=WHO, code_sha256=second["CodeSha256"])
    assert v2["Version"] != v1["Version"]
    assert v2["CodeSha256"] == second["CodeSha256"]
    mark = aws_env.mark()
    releases.point_alias(c, "orders", "live", v2["Version"], who=WHO)
    assert aws_env.count("PUT", r"^/2015-03-31/functions/orders/aliases/live$", since=mark) == 1
    assert aws_env.count("POST", r"/aliases$", since=mark) == 0
    got = aws_env.boto("lambda").get_alias(FunctionName="orders", Name="live")
    assert got["FunctionVersion"] == v2["Version"]


def test_versions_aliases_and_deleting_a_version(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.connect()
    first = create(aws_env, make_zip("v1"))
    assert remote.list_versions(c, "orders", who=WHO) == []  # nothing published yet
    v1 = releases.publish_version(c, "orders", who=WHO, code_sha256=first["CodeSha256"])
    second = lambdas.update_code(c, "orders", who=WHO, architecture="x86_64",
                                 zip_path=make_zip("v2"))
    v2 = releases.publish_version(c, "orders", who=WHO, code_sha256=second["CodeSha256"])
    listed = remote.list_versions(c, "orders", who=WHO)
    assert [v["Version"] for v in listed] == [v1["Version"], v2["Version"]]
    assert [v["CodeSha256"] for v in listed] == [first["CodeSha256"], second["CodeSha256"]]

    mark = aws_env.mark()  # a known alias: exactly one request, create or update
    releases.point_alias(c, "orders", "live", v1["Version"], who=WHO, exists=False)
    releases.point_alias(c, "orders", "live", v2["Version"], who=WHO, exists=True)
    assert [(r.method, r.path) for r in aws_env.requests(mark)] == [
        ("POST", "/2015-03-31/functions/orders/aliases"),
        ("PUT", "/2015-03-31/functions/orders/aliases/live")]
    aliases = remote.list_aliases(c, "orders", who=WHO)
    assert aliases["live"]["FunctionVersion"] == v2["Version"]
    assert remote.aliased(aliases) == {v2["Version"]}

    releases.delete_version(c, "orders", v1["Version"], who=WHO)
    assert [v["Version"] for v in remote.list_versions(c, "orders", who=WHO)] == [v2["Version"]]
    with pytest.raises(ValueError):
        releases.delete_version(c, "orders", "$LATEST", who=WHO)


def test_alias_of_missing_function(aws_env: AwsEnv) -> None:
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: the Lambda function does not exist"):
        releases.point_alias(aws.connect(), "orders", "live", "1", who=WHO)


def test_publish_layer_and_latest(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.connect()
    who = "layer 'shared'"
    layer = Layer("shared", source=".")
    assert remote.read_layer(c, layer).latest is None
    one = make_zip("one", {"nodejs/node_modules/a/index.js": "module.exports = 1;\n"})
    two = make_zip("two", {"nodejs/node_modules/a/index.js": "module.exports = 2;\n"})
    first = releases.publish_layer(c, "shared", who=who, zip_path=one, runtimes=["nodejs24.x"],
                              architectures=["x86_64"], description="shared libs")
    assert first["Version"] == 1
    bucket = aws_env.bucket("artifacts")
    key = s3mod.s3_key("layers/", "shared", sha(two)[0])
    s3mod.upload_zip(c, who=who, bucket=bucket, key=key, zip_path=two, sha256_hex=sha(two)[0])
    second = releases.publish_layer(c, "shared", who=who, s3=(bucket, key))
    assert second["Version"] == 2

    state = remote.read_layer(c, layer)
    assert state.latest is not None
    assert state.latest["Version"] == 2 and [v["Version"] for v in state.versions] == [2, 1]
    assert state.latest["LayerVersionArn"] == second["LayerVersionArn"]
    assert state.latest_sha == sha(two)[1]
    releases.delete_layer_version(c, "shared", 1, who=who)
    assert [v["Version"] for v in remote.read_layer(c, layer).versions] == [2]
