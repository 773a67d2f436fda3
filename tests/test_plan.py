"""Plan is what deploy does: the planner and executor called in-process against the
moto server (one RunContext per simulated doit run), the requests checked in moto's
log. End-to-end doit runs of the same features are in test_plan_doit.py."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from awsfixtures import AwsEnv
from helpers import Lab, assert_sent_exactly, writes
from projects import lock

from dodo_lambda import Function, Layer, executor, planner, records
from dodo_lambda.errors import DodoLambdaError

pytestmark = pytest.mark.usefixtures("fast_aws")

@pytest.fixture
def lab(tmp_path: Path, aws_env: AwsEnv) -> Lab:
    return Lab(tmp_path, aws_env)


def _kinds(steps: list[dict]) -> list[str]:
    return [s["step"] for s in steps]


def test_deploy_executes_the_planned_steps(lab: Lab) -> None:
    fn = lab.function(publish=True, alias="live", memory=128)
    assert _kinds(lab.plan_then_deploy(fn)) == ["create", "publish_version", "point_alias"]
    assert lab.alias() == "1"

    assert lab.plan_then_deploy(fn) == []  # no-op: nothing planned, nothing sent

    fn = lab.function(code="v2", publish=True, alias="live", memory=128)
    steps = lab.plan_then_deploy(fn)
    assert _kinds(steps) == ["update_code", "publish_version", "point_alias"]
    assert steps[0]["reason"].startswith("code differs (local ")
    assert steps[2]["reason"] == "alias live: version 1 → the new version"

    fn = lab.function(code="v2", publish=True, alias="live", memory=256)
    steps = lab.plan_then_deploy(fn)
    assert _kinds(steps) == ["update_settings", "publish_version", "point_alias"]
    assert steps[0]["reason"] == "MemorySize 128 → 256"
    assert (lab.config()["MemorySize"], lab.alias(), lab.versions()) == (256, "3", ["1", "2", "3"])

    plain = lab.function("plain", timeout=5)
    assert _kinds(lab.plan_then_deploy(plain)) == ["create"]
    plain = lab.function("plain", code="v2", timeout=6)
    assert _kinds(lab.plan_then_deploy(plain)) == ["update_code", "update_settings"]


def test_fresh_checkout_with_publish_and_alias_sends_no_write(lab: Lab) -> None:
    fn = lab.function(publish=True, alias="live")
    lab.deploy(fn)
    lab.deploy(lab.function(code="v2", publish=True, alias="live"))
    fn = lab.function(code="v2", publish=True, alias="live")
    import shutil

    shutil.rmtree(lab.root / ".dodo_lambda")  # a fresh checkout: no records
    (planned,) = lab.plan(fn)
    assert planned["action"] == "none" and planned["steps"] == []
    assert planned["status"] == "unchanged"
    mark = lab.aws.mark()
    outcome = lab.deploy(fn)
    assert outcome.executed == () and outcome.version == "2"
    assert writes(lab.aws, mark) == []
    # what it read: the configuration, the aliases, the versions (and who it is, from STS)
    reads = [(r.method, r.path) for r in lab.aws.requests(mark)]
    assert ("GET", "/2015-03-31/functions/orders/aliases") in reads
    assert ("GET", "/2015-03-31/functions/orders/versions") in reads
    record = json.loads(lab.run(fn).layout(fn).deployed.read_text())
    assert record["alias"] == {"name": "live", "version": "2", "previous": None}


def test_drift_in_code_and_memory_is_reported_and_repaired_under_verify(lab: Lab) -> None:
    fn = lab.function(memory=128)
    lab.deploy(fn)
    local_sha = lab.config()["CodeSha256"]
    other = lab.root / "other.zip"
    import zipfile

    with zipfile.ZipFile(other, "w") as z:
        z.writestr("index.js", "exports.handler = async () => 'changed in the console';\n")
    lam = lab.aws.boto("lambda")
    lam.update_function_code(FunctionName="orders", ZipFile=other.read_bytes())
    lam.update_function_configuration(FunctionName="orders", MemorySize=512)

    (planned,) = lab.plan(fn)
    assert planned["drift"] is True and planned["status"] == "drifted"
    assert planned["drifted"] == ["code", "MemorySize"] and planned["changed"] == []
    assert _kinds(planned["steps"]) == ["update_code", "update_settings"]
    assert all("(drift: changed in AWS since the last deploy)" in s["reason"]
               for s in planned["steps"])

    ctx = lab.run(fn)  # the records say deployed: without verify, deploy stays local
    assert records.deploy_is_recorded(fn, ctx)
    assert not records.deploy_is_recorded(fn, lab.run(fn, verify=True))

    lab.plan_then_deploy(fn, verify=True)
    assert (lab.config()["CodeSha256"], lab.config()["MemorySize"]) == (local_sha, 128)
    (after,) = lab.plan(fn)
    assert (after["status"], after["steps"], after["drift"]) == ("unchanged", [], False)

    # changed locally and drifted at once; an unmanaged setting is no drift
    lam.update_function_configuration(FunctionName="orders", MemorySize=512, Timeout=9)
    (both,) = lab.plan(lab.function(code="v2", memory=128))
    assert both["status"] == "changed locally and drifted"
    assert (both["changed"], both["drifted"]) == (["code"], ["MemorySize"])


def test_rollback_moves_the_alias_back_in_one_request(lab: Lab) -> None:
    lab.deploy(lab.function(publish=True, alias="live"))
    fn = lab.function(code="v2", publish=True, alias="live")
    lab.deploy(fn)
    assert lab.alias() == "2"

    ctx = lab.run(fn)
    mark = lab.aws.mark()
    done = executor.rollback(fn, ctx)
    assert (done.came_from, done.to) == ("2", "1")
    assert [(r.method, r.path) for r in lab.aws.requests(mark)] == [
        ("PUT", "/2015-03-31/functions/orders/aliases/live")]
    assert lab.alias() == "1"

    (planned,) = lab.plan(fn)  # the alias differs from local, and stays rolled back
    assert planned["action"] == "none" and planned["steps"] == []
    assert "alias live points at version 1, local is version 2: rolled back" in planned["notes"][0]
    assert lab.deploy(fn).executed == ()
    with pytest.raises(DodoLambdaError, match="no version before 1 is recorded for alias live"
                                              r" \(it already went back from version 2\)"):
        executor.rollback(fn, lab.run(fn))

    fixed = lab.function(code="v3", publish=True, alias="live")  # a change moves it on
    assert _kinds(lab.plan_then_deploy(fixed)) == ["update_code", "publish_version",
                                                    "point_alias"]
    assert lab.alias() == "3"
    assert executor.rollback(fixed, lab.run(fixed)).to == "1"  # where it was before v3

    plain = lab.function("plain")
    with pytest.raises(DodoLambdaError, match="^function 'plain': has no alias to roll back"):
        executor.rollback(plain, lab.run(plain))


def test_retention_never_deletes_an_aliased_version(lab: Lab) -> None:
    settings = {"publish": True, "alias": "live", "keep_versions": 1}
    lab.deploy(lab.function(**settings))
    lam = lab.aws.boto("lambda")
    lam.create_alias(FunctionName="orders", Name="stable", FunctionVersion="1")
    lab.deploy(lab.function(code="v2", **settings))
    assert lab.versions() == ["1", "2"]  # 1: alias stable; 2: live

    steps = lab.plan_then_deploy(lab.function(code="v3", **settings))
    assert _kinds(steps) == ["update_code", "publish_version", "point_alias"]
    assert lab.versions() == ["1", "2", "3"]  # 2 is where rollback goes back to
    steps = lab.plan_then_deploy(lab.function(code="v4", **settings))
    assert _kinds(steps)[-1:] == ["delete_version"]
    assert steps[-1]["reason"] == ("version 2: beyond the newest 1 (keep_versions=1); no alias"
                                   " points at it")
    assert lab.versions() == ["1", "3", "4"]
    assert (lab.alias(), lab.alias(alias="stable")) == ("4", "1")


def test_layer_change_and_retention_of_unused_versions(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "layer"
    (src / "nodejs").mkdir(parents=True)
    (src / "package.json").write_text(json.dumps({"name": "shared", "version": "1.0.0"}))
    lock(src)

    def layer(text: str, keep: int | None = None) -> Layer:
        (src / "nodejs" / "helper.js").write_text(text)
        return Layer("shared", source=str(src), keep_layer_versions=keep)

    def publish(item: Layer) -> list[str]:
        ctx = lab.run(item)
        (planned,) = json.loads(json.dumps([p.to_json() for p in planner.plan_items(
            [item], ctx, ctx.clients())]))
        mark = lab.aws.mark()
        outcome = executor.publish_layer(item, lab.run(item))
        assert [s.to_json() for s in outcome.executed] == planned["steps"]
        assert_sent_exactly(planned["steps"], writes(lab.aws, mark), "shared")
        return _kinds(planned["steps"])

    assert publish(layer("1")) == ["publish_layer_version"]
    assert publish(layer("1")) == []
    arn1 = json.loads(lab.run().layout(layer("1")).published.read_text())["arn"]
    lab.aws.boto("lambda").create_function(  # a function elsewhere in the account uses 1
        FunctionName="user", Role=lab.aws.role_arn(), Runtime="nodejs20.x",
        Handler="index.handler", Code={"ZipFile": (lab.root / ".dodo_lambda" / "dist" / "layers"
                                                   / "shared.zip").read_bytes()},
        Layers=[arn1])
    assert publish(layer("2")) == ["publish_layer_version"]
    assert publish(layer("3", keep=1)) == ["publish_layer_version", "delete_layer_version"]
    listed = lab.aws.boto("lambda").list_layer_versions(LayerName="shared")["LayerVersions"]
    assert sorted(v["Version"] for v in listed) == [1, 3]  # 1 is in use, 2 is not


def test_refusal_is_decided_before_any_request(lab: Lab) -> None:
    fn = lab.function(runtime="nodejs22.x")  # Lambda creates no nodejs22.x function from June 2027
    ctx = lab.run(fn)
    ctx.today = date(2027, 6, 15)
    (plan,) = planner.plan_items([fn], ctx, ctx.clients())
    assert plan.action == "refused"
    assert planner.describe(plan)[0].startswith("function 'orders': deploy would be refused:"
                                                " Lambda refuses to create functions on runtime"
                                                " nodejs22.x since 2027-06-01")
    mark = lab.aws.mark()
    ctx = lab.run(fn)
    ctx.today = date(2027, 6, 15)
    with pytest.raises(DodoLambdaError, match="create functions on runtime nodejs22.x"):
        executor.deploy_function(fn, ctx)
    assert writes(lab.aws, mark) == []



def test_retention_settings_are_checked(tmp_path: Path) -> None:
    (tmp_path / "index.js").write_text("exports.handler = async () => 1;\n")

    def fn(**settings) -> str | None:
        return Function("orders", source=str(tmp_path), handler="index.handler", **settings).problem

    assert fn(publish=True, keep_versions=3) is None
    assert fn(publish=True, keep_versions=0) == (
        "function 'orders': keep_versions=0 must be a whole number of versions, 1 or more"
        " (or None to keep them all)")
    assert "keep_versions=True must be a whole number" in (fn(publish=True, keep_versions=True)
                                                         or "")
    assert fn(keep_versions=3) == ("function 'orders': keep_versions=3 needs publish=True (it"
                                   " prunes published versions)")
    assert Layer("shared", source=str(tmp_path), keep_layer_versions=-1).problem == (
        "layer 'shared': keep_layer_versions=-1 must be a whole number of versions, 1 or more"
        " (or None to keep them all)")
