"""`doit watch`: one long-lived process that rebuilds (and redeploys) on every save.
The watch runs as a real doit subprocess; the tests synchronise on its output
lines and stop it with SIGINT, as Ctrl-C would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from helpers import Watcher
from projects import FUNCTION, LAYER, Project

from dodo_lambda import emulator


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for w in started:
        w.kill()


def _cold_bytes(project: Project, env: dict[str, str] | None = None) -> bytes:
    layout = project.layout()
    for path in (layout.zip, layout.manifest, layout.entries):
        path.unlink()  # the entry cache too: nothing of the watch's is reused
    run = project.doit("package:demo", env=env)
    assert "package:demo" in run.executed, run.text
    return project.zip_path().read_bytes()


def test_watch_redeploys_edits_and_layer_changes(project: Project, watchers) -> None:
    build_dir = project.build_dir
    fn = {**FUNCTION, "role": emulator.ROLE_ARN, "layers": ["shared"]}
    project.configure([fn], [LAYER], options={"emulator": True})
    try:
        w = Watcher(project, "watch")
        watchers.append(w)
        w.wait_for(r"^\d\d:\d\d:\d\d layer 'shared': start: published")
        w.wait_for(r"^\d\d:\d\d:\d\d function 'demo': start: created")
        w.wait_for(r"^watch: watching function 'demo', layer 'shared' through file events")

        (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => `(${s})`;\n")
        w.wait_for(r"^\d\d:\d\d:\d\d function 'demo': lib/util\.js: rebuilt in \d+ ms,"
                   r" deployed in \d+\.\d\d s$")
        server = emulator.running(build_dir)
        assert server is not None
        import boto3

        lam = boto3.client("lambda", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="y")
        assert lam.get_function_configuration(FunctionName="demo")["CodeSha256"] == \
            project.manifest()["code_sha256"]
        answer = lam.invoke(FunctionName="demo", Payload=b'{"name": "Watch"}')
        assert json.loads(answer["Payload"].read()) == {"body": "(Hello, Watch!)"}

        helper = project.root / "layers" / "shared" / "nodejs" / "lib" / "helper.js"
        helper.write_text("exports.shared = 2;\n")
        w.wait_for(r"layer 'shared': nodejs/lib/helper\.js: rebuilt in \d+ ms, published in")
        w.wait_for(r"function 'demo': layer 'shared': deployed in")
        published = project.record("published", "shared")
        layers = lam.get_function_configuration(FunctionName="demo")["Layers"]
        assert [x["Arn"] for x in layers] == [published["arn"]] and published["version"] == 2

        assert w.interrupt() == 0  # Ctrl-C ends it cleanly
        watched = project.zip_path().read_bytes()
        assert watched == _cold_bytes(project)  # a watch rebuild equals a cold build
    finally:
        emulator.stop(build_dir)


def test_watch_polling_rebuilds_equal_cold_builds(project: Project, watchers) -> None:
    assert project.doit("package").rc == 0
    w = Watcher(project, "watch:demo", "--poll", "--no-deploy")
    watchers.append(w)
    w.wait_for(r"^watch: watching function 'demo' through polling")

    with open(project.fn / "lib" / "util.js", "a") as f:
        f.write("// edited\n")
    w.wait_for(r"function 'demo': lib/util\.js: rebuilt in \d+ ms$")
    edited = project.zip_path().read_bytes()

    (project.fn / "lib" / "added.js").write_text("exports.added = 1;\n" * 50)
    (project.fn / "README.md").unlink()
    (project.fn / "run.sh").chmod(0o644)
    seen = ""
    while not all(x in seen for x in ("lib/added.js", "README.md", "run.sh")):
        seen += w.wait_for(r"function 'demo': .*rebuilt in \d+ ms$")
    # left out by the default excludes: not packed, but the manifest lists it (and a
    # name that looks like code is worth a warning), as the package step does
    (project.fn / ".env.production").write_text("SECRET=3\n")
    (project.fn / "lib" / "util.js").write_text((project.fn / "lib" / "util.js").read_text())
    w.wait_for(r"function 'demo': .*lib/util\.js: zip unchanged$")
    assert ".env.production" in project.manifest()["excluded_by_default"]
    (project.fn / ".env.example.js").write_text("module.exports = {};\n")
    w.wait_for(r"warning: function 'demo': \.env\.example\.js is not packed: the default excludes")
    w.wait_for(r"function 'demo': \.env\.example\.js: zip unchanged$")
    assert ".env.example.js" in project.manifest()["excluded_by_default"]

    # the handler check of the package step holds for a splice too: no zip is written
    before = project.zip_path().read_bytes()
    index = project.fn / "index.js"
    good = index.read_text()
    index.write_text(good.replace("exports.handler", "exports.other"))
    w.wait_for(r"function 'demo': index\.js: .*does not export 'handler'")
    assert project.zip_path().read_bytes() == before
    index.write_text(good + "// fixed\n")
    w.wait_for(r"function 'demo': index\.js: rebuilt in \d+ ms$")

    assert w.interrupt() == 0
    watched = project.zip_path().read_bytes()
    manifest = project.manifest()
    assert watched != edited
    assert watched == _cold_bytes(project)
    assert project.manifest() == manifest  # the manifest too, content digest included
    assert project.doit("package").executed == set()  # and doit agrees it is up to date


def test_watch_rebundles_a_bundled_function(ts_project: Project, bundle_env, watchers) -> None:
    assert ts_project.doit("package", env=bundle_env).rc == 0
    w = Watcher(ts_project, "watch:demo", "--poll", "--no-deploy", env=bundle_env)
    watchers.append(w)
    w.wait_for(r"^watch: watching function 'demo' through polling")

    math = ts_project.fn / "lib" / "math.ts"
    math.write_text(math.read_text().replace("n * 2", "n * 3"))
    w.wait_for(r"function 'demo': lib/math\.ts: rebuilt in \d+ ms$")
    import zipfile

    with zipfile.ZipFile(ts_project.zip_path()) as z:
        assert "n * 3" in z.read("index.mjs").decode()
    # a file esbuild never read: the bundle is up to date, the zip the same
    (ts_project.fn / "lib" / "unused.ts").write_text("export const unused = 2;\n")
    w.wait_for(r"function 'demo': lib/unused\.ts: zip unchanged$")

    assert w.interrupt() == 0
    watched = ts_project.zip_path().read_bytes()
    assert ts_project.doit("package", env=bundle_env).executed == set()
    assert watched == _cold_bytes(ts_project, bundle_env)


def test_watch_deploys_to_the_chosen_stage(project: Project, aws_env, watchers) -> None:
    """One build, deployed under the stage's name: the watch builds `demo` and deploys
    `demo-prod` (stage=prod), as `doit deploy stage=prod` would."""
    fn = {**FUNCTION, "role": aws_env.role_arn()}
    project.configure([fn], options={"stages": [{"name": "dev", "suffix": "-dev"},
                                                {"name": "prod", "suffix": "-prod"}]})
    env = aws_env.env()
    assert project.doit("package", env=env).rc == 0
    w = Watcher(project, "stage=prod", "watch:demo", "--poll", env=env)
    watchers.append(w)
    w.wait_for(r"^\d\d:\d\d:\d\d function 'demo': start: created")
    w.wait_for(r"^watch: watching function 'demo' through polling")
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => `{${s}}`;\n")
    w.wait_for(r"function 'demo': lib/util\.js: rebuilt in \d+ ms, deployed in")
    assert w.interrupt() == 0
    lam = aws_env.boto("lambda")
    assert lam.get_function_configuration(FunctionName="demo-prod")["CodeSha256"] == \
        project.manifest()["code_sha256"]
    assert {f["FunctionName"] for f in lam.list_functions()["Functions"]} == {"demo-prod"}
    from dodo_lambda.layout import Layout

    # the stage's records, under the build's name
    assert Layout(project.build_dir, "function", "demo", "prod").deployed.is_file()
    assert not project.layout().deployed.exists()
