"""dodo_lambda.aws against a moto server: real HTTP, real botocore, no mocks of our code."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from awsfixtures import AwsEnv, fake_function_state, inject_fault
from faultproxy import FaultProxy, function_state, lambda_error

from dodo_lambda import aws
from dodo_lambda.aws import AwsTarget
from dodo_lambda.errors import DodoLambdaError

MakeZip = Callable[..., Path]
WHO = "function 'orders'"
CODE_PATH = r"^/2015-03-31/functions/orders/code$"
CONFIG_PATH = r"^/2015-03-31/functions/orders/configuration$"


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pauses between polls and retries: moto answers at once anyway."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(aws, "POLL_DELAY", 0.0)
    monkeypatch.setattr(aws, "CONFLICT_BASE_DELAY", 0.0)
    # botocore's own retry backoff (up to a second or more per retry).
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)


def sha(path: Path) -> tuple[str, str]:
    """(hex, base64) SHA-256 of a file's bytes."""
    digest = hashlib.sha256(path.read_bytes()).digest()
    return digest.hex(), base64.b64encode(digest).decode()


def create(env: AwsEnv, zip_path: Path, name: str = "orders", **kw: object) -> dict:
    return aws.create_function(
        aws.clients(), name, who=f"function '{name}'", role=env.role_arn(),
        runtime="nodejs20.x", handler="index.handler",
        architecture=kw.pop("architecture", "x86_64"),  # type: ignore[arg-type]
        zip_path=zip_path, **kw,  # type: ignore[arg-type]
    )


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


# ------------------------------------------------------------------ clients


def test_importing_aws_does_not_import_boto3() -> None:
    code = (
        "import sys, dodo_lambda.aws\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_clients_memoised_and_target_id(
    aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = aws.clients()
    assert c is aws.clients(AwsTarget())
    assert (c.region, c.endpoint) == ("us-east-1", aws_env.url)
    first = aws.target_id()
    assert first == aws.target_id(AwsTarget())
    assert aws.target_id(AwsTarget(region="eu-west-1")) != first
    assert aws.target_id(AwsTarget(endpoint="http://127.0.0.1:1")) != first
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert "region=eu-central-1" in aws.target_id()  # a changed environment, a new target
    assert aws.clients() is not c


def test_no_credentials(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: no AWS credentials found; set AWS_PRO"):
        aws.clients(who=WHO)


def test_missing_profile(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(DodoLambdaError, match="AWS profile 'nope' not found"):
        aws.clients()
    with pytest.raises(DodoLambdaError, match="AWS profile 'other' not found"):
        aws.clients(AwsTarget(profile="other"))


def test_missing_region(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(DodoLambdaError, match="no AWS region configured; set AWS_REGION"):
        aws.clients()
    assert aws.clients(AwsTarget(region="eu-west-1")).region == "eu-west-1"


def test_unknown_or_invalid_region(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(DodoLambdaError, match="region 'us-east1' is unknown"):
        aws.clients(AwsTarget(region="us-east1"))
    with pytest.raises(DodoLambdaError, match="region 'us east!' is not a valid region name"):
        aws.clients(AwsTarget(region="us east!", endpoint=aws_env.url))
    # With an endpoint of one's own (moto, LocalStack) any region name goes.
    assert aws.clients(AwsTarget(region="xx-test-1", endpoint=aws_env.url)).region == "xx-test-1"


def test_unreachable_endpoint(aws_env: AwsEnv) -> None:
    c = aws.clients(AwsTarget(endpoint="http://127.0.0.1:1"))
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: cannot reach AWS at http://127.0.0.1:1"):
        aws.get_function(c, "orders", who=WHO)


# ------------------------------------------------------------------ error translation


def client_error(code: str, op: str = "UpdateFunctionCode", status: int = 400) -> Exception:
    from botocore.exceptions import ClientError

    response = {"Error": {"Code": code, "Message": "the\nmessage"},
                "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, op)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AccessDeniedException", "access denied for UpdateFunctionCode"),
        ("UnrecognizedClientException", "check the AWS credentials"),
        ("InvalidClientTokenId", "allow lambda:UpdateFunctionCode"),
        ("ExpiredToken", "credentials have expired"),
        ("ResourceNotFoundException", "give role= so dodo_lambda creates it"),
        ("TooManyRequestsException", "kept throttling"),
        ("ServiceException", "UpdateFunctionCode failed: ServiceException: the message"),
    ],
    ids=lambda value: value if " " not in value else "",
)
def test_aws_error_messages(code: str, expected: str) -> None:
    err = aws.aws_error(client_error(code), WHO)
    assert isinstance(err, DodoLambdaError)
    assert str(err).startswith(f"{WHO}: ")
    assert expected in str(err)
    assert "\n" not in str(err)


def test_aws_error_names_the_bucket_setting() -> None:
    err = aws.aws_error(client_error("NoSuchBucket", "PutObject", 404), WHO, bucket="artifacts")
    assert "S3 bucket 'artifacts' does not exist" in str(err)
    assert "bucket=" in str(err)


def test_translating_leaves_other_exceptions_alone() -> None:
    with pytest.raises(DodoLambdaError, match="access denied"), aws.translating(WHO):
        raise client_error("AccessDenied")
    with pytest.raises(KeyError), aws.translating(WHO):
        raise KeyError("not an AWS error")


# ------------------------------------------------------------------ S3


def test_s3_key_is_content_addressed() -> None:
    assert aws.s3_key("lambda/", "orders", "ab" * 32) == f"lambda/orders/{'ab' * 32}.zip"


def test_upload_once_then_skip(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("orders")
    hex_, b64 = sha(zip_path)
    key = aws.s3_key("p/", "orders", hex_)
    c = aws.clients()
    lines: list[str] = []
    mark = aws_env.mark()
    assert aws.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                          sha256_hex=hex_, progress=lines.append)
    assert aws_env.count("PUT", f"^/artifacts/{key}$", since=mark) == 1
    assert lines == []  # small uploads are quiet
    head = aws_env.boto("s3").head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {"sha256": hex_}

    mark = aws_env.mark()
    assert not aws.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                              sha256_hex=hex_)
    assert [r.method for r in aws_env.requests(mark)] == ["HEAD"]


def test_upload_replaces_other_bytes_at_the_key(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("orders")
    hex_, b64 = sha(zip_path)
    key = aws.s3_key("", "orders", hex_)
    aws_env.boto("s3").put_object(Bucket=bucket, Key=key, Body=b"x" * zip_path.stat().st_size,
                                  ChecksumAlgorithm="SHA256")
    assert aws.upload_zip(aws.clients(), who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                          sha256_hex=hex_)
    got = aws_env.boto("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert got == zip_path.read_bytes()


def test_s3_object_exists(aws_env: AwsEnv) -> None:
    bucket = aws_env.bucket("artifacts")
    aws_env.boto("s3").put_object(Bucket=bucket, Key="a.zip", Body=b"zip")
    c = aws.clients()
    assert aws.s3_object_exists(c, bucket, "a.zip", who=WHO)
    assert not aws.s3_object_exists(c, bucket, "b.zip", who=WHO)
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: S3 bucket 'nowhere' does not exist"):
        aws.s3_object_exists(c, "nowhere", "a.zip", who=WHO)


def test_upload_to_missing_bucket(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    zip_path = make_zip("orders")
    hex_, _ = sha(zip_path)
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError,
                       match=f"^{WHO}: S3 bucket 'nowhere' does not exist; .* fix bucket="):
        aws.upload_zip(aws.clients(), who=WHO, bucket="nowhere", key="k.zip",
                       zip_path=zip_path, sha256_hex=hex_)
    assert {r.method for r in aws_env.requests(mark)} == {"HEAD"}  # nothing sent


def test_single_put_progress(aws_env: AwsEnv, tmp_path: Path) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = random_file(tmp_path / "big.zip", 9 * aws.MiB)
    hex_, _ = sha(zip_path)
    lines: list[str] = []
    mark = aws_env.mark()
    assert aws.upload_zip(aws.clients(), who=WHO, bucket=bucket, key="big.zip",
                          zip_path=zip_path, sha256_hex=hex_, progress=lines.append)
    assert aws_env.count("PUT", r"^/artifacts/big\.zip$", since=mark) == 1
    assert 1 <= len(lines) <= 6
    assert lines[-1] == "uploading big.zip to s3://artifacts/big.zip: 100% (9.0/9.0 MiB)"


def test_multipart_upload(aws_env: AwsEnv, tmp_path: Path) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = random_file(tmp_path / "big.zip", 11 * aws.MiB)
    hex_, _ = sha(zip_path)
    key = aws.s3_key("", "big", hex_)
    c = aws.clients()
    lines: list[str] = []
    mark = aws_env.mark()
    assert aws.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                          sha256_hex=hex_, multipart_threshold=aws.MiB,
                          part_size=5 * aws.MiB, progress=lines.append)
    assert aws_env.count("POST", r"\?uploads", since=mark) == 1
    assert aws_env.count("PUT", r"[?&]partNumber=\d", since=mark) == 3
    assert aws_env.count("POST", r"\?uploadId=", since=mark) == 1  # complete
    assert aws_env.count("PUT", f"^/artifacts/{key}$", since=mark) == 0  # no single put
    s3 = aws_env.boto("s3")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == zip_path.read_bytes()
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {"sha256": hex_}
    assert 2 <= len(lines) <= 6
    assert lines[-1].endswith(": 100% (11.0/11.0 MiB)")

    mark = aws_env.mark()  # a multipart object is recognised by the metadata we set
    assert not aws.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                              sha256_hex=hex_, multipart_threshold=aws.MiB)
    assert [r.method for r in aws_env.requests(mark)] == ["HEAD"]


def test_multipart_refuses_bytes_that_do_not_match(aws_env: AwsEnv, tmp_path: Path) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = random_file(tmp_path / "big.zip", 6 * aws.MiB)
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match="changed while it was being uploaded"):
        aws.upload_zip(aws.clients(), who=WHO, bucket=bucket, key="k.zip", zip_path=zip_path,
                       sha256_hex="00" * 32, multipart_threshold=aws.MiB,
                       part_size=5 * aws.MiB)
    assert aws_env.count("DELETE", r"\?uploadId=", since=mark) == 1  # aborted
    assert aws_env.count("POST", r"^/artifacts/k\.zip\?uploadId=", since=mark) == 0


# ------------------------------------------------------------------ Lambda: create and update


def test_create_function_and_get(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    zip_path = make_zip("orders")
    _, b64 = sha(zip_path)
    c = aws.clients()
    assert aws.get_function(c, "orders") is None
    config = create(aws_env, zip_path, architecture="arm64",
                    settings={"MemorySize": 256, "Timeout": 10})
    assert config["State"] == "Active"
    got = aws.get_function(c, "orders")
    assert got is not None
    assert got["CodeSha256"] == b64
    assert got["CodeSize"] == zip_path.stat().st_size
    assert got["Architectures"] == ["arm64"]
    assert (got["MemorySize"], got["Timeout"]) == (256, 10)
    assert "ResponseMetadata" not in got


def test_create_function_with_a_role_name(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    aws_env.role_arn("runner")
    config = aws.create_function(
        aws.clients(), "orders", who=WHO, role="runner", runtime="nodejs20.x",
        handler="index.handler", architecture="x86_64", zip_path=make_zip("orders"),
    )
    assert config["Role"] == f"arn:aws:iam::{aws_env.account}:role/runner"


def test_create_function_without_role(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: the function does not exist; give role="):
        aws.create_function(aws.clients(), "orders", who=WHO, role="", runtime="nodejs20.x",
                            handler="index.handler", architecture="x86_64",
                            zip_path=make_zip("orders"))
    assert aws_env.requests(mark) == []


def test_create_function_with_unknown_role(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: .*role.* fix role="):
        aws.create_function(
            aws.clients(), "orders", who=WHO,
            role=f"arn:aws:iam::{aws_env.account}:role/missing", runtime="nodejs20.x",
            handler="index.handler", architecture="x86_64", zip_path=make_zip("orders"),
        )


def test_update_code_from_zip_and_from_s3(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    v2 = make_zip("v2")
    mark = aws_env.mark()
    config = aws.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2)
    assert config["CodeSha256"] == sha(v2)[1]
    assert config["LastUpdateStatus"] == "Successful"
    assert aws_env.count("PUT", CODE_PATH, since=mark) == 1

    v3 = make_zip("v3")
    bucket = aws_env.bucket("artifacts")
    key = aws.s3_key("", "orders", sha(v3)[0])
    aws.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=v3, sha256_hex=sha(v3)[0])
    sent: list[dict] = []  # moto ignores Architectures on update: check what was asked

    def capture(params: dict, **_: object) -> None:
        sent.append(params)

    c.lam.meta.events.register("provide-client-params.lambda.UpdateFunctionCode", capture)
    try:
        config = aws.update_code(c, "orders", who=WHO, architecture="arm64", s3=(bucket, key))
    finally:
        c.lam.meta.events.unregister("provide-client-params.lambda.UpdateFunctionCode", capture)
    assert config["CodeSha256"] == sha(v3)[1]
    assert sent == [{"FunctionName": "orders", "Architectures": ["arm64"],
                     "S3Bucket": bucket, "S3Key": key}]


def test_update_code_of_missing_function(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: the Lambda function does not exist .*role="):
        aws.update_code(aws.clients(), "orders", who=WHO, architecture="x86_64",
                        zip_path=make_zip("v1"))
    assert aws_env.count("PUT", CODE_PATH, since=mark) == 0


def test_direct_upload_limit(aws_env: AwsEnv, make_zip: MakeZip,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aws, "DIRECT_UPLOAD_LIMIT", 10)
    with pytest.raises(DodoLambdaError, match="over Lambda's 50 MiB limit .* set bucket="):
        aws.update_code(aws.clients(), "orders", who=WHO, architecture="x86_64",
                        zip_path=make_zip("v1"))


def test_update_configuration(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    config = aws.update_configuration(
        aws.clients(), "orders", who=WHO,
        changes={"MemorySize": 512, "Environment": {"Variables": {"A": "1"}}},
    )
    assert config["MemorySize"] == 512
    assert config["Environment"] == {"Variables": {"A": "1"}}


def test_list_functions_costs_one_request(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    zip_path = make_zip("v1")
    for i in range(5):
        create(aws_env, zip_path, name=f"fn{i}")
    c = aws.clients()
    mark = aws_env.mark()
    listed = aws.list_functions(c)
    assert sorted(listed) == [f"fn{i}" for i in range(5)]
    assert listed["fn3"]["CodeSha256"] == sha(zip_path)[1]
    for _ in range(3):
        assert len(aws.list_functions(c)) == 5
    assert len(aws_env.requests(mark)) == 1
    assert aws_env.count("GET", r"^/2015-03-31/functions/?(\?|$)", since=mark) == 1

    # An update refreshes the listed entry; invalidate() forces a new listing.
    aws.update_code(c, "fn1", who="function 'fn1'", architecture="x86_64",
                    zip_path=make_zip("v2"))
    assert aws.list_functions(c)["fn1"]["CodeSha256"] == sha(make_zip("v2"))[1]
    aws.invalidate(c)
    mark = aws_env.mark()
    aws.list_functions(c)
    assert aws_env.count("GET", r"^/2015-03-31/functions/?(\?|$)", since=mark) == 1


# ------------------------------------------------------------------ Lambda: faults and waits


def test_conflict_is_retried_after_waiting(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    v2 = make_zip("v2")
    with inject_fault(c.lam, "UpdateFunctionCode", status=409,
                      code="ResourceConflictException", times=2) as fault:
        config = aws.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2)
    assert (fault.calls, fault.injected) == (3, 2)
    assert config["CodeSha256"] == sha(v2)[1]


def test_conflict_gives_up(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    with inject_fault(c.lam, "UpdateFunctionConfiguration", status=409,
                      code="ResourceConflictException", times=99) as fault, \
            pytest.raises(DodoLambdaError, match=f"^{WHO}: .*update in progress.* 4 attempts"):
        aws.call_with_conflict_retry(
            c.lam.update_function_configuration, who=WHO, c=c, name="orders", attempts=4,
            FunctionName="orders", MemorySize=256,
        )
    assert fault.calls == 4


def test_throttling_is_retried_by_botocore(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    with inject_fault(c.lam, "GetFunctionConfiguration", status=429,
                      code="TooManyRequestsException", times=2) as fault:
        assert aws.get_function(c, "orders") is not None
    assert fault.calls == 3
    with inject_fault(c.lam, "UpdateFunctionCode", status=500, code="ServiceException") as fault:
        aws.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=make_zip("v2"))
    assert fault.calls == 2


def test_throttling_without_end(aws_env: AwsEnv) -> None:
    c = aws.clients()
    with inject_fault(c.lam, "GetFunctionConfiguration", status=429,
                      code="TooManyRequestsException", times=99) as fault, \
            pytest.raises(DodoLambdaError, match=f"^{WHO}: AWS kept throttling"):
        aws.get_function(c, "orders", who=WHO)
    assert fault.calls == 8  # total_max_attempts


def test_in_progress_is_waited_out(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    v2 = make_zip("v2")
    mark = aws_env.mark()
    with fake_function_state(c.lam, times=3, LastUpdateStatus="InProgress") as state:
        config = aws.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2)
    assert state.injected == 3
    assert config["LastUpdateStatus"] == "Successful"
    assert config["CodeSha256"] == sha(v2)[1]
    # 3 InProgress polls before and/or after the update, plus one Successful each.
    assert aws_env.count("GET", CONFIG_PATH, since=mark) == 5
    assert aws_env.count("PUT", CODE_PATH, since=mark) == 1


def test_failed_update_reports_the_reason(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    with fake_function_state(c.lam, times=99, LastUpdateStatus="Failed",
                             LastUpdateStatusReason="Lambda was unable to unzip the file",
                             LastUpdateStatusReasonCode="InvalidZipFileException"), \
            pytest.raises(DodoLambdaError) as caught:
        aws.wait_updated(c, "orders", who=WHO)
    assert str(caught.value) == (
        f"{WHO}: the update ended Failed: Lambda was unable to unzip the file"
        " (InvalidZipFileException); fix the cause and run again"
    )


def test_pending_is_waited_out_after_create(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.clients()
    with fake_function_state(c.lam, times=2, State="Pending") as state:
        config = create(aws_env, make_zip("v1"))
    assert state.injected == 2
    assert config["State"] == "Active"


def test_update_waits_out_a_pending_function(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    with fake_function_state(c.lam, times=2, State="Pending") as state:
        config = aws.wait_updated(c, "orders", who=WHO)
    assert state.injected == 2
    assert config["State"] == "Active"


def test_failed_state_reports_the_reason(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    with fake_function_state(c.lam, times=99, State="Failed",
                             StateReason="The role is invalid"), \
            pytest.raises(DodoLambdaError, match=f"^{WHO}: activation ended Failed: The role"):
        aws.wait_active(c, "orders", who=WHO)


def test_waiting_gives_up(aws_env: AwsEnv, make_zip: MakeZip,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    create(aws_env, make_zip("v1"))
    monkeypatch.setattr(aws, "POLL_TIMEOUT", 0.0)
    c = aws.clients()
    with fake_function_state(c.lam, times=99, LastUpdateStatus="InProgress"), \
            pytest.raises(DodoLambdaError, match="still InProgress after 0 s"):
        aws.wait_updated(c, "orders", who=WHO)


# ------------------------------------------------------------------ versions, aliases, layers


def test_publish_version_and_alias(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.clients()
    first = create(aws_env, make_zip("v1"))
    v1 = aws.publish_version(c, "orders", who=WHO, code_sha256=first["CodeSha256"])
    mark = aws_env.mark()
    alias = aws.point_alias(c, "orders", "live", v1["Version"], who=WHO)
    assert alias["FunctionVersion"] == v1["Version"]
    assert aws_env.count("POST", r"^/2015-03-31/functions/orders/aliases$", since=mark) == 1

    second = aws.update_code(c, "orders", who=WHO, architecture="x86_64",
                             zip_path=make_zip("v2"))
    v2 = aws.publish_version(c, "orders", who=WHO, code_sha256=second["CodeSha256"])
    assert v2["Version"] != v1["Version"]
    assert v2["CodeSha256"] == second["CodeSha256"]
    mark = aws_env.mark()
    aws.point_alias(c, "orders", "live", v2["Version"], who=WHO)
    assert aws_env.count("PUT", r"^/2015-03-31/functions/orders/aliases/live$", since=mark) == 1
    assert aws_env.count("POST", r"/aliases$", since=mark) == 0
    got = aws_env.boto("lambda").get_alias(FunctionName="orders", Name="live")
    assert got["FunctionVersion"] == v2["Version"]


def test_latest_version_with_the_same_code(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.clients()
    first = create(aws_env, make_zip("v1"))
    assert aws.latest_version(c, "orders", who=WHO) is None  # nothing published yet
    v1 = aws.publish_version(c, "orders", who=WHO, code_sha256=first["CodeSha256"])
    found = aws.latest_version(c, "orders", who=WHO)
    assert found is not None and found["Version"] == v1["Version"]

    second = aws.update_code(c, "orders", who=WHO, architecture="x86_64",
                             zip_path=make_zip("v2"))
    assert aws.latest_version(c, "orders", who=WHO) is None  # $LATEST's code is unpublished
    again = aws.latest_version(c, "orders", who=WHO, code_sha256=first["CodeSha256"])
    assert again is not None and again["Version"] == v1["Version"]
    v2 = aws.publish_version(c, "orders", who=WHO, code_sha256=second["CodeSha256"])
    found = aws.latest_version(c, "orders", who=WHO)
    assert found is not None and found["Version"] == v2["Version"]
    assert aws.latest_version(c, "missing", who=WHO) is None


def test_alias_of_missing_function(aws_env: AwsEnv) -> None:
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: the Lambda function does not exist"):
        aws.point_alias(aws.clients(), "orders", "live", "1", who=WHO)


def test_publish_layer_and_latest(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    c = aws.clients()
    who = "layer 'shared'"
    assert aws.latest_layer_version(c, "shared") is None
    one = make_zip("one", {"nodejs/node_modules/a/index.js": "module.exports = 1;\n"})
    two = make_zip("two", {"nodejs/node_modules/a/index.js": "module.exports = 2;\n"})
    first = aws.publish_layer(c, "shared", who=who, zip_path=one, runtimes=["nodejs20.x"],
                              architectures=["x86_64"], description="shared libs")
    assert first["Version"] == 1
    bucket = aws_env.bucket("artifacts")
    key = aws.s3_key("layers/", "shared", sha(two)[0])
    aws.upload_zip(c, who=who, bucket=bucket, key=key, zip_path=two, sha256_hex=sha(two)[0])
    second = aws.publish_layer(c, "shared", who=who, s3=(bucket, key))
    assert second["Version"] == 2

    latest = aws.latest_layer_version(c, "shared")
    assert latest is not None
    assert latest["Version"] == 2
    assert latest["LayerVersionArn"] == second["LayerVersionArn"]
    assert latest["Content"]["CodeSha256"] == sha(two)[1]


# ------------------------------------------------------------------ the fault proxy


def test_proxy_forwards_s3_and_lambda(fault_proxy: FaultProxy, aws_env: AwsEnv,
                                      make_zip: MakeZip, tmp_path: Path) -> None:
    c = aws.clients()
    assert c.endpoint == fault_proxy.url
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("v1")
    hex_, b64 = sha(zip_path)
    assert aws.upload_zip(c, who=WHO, bucket=bucket, key="v1.zip", zip_path=zip_path,
                          sha256_hex=hex_)
    assert not aws.upload_zip(c, who=WHO, bucket=bucket, key="v1.zip", zip_path=zip_path,
                              sha256_hex=hex_)  # HEAD answers relayed intact
    big = random_file(tmp_path / "big.zip", 6 * aws.MiB)
    assert aws.upload_zip(c, who=WHO, bucket=bucket, key="big.zip", zip_path=big,
                          sha256_hex=sha(big)[0], multipart_threshold=aws.MiB,
                          part_size=5 * aws.MiB)
    s3 = aws_env.boto("s3")  # straight to moto
    assert s3.get_object(Bucket=bucket, Key="big.zip")["Body"].read() == big.read_bytes()
    head = s3.head_object(Bucket=bucket, Key="v1.zip", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64
    assert fault_proxy.count("PUT", r"[?&]partNumber=\d") == 2

    config = create(aws_env, zip_path)
    assert config["CodeSha256"] == b64
    config = aws.update_code(c, "orders", who=WHO, architecture="x86_64", s3=(bucket, "v1.zip"))
    assert config["CodeSha256"] == b64


def test_proxy_injects_conflicts_and_in_progress(fault_proxy: FaultProxy, aws_env: AwsEnv,
                                                 make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.clients()
    conflict = fault_proxy.add("PUT", CODE_PATH, times=2,
                               **lambda_error(409, "ResourceConflictException"))
    busy = fault_proxy.add("GET", CONFIG_PATH, times=3,
                           transform=function_state(LastUpdateStatus="InProgress"))
    v2 = make_zip("v2")
    config = aws.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2)
    assert config["CodeSha256"] == sha(v2)[1]
    assert (conflict.hits, conflict.seen) == (2, 3)
    assert busy.hits == 3
    assert fault_proxy.count("PUT", CODE_PATH) == 3
    assert aws_env.count("PUT", CODE_PATH) == 1  # only one reached moto


def test_proxy_forwards_chunked_bodies(fault_proxy: FaultProxy, aws_env: AwsEnv) -> None:
    import http.client

    aws_env.bucket("artifacts")
    host, port = fault_proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = [b"hello ", b"chunked ", b"world"]
    conn.request("PUT", "/artifacts/chunked.txt", body=iter(chunks), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200
    got = aws_env.boto("s3").get_object(Bucket="artifacts", Key="chunked.txt")
    assert got["Body"].read() == b"hello chunked world"


def test_requests_off_loopback_are_refused(aws_env: AwsEnv) -> None:
    import awsfixtures

    c = aws.clients(AwsTarget(endpoint="https://lambda.us-east-1.amazonaws.com"))
    try:
        with pytest.raises(AssertionError, match="only loopback is allowed"):
            aws.get_function(c, "orders")
    finally:
        assert awsfixtures._escapes.pop() == (
            "https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/orders/configuration"
        )


def test_subprocess_environment_is_loopback(aws_env: AwsEnv,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert aws_env.env()["AWS_ENDPOINT_URL"] == aws_env.url
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "https://lambda.us-east-1.amazonaws.com")
    with pytest.raises(AssertionError, match="not a loopback endpoint"):
        aws_env.env()
