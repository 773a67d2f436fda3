"""Faults converge: lost answers, 5xx and 409s at the writes that are not idempotent,
records that no longer match AWS, multipart uploads left open, hung endpoints. The
code under test runs in this process against moto, through the fault proxy; the
process kills (real doit runs) are in test_faults_doit.py."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from awsfixtures import CONFIG_PATH, WHO, AwsEnv, random_file, sha
from faultproxy import FaultProxy, lambda_error

from dodo_lambda import Function, Layer, aws, build, executor, lambdas, records, s3
from dodo_lambda.context import RunContext
from dodo_lambda.errors import DodoLambdaError
from dodo_lambda.layout import Layout

pytestmark = pytest.mark.usefixtures("fast_aws")

CREATE = r"^/2015-03-31/functions/?$"
VERSIONS = r"^/2015-03-31/functions/orders/versions$"
ALIASES = r"^/2015-03-31/functions/orders/aliases$"
ALIAS = r"^/2015-03-31/functions/orders/aliases/live$"
LAYER_VERSIONS = r"^/2018-10-31/layers/shared/versions$"
MiB = 2**20


@dataclass
class Site:
    """Functions and layers whose sources need no npm, built and deployed in-process
    (one RunContext per simulated doit run)."""

    root: Path
    aws: AwsEnv

    def function(self, code: str = "v1", **settings) -> Function:
        src = self.root / "orders"
        src.mkdir(exist_ok=True)
        (src / "index.js").write_text(f"exports.handler = async () => '{code}';\n")
        return Function("orders", source=str(src), handler="index.handler",
                        role=self.aws.role_arn(), **settings)

    def layer(self, content: str = "a") -> Layer:
        src = self.root / "shared"
        (src / "nodejs").mkdir(parents=True, exist_ok=True)
        (src / "nodejs" / "helper.js").write_text(f"exports.x = '{content}';\n")
        (src / "package.json").write_text('{"name": "shared", "version": "1.0.0"}\n')
        return Layer("shared", source=str(src), runtimes=["nodejs24.x"])

    def run(self, *items: Function | Layer, verify: bool = False) -> RunContext:
        ctx = RunContext(self.root / ".dodo_lambda", items=items, verify=verify)
        for item in items:
            build.package(item, ctx)
        return ctx

    def deploy(self, fn: Function, *layers: Layer, verify: bool = False) -> executor.Outcome:
        ctx = self.run(fn, *layers, verify=verify)
        for layer in layers:
            executor.publish_layer(layer, ctx)
        if fn.bucket:
            executor.upload(fn, ctx)
        return executor.deploy_function(fn, ctx)

    @property
    def lam(self):
        return self.aws.boto("lambda")

    def versions(self) -> list[str]:
        listed = self.lam.list_versions_by_function(FunctionName="orders")["Versions"]
        return sorted((v["Version"] for v in listed if v["Version"] != "$LATEST"), key=int)

    def layer_versions(self) -> list[int]:
        return [v["Version"] for v in self.lam.list_layer_versions(
            LayerName="shared")["LayerVersions"]]

    def layout(self, item: Function | Layer) -> Layout:
        return Layout.of(self.root / ".dodo_lambda", item)

    def manifest_sha(self, item: Function | Layer) -> str:
        return sha(self.layout(item).zip)[1]


@pytest.fixture
def site(tmp_path: Path, aws_env: AwsEnv) -> Site:
    return Site(tmp_path, aws_env)


# ------------------------------------------------------------------ non-idempotent writes


def test_lost_answer_to_publish_layer_version_publishes_once(site: Site,
                                                             fault_proxy: FaultProxy) -> None:
    layer = site.layer()
    lost = fault_proxy.add("POST", LAYER_VERSIONS, drop=True)
    outcome = executor.publish_layer(layer, site.run(layer))
    assert lost.hits == 1
    assert fault_proxy.count("POST", LAYER_VERSIONS) == 1  # not repeated blindly
    assert site.layer_versions() == [1]
    assert outcome.version == "1" and outcome.arn.endswith(":layer:shared:1")
    record = records.read(site.layout(layer).published)
    assert records.finished(record) and record["version"] == 1


def test_5xx_on_publish_layer_version_is_checked_then_sent_again(site: Site,
                                                                fault_proxy: FaultProxy) -> None:
    layer = site.layer()
    failed = fault_proxy.add("POST", LAYER_VERSIONS, **lambda_error(500, "ServiceException"))
    executor.publish_layer(layer, site.run(layer))
    assert failed.hits == 1 and fault_proxy.count("POST", LAYER_VERSIONS) == 2
    assert site.layer_versions() == [1]


def test_lost_answers_to_create_function_publish_version_and_create_alias(
        site: Site, fault_proxy: FaultProxy) -> None:
    fn = site.function(publish=True, alias="live")
    rules = [fault_proxy.add("POST", path, drop=True) for path in (CREATE, VERSIONS, ALIASES)]
    outcome = site.deploy(fn)
    assert [r.hits for r in rules] == [1, 1, 1]
    for path in (CREATE, VERSIONS, ALIASES):
        assert fault_proxy.count("POST", path) == 1, path  # each sent once
    assert [s.kind for s in outcome.executed] == ["create", "publish_version", "point_alias"]
    assert site.lam.get_function_configuration(FunctionName="orders")["CodeSha256"] == \
        site.manifest_sha(fn)
    assert site.versions() == ["1"]
    assert site.lam.get_alias(FunctionName="orders", Name="live")["FunctionVersion"] == "1"
    record = records.read(site.layout(fn).deployed)
    assert records.finished(record) and record["version"] == "1"
    assert record["alias"]["version"] == "1"


@pytest.mark.parametrize("answer", ["lambda", "moto"])
def test_409_on_create_alias_means_it_exists(site: Site, fault_proxy: FaultProxy,
                                             answer: str) -> None:
    """The alias was created meanwhile (the plan did not see it): CreateAlias answers
    409 — Lambda's ResourceConflictException (through the proxy) or moto's own
    ConflictException — and the deploy points the existing alias at its version."""
    fn = site.function(publish=True, alias="live")
    site.deploy(fn)
    fault_proxy.clear()
    fn = site.function("v2", publish=True, alias="live")
    hidden = fault_proxy.add("GET", ALIASES, transform=lambda doc: {**doc, "Aliases": []})
    if answer == "lambda":
        fault_proxy.add("POST", ALIASES, **lambda_error(
            409, "ResourceConflictException", "Alias already exists: live"))
    outcome = site.deploy(fn)
    assert hidden.hits == 1
    assert fault_proxy.count("POST", ALIASES) == 1  # no retry as if an update were running
    assert fault_proxy.count("PUT", ALIAS) == 1
    assert site.lam.get_alias(FunctionName="orders", Name="live")["FunctionVersion"] == "2"
    assert outcome.alias == ("live", None, "2")


def test_failed_publish_after_a_settings_change_is_published_on_the_rerun(
        site: Site, fault_proxy: FaultProxy) -> None:
    """A memory-only change whose PublishVersion fails: the rerun finds no version with
    this code *and* these settings, publishes one and moves the alias there."""
    site.deploy(site.function(publish=True, alias="live", memory=128))
    fn = site.function(publish=True, alias="live", memory=256)
    fault_proxy.add("POST", VERSIONS, **lambda_error(500, "ServiceException"), times=99)
    with pytest.raises(DodoLambdaError, match=r"^function 'orders': PublishVersion failed"):
        site.deploy(fn)
    ctx = site.run(fn)
    assert not records.deploy_is_recorded(fn, ctx)  # in progress: never up to date
    assert site.lam.get_function_configuration(FunctionName="orders")["MemorySize"] == 256
    fault_proxy.clear()

    outcome = site.deploy(fn)
    assert [s.kind for s in outcome.executed] == ["publish_version", "point_alias"]
    assert site.versions() == ["1", "2"]
    live = site.lam.get_alias(FunctionName="orders", Name="live")["FunctionVersion"]
    assert live == "2"
    assert site.lam.get_function_configuration(FunctionName="orders", Qualifier=live
                                               )["MemorySize"] == 256
    record = records.read(site.layout(fn).deployed)
    assert records.finished(record) and record["alias"] == {"name": "live", "version": "2",
                                                            "previous": "1"}


# ------------------------------------------------------------------ records that heal


def test_deploy_uploads_a_missing_or_overwritten_object_itself(site: Site) -> None:
    bucket = site.aws.bucket("artifacts")
    fn = site.function(bucket=bucket)
    site.deploy(fn)
    s3c = site.aws.boto("s3")
    key = s3.s3_key(fn.bucket_prefix, "orders", _manifest(site, fn)["sha256"])
    s3c.delete_object(Bucket=bucket, Key=key)
    site.lam.delete_function(FunctionName="orders")
    outcome = executor.deploy_function(fn, site.run(fn, verify=True))
    assert [s.kind for s in outcome.executed] == ["upload", "create"]
    assert site.lam.get_function_configuration(FunctionName="orders")["CodeSha256"] == \
        site.manifest_sha(fn)

    # another object at the content-addressed key: compared by checksum, not existence
    fn2 = site.function("v2", bucket=bucket)
    ctx = site.run(fn2)
    executor.upload(fn2, ctx)
    key2 = s3.s3_key(fn2.bucket_prefix, "orders", _manifest(site, fn2)["sha256"])
    s3c.put_object(Bucket=bucket, Key=key2, Body=b"not the zip")
    outcome = executor.deploy_function(fn2, ctx)
    assert [s.kind for s in outcome.executed] == ["upload", "update_code"]
    assert site.lam.get_function_configuration(FunctionName="orders")["CodeSha256"] == \
        site.manifest_sha(fn2)
    head = s3c.head_object(Bucket=bucket, Key=key2, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == site.manifest_sha(fn2)


def _manifest(site: Site, item: Function | Layer) -> dict:
    import json

    return json.loads(site.layout(item).manifest.read_text())


def test_gone_layer_version_is_published_again(site: Site) -> None:
    layer = site.layer()
    fn = site.function(layers=[layer])
    site.deploy(fn, layer)
    assert site.layer_versions() == [1]
    site.lam.delete_function(FunctionName="orders")
    site.lam.delete_layer_version(LayerName="shared", VersionNumber=1)
    ctx = site.run(fn, layer)
    assert records.layer_is_recorded(layer, ctx)  # the record alone says all is well
    outcome = executor.deploy_function(fn, RunContext(ctx.build_dir, items=(fn, layer),
                                                      verify=True))
    assert [s.kind for s in outcome.executed] == ["republish_layer", "create"]
    assert site.layer_versions() == [2]
    layers = site.lam.get_function_configuration(FunctionName="orders")["Layers"]
    assert [x["Arn"].rsplit(":", 1)[1] for x in layers] == ["2"]
    assert records.read(site.layout(layer).published)["version"] == 2


# ------------------------------------------------------------------ no multipart upload left open


def _open_uploads(aws_env: AwsEnv, bucket: str) -> list[str]:
    listed = aws_env.boto("s3").list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


def _big_zip(tmp_path: Path) -> tuple[Path, str, str]:
    """A 6 MiB file (two 5 MiB parts at a 5 MiB threshold) and its key."""
    path = random_file(tmp_path / "big.zip", 6 * MiB)
    hexsha = sha(path)[0]
    return path, hexsha, s3.s3_key("", "orders", hexsha)


PARTS = dict(multipart_threshold=5 * MiB, part_size=5 * MiB)


def test_lost_answer_to_create_multipart_upload_leaves_no_upload(
        aws_env: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    bucket = aws_env.bucket()
    path, hexsha, key = _big_zip(tmp_path)
    lost = fault_proxy.add("POST", rf"^/{bucket}/{re.escape(key)}\?uploads", drop=True)
    journal = tmp_path / "journal.json"
    assert s3.upload_zip(aws.connect(), who=WHO, bucket=bucket, key=key, zip_path=path,
                         sha256_hex=hexsha, journal=journal, **PARTS)
    assert lost.hits == 1
    assert _open_uploads(aws_env, bucket) == []
    head = aws_env.boto("s3").head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == 6 * MiB and head["Metadata"]["sha256"] == hexsha
    assert not journal.exists()


def test_failed_abort_is_retried_by_the_next_upload(aws_env: AwsEnv, fault_proxy: FaultProxy,
                                                    tmp_path: Path) -> None:
    bucket = aws_env.bucket()
    path, hexsha, key = _big_zip(tmp_path)
    journal = tmp_path / "journal.json"
    fault_proxy.add("PUT", r"[?&]partNumber=", **lambda_error(500, "InternalError"), times=99)
    aborts = fault_proxy.add("DELETE", r"[?&]uploadId=", **lambda_error(500, "InternalError"),
                             times=99)
    c = aws.connect()
    with pytest.raises(DodoLambdaError, match="^function 'orders': UploadPart failed"):
        s3.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=path, sha256_hex=hexsha,
                      journal=journal, **PARTS)
    assert aborts.hits >= 2  # s3transfer's abort and ours, each retried by botocore
    assert _open_uploads(aws_env, bucket) == [key] and journal.exists()
    fault_proxy.clear()
    assert s3.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=path, sha256_hex=hexsha,
                         journal=journal, **PARTS)
    assert _open_uploads(aws_env, bucket) == [] and not journal.exists()


def _young(answer: bytes) -> bytes:
    """moto dates every multipart upload 2010: make them begin now."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()).encode()
    return re.sub(rb"<Initiated>[^<]*</Initiated>", b"<Initiated>" + now + b"</Initiated>",
                  answer)


def test_abandoned_uploads_of_others_are_aborted_only_when_old(
        aws_env: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    bucket = aws_env.bucket()
    path, hexsha, key = _big_zip(tmp_path)
    other = s3.s3_key("", "orders", "0" * 64)  # an older zip of the same item, elsewhere
    aws_env.boto("s3").create_multipart_upload(Bucket=bucket, Key=other)
    c = aws.connect()
    fault_proxy.add("GET", rf"^/{bucket}\?uploads", rewrite=_young, times=99)
    s3.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=path, sha256_hex=hexsha,
                  journal=tmp_path / "j.json", **PARTS)
    assert _open_uploads(aws_env, bucket) == [other]  # young: maybe still running
    fault_proxy.clear()  # moto's own date: 2010, long abandoned
    aws_env.boto("s3").delete_object(Bucket=bucket, Key=key)
    s3.upload_zip(c, who=WHO, bucket=bucket, key=key, zip_path=path, sha256_hex=hexsha,
                  journal=tmp_path / "j.json", **PARTS)
    assert _open_uploads(aws_env, bucket) == []


UPLOADER = """
import sys
from pathlib import Path
from dodo_lambda import aws, s3
path, hexsha, bucket, key, journal = sys.argv[1:]
s3.upload_zip(aws.connect(), who="function 'orders'", bucket=bucket, key=key, zip_path=Path(path),
              sha256_hex=hexsha, journal=Path(journal), multipart_threshold=5 * 2**20,
              part_size=5 * 2**20)
"""


@pytest.mark.slow
def test_upload_killed_during_upload_part_is_aborted_by_the_next(
        aws_env: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    bucket = aws_env.bucket()
    path, hexsha, key = _big_zip(tmp_path)
    journal = tmp_path / "journal.json"
    held = fault_proxy.add("PUT", r"[?&]partNumber=", hold="before", times=2)
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, str(path), hexsha, bucket, key,
                             str(journal)], env=aws_env.env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        held.wait_arrived()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    held.release(forward=False)
    assert _open_uploads(aws_env, bucket) == [key] and journal.exists()
    # the killed run's upload looks young: only the journal tells it is ours to abort
    fault_proxy.add("GET", rf"^/{bucket}\?uploads", rewrite=_young, times=99)
    assert s3.upload_zip(aws.connect(), who=WHO, bucket=bucket, key=key, zip_path=path,
                         sha256_hex=hexsha, journal=journal, **PARTS)
    assert _open_uploads(aws_env, bucket) == [] and not journal.exists()


def test_concurrent_uploads_of_one_zip_take_a_lock(site: Site, fault_proxy: FaultProxy) -> None:
    bucket = site.aws.bucket("artifacts")
    fn = site.function(bucket=bucket)
    site.run(fn)
    put = rf"^/{bucket}/orders/[0-9a-f]{{64}}\.zip$"
    held = fault_proxy.add("PUT", put, hold="before")
    waiting = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for another upload" in record.getMessage():
                waiting.set()

    seen = Seen()
    logger = logging.getLogger("dodo_lambda")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(seen)
    results: list[executor.UploadResult | None] = []
    threads = [threading.Thread(target=lambda: results.append(executor.upload(
        fn, RunContext(site.root / ".dodo_lambda", items=(fn,))))) for _ in range(2)]
    try:
        threads[0].start()
        held.wait_arrived()  # the first upload holds the lock, its PUT held
        threads[1].start()
        assert waiting.wait(60)  # the second waits for the lock, sending nothing
        held.release()
        for t in threads:
            t.join(60)
    finally:
        held.release()
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert sorted(r.sent for r in results if r is not None) == [False, True]
    assert fault_proxy.count("PUT", put) == 1


# ------------------------------------------------------------------ bounded time


def test_every_call_is_bounded_within_three_minutes(aws_env: AwsEnv) -> None:
    assert aws.CALLS.bound() <= aws.CALL_BOUND and aws.BIG_CALLS.bound() <= aws.CALL_BOUND
    c = aws.connect()
    for client, budget in ((c.lam, aws.CALLS), (c.s3, aws.CALLS), (c.lam_big, aws.BIG_CALLS)):
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (budget.connect, budget.read)
        assert config.retries["total_max_attempts"] == budget.attempts


@pytest.mark.slow
def test_hung_endpoint_fails_naming_the_call(aws_env: AwsEnv, fault_proxy: FaultProxy,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # 0.4 s to connect, 1.8 s of silence: the answered calls must not time out under load
    monkeypatch.setenv("DODO_LAMBDA_AWS_TIMEOUT", "0.04")
    hung = fault_proxy.add("GET", CONFIG_PATH, hold="before", times=99)
    c = aws.connect()
    assert c.lam.meta.config.read_timeout == pytest.approx(aws.CALLS.read * 0.04)
    with pytest.raises(DodoLambdaError, match=rf"^{WHO}: no answer from AWS at .*"
                       r" \(GetFunctionConfiguration, 3 attempts\); check the network"):
        lambdas.get_function(c, "orders", who=WHO)
    assert hung.hits == aws.CALLS.attempts


@pytest.mark.slow
def test_hung_guarded_write_is_checked_and_bounded(site: Site, fault_proxy: FaultProxy,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DODO_LAMBDA_AWS_TIMEOUT", "0.04")
    layer = site.layer()
    hung = fault_proxy.add("POST", LAYER_VERSIONS, hold="before", times=99)
    with pytest.raises(DodoLambdaError, match=r"^layer 'shared': PublishLayerVersion failed"
                       r" \(Read timeout .*\) and AWS does not show it done; run again"):
        executor.publish_layer(layer, site.run(layer))
    assert hung.hits == lambdas.SEND_ATTEMPTS  # one attempt each: checked in between
    record = records.read(site.layout(layer).published)
    assert record is not None and not records.finished(record)
