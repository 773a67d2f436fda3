"""The shared build cache against the moto server: runner A fills it, runner B (a
fresh copy of A's project, without npm on its PATH) gets A's bytes from it; a
tampered entry is rebuilt, an unreachable cache is a warning and a local build."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from faultproxy import s3_error
from helpers import CACHE, fresh_copy, without_npm, writes
from projects import FUNCTION, LAYER, Project

from dodo_lambda import Function, Layer, archive, cachekey
from dodo_lambda.context import RunContext

PREFIX = "ci/"


def cache_objects(aws_env) -> dict[str, bytes]:
    s3 = aws_env.boto("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=CACHE).get("Contents", [])]
    return {k: s3.get_object(Bucket=CACHE, Key=k)["Body"].read() for k in keys}


def built(run) -> set[str]:
    """The build steps a run executed (npm, bundle, package)."""
    return {t for t in run.executed if t.split(":")[0] in ("npm", "bundle", "package")}


def test_runner_b_gets_runner_a_bytes_without_npm_and_deploys_nothing_new(
        project: Project, aws_env, tmp_path: Path) -> None:
    aws_env.bucket(CACHE)
    function = {**FUNCTION, "role": aws_env.role_arn(), "layers": ["shared"]}
    project.configure([function], [LAYER], {"cache_bucket": CACHE, "cache_prefix": PREFIX})
    a = project.doit("deploy")
    assert a.rc == 0, a.text
    assert {"npm:demo", "npm:shared", "package:demo", "package:shared"} <= a.executed
    assert a.err.count("put in the build cache") == 2
    stored = cache_objects(aws_env)
    entries = sorted(k for k in stored if k.startswith(f"{PREFIX}entries/"))
    zips = sorted(k for k in stored if k.startswith(f"{PREFIX}zips/"))
    assert len(entries) == 2 and len(zips) == 2
    mine = {project.layout().zip.read_bytes(), project.layout("shared", "layer").zip.read_bytes()}
    assert {stored[k] for k in zips} == mine
    # an entry holds the manifest and where the zip is: no file content, no .npmrc text
    entry = json.loads(stored[entries[0]])
    assert entry["zip"] in zips and entry["manifest"]["sha256"] in entry["zip"]
    assert "fund=false" not in stored[entries[0]].decode()
    head = aws_env.boto("s3").head_object(Bucket=CACHE, Key=zips[0], ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head.get("ChecksumSHA256")

    b = fresh_copy(project, tmp_path / "runner-b")
    env = without_npm(tmp_path)
    mark = aws_env.mark()
    run = b.doit("deploy", env=env)
    assert run.rc == 0, run.text
    assert built(run) == {"package:demo", "package:shared"}, run.text  # no npm step ran
    assert run.err.count("fetched from the build cache") == 2
    for name, kind in (("demo", "function"), ("shared", "layer")):
        assert b.layout(name, kind).zip.read_bytes() == project.layout(name, kind).zip.read_bytes()
        assert b.manifest(name, kind) == project.manifest(name, kind)
    assert writes(aws_env, mark) == []  # nothing new deployed, nothing stored
    assert "nothing changed" in run.out

    # B's next run is a no-op: nothing runs, nothing is asked
    mark = aws_env.mark()
    again = b.doit("deploy", env=env)
    assert again.rc == 0, again.text
    assert built(again) == set() and "deploy:demo" in again.skipped, again.text
    assert aws_env.requests(mark) == []

    # an edit on B: a miss, so the build needs npm, which this runner lacks
    (b.fn / "lib" / "util.js").write_text("exports.wrap = (s) => `<${s}>`;\n")
    edited = b.doit("package", env=env)
    assert edited.rc != 0 and "npm not found on PATH" in edited.text


def test_tampered_entry_is_rebuilt_not_trusted(project: Project, aws_env,
                                               tmp_path: Path) -> None:
    aws_env.bucket(CACHE)
    project.configure([FUNCTION], options={"cache_bucket": CACHE})
    assert project.doit("package").rc == 0
    good = project.zip_path().read_bytes()
    stored = cache_objects(aws_env)
    (zip_key,) = [k for k in stored if "/zips/" in k]
    (entry_key,) = [k for k in stored if "/entries/" in k]
    s3 = aws_env.boto("s3")

    # the zip's bytes changed in the bucket: never installed, built here, repaired
    s3.put_object(Bucket=CACHE, Key=zip_key, Body=b"PK\x05\x06" + bytes(18))
    b = fresh_copy(project, tmp_path / "b")
    run = b.doit("package")
    assert run.rc == 0, run.text
    assert "is not used" in run.err and "SHA-256" in run.err
    assert "fetched from the build cache" not in run.err
    assert b.zip_path().read_bytes() == good
    assert s3.get_object(Bucket=CACHE, Key=zip_key)["Body"].read() == good

    # an entry that is not JSON, then one whose manifest does not hold together
    for body in (b"{not json", json.dumps({**json.loads(stored[entry_key]), "manifest": {
            **json.loads(stored[entry_key])["manifest"], "code_sha256": "AAAA"}}).encode()):
        s3.put_object(Bucket=CACHE, Key=entry_key, Body=body)
        c = fresh_copy(project, tmp_path / f"c{len(body)}")
        run = c.doit("package")
        assert run.rc == 0, run.text
        assert "is not used" in run.err and "fetched from the build cache" not in run.err
        assert c.zip_path().read_bytes() == good
        assert json.loads(s3.get_object(Bucket=CACHE, Key=entry_key)["Body"].read()) \
            ["manifest"]["sha256"] == json.loads(stored[entry_key])["manifest"]["sha256"]

    # the zip is gone (a partial entry): built here
    s3.delete_object(Bucket=CACHE, Key=zip_key)
    d = fresh_copy(project, tmp_path / "d")
    run = d.doit("package")
    assert run.rc == 0, run.text
    assert "which is missing" in run.err and d.zip_path().read_bytes() == good


@pytest.fixture
def plain(project: Project) -> Project:
    """A function without dependencies (no npm step): what the cache does is the same."""
    (project.root / "plain").mkdir()
    (project.root / "plain" / "index.js").write_text("exports.handler = async () => 'plain';\n")
    return project


PLAIN = {"name": "plain", "source": "plain", "handler": "index.handler"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_cache_warns_and_builds(plain: Project, aws_env, fault_proxy,
                                            monkeypatch) -> None:
    aws_env.bucket(CACHE)
    plain.configure([{**PLAIN, "role": aws_env.role_arn()}], options={"cache_bucket": CACHE})
    # no permission: S3 answers 403 to everything about the cache bucket
    rule = fault_proxy.add("*", rf"^/{CACHE}(/|\?|$)", **s3_error(403, "AccessDenied"),
                           times=1000)
    run = plain.doit("deploy")
    assert run.rc == 0, run.text
    assert run.err.count("warning: build cache: access denied") == 1, run.err
    assert "package:plain" in run.executed and rule.hits >= 1
    assert aws_env.boto("lambda").get_function(FunctionName="plain")

    # no network: nothing listens where S3 is (Lambda is still reachable)
    fault_proxy.clear()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    (plain.root / "plain" / "index.js").write_text("exports.handler = async () => 'v2';\n")
    run = plain.doit("deploy")
    assert run.rc == 0, run.text
    assert run.err.count("warning: build cache: cannot read") == 1, run.err
    assert "package:plain" in run.executed and "deploy:plain" in run.executed
    assert cache_objects(aws_env) == {}


def test_read_only_cache_reads_and_never_writes(plain: Project, aws_env,
                                                tmp_path: Path) -> None:
    aws_env.bucket(CACHE)
    plain.configure([PLAIN], options={"cache_bucket": CACHE, "cache_read_only": True})
    mark = aws_env.mark()
    run = plain.doit("package")
    assert run.rc == 0 and "package:plain" in run.executed, run.text
    assert writes(aws_env, mark) == [] and cache_objects(aws_env) == {}
    assert aws_env.count("GET", rf"^/{CACHE}/dodo-lambda-cache/entries/", mark) == 1
    # filled by a job that may write, a read-only job fetches from it
    plain.configure([PLAIN], options={"cache_bucket": CACHE})
    shutil.rmtree(plain.build_dir)
    assert plain.doit("package").rc == 0 and len(cache_objects(aws_env)) == 2
    b = fresh_copy(plain, tmp_path / "b")
    b.configure([PLAIN], options={"cache_bucket": CACHE, "cache_read_only": True})
    run = b.doit("package")
    assert run.rc == 0 and "fetched from the build cache" in run.err, run.text


def test_bad_cache_settings_are_one_line(plain: Project) -> None:
    plain.configure([PLAIN], options={"cache_bucket": "s3://x/y"})
    run = plain.doit("package")
    assert run.rc != 0 and "cache_bucket='s3://x/y' is a URL or ARN" in run.text
    assert "Traceback" not in run.text


def _key(item: Function | Layer, **ctx_options) -> str:
    return cachekey.compute(item, RunContext(Path(".dodo_lambda"), **ctx_options)).key


def test_key_covers_what_decides_the_bytes(project: Project, monkeypatch) -> None:
    monkeypatch.chdir(project.root)
    fn = Function("demo", "fn", "index.handler")
    base = _key(fn)
    util = project.fn / "lib" / "util.js"
    text = util.read_text()
    same = [  # changes that leave the package's bytes as they are
        lambda: os.utime(util, (1, 1)),
        lambda: (project.fn / ".env").write_text("SECRET=3\n"),  # not packed (default exclude)
        lambda: (project.fn / "node_modules" / "devtool" / "index.js").write_text("x"),
    ]
    for change in same:
        change()
        assert _key(fn) == base
    other = [  # each gives another package
        lambda: util.write_text(text + "// edit\n"),
        lambda: util.chmod(util.stat().st_mode | stat.S_IXUSR),
        lambda: (project.fn / "new.js").write_text("1\n"),
        lambda: (project.fn / ".npmrc").write_text("fund=true\n"),
        lambda: (project.fn / "package.json").write_text(
            (project.fn / "package.json").read_text().replace('"1.0.0"', '"1.0.1"', 1)),
        lambda: (project.fn / "package-lock.json").write_text(
            (project.fn / "package-lock.json").read_text() + "\n"),
    ]
    for change in other:
        backup = {p: p.read_bytes() for p in project.fn.rglob("*") if p.is_file()}
        modes = {p: p.stat().st_mode for p in backup}
        change()
        assert _key(fn) != base
        (project.fn / "new.js").unlink(missing_ok=True)
        for p, data in backup.items():
            p.write_bytes(data)
            p.chmod(modes[p])
        assert _key(fn) == base
    for variant in (Function("demo", "fn", "index.handler", architecture="arm64"),
                    Function("demo", "fn", "index.handler", exclude=["README.md"]),
                    Function("demo", "fn", "index.handler", scripts=True),
                    Function("demo", "fn", "index.handler", runtime="nodejs22.x"),
                    Function("other", "fn", "index.handler")):
        assert _key(variant) != base, variant
    monkeypatch.setattr(archive, "FORMAT", archive.FORMAT + 1)
    assert _key(fn) != base
    monkeypatch.undo()
    monkeypatch.chdir(project.root)
    monkeypatch.setattr(archive, "COMPRESSOR_ID", "another compressor")
    assert _key(fn) != base
    monkeypatch.undo()
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the zip's timestamps
    assert _key(fn) != base
    # the .npmrc is in the key as a digest only (it may hold a token)
    inputs = cachekey.compute(fn, RunContext(Path(".dodo_lambda"))).inputs
    assert "fund=" not in json.dumps(inputs, default=str)
    assert _key(Layer(**LAYER)) != _key(Layer(**{**LAYER, "architectures": ["arm64"]}))


def test_tool_versions_without_npm_on_path(tmp_path: Path, monkeypatch) -> None:
    import subprocess

    major = subprocess.run(["npm", "--version"], capture_output=True, text=True,
                           check=True).stdout.split(".")[0]
    ctx = RunContext(tmp_path)
    assert cachekey.tool_versions(ctx)["npm"] == major
    monkeypatch.setenv("PATH", without_npm(tmp_path)["PATH"])
    # a deploy-only runner: the npm that came with node
    assert cachekey.tool_versions(RunContext(tmp_path))["npm"] == major


def test_bundled_function_hit_needs_the_files_esbuild_read_outside_its_folder(
        ts_template: Path, aws_env, bundle_env: dict[str, str], tmp_path: Path) -> None:
    from bundlefixtures import TS_FUNCTION

    aws_env.bucket(CACHE)
    root = tmp_path / "a" / "project"
    shutil.copytree(ts_template, root, symlinks=True)
    (root / "tsconfig.json").write_text('{"compilerOptions": {"strict": true}}\n')
    a = Project(root)
    a.configure([TS_FUNCTION], options={"cache_bucket": CACHE})
    run = a.doit("package", env=bundle_env)
    assert run.rc == 0 and {"npm:demo", "bundle:demo"} <= run.executed, run.text
    (entry,) = [json.loads(v) for k, v in cache_objects(aws_env).items() if "/entries/" in k]
    assert list(entry["extras"]) == ["tsconfig.json"]  # read by esbuild, above fn/

    b = fresh_copy(a, tmp_path / "b")
    env = {**without_npm(tmp_path), "XDG_CACHE_HOME": bundle_env["XDG_CACHE_HOME"]}
    run = b.doit("package", env=env)
    assert run.rc == 0, run.text
    assert built(run) == {"package:demo"} and "fetched from the build cache" in run.err, run.text
    assert b.zip_path().read_bytes() == a.zip_path().read_bytes()
    assert b.doit("package", env=env).executed == set()

    # the config above the function changed: the entry does not apply
    (b.root / "tsconfig.json").write_text('{"compilerOptions": {"strict": false}}\n')
    run = b.doit("package", env=bundle_env)
    assert run.rc == 0, run.text
    assert {"npm:demo", "bundle:demo", "package:demo"} <= run.executed, run.text
    assert "fetched from the build cache" not in run.err


def test_workspace_keys_follow_the_closure_and_not_the_checkout_path(tmp_path: Path,
                                                                     monkeypatch) -> None:
    import importlib.util

    example = Path(__file__).resolve().parent.parent / "examples" / "monorepo"
    keys = []
    for where in (tmp_path / "a", tmp_path / "deeper" / "b"):
        shutil.copytree(example, where / "monorepo", ignore=shutil.ignore_patterns(
            ".dodo_lambda", ".doit.db*", "node_modules"))
        monkeypatch.chdir(where / "monorepo")
        spec = importlib.util.spec_from_file_location(f"dodo_{where.name}", "dodo.py")
        assert spec is not None and spec.loader is not None
        dodo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(dodo)
        items = (dodo.orders, dodo.invoices, dodo.common)
        keys.append([_key(item) for item in items])
    assert keys[0] == keys[1]  # another runner, another folder: the same keys
    # a workspace package's source is an input of the items whose closure holds it
    money = Path("packages/money/index.js")
    money.write_text(money.read_text() + "// edit\n")
    after = [_key(item) for item in items]
    assert after[0] != keys[1][0] and after[2] != keys[1][2] and after[1] == keys[1][1]
