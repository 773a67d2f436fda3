"""`doit invoke:<name>` and the invoker under it: the built zip runs in a local node
the way Lambda runs it. One project with many small functions is built once for
the module; most checks call the invoker directly, a few go through doit."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from projects import LAYER, Project, npm_env

from dodo_lambda import Function, Layer, invoke
from dodo_lambda.context import RunContext

HANDLERS = {
    "cjs/index.js": """
console.log("loading cjs");
exports.handler = async (event, context) => {
  console.log("hello from cjs", event);
  console.error("to stderr");
  return { kind: "cjs", event, name: context.functionName, version: context.functionVersion,
           requestId: context.awsRequestId, arn: context.invokedFunctionArn,
           memory: context.memoryLimitInMB, remaining: context.getRemainingTimeInMillis(),
           waits: context.callbackWaitsForEmptyEventLoop, group: context.logGroupName };
};
""",
    "esm/app.mjs": """
import { createHash } from "node:crypto";
export const handler = async (event) => ({ kind: "esm", meta: typeof import.meta.url,
  digest: createHash("sha1").update("x").digest("hex").length });
""",
    # "type": "module" in the nearest package.json makes a .js file an ES module
    "esmtype/src/package.json": '{"type": "module"}\n',
    "esmtype/src/main.js": """
export async function handler() { return { kind: "esm-type" }; }
""",
    "callback/index.js": """
exports.handler = (event, context, callback) => {
  setTimeout(() => console.log("timer ran before the answer"), 30);
  callback(null, { kind: "callback" });
};
""",
    "promise/index.js": """
exports.handler = (event) => new Promise((resolve) => setTimeout(() => resolve({ kind: "promise",
  n: event.n * 2 }), 10));
""",
    "uselayer/index.js": """
const { excl } = require("greet-util"); // from the layer's nodejs/node_modules
exports.handler = async () => ({ kind: "layer", text: excl("hi") });
""",
    "thrower/index.js": """
exports.handler = async () => { throw new TypeError("boom"); };
""",
    "sleeper/index.js": """
exports.handler = () => new Promise(() => setInterval(() => {}, 1000));
""",
    "env/index.js": """
exports.handler = async () => {
  const keys = ["TABLE", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_REGION", "AWS_DEFAULT_REGION", "LAMBDA_TASK_ROOT",
    "_HANDLER", "AWS_EXECUTION_ENV", "NODE_PATH", "TZ", "AWS_ACCESS_KEY_ID", "AWS_PROFILE",
    "HOME"];
  return { env: Object.fromEntries(keys.map((k) => [k, process.env[k] ?? null])),
           cwd: process.cwd() };
};
""",
}

FUNCTIONS = [
    {"name": "cjs", "source": "fns/cjs", "handler": "index.handler", "memory": 256, "timeout": 7},
    {"name": "esm", "source": "fns/esm", "handler": "app.handler"},
    {"name": "esmtype", "source": "fns/esmtype", "handler": "src/main.handler"},
    # callback handlers: gone with nodejs24.x (the default), whose package refuses them
    {"name": "callback", "source": "fns/callback", "handler": "index.handler",
     "runtime": "nodejs22.x"},
    {"name": "promise", "source": "fns/promise", "handler": "index.handler"},
    {"name": "uselayer", "source": "fns/uselayer", "handler": "index.handler",
     "layers": ["shared"]},
    {"name": "thrower", "source": "fns/thrower", "handler": "index.handler"},
    {"name": "sleeper", "source": "fns/sleeper", "handler": "index.handler", "timeout": 1},
    {"name": "env", "source": "fns/env", "handler": "index.handler",
     "environment": {"TABLE": "orders"}},
]


@pytest.fixture(scope="module")
def built(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The project, packaged once for the module."""
    root = tmp_path_factory.mktemp("invoke") / "project"
    shutil.copytree(template, root, symlinks=True)
    for rel, text in HANDLERS.items():
        (root / "fns" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "fns" / rel).write_text(text)
    project = Project(root)
    project.configure(FUNCTIONS, [LAYER])
    run = project.doit("package")
    assert run.rc == 0, run.text
    yield project


def _function(name: str) -> Function:
    spec = dict(next(f for f in FUNCTIONS if f["name"] == name))
    layers = [Layer(**LAYER) for x in spec.pop("layers", [])]
    return Function(**spec, layers=layers)


def _invocation(project: Project, name: str) -> invoke.Invocation:
    return invoke.for_function(_function(name), RunContext(project.build_dir))


def _run(project: Project, name: str, event: object = None,
         inv: invoke.Invocation | None = None) -> invoke.InvokeResult:
    return invoke.run(inv or _invocation(project, name),
                      json.dumps(event if event is not None else {}), project.build_dir,
                      capture_logs=True)


def test_cjs_handler_gets_event_and_context(built: Project) -> None:
    result = _run(built, "cjs", {"name": "Ann"})
    assert result.ok, result.payload
    out = json.loads(result.payload)
    assert out["kind"] == "cjs" and out["event"] == {"name": "Ann"}
    assert out["name"] == "cjs" and out["version"] == "$LATEST" and out["group"] == "/aws/lambda/cjs"
    assert out["requestId"] == result.request_id
    assert out["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:cjs"
    assert out["memory"] == "256"  # Lambda gives a string
    assert 0 < out["remaining"] <= 7000 and out["waits"] is True
    logs = result.logs or ""
    assert "\tINFO\tloading cjs" in logs and f"{result.request_id}\tINFO\thello from cjs" in logs
    assert "\tERROR\tto stderr" in logs
    assert result.memory_mb == 256 and result.max_memory_mb > 0 and result.init_ms is not None
    assert result.report_line().startswith(f"REPORT RequestId: {result.request_id}\tDuration: ")


@pytest.mark.parametrize("name, kind", [("esm", "esm"), ("esmtype", "esm-type"),
                                        ("promise", "promise"), ("callback", "callback"),
                                        ("uselayer", "layer")])
def test_module_kinds_and_handler_styles(built: Project, name: str, kind: str) -> None:
    result = _run(built, name, {"n": 21})
    assert result.ok, result.payload
    out = json.loads(result.payload)
    assert out["kind"] == kind
    if name == "promise":
        assert out["n"] == 42
    if name == "uselayer":
        assert out["text"] == "hi!"
    if name == "callback":  # the answer waits for the event loop to empty, as on Lambda
        assert "timer ran before the answer" in (result.logs or "")


def test_callback_handlers_end_with_nodejs24(built: Project, caplog) -> None:
    # the package step refuses such a package; the invoker too answers as Lambda does
    # (a function deployed elsewhere, run by the emulator)
    inv = dataclasses.replace(_invocation(built, "callback"), runtime="nodejs24.x")
    with caplog.at_level(logging.WARNING, logger="dodo_lambda"):
        result = _run(built, "callback", inv=inv)
    assert not result.ok
    assert result.error is not None and result.error["errorType"] == "Runtime.CallbackHandlerDeprecated"
    local = result.node_version.split(".")[0] if result.node_version else ""
    if local != "24":
        assert "runs on nodejs24.x in Lambda but the local node is" in caplog.text


def test_thrown_error_has_lambdas_shape(built: Project) -> None:
    result = _run(built, "thrower")
    assert not result.ok and not result.timed_out
    error = json.loads(result.payload)
    assert error["errorType"] == "TypeError" and error["errorMessage"] == "boom"
    assert error["trace"][0] == "TypeError: boom" and len(error["trace"]) > 1
    assert "\tERROR\tInvoke Error" in (result.logs or "")


def test_lambdas_environment_and_no_caller_credentials(built: Project, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-DEVELOPER")
    monkeypatch.setenv("AWS_PROFILE", "admin")
    inv = _invocation(built, "env")
    # Function() refuses a reserved key, moto does not: one set there loses all the same
    inv = dataclasses.replace(inv, environment={**inv.environment,
                                                "AWS_LAMBDA_FUNCTION_NAME": "not-this"})
    result = _run(built, "env", inv=inv)
    assert result.ok, result.payload
    out = json.loads(result.payload)
    env = out["env"]
    task = Path(env["LAMBDA_TASK_ROOT"])
    assert env["TABLE"] == "orders"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "env"  # Lambda's own variables win
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == os.environ.get("AWS_REGION",
                                                                             "us-east-1")
    assert env["_HANDLER"] == "index.handler" and env["AWS_EXECUTION_ENV"] == "AWS_Lambda_nodejs24.x"
    assert env["TZ"] == ":UTC" and out["cwd"] == str(task)
    assert (task / "index.js").is_file()  # the zip's contents, extracted
    assert env["NODE_PATH"].split(":")[-1] == str(task)
    assert env["NODE_PATH"].split(":")[0].endswith("/nodejs/node24/node_modules")
    assert env["AWS_ACCESS_KEY_ID"] is None and env["AWS_PROFILE"] is None
    assert env["HOME"] != os.environ.get("HOME")
    assert env["HOME"] == str(built.paths.invoke_home.resolve())


def test_extracted_once_per_zip(built: Project) -> None:
    first = invoke.task_root(_invocation(built, "env").code, built.build_dir)
    assert first.parent == built.paths.invoke_task
    marker = first / ".seen"
    marker.write_text("")
    again = invoke.task_root(_invocation(built, "env").code, built.build_dir)
    assert again == first and marker.exists()  # not extracted again


# -- through doit ---------------------------------------------------------------------


def test_doit_invoke_prints_the_result_last(built: Project) -> None:
    (built.root / "event.json").write_text('{"name": "Bo"}')
    run = built.doit("invoke:cjs", "--event", "event.json")
    assert run.rc == 0, run.text
    assert json.loads(run.out.strip().splitlines()[-1])["event"] == {"name": "Bo"}
    assert "hello from cjs" in run.err and "hello from cjs" not in run.out
    assert run.err.strip().splitlines()[-1].startswith("REPORT RequestId: ")
    assert "Max Memory Used: " in run.err


def test_doit_invoke_error_and_timeout_exit_nonzero(built: Project) -> None:
    run = built.doit("invoke:thrower")
    assert run.rc != 0 and "Traceback" not in run.text
    error = json.loads(run.out.strip().splitlines()[-1])
    assert (error["errorType"], error["errorMessage"]) == ("TypeError", "boom")
    run = built.doit("invoke:sleeper")
    assert run.rc != 0 and "Traceback" not in run.text
    error = json.loads(run.out.strip().splitlines()[-1])
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].endswith("Task timed out after 1.00 seconds")


def test_doit_invoke_event_from_stdin_and_credentials_opt_in(built: Project) -> None:
    import subprocess
    import sys

    env = {**npm_env(), "AWS_ACCESS_KEY_ID": "AKIA-DEVELOPER"}
    for flag, expected in (([], None), (["--aws-credentials"], "AKIA-DEVELOPER")):
        proc = subprocess.run([sys.executable, "-m", "doit", "invoke:env", "--event", "-", *flag],
                              cwd=built.root, input='{"from": "stdin"}', capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["env"]["AWS_ACCESS_KEY_ID"] == expected
    run = built.doit("invoke:env", "--event", "missing.json")
    assert run.rc != 0 and "function 'env': cannot read the event file missing.json" in run.out
    (built.root / "bad.json").write_text("{nope")
    run = built.doit("invoke:env", "--event", "bad.json")
    assert run.rc != 0 and "the event in bad.json is not JSON" in run.out
