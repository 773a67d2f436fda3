"""The newcomer's path end to end: the README's first block on a fresh clone, `doit lambda`
and what doit's default verbosity shows, `doit logs:NAME` against log events written
to the moto server, and the one line a caller without iam:CreateRole gets."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from awsfixtures import AwsEnv
from faultproxy import FaultProxy
from projects import DODO, FUNCTION, Project, npm_env

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[local]' && "
TESTS = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "


def readme_first_block() -> list[str]:
    """The README's first block, read as .ci/run reads it (the same script)."""
    out = subprocess.run([str(ROOT / ".ci" / "readme-first-block"), str(ROOT / "README.md")],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def closing(line: str) -> str:
    found = re.search(r'&& echo "(OK: [^"]*)"$', line)
    assert found, f"a README command must end by saying what happened: {line}"
    return found.group(1)


def test_readme_first_block_pasted_on_a_fresh_clone(tmp_path: Path) -> None:
    """The block is two commands, each closing with an OK line; .ci/run pastes both whole
    into a fresh shell on a fresh clone (installing from the package index, ~2 min). Here,
    on a fresh clone too, the first line's example part runs as pasted, with the running
    virtualenv in place of the one its install part would make, followed by what a
    second pasted line would see: the shell's folder."""
    install, tests = readme_first_block()
    assert install.startswith(INSTALL) and tests.startswith(TESTS)
    assert "pytest" in tests and "examples/quickstart" in install
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".ci/fresh-clone" in ci and ".ci/readme-first-block README.md" in ci

    clone = tmp_path / "dodo_lambda"
    subprocess.run([str(ROOT / ".ci" / "fresh-clone"), str(clone)], check=True)
    (clone / ".venv").symlink_to(sys.prefix)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": str(clone),  # the clone's own dodo_lambda, not the checkout's
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    pasted = f"{install.removeprefix(INSTALL)}\npwd\n"
    from dodo_lambda import emulator

    try:
        run = subprocess.run(["bash", "--noprofile", "--norc", "-s"], input=pasted, cwd=clone,
                             env=env, capture_output=True, text=True, timeout=300)
    finally:  # the server outlives doit: stop it here
        emulator.stop(clone / "examples" / "quickstart" / ".dodo_lambda")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-2:] == [closing(install), str(clone)], run.stdout + run.stderr
    assert "function 'dodo-lambda-hello': created with a new execution role, version $LATEST" \
        in run.stdout
    assert "NOT to AWS" in run.stderr and "Traceback" not in run.stderr


def _dodo_as_readme(project: Project) -> None:
    """The project's dodo.py with the README's DOIT_CONFIG: doit's default verbosity."""
    dodo = DODO.replace('"verbosity": 2', '"default_tasks": ["package"]')
    assert dodo != DODO
    (project.root / "dodo.py").write_text(dodo)


def test_doit_lambda_and_what_the_default_verbosity_shows(project: Project,
                                                          aws_env: AwsEnv) -> None:
    _dodo_as_readme(project)
    project.configure([{**FUNCTION, "role": aws_env.role_arn()}])
    (project.fn / ".env.example.js").write_text("module.exports = {};\n")  # a warning

    bare = project.doit(env=aws_env.env())  # default_tasks: package, never deploy
    assert bare.rc == 0, bare.text
    assert bare.executed == {"npm:demo", "package:demo"}
    size = re.search(r"^function 'demo': \.dodo_lambda/dist/demo\.zip ([\d,]+) bytes, (\d+) files,"
                     r" ([\d,]+) bytes unzipped$", bare.out, re.M)
    assert size and int(size[1].replace(",", "")) == project.zip_path().stat().st_size
    assert int(size[2]) == len([n for n in project.names() if not n.endswith("/")])
    warned = [ln for ln in bare.err.splitlines() if ".env.example.js" in ln]
    assert warned and all(ln.startswith("warning: function 'demo': ") for ln in warned)

    run = project.doit("lambda", env=aws_env.env())
    assert run.rc == 0, run.text
    assert "deploy:demo" in run.executed
    assert re.search(r"^function 'demo': created, version \$LATEST, CodeSha256 \S+…, [\d.]+ s$",
                     run.out, re.M), run.text
    assert "created" not in run.err  # results on stdout, progress on stderr

    again = project.doit("deploy", env=aws_env.env())  # the groups doit users know still work
    assert again.rc == 0 and again.executed == set(), again.text
    assert again.out.splitlines()[-1] == "deploy: nothing changed (1 function up to date)"
    listed = project.doit("list", env=aws_env.env()).out
    assert re.search(r"^lambda\s+package and deploy every function and layer", listed, re.M)


_DENIED = (
    b"<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender"
    b"</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/dev is not"
    b" authorized to perform: iam:CreateRole on resource: arn:aws:iam::123456789012:role/"
    b"dodo-lambda-demo because no identity-based policy allows the iam:CreateRole action"
    b"</Message></Error><RequestId>denied</RequestId></ErrorResponse>")


def test_no_permission_to_create_roles_is_one_line(project: Project, aws_env: AwsEnv,
                                                   fault_proxy: FaultProxy) -> None:
    project.configure([FUNCTION])  # no role=
    rule = fault_proxy.add("POST", "^/$", request_body=r"Action=CreateRole", status=403,
                           body=_DENIED, headers={"Content-Type": "text/xml"})
    run = project.doit("deploy", env=aws_env.env())
    assert run.rc != 0 and "Traceback" not in run.text
    assert rule.hits == 1
    assert ("function 'demo': cannot create its execution role dodo-lambda-demo: the AWS"
            " credentials are not allowed iam:CreateRole (AccessDenied); give role= (the ARN of"
            " an existing role Lambda may assume), or allow iam:CreateRole") in run.out
    assert fault_proxy.count("POST", r"^/2015-03-31/functions/?$") == 0  # nothing created


# -- doit logs:NAME ------------------------------------------------------------------


def _put(aws_env: AwsEnv, *events: tuple[float, str], stream: str = "a") -> None:
    """Log events ((seconds ago, message), oldest first) in a stream of the function's
    log group (made when missing), as Lambda writes them."""
    logs, group = aws_env.boto("logs"), "/aws/lambda/demo"
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    name = f"2026/11/30/[$LATEST]{stream}"
    if not logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name)["logStreams"]:
        logs.create_log_stream(logGroupName=group, logStreamName=name)
    now = time.time()
    logs.put_log_events(logGroupName=group, logStreamName=name, logEvents=[
        {"timestamp": int((now - ago) * 1000), "message": text} for ago, text in events])


STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z"


def test_logs_recent_events_newest_last(project: Project, aws_env: AwsEnv) -> None:
    none = project.doit("logs:demo", env=aws_env.env())
    assert none.rc == 0, none.text
    assert ("function 'demo': no logs yet: log group /aws/lambda/demo does not exist (Lambda"
            " creates it the first time the function runs)") in none.err

    # two streams (two instances of the function): the events come back in time order
    _put(aws_env, (20 * 60, "old one\n"), (120, "START RequestId: 2\n"), stream="one")
    _put(aws_env, (300, "a\nb\n"), stream="two")
    run = project.doit("logs:demo", env=aws_env.env())
    assert run.rc == 0, run.text
    shown = [ln for ln in run.out.splitlines() if not ln.startswith(".  ")]
    assert [re.sub(STAMP, "T", ln) for ln in shown] == [
        "T a", " " * 24 + " b", "T START RequestId: 2"]  # newest last; the old one is out
    wider = project.doit("logs:demo", "--since", "1h", env=aws_env.env())
    assert re.findall(rf"^{STAMP} (\S+)", wider.out, re.M) == ["old", "a", "START"]
    bad = project.doit("logs:demo", "--since", "ten", env=aws_env.env())
    assert bad.rc != 0 and "Traceback" not in bad.text
    assert "logs: --since 'ten' is not a duration; use a number and a unit, e.g. 30s, 10m," \
        " 2h or 1d" in bad.text


def test_logs_follow_prints_new_events_until_ctrl_c(project: Project, aws_env: AwsEnv) -> None:
    _put(aws_env, (60, "before\n"))
    env = aws_env.env(DODO_LAMBDA_WAIT_SCALE="0.05")  # a poll every 0.1 s
    proc = subprocess.Popen([sys.executable, "-m", "doit", "logs:demo", "--follow"],
                            cwd=project.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: [lines.put(ln) for ln in out], daemon=True).start()

    def wait_for(text: str) -> None:
        while True:
            line = lines.get(timeout=60)
            if text in line:
                assert re.match(rf"{STAMP} {text}$", line.rstrip("\n")), line
                return

    try:
        wait_for("before")
        _put(aws_env, (0, "after\n"))
        wait_for("after")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "function 'demo': stopped following (2 events shown)" in err


@pytest.fixture(autouse=True)
def _no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in npm_env().items():
        if key.startswith("npm_config_"):
            monkeypatch.setenv(key, value)


def test_logs_access_denied_names_the_logs_permission(aws_env: AwsEnv) -> None:
    from awsfixtures import inject_fault

    from dodo_lambda import aws, logs
    from dodo_lambda.errors import DodoLambdaError

    c = aws.connect()
    with inject_fault(c.logs, "FilterLogEvents", status=400, code="AccessDeniedException"), \
            pytest.raises(DodoLambdaError) as caught:
        list(logs.tail(c, "demo", since=60, follow=False, who="function 'demo'"))
    assert str(caught.value) == (
        "function 'demo': cannot read /aws/lambda/demo: the AWS credentials are not allowed"
        " logs:FilterLogEvents (AccessDeniedException); allow it on the log group")
