"""Layers: built like functions, published only when their content changes."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import pytest
from helpers import reset_state
from projects import FUNCTION, LAYER, Project, npm_env


def _layer_zip(project: Project) -> bytes:
    return project.layout("shared", "layer").zip.read_bytes()


def _versions(aws_env) -> list[int]:
    listed = aws_env.boto("lambda").list_layer_versions(LayerName="shared")["LayerVersions"]
    return sorted(v["Version"] for v in listed)


def _attached(aws_env) -> list[str]:
    config = aws_env.boto("lambda").get_function_configuration(FunctionName="demo")
    return [x["Arn"] for x in config.get("Layers", [])]


def test_layer_zip_layout_and_determinism(project: Project, tmp_path) -> None:
    project.configure([], layers=[LAYER])
    run = project.doit("package")
    assert run.rc == 0, run.text
    assert run.executed == {"npm:shared", "package:shared"}
    path = project.layout("shared", "layer").zip
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert names == ["nodejs/lib/helper.js", "nodejs/node_modules/greet-util/index.js",
                     "nodejs/node_modules/greet-util/package.json"]
    other = Project(tmp_path / "second" / "copy")
    shutil.copytree(project.root, other.root, symlinks=True)
    shutil.rmtree(other.root / ".dodo_lambda")
    for db in other.root.glob(".doit.db*"):
        db.unlink()
    assert other.doit("package").rc == 0
    assert _layer_zip(other) == _layer_zip(project)


def test_publish_once_attach_and_move(project: Project, aws_env) -> None:
    fn = {**FUNCTION, "role": aws_env.role_arn(), "layers": ["shared"]}
    project.configure([fn], layers=[LAYER])
    run = project.doit("deploy")
    assert run.rc == 0, run.text
    assert "layer:shared" in run.executed
    assert _versions(aws_env) == [1]
    record = project.record("published", "shared")
    assert _attached(aws_env) == [record["arn"]] and record["arn"].endswith(":shared:1")
    assert "greet-util" in run.err and "ships twice" in run.err  # the shared package

    again = project.doit("deploy")
    assert again.rc == 0 and again.executed == set()
    reset_state(project)
    fresh = project.doit("deploy")
    assert fresh.rc == 0, fresh.text
    assert _versions(aws_env) == [1]

    layer_dir = project.root / "layers" / "shared"
    manifest = json.loads((layer_dir / "package.json").read_text())
    manifest["dependencies"]["devtool"] = "file:../../pkgs/devtool-1.0.0.tgz"
    (layer_dir / "package.json").write_text(json.dumps(manifest))
    subprocess.run(["npm", "install", "--package-lock-only", "--offline"], cwd=layer_dir,
                   check=True, capture_output=True, env=npm_env())
    moved = project.doit("deploy")
    assert moved.rc == 0, moved.text
    assert {"npm:shared", "package:shared", "layer:shared", "deploy:demo"} <= moved.executed
    assert _versions(aws_env) == [1, 2]
    assert _attached(aws_env)[0].endswith(":shared:2")
    assert "package:demo" not in moved.executed


def test_plain_arns_are_kept_in_order(project: Project, aws_env) -> None:
    lam = aws_env.boto("lambda")
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("nodejs/x.js", "1")
    arn = lam.publish_layer_version(LayerName="external", Content={"ZipFile": buf.getvalue()})[
        "LayerVersionArn"]
    fn = {**FUNCTION, "role": aws_env.role_arn(), "layers": [arn, "shared"]}
    project.configure([fn], layers=[LAYER])
    assert project.doit("deploy").rc == 0
    attached = _attached(aws_env)
    assert attached[0] == arn and attached[1].endswith(":shared:1")


def test_plan_covers_layers(project: Project, aws_env) -> None:
    fn = {**FUNCTION, "role": aws_env.role_arn(), "layers": ["shared"]}
    project.configure([fn], layers=[LAYER])
    run = project.doit("plan")
    assert run.rc == 0, run.text
    assert "layer 'shared': publish (new)" not in run.out
    assert "layer 'shared': publish (differs from AWS)\n  publish layer version: no version" \
        " published yet" in run.out
    assert project.doit("deploy").rc == 0
    (project.root / "layers" / "shared" / "nodejs" / "lib" / "helper.js").write_text("// v2\n")
    mark = aws_env.mark()
    run = project.doit("plan")
    assert "layer 'shared': publish (changed locally: code)" in run.out
    assert "  publish layer version: content differs (local" in run.out
    assert [r for r in aws_env.requests(mark) if r.method not in ("GET", "HEAD")] == []


def _fails(run, *needles: str) -> None:
    assert run.rc != 0 and "Traceback" not in run.text, run.text
    for needle in needles:
        assert needle in run.text, run.text


def test_six_layers_is_an_error(project: Project) -> None:
    arns = [f"arn:aws:lambda:us-east-1:123456789012:layer:l{i}:1" for i in range(6)]
    project.configure([{**FUNCTION, "layers": arns}])
    _fails(project.doit("package"), "function 'demo'", "6 layers", "at most 5")


@pytest.mark.parametrize("missing", ["package.json", "package-lock.json"])
def test_layer_source_without_manifest(project: Project, missing: str) -> None:
    (project.root / "layers" / "shared" / missing).unlink()
    project.configure([], layers=[LAYER])
    _fails(project.doit("package"), "layer 'shared'", missing)


def test_function_plus_layers_over_the_limit(project: Project, aws_env) -> None:
    for folder, size in ((project.fn / "assets", 150_000_000),
                         (project.root / "layers" / "shared" / "nodejs" / "assets", 150_000_000)):
        folder.mkdir(parents=True)
        with open(folder / "blob.bin", "wb") as f:
            f.truncate(size)  # sparse
    fn = {**FUNCTION, "role": aws_env.role_arn(), "layers": ["shared"]}
    project.configure([fn], layers=[LAYER])
    mark = aws_env.mark()
    run = project.doit("deploy")
    _fails(run, "function 'demo'", "262,144,000", "layer shared", "function demo")
    assert [r for r in aws_env.requests(mark) if r.method not in ("GET", "HEAD")] == []


def test_big_layer_goes_through_s3(project: Project, aws_env) -> None:
    bucket = aws_env.bucket("layer-artifacts")
    project.configure([], layers=[LAYER], options={"direct_upload_limit": 100})
    run = project.doit("layer")
    _fails(run, "layer 'shared'", "bucket=", "on the Layer")
    assert _versions(aws_env) == []

    project.configure([], layers=[{**LAYER, "bucket": bucket}],
                      options={"direct_upload_limit": 100})
    run = project.doit("layer")
    assert run.rc == 0, run.text
    sha = project.manifest("shared", "layer")["sha256"]
    assert aws_env.count("PUT", rf"/{bucket}/shared/{sha}\.zip") == 1
    assert _versions(aws_env) == [1]
