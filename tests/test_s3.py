"""dodo_lambda.s3 against a moto server: real HTTP, real botocore, no mocks of our code."""

from __future__ import annotations

from pathlib import Path

import pytest
from awsfixtures import WHO, AwsEnv, MakeZip, random_file, sha

from dodo_lambda import aws
from dodo_lambda import s3 as s3mod  # `s3` names moto's client in the tests
from dodo_lambda.errors import DodoLambdaError

pytestmark = pytest.mark.usefixtures("fast_aws")


def test_s3_key_is_content_addressed() -> None:
    assert s3mod.s3_key("lambda/", "orders", "ab" * 32) == f"lambda/orders/{'ab' * 32}.zip"


def test_upload_once_then_skip(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("orders")
    hex_, b64 = sha(zip_path)
    key = s3mod.s3_key("p/", "orders", hex_)
    c = aws.connect()
    lines: list[str] = []
    mark = aws_env.mark()
    assert s3mod.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                          sha256_hex=hex_, progress=lines.append)
    assert aws_env.count("PUT", f"^/artifacts/{key}$", since=mark) == 1
    assert lines == []  # small uploads are quiet
    head = aws_env.boto("s3").head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {"sha256": hex_}

    mark = aws_env.mark()
    assert not s3mod.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                              sha256_hex=hex_)
    assert [r.method for r in aws_env.requests(mark)] == ["HEAD"]


def test_upload_replaces_other_bytes_at_the_key(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("orders")
    hex_, b64 = sha(zip_path)
    key = s3mod.s3_key("", "orders", hex_)
    aws_env.boto("s3").put_object(Bucket=bucket, Key=key, Body=b"x" * zip_path.stat().st_size,
                                  ChecksumAlgorithm="SHA256")
    assert s3mod.upload_zip(aws.connect(), who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                          sha256_hex=hex_)
    got = aws_env.boto("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert got == zip_path.read_bytes()


def test_object_state_compares_checksums(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("orders")
    hex_, b64 = sha(zip_path)
    size = zip_path.stat().st_size
    s3 = aws_env.boto("s3")
    s3.put_object(Bucket=bucket, Key="a.zip", Body=zip_path.read_bytes(),
                  ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=bucket, Key="b.zip", Body=b"x" * size, ChecksumAlgorithm="SHA256")
    c = aws.connect()
    state = s3mod.object_state
    assert state(c, bucket, "a.zip", sha256_hex=hex_, size=size, who=WHO) == "same"
    assert state(c, bucket, "b.zip", sha256_hex=hex_, size=size, who=WHO) == "differs"
    assert state(c, bucket, "c.zip", sha256_hex=hex_, size=size, who=WHO) == "missing"
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: S3 bucket 'nowhere' does not exist"):
        state(c, "nowhere", "a.zip", sha256_hex=hex_, size=size, who=WHO)


def test_upload_to_missing_bucket(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    zip_path = make_zip("orders")
    hex_, _ = sha(zip_path)
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError,
                       match=f"^{WHO}: S3 bucket 'nowhere' does not exist; .* fix bucket="):
        s3mod.upload_zip(aws.connect(), who=WHO, bucket="nowhere", key="k.zip",
                       zip_path=zip_path, sha256_hex=hex_)
    assert {r.method for r in aws_env.requests(mark)} == {"HEAD"}  # nothing sent


def test_single_put_progress(aws_env: AwsEnv, tmp_path: Path) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = random_file(tmp_path / "big.zip", 9 * aws.MiB)
    hex_, _ = sha(zip_path)
    lines: list[str] = []
    mark = aws_env.mark()
    assert s3mod.upload_zip(aws.connect(), who=WHO, bucket=bucket, key="big.zip",
                          zip_path=zip_path, sha256_hex=hex_, progress=lines.append)
    assert aws_env.count("PUT", r"^/artifacts/big\.zip$", since=mark) == 1
    assert 1 <= len(lines) <= 6
    assert lines[-1] == "uploading big.zip to s3://artifacts/big.zip: 100% (9.0/9.0 MiB)"


def test_multipart_upload(aws_env: AwsEnv, tmp_path: Path) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = random_file(tmp_path / "big.zip", 11 * aws.MiB)
    hex_, _ = sha(zip_path)
    key = s3mod.s3_key("", "big", hex_)
    c = aws.connect()
    lines: list[str] = []
    mark = aws_env.mark()
    assert s3mod.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
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
    assert not s3mod.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=zip_path,
                              sha256_hex=hex_, multipart_threshold=aws.MiB)
    assert [r.method for r in aws_env.requests(mark)] == ["HEAD"]


def test_single_put_carries_our_checksum(aws_env: AwsEnv, make_zip: MakeZip) -> None:
    # S3 answers BadDigest when the bytes do not match the checksum sent with them
    # (moto does not check): the put must carry ours, not one computed while sending.
    bucket = aws_env.bucket("artifacts")
    zip_path = make_zip("orders")
    c = aws.connect()
    sent: list[str] = []
    c.s3.meta.events.register("before-send.s3.PutObject",
                              lambda request, **_: sent.append(
                                  request.headers.get("x-amz-checksum-sha256")))
    claimed = "ab" * 32
    s3mod.upload_zip(c, who=WHO, bucket=bucket, key="k.zip", zip_path=zip_path,
                     sha256_hex=claimed)
    assert sent == [s3mod.b64_sha256(claimed).encode()]


def test_multipart_bytes_that_do_not_match_are_not_sent(aws_env: AwsEnv,
                                                        tmp_path: Path) -> None:
    bucket = aws_env.bucket("artifacts")
    zip_path = random_file(tmp_path / "big.zip", 6 * aws.MiB)
    mark = aws_env.mark()
    with pytest.raises(DodoLambdaError, match=f"^{WHO}: .*big.zip changed since it was packaged"):
        s3mod.upload_zip(aws.connect(), who=WHO, bucket=bucket, key="k.zip", zip_path=zip_path,
                         sha256_hex="00" * 32, multipart_threshold=aws.MiB,
                         part_size=5 * aws.MiB)
    assert aws_env.count("POST", r"\?uploads", since=mark) == 0  # no multipart upload begun
    assert aws_env.boto("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0
