"""Deploy against a real local AWS API (moto server): doit as a subprocess, requests
counted in the server's log."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil

import pytest
from helpers import reset_state
from projects import EXAMPLE, FUNCTION, Project

CODE = r"/2015-03-31/functions/{}/code$"
CONFIG = r"/2015-03-31/functions/{}/configuration$"
READ = r"/2015-03-31/functions/{}(/configuration)?$"  # GetFunction[Configuration]


def _deployed(aws_env, name: str = "demo") -> dict:
    return aws_env.boto("lambda").get_function_configuration(FunctionName=name)


@pytest.fixture
def fn(aws_env) -> dict:
    return {**FUNCTION, "role": aws_env.role_arn()}


def test_create_then_nothing_to_do(project: Project, aws_env, fn: dict) -> None:
    project.configure([fn])
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert {"npm:demo", "package:demo", "deploy:demo"} <= run.executed
    zip_bytes = project.zip_path().read_bytes()
    expected = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
    assert _deployed(aws_env)["CodeSha256"] == expected == project.manifest()["code_sha256"]
    record = project.record("deployed")
    assert record["code_sha256"] == expected and record["arn"].endswith(":function:demo")

    mark = aws_env.mark()
    again = project.doit("deploy")
    assert again.rc == 0 and "deploy:demo" in again.skipped
    assert aws_env.requests(mark) == []

    reset_state(project)
    mark = aws_env.mark()
    fresh = project.doit("deploy")
    assert fresh.rc == 0, fresh.text
    assert "deploy:demo" in fresh.executed
    assert project.zip_path().read_bytes() == zip_bytes
    assert aws_env.count("PUT", CODE.format("demo"), mark) == 0
    assert aws_env.count("POST", r"/functions$", mark) == 0
    assert aws_env.count("PUT", CONFIG.format("demo"), mark) == 0


def test_edited_source_is_deployed(project: Project, aws_env, fn: dict) -> None:
    project.configure([fn])
    assert project.doit("deploy").rc == 0
    before = _deployed(aws_env)["CodeSha256"]
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => `{${s}}`;\n")
    mark = aws_env.mark()
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert run.executed == {"package:demo", "deploy:demo"}
    assert aws_env.count("PUT", CODE.format("demo"), mark) == 1
    assert aws_env.count("PUT", CONFIG.format("demo"), mark) == 0
    after = _deployed(aws_env)["CodeSha256"]
    assert after != before and after == project.manifest()["code_sha256"]


def test_edited_memory_updates_only_settings(project: Project, aws_env, fn: dict) -> None:
    project.configure([{**fn, "memory": 128, "environment": {"STAGE": "1"}}])
    assert project.doit("deploy").rc == 0
    project.configure([{**fn, "memory": 256, "environment": {"STAGE": "1"}}])
    mark = aws_env.mark()
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert run.executed == {"deploy:demo"}
    assert "MemorySize 128 → 256" in run.text
    assert aws_env.count("PUT", CODE.format("demo"), mark) == 0
    assert aws_env.count("PUT", CONFIG.format("demo"), mark) == 1
    config = _deployed(aws_env)
    assert config["MemorySize"] == 256 and config["Environment"]["Variables"] == {"STAGE": "1"}


def test_s3_path_content_addressed_and_skipped(project: Project, aws_env, fn: dict) -> None:
    bucket = aws_env.bucket("artifacts")
    project.configure([{**fn, "bucket": bucket, "bucket_prefix": "lambda/"}])
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert {"upload:demo", "deploy:demo"} <= run.executed
    sha = project.manifest()["sha256"]
    key = f"lambda/demo/{sha}.zip"
    head = aws_env.boto("s3").head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == project.manifest()["code_sha256"]
    assert head["ServerSideEncryption"] == "AES256"
    assert _deployed(aws_env)["CodeSha256"] == project.manifest()["code_sha256"]

    mark = aws_env.mark()
    again = project.doit("deploy")
    assert again.rc == 0 and again.executed == set(), again.text
    assert aws_env.requests(mark) == []

    project.configure([{**fn, "bucket": bucket, "bucket_prefix": "v2/"}])
    moved = project.doit("deploy")
    assert moved.rc == 0 and {"upload:demo", "deploy:demo"} <= moved.executed, moved.text
    assert aws_env.count("PUT", rf"/{bucket}/v2/demo/{sha}\.zip", mark) == 1
    assert aws_env.count("PUT", CODE.format("demo"), mark) == 0

    reset_state(project)
    mark = aws_env.mark()
    fresh = project.doit("deploy")
    assert fresh.rc == 0, fresh.text
    assert aws_env.count("PUT", rf"/{bucket}/(lambda|v2)/demo/", mark) == 0
    assert aws_env.count("PUT", CODE.format("demo"), mark) == 0
    assert "already in s3://" in fresh.text


def test_over_the_direct_limit_goes_through_s3(project: Project, aws_env, fn: dict) -> None:
    bucket = aws_env.bucket("big")
    project.configure([{**fn, "bucket": bucket}], options={"direct_upload_limit": 1000})
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert project.manifest()["zip_size"] > 1000
    assert aws_env.count("PUT", rf"/{bucket}/demo/") == 1
    assert _deployed(aws_env)["CodeSha256"] == project.manifest()["code_sha256"]


def test_over_the_direct_limit_without_bucket_sends_nothing(project: Project, aws_env,
                                                            fn: dict) -> None:
    project.configure([fn], options={"direct_upload_limit": 1000})
    mark = aws_env.mark()
    run = project.doit("deploy")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "bucket=" in run.text and "function 'demo'" in run.text
    assert aws_env.requests(mark) == []


def test_publish_and_alias_only_when_something_changed(project: Project, aws_env,
                                                       fn: dict) -> None:
    lam = aws_env.boto("lambda")

    def versions() -> list[str]:
        listed = lam.list_versions_by_function(FunctionName="demo")["Versions"]
        return sorted(v["Version"] for v in listed if v["Version"] != "$LATEST")

    settings = {**fn, "publish": True, "alias": "live", "memory": 128}
    project.configure([settings])
    assert project.doit("deploy").rc == 0
    assert versions() == ["1"]
    assert lam.get_alias(FunctionName="demo", Name="live")["FunctionVersion"] == "1"
    assert project.record("deployed")["version"] == "1"

    reset_state(project)
    mark = aws_env.mark()
    assert project.doit("deploy").rc == 0
    assert versions() == ["1"]
    # a fresh checkout: reads (and STS's POST /) only, no PUT .../aliases/live
    assert [r for r in aws_env.requests(mark)
            if r.method not in ("GET", "HEAD") and r.path != "/"] == []

    project.configure([{**settings, "memory": 512}])
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert versions() == ["1", "2"]
    assert lam.get_alias(FunctionName="demo", Name="live")["FunctionVersion"] == "2"


def test_plan_reports_and_changes_nothing(project: Project, aws_env, fn: dict) -> None:
    project.configure([{**fn, "memory": 128},
                       {"name": "other", "source": "fn", "handler": "index.handler"}])
    assert project.doit("deploy:demo").rc == 0
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => s;\n")
    project.configure([{**fn, "memory": 256, "timeout": 30, "environment": {"TOKEN": "s3cr3t"}},
                       {"name": "other", "source": "fn", "handler": "index.handler",
                        "role": fn["role"]}])
    mark = aws_env.mark()
    run = project.doit("plan")
    assert run.rc == 0, run.text
    deployed = _deployed(aws_env)["CodeSha256"]
    assert f"code differs (local {project.manifest()['code_sha256']} vs deployed {deployed})" \
        in run.out
    assert "MemorySize 128 → 256" in run.out and "Timeout 3 → 30" in run.out
    assert "Environment +TOKEN" in run.out and "s3cr3t" not in run.out
    assert "function 'other': create (new)" in run.out
    assert [r for r in aws_env.requests(mark) if r.method not in ("GET", "HEAD")] == []
    assert _deployed(aws_env)["MemorySize"] == 128


def _account_settings(fault_proxy, count: int):
    """GetAccountSettings (moto has none) says the region holds ``count`` functions."""
    body = json.dumps({"AccountUsage": {"FunctionCount": count}}).encode()
    return fault_proxy.add("GET", r"^/2016-08-19/account-settings/?$", status=200, body=body,
                           headers={"Content-Type": "application/json"}, times=100)


def test_many_functions_one_listing_only_when_it_pays(project: Project, aws_env, fn: dict,
                                                       fault_proxy) -> None:
    names = ["a1", "a2", "a3"]
    project.configure([{**fn, "name": n} for n in names])
    assert project.doit("deploy").rc == 0
    reset_state(project)
    fault_proxy.clear()
    _account_settings(fault_proxy, 3)  # one page of 50 answers for all three
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert fault_proxy.count("GET", r"^/2015-03-31/functions/?(\?|$)") == 1
    for n in names:
        assert fault_proxy.count("GET", CONFIG.format(n)) == 0

    reset_state(project)
    fault_proxy.clear()
    _account_settings(fault_proxy, 501)  # 11 pages: three reads cost less
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert fault_proxy.count("GET", r"^/2015-03-31/functions/?(\?|$)") == 0
    for n in names:
        assert fault_proxy.count("GET", CONFIG.format(n)) == 1


def test_access_denied_and_missing_bucket(project: Project, aws_env, fn: dict,
                                          fault_proxy) -> None:
    from faultproxy import lambda_error

    project.configure([{**fn, "bucket": "no-such-bucket"}])
    run = project.doit("deploy")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "no-such-bucket" in run.text and "bucket=" in run.text

    project.configure([fn])
    fault_proxy.add("*", r"/2015-03-31/functions", times=100,
                    **lambda_error(403, "AccessDeniedException", "not allowed"))
    run = project.doit("deploy")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "access denied" in run.text and "function 'demo'" in run.text


def test_no_credentials_and_unknown_region(project: Project, aws_env, fn: dict,
                                           monkeypatch) -> None:
    project.configure([fn])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    run = project.doit("deploy")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "no AWS credentials" in run.text

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_REGION", "mars-north-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "mars-north-1")
    run = project.doit("deploy")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "mars-north-1" in run.text and "AWS_REGION" in run.text


def test_conflicts_throttling_and_in_progress_recover(project: Project, aws_env, fn: dict,
                                                      fault_proxy) -> None:
    from faultproxy import function_state, lambda_error

    project.configure([fn])
    assert project.doit("deploy").rc == 0
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => s + '?';\n")
    conflict = fault_proxy.add("PUT", CODE.format("demo"), times=2,
                               **lambda_error(409, "ResourceConflictException", "in progress"))
    throttle = fault_proxy.add("PUT", CODE.format("demo"), times=1,
                               **lambda_error(429, "TooManyRequestsException", "slow down"))
    busy = fault_proxy.add("GET", READ.format("demo"), times=2,
                           transform=function_state(LastUpdateStatus="InProgress"))
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert conflict.hits == 2 and throttle.hits == 1 and busy.hits == 2
    assert _deployed(aws_env)["CodeSha256"] == project.manifest()["code_sha256"]


def test_failed_update_reports_the_reason(project: Project, aws_env, fn: dict,
                                          fault_proxy) -> None:
    from faultproxy import function_state

    project.configure([fn])
    assert project.doit("deploy").rc == 0
    project.configure([{**fn, "memory": 1024}])
    # as Lambda does it: the update is accepted InProgress, and fails a moment later
    fault_proxy.add("PUT", CONFIG.format("demo"), transform=function_state(
        LastUpdateStatus="InProgress"))
    fault_proxy.add("GET", READ.format("demo"), times=100, transform=function_state(
        LastUpdateStatus="Failed", LastUpdateStatusReason="the role cannot be assumed"))
    run = project.doit("deploy")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "the role cannot be assumed" in run.text


def test_example_deploys_to_the_embedded_emulator(tmp_path, monkeypatch) -> None:
    root = tmp_path / "quickstart"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".dodo_lambda", ".doit.db*",
                                                                  "node_modules"))
    for key in [k for k in __import__("os").environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.aws either
    from dodo_lambda import emulator

    try:
        run = Project(root).doit("deploy")
    finally:
        emulator.stop(root / ".dodo_lambda")  # the server outlives doit: stop it here
    assert run.rc == 0, run.text
    assert "LOCAL EMULATOR" in run.err and "NOT to AWS" in run.err
    assert "function 'dodo-lambda-hello': created with a new execution role, version $LATEST," \
        " CodeSha256" in run.out
    record = Project(root).record("deployed", "dodo-lambda-hello")
    assert record["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:dodo-lambda-hello"


def test_project_overrides_region_and_endpoint(project: Project, aws_env, fn: dict,
                                               monkeypatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the project's endpoint= leads to moto
    project.configure([fn], options={"region": "eu-west-1", "endpoint": aws_env.url})
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert project.record("deployed")["target"]["region"] == "eu-west-1"
    import boto3

    eu = boto3.client("lambda", region_name="eu-west-1", endpoint_url=aws_env.url)
    assert eu.get_function_configuration(FunctionName="demo")["CodeSha256"] == \
        project.manifest()["code_sha256"]
    names = [f["FunctionName"] for f in aws_env.boto("lambda").list_functions()["Functions"]]
    assert "demo" not in names  # nothing in the environment's region
