"""dodo_lambda.aws against a moto server: real HTTP, real botocore, no mocks of our code.

Also the checks of the test setup itself (the fault proxy, loopback only).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from awsfixtures import CODE_PATH, CONFIG_PATH, WHO, AwsEnv, MakeZip, random_file, sha
from awsfixtures import create_function as create
from faultproxy import FaultProxy, function_state, lambda_error

from dodo_lambda import aws, lambdas
from dodo_lambda import s3 as s3mod  # `s3` names moto's client in the tests
from dodo_lambda.aws import AwsTarget
from dodo_lambda.errors import DodoLambdaError

pytestmark = pytest.mark.usefixtures("fast_aws")


# ------------------------------------------------------------------ clients


@pytest.mark.parametrize("module", ["aws", "s3", "lambdas"])
def test_importing_aws_does_not_import_boto3(module: str) -> None:
    code = (
        f"import sys, dodo_lambda.{module}\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_clients_kept_per_run_and_target_key(
    aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import pickle

    from dodo_lambda.context import RunContext
    from dodo_lambda.deploy import target_key

    ctx = RunContext(tmp_path)
    c = ctx.clients()
    assert c is ctx.clients()  # made once per run
    assert (c.region, c.endpoint) == ("us-east-1", aws_env.url)
    assert RunContext(tmp_path).clients() is not c  # another run, other clients
    first = target_key(ctx)
    assert first == target_key(RunContext(tmp_path, AwsTarget()))
    assert target_key(RunContext(tmp_path, AwsTarget(region="eu-west-1"))) != first
    assert target_key(RunContext(tmp_path, AwsTarget(endpoint="http://127.0.0.1:1"))) != first
    assert target_key(RunContext(tmp_path, emulator=True)) != first
    # doit -P process pickles the context: settings travel, caches start empty
    copy = pickle.loads(pickle.dumps(ctx))
    assert (copy.build_dir, copy.target) == (ctx.build_dir, ctx.target)
    assert copy.caches.made == {} and copy.clients() is not c
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert target_key(ctx) != first  # a changed environment, a new target
    assert ctx.clients() is not c


def test_no_credentials(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: no AWS credentials found; set AWS_PRO"):
        aws.connect(who=WHO)


def test_missing_profile(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(DodoLambdaError, match="AWS profile 'nope' not found"):
        aws.connect()
    with pytest.raises(DodoLambdaError, match="AWS profile 'other' not found"):
        aws.connect(AwsTarget(profile="other"))


def test_missing_region(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(DodoLambdaError, match="no AWS region configured; set AWS_REGION"):
        aws.connect()
    assert aws.connect(AwsTarget(region="eu-west-1")).region == "eu-west-1"


def test_unknown_or_invalid_region(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(DodoLambdaError, match="region 'us-east1' is unknown"):
        aws.connect(AwsTarget(region="us-east1"))
    with pytest.raises(DodoLambdaError, match="region 'us east!' is not a valid region name"):
        aws.connect(AwsTarget(region="us east!", endpoint=aws_env.url))
    # With an endpoint of one's own (moto, LocalStack) any region name goes.
    assert aws.connect(AwsTarget(region="xx-test-1", endpoint=aws_env.url)).region == "xx-test-1"


def test_unreachable_endpoint(aws_env: AwsEnv) -> None:
    c = aws.connect(AwsTarget(endpoint="http://127.0.0.1:1"))
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: cannot reach AWS at http://127.0.0.1:1"):
        lambdas.get_function(c, "orders", who=WHO)


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
        ("ResourceNotFoundException", "deploy again and dodo_lambda creates it"),
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


# ------------------------------------------------------------------ the fault proxy


def test_proxy_forwards_s3_and_lambda(fault_proxy: FaultProxy, aws_env: AwsEnv,
                                      make_zip: MakeZip, tmp_path: Path) -> None:
    c = aws.connect()
    assert c.endpoint == fault_proxy.url
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("v1")
    hex_, b64 = sha(zip_path)
    assert s3mod.upload_zip(c, who=WHO, bucket=bucket, key="v1.zip", zip_path=zip_path,
                          sha256_hex=hex_)
    assert not s3mod.upload_zip(c, who=WHO, bucket=bucket, key="v1.zip", zip_path=zip_path,
                              sha256_hex=hex_)  # HEAD answers relayed intact
    big = random_file(tmp_path / "big.zip", 6 * aws.MiB)
    assert s3mod.upload_zip(c, who=WHO, bucket=bucket, key="big.zip", zip_path=big,
                          sha256_hex=sha(big)[0], multipart_threshold=aws.MiB,
                          part_size=5 * aws.MiB)
    s3 = aws_env.boto("s3")  # straight to moto
    assert s3.get_object(Bucket=bucket, Key="big.zip")["Body"].read() == big.read_bytes()
    head = s3.head_object(Bucket=bucket, Key="v1.zip", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64
    assert fault_proxy.count("PUT", r"[?&]partNumber=\d") == 2

    config = create(aws_env, zip_path)
    assert config["CodeSha256"] == b64
    config = lambdas.update_code(c, "orders", who=WHO, architecture="x86_64", s3=(bucket, "v1.zip"))
    assert config["CodeSha256"] == b64


def test_proxy_injects_conflicts_and_in_progress(fault_proxy: FaultProxy, aws_env: AwsEnv,
                                                 make_zip: MakeZip) -> None:
    create(aws_env, make_zip("v1"))
    c = aws.connect()
    conflict = fault_proxy.add("PUT", CODE_PATH, times=2,
                               **lambda_error(409, "ResourceConflictException"))
    busy = fault_proxy.add("GET", CONFIG_PATH, times=3,
                           transform=function_state(LastUpdateStatus="InProgress"))
    v2 = make_zip("v2")
    config = lambdas.update_code(c, "orders", who=WHO, architecture="x86_64", zip_path=v2)
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

    c = aws.connect(AwsTarget(endpoint="https://lambda.us-east-1.amazonaws.com"))
    try:
        with pytest.raises(AssertionError, match="only loopback is allowed"):
            lambdas.get_function(c, "orders")
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
