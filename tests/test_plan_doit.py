"""Plan, verify, rollback and the deploy target end to end: doit as a subprocess
against the moto server (the in-process cases are in test_plan.py)."""

from __future__ import annotations

import json

from helpers import assert_sent_exactly, writes
from projects import FUNCTION, LAYER, Project

DRIFT = "(drift: changed in AWS since the last deploy)"


def _plan_json(project: Project, env: dict | None = None) -> list[dict]:
    """`doit plan --json`, doit's own status lines sent to stderr: stdout is the JSON."""
    run = project.doit("--output-file", "/dev/stderr", "plan", "--json", env=env)
    assert run.rc == 0, run.text
    return json.loads(run.out)


def test_plan_json_is_what_deploy_does_for_a_layer_change(project: Project, aws_env) -> None:
    fn = {**FUNCTION, "role": aws_env.role_arn(), "layers": ["shared"], "publish": True,
          "alias": "live"}
    project.configure([fn], layers=[LAYER])
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    tail = run.out.strip().splitlines()[-2:]  # the summary, at the end of the run
    assert tail[0].startswith("layer 'shared': published, version 1, CodeSha256 ")
    assert tail[1].startswith("function 'demo': created, version 1, alias live (new) → 1,"
                              " CodeSha256 ")

    mark = aws_env.mark()
    again = project.doit("deploy")
    assert again.rc == 0 and again.executed == set(), again.text
    assert again.out.strip().splitlines()[-1] == \
        "deploy: nothing changed (1 function and 1 layer up to date)"
    assert aws_env.requests(mark) == []
    assert project.doit("plan", "--check").rc == 0

    (project.root / "layers" / "shared" / "nodejs" / "lib" / "helper.js").write_text("// v2\n")
    assert project.doit("package").rc == 0  # (this project's package task prints on stdout)
    fn_plan, layer_plan = _plan_json(project)  # in the order lambda_tasks got them
    assert (layer_plan["name"], layer_plan["kind"], layer_plan["action"]) == \
        ("shared", "layer", "publish")
    assert [s["step"] for s in layer_plan["steps"]] == ["publish_layer_version"]
    assert (fn_plan["name"], fn_plan["kind"], fn_plan["action"], fn_plan["drift"]) == \
        ("demo", "function", "update", False)
    assert [s["step"] for s in fn_plan["steps"]] == ["update_settings", "publish_version",
                                                    "point_alias"]
    assert fn_plan["steps"][0]["reason"] == "Layers [shared:1] → [<shared: the version deploy" \
                                            " publishes>]"
    check = project.doit("plan", "--check")
    assert check.rc != 0 and "Traceback" not in check.text
    assert "plan --check: deploy would change function 'demo', layer 'shared'" in check.text

    mark = aws_env.mark()
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert project.record("published", "shared")["steps"] == ["publish_layer_version"]
    assert project.record("deployed")["steps"] == [s["step"] for s in fn_plan["steps"]]
    sent = writes(aws_env, mark)
    assert_sent_exactly(layer_plan["steps"], sent[:1], "shared")
    assert_sent_exactly(fn_plan["steps"], sent[1:], "demo")


def test_verify_repairs_drift_and_a_plain_noop_stays_local(project: Project, aws_env) -> None:
    project.configure([{**FUNCTION, "role": aws_env.role_arn(), "memory": 128}])
    assert project.doit("deploy").rc == 0
    aws_env.boto("lambda").update_function_configuration(FunctionName="demo", MemorySize=512)

    plan = project.doit("plan")
    assert plan.rc == 0, plan.text
    assert "function 'demo': update (drifted: MemorySize)" in plan.out
    assert f"  update settings: MemorySize 512 → 128 {DRIFT}" in plan.out

    mark = aws_env.mark()
    run = project.doit("deploy")  # the records say deployed: no AWS request at all
    assert run.rc == 0 and run.executed == set(), run.text
    assert aws_env.requests(mark) == []

    run = project.doit("deploy", env={**aws_env.env(), "DODO_LAMBDA_VERIFY": "1"})
    assert run.rc == 0 and run.executed == {"deploy:demo"}, run.text
    assert "function 'demo': updated (settings), version $LATEST, CodeSha256 " in run.out
    config = aws_env.boto("lambda").get_function_configuration(FunctionName="demo")
    assert config["MemorySize"] == 128
    assert "function 'demo': nothing to do (unchanged)" in project.doit("plan").out


def test_rollback_task(project: Project, aws_env) -> None:
    fn = {**FUNCTION, "role": aws_env.role_arn(), "publish": True, "alias": "live"}
    plain = {**FUNCTION, "name": "plain", "role": aws_env.role_arn()}
    project.configure([fn, plain])
    run = project.doit("-n", "2", "-P", "process", "deploy")
    assert run.rc == 0, run.text
    for name in ("demo", "plain"):  # said once, whichever worker ran the teardown
        assert run.out.count(f"function '{name}': created, version ") == 1, run.out
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => `<${s}>`;\n")
    assert project.doit("deploy").rc == 0

    mark = aws_env.mark()
    run = project.doit("rollback:demo")
    assert run.rc == 0, run.text
    assert "function 'demo': alias live rolled back from version 2 to version 1" in run.out
    assert [(r.method, r.path) for r in aws_env.requests(mark)] == [
        ("PUT", "/2015-03-31/functions/demo/aliases/live")]
    assert not {"npm:demo", "package:demo", "upload:demo"} & run.executed
    lam = aws_env.boto("lambda")
    assert lam.get_alias(FunctionName="demo", Name="live")["FunctionVersion"] == "1"
    assert "alias live points at version 1, local is version 2: rolled back" in \
        project.doit("plan").out

    run = project.doit("rollback:plain")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "function 'plain': has no alias to roll back; rollback moves an alias: set alias=" \
        in run.text

    # without role=, a function to create gets a role: plan says so (an existing one
    # keeps its role and asks IAM nothing)
    project.configure([{**fn, "role": None}, {**plain, "name": "absent", "role": None}])
    run = project.doit("plan")
    assert run.rc == 0, run.text
    assert "function 'absent': create (new)\n  create role: dodo-lambda-absent: trusted by" \
        " lambda.amazonaws.com, with AWSLambdaBasicExecutionRole; tagged created-by:" \
        " dodo_lambda\n  create: does not exist in us-east-1; runs as role dodo-lambda-absent" \
        in run.out


def test_rotating_keys_or_switching_profiles_reruns_nothing(project: Project, aws_env,
                                                            tmp_path) -> None:
    project.configure([{**FUNCTION, "role": aws_env.role_arn()}])
    assert project.doit("deploy").rc == 0

    mark = aws_env.mark()
    rotated = aws_env.env(AWS_ACCESS_KEY_ID="AKIAROTATED", AWS_SECRET_ACCESS_KEY="new",
                          AWS_SESSION_TOKEN="new")
    run = project.doit("deploy", env=rotated)
    assert run.rc == 0 and run.executed == set(), run.text
    assert aws_env.requests(mark) == []

    credentials = tmp_path / "credentials"
    credentials.write_text("[a]\naws_access_key_id = A\naws_secret_access_key = a\n"
                           "[b]\naws_access_key_id = B\naws_secret_access_key = b\n")
    env = {k: v for k, v in aws_env.env().items() if k not in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)
    for profile, runs in (("a", True), ("b", True), ("a", False), ("b", False)):
        mark = aws_env.mark()
        run = project.doit("deploy", env={**env, "AWS_PROFILE": profile})
        assert run.rc == 0, run.text
        # a profile seen for the first time: one STS call finds the same account
        assert run.executed == ({"deploy:demo"} if runs else set()), (profile, run.text)
        assert [(r.method, r.path) for r in aws_env.requests(mark)] == \
            ([("POST", "/")] if runs else [])
