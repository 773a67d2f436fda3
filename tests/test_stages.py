"""Stages: one build deployed to several targets (moto server), and Stage's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from projects import FUNCTION, LAYER, Project

from dodo_lambda import Function, Layer, Stage, lambda_tasks
from dodo_lambda.layout import Layout

STAGES = [
    {"name": "dev", "suffix": "-dev", "environment": {"STAGE": "dev"}},
    {"name": "prod", "suffix": "-prod", "environment": {"STAGE": "prod", "LEVEL": "warn"}},
]


def built(run) -> set[str]:
    return {t for t in run.executed if t.split(":")[0] in ("npm", "bundle", "package")}


def test_two_stages_from_one_build(project: Project, aws_env) -> None:
    function = {**FUNCTION, "role": aws_env.role_arn(), "layers": ["shared"],
                "environment": {"LEVEL": "debug", "TABLE": "orders"}}
    project.configure([function], [LAYER], {"stages": STAGES})
    lam = aws_env.boto("lambda")

    dev = project.doit("deploy")  # the first stage unless one is named
    assert dev.rc == 0, dev.text
    assert {"npm:demo", "package:demo", "deploy:demo", "layer:shared"} <= dev.executed
    config = lam.get_function_configuration(FunctionName="demo-dev")
    assert config["Environment"]["Variables"] == {"LEVEL": "debug", "TABLE": "orders",
                                                  "STAGE": "dev"}
    assert [x["Arn"].split(":")[-2] for x in config["Layers"]] == ["shared-dev"]

    prod = project.doit("deploy", "stage=prod")
    assert prod.rc == 0, prod.text
    assert built(prod) == set(), prod.text  # one build serves both stages
    assert {"deploy:demo", "layer:shared"} <= prod.executed
    live = lam.get_function_configuration(FunctionName="demo-prod")
    assert live["CodeSha256"] == config["CodeSha256"] == project.manifest()["code_sha256"]
    assert live["Environment"]["Variables"] == {"LEVEL": "warn", "TABLE": "orders",
                                                "STAGE": "prod"}
    assert [x["Arn"].split(":")[-2] for x in live["Layers"]] == ["shared-prod"]
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert names == {"demo-dev", "demo-prod"}  # never the bare name
    assert "function 'demo-prod':" in prod.out

    # records per stage, under the build's name; one zip
    for stage, arn_name in (("dev", "demo-dev"), ("prod", "demo-prod")):
        record = json.loads(Layout(project.build_dir, "function", "demo", stage)
                            .deployed.read_text())
        assert record["arn"].endswith(f":function:{arn_name}")
        assert Layout(project.build_dir, "layer", "shared", stage).published.is_file()
    assert not project.layout().deployed.exists()
    assert sorted(p.name for p in (project.build_dir / "dist").glob("*.zip")) == ["demo.zip"]

    mark = aws_env.mark()
    again = project.doit("deploy", "stage=prod")
    assert again.rc == 0 and again.executed == set(), again.text
    assert aws_env.requests(mark) == []
    plan = project.doit("plan", "stage=dev")
    assert plan.rc == 0 and "function 'demo-dev': nothing to do" in plan.out, plan.text

    # an edit: built once, then each stage deploys the new zip when asked
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => `<${s}>`;\n")
    run = project.doit("deploy", "stage=prod")
    assert run.rc == 0 and "package:demo" in run.executed, run.text
    assert lam.get_function_configuration(FunctionName="demo-dev")["CodeSha256"] \
        == config["CodeSha256"]  # dev keeps its code until dev is deployed
    run = project.doit("deploy", "stage=dev")
    assert run.rc == 0 and built(run) == set() and "deploy:demo" in run.executed, run.text

    wrong = project.doit("deploy", "stage=prdo")
    assert wrong.rc != 0 and "Traceback" not in wrong.text
    assert "stage=prdo is not a stage of this project (dev, prod)" in wrong.text


def _tasks(*items, **options) -> dict[str, dict]:
    return {f"{t['basename']}:{t['name']}": t for t in lambda_tasks(*items, **options)
            if t.get("name")}


def _failure(task: dict) -> str | None:
    action = task["actions"][0]
    return action[1][0] if action[0].__name__ == "fail" else None


@pytest.fixture
def source(tmp_path: Path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "index.js").write_text("exports.handler = async () => 1;\n")
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "package.json").write_text('{"name": "layer"}')
    return "fn"


def test_stage_names_and_settings_are_checked(source: str) -> None:
    fn = Function("a" * 60, source, "index.handler", environment={"XY": "1"})
    tasks = _tasks(fn, stages=[Stage("ok", suffix="-ok"), Stage("long", suffix="-toolong")])
    assert _failure(tasks[f"deploy:{fn.name}"]) is None  # stage "ok": 63 characters
    tasks = _tasks(fn, stages=[Stage("long", suffix="-toolong"), Stage("ok", suffix="-ok")])
    problem = _failure(tasks[f"deploy:{fn.name}"])
    assert problem and "stage 'long'" in problem and "1-64" in problem
    assert _failure(tasks[f"package:{fn.name}"]) is None  # the build does not depend on it

    for stages, expected in [
        ([Stage("no spaces")], "Stage name 'no spaces' must be 1-64 letters"),
        ([Stage("a", suffix="/x")], "suffix='/x' must hold only letters"),
        ([Stage("a", environment={"AWS_REGION": "x"})], "AWS_REGION is reserved"),
        ([Stage("a", bucket="s3://b")], "is a URL or ARN"),
        ([Stage("a", region="")], "region='' must be a non-empty string"),
        ([Stage("a"), Stage("a", suffix="-2")], "two stages are named 'a'"),
        ([Stage("a"), Stage("b")], "stages 'a' and 'b' deploy the same names"),
        ([], "names no stage"),
        (Stage("a"), "must be a list of Stage objects"),
    ]:
        tasks = _tasks(Function("f", source, "index.handler"), stages=stages)
        problem = _failure(tasks["deploy:f"])
        assert problem and expected in problem, (stages, problem)
        assert _failure(tasks["package:f"])  # the project's settings are wrong: all fail

    # the merged environment is what Lambda's rules are held against
    big = Function("f", source, "index.handler", environment={"A1": "x" * 3000})
    tasks = _tasks(big, stages=[Stage("s", environment={"B1": "y" * 1500})])
    assert "4 KB" in (_failure(tasks["deploy:f"]) or "") or "4,096" in (
        _failure(tasks["deploy:f"]) or ""), _failure(tasks["deploy:f"])


def test_staged_copies(source: str) -> None:
    from dodo_lambda.stages import staged

    layer = Layer("libs", "layer", bucket="artifacts")
    fn = Function("orders", source, "index.handler", layers=[layer, "arn:aws:lambda:us-east-1:"
                  "123456789012:layer:ext:1"], bucket="artifacts", environment={"AA": "1"})
    stage = Stage("prod", suffix="-prod", bucket="prod-artifacts", environment={"BB": "2"})
    copy = staged(fn, stage)
    assert isinstance(copy, Function)
    assert (copy.name, copy.build_name, copy.bucket) == ("orders-prod", "orders", "prod-artifacts")
    assert copy.settings()["Environment"] == {"Variables": {"AA": "1", "BB": "2"}}
    assert [x.name if isinstance(x, Layer) else x for x in copy.layers][0] == "libs-prod"
    assert isinstance(copy.layers[0], Layer) and copy.layers[0].build_name == "libs"
    assert staged(Function("plain", source, "index.handler"), stage).bucket is None
    assert staged(fn, None) is fn
    tasks = _tasks(fn, layer, stages=[stage])
    assert {"deploy:orders", "upload:orders", "layer:libs", "package:orders"} <= set(tasks)
    deploy = tasks["deploy:orders"]
    assert any("dist/stages/prod/orders.deployed.json" in t for t in deploy["targets"])
    assert any("dist/orders.zip" in t for t in deploy["file_dep"])
