"""The package pipeline end to end: real npm, real zips read back, doit as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from projects import EXAMPLE, FUNCTION, Project, npm_env

from dodo_lambda.layout import Layout


def test_example_zip_runs_its_handler(tmp_path: Path) -> None:
    root = tmp_path / "quickstart"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".dodo_lambda", ".doit.db*",
                                                                  "node_modules"))
    run = Project(root).doit("package")
    assert run.rc == 0, run.text
    zpath = Layout(root / ".dodo_lambda", "function", "dodo-lambda-hello").zip
    out = tmp_path / "unzipped"
    subprocess.run(["unzip", "-q", str(zpath), "-d", str(out)], check=True)
    script = ("require('./index.js').handler({name: 'Lambda'})"
              ".then(r => console.log(JSON.stringify(r)))")
    res = subprocess.run(["node", "-e", script], cwd=out, capture_output=True, text=True,
                         check=True)
    assert json.loads(json.loads(res.stdout)["body"]) == {"message": "Hello, Lambda!"}


def test_zip_holds_production_code_only(project: Project) -> None:
    run = project.doit("package")
    assert run.rc == 0, run.text
    assert run.executed == {"npm:demo", "package:demo"}
    names = project.names()
    assert names == sorted(names)
    assert {"index.js", "lib/util.js", "package.json", "README.md", "run.sh",
            "node_modules/greet/index.js", "node_modules/greet-util/index.js",
            # the default excludes are for the function's own files, not its packages'
            "node_modules/greet/certs/ca.pem", "node_modules/greet/.env.defaults"} <= set(names)
    for banned in (".env", ".env.local", "server.pem", ".npmrc", ".git/config", ".DS_Store"):
        assert banned not in names
    assert not [n for n in names if "devtool" in n or "/.bin/" in n or n.endswith(".package-lock.json")]
    subprocess.run(["unzip", "-tq", str(project.zip_path())], check=True, capture_output=True)


def test_handler_runs_from_zip(project: Project, tmp_path: Path) -> None:
    assert project.doit("package").rc == 0
    out = tmp_path / "x"
    subprocess.run(["unzip", "-q", str(project.zip_path()), "-d", str(out)], check=True)
    script = "require('./index.js').handler({name: 'z'}).then(r => console.log(r.body))"
    res = subprocess.run(["node", "-e", script], cwd=out, capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[Hello, z!]"


def test_lambdaignore_include_exclude(project: Project) -> None:
    (project.fn / ".lambdaignore").write_text("# docs are not code\n*.md\ndocs/\n")
    (project.fn / "docs").mkdir()
    (project.fn / "docs" / "guide.txt").write_text("guide\n")
    (project.fn / "lib" / "skip.js").write_text("// not shipped\n")
    project.configure([{**FUNCTION, "exclude": ["lib/skip.js"], "include": [".env.local"]}])
    assert project.doit("package").rc == 0
    names = set(project.names())
    assert "README.md" not in names and "docs/guide.txt" not in names
    assert "lib/skip.js" not in names
    assert ".env.local" in names and ".env" not in names
    assert ".lambdaignore" not in names


def _modes(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: (i.external_attr >> 16) & 0o7777 for i in z.infolist()}


def test_modes_normalised_whatever_the_umask(project: Project) -> None:
    for p in project.fn.rglob("*"):
        if p.is_file():
            p.chmod(0o700 if p.name == "run.sh" else 0o600)
    assert project.doit("package").rc == 0
    modes = _modes(project.zip_path())
    assert modes["run.sh"] == 0o755
    assert modes["index.js"] == 0o644
    assert set(modes.values()) == {0o644, 0o755}
    listing = subprocess.run(["unzip", "-Z", str(project.zip_path())], capture_output=True,
                             text=True, check=True).stdout
    assert "-rwxr-xr-x" in listing and "-rw-r--r--" in listing


def _touch_all(folder: Path, when: float) -> None:
    for p in folder.rglob("*"):
        os.utime(p, (when, when), follow_symlinks=False)


def test_incremental_reruns(project: Project) -> None:
    assert project.doit("package").rc == 0
    first = project.zip_path().read_bytes()

    again = project.doit("package")
    assert again.executed == set() and again.skipped == {"npm:demo", "package:demo"}

    _touch_all(project.fn, 2_000_000_000)
    touched = project.doit("package")
    assert "npm:demo" not in touched.executed, touched.text
    assert project.zip_path().read_bytes() == first

    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => `<${s}>`;\n")
    edited = project.doit("package")
    assert edited.executed == {"package:demo"}, edited.text
    assert project.zip_path().read_bytes() != first

    lock = project.fn / "package-lock.json"
    lock.write_text(json.dumps(json.loads(lock.read_text()), indent=4))
    relocked = project.doit("package")
    assert "npm:demo" in relocked.executed

    project.configure([{**FUNCTION, "exclude": ["README.md"]}])
    assert project.doit("package").executed == {"package:demo"}
    assert "README.md" not in project.names()

    project.configure([{**FUNCTION, "exclude": ["README.md"], "include": [".env"]}])
    assert project.doit("package").executed == {"package:demo"}
    assert ".env" in project.names()

    (project.fn / ".lambdaignore").write_text("lib/\n")
    assert project.doit("package").executed == {"package:demo"}
    assert "lib/util.js" not in project.names()

    shutil.rmtree(project.layout().staging)
    rebuilt = project.doit("package")
    assert rebuilt.executed == {"npm:demo", "package:demo"}
    assert "node_modules/greet/index.js" in project.names()

    project.zip_path().unlink()
    assert project.doit("package").executed == {"package:demo"}
    assert project.zip_path().is_file()


def test_altered_staged_tree_reinstalls(project: Project) -> None:
    """A staged file replaced (as editors and `sed -i` save: written beside, renamed
    over) or added moves a folder stamp: a plain run reinstalls. A file rewritten in
    place needs the full check: tests/test_uptodate.py."""
    assert project.doit("package").rc == 0
    staged = project.layout().node_modules
    plain = {k: v for k, v in npm_env().items() if k not in ("CI", "DODO_LAMBDA_VERIFY_STAGING")}
    (staged / "greet" / "index.js.new").write_text("tampered\n")
    os.replace(staged / "greet" / "index.js.new", staged / "greet" / "index.js")
    run = project.doit("package", env=plain)
    assert run.executed == {"npm:demo", "package:demo"}
    assert (staged / "greet" / "index.js").read_text() != "tampered\n"
    (staged / "greet" / "lib").mkdir()
    (staged / "greet" / "lib" / "extra.js").write_text("// added\n")
    run = project.doit("package", env=plain)
    assert run.executed == {"npm:demo", "package:demo"}
    assert "node_modules/greet/lib/extra.js" not in project.names()


def test_same_bytes_across_copies_paths_mtimes_and_umasks(project: Project, tmp_path: Path) -> None:
    other = Project(tmp_path / "elsewhere" / "deeper" / "copy")
    shutil.copytree(project.root, other.root, symlinks=True)
    _touch_all(other.fn, 1_500_000_000)
    for p in other.fn.rglob("*"):
        if p.is_file() and ".git" not in p.parts:
            p.chmod(0o700 if os.access(p, os.X_OK) else 0o600)
    old = os.umask(0o077)
    try:
        assert other.doit("package").rc == 0
    finally:
        os.umask(old)
    os.umask(0o022)
    try:
        assert project.doit("package").rc == 0
    finally:
        os.umask(old)
    assert project.zip_path().read_bytes() == other.zip_path().read_bytes()
    assert project.manifest()["content_digest"] == other.manifest()["content_digest"]


def test_manifest_describes_the_zip(project: Project) -> None:
    import base64
    import hashlib

    assert project.doit("package").rc == 0
    data = project.zip_path().read_bytes()
    m = project.manifest()
    assert m["sha256"] == hashlib.sha256(data).hexdigest()
    assert m["code_sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert m["zip_size"] == len(data)
    with zipfile.ZipFile(project.zip_path()) as z:
        infos = z.infolist()
        assert m["files"] == len(infos)
        assert m["unzipped_size"] == sum(i.file_size for i in infos)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert z.testzip() is None


def test_source_date_epoch_sets_the_timestamp(project: Project) -> None:
    env = dict(project_env(), SOURCE_DATE_EPOCH="1700000000")
    assert project.doit("package", env=env).rc == 0
    with zipfile.ZipFile(project.zip_path()) as z:
        assert {i.date_time for i in z.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def project_env() -> dict[str, str]:
    from projects import npm_env

    return npm_env()


def test_function_without_package_json_has_no_npm_step(project: Project) -> None:
    for name in ("package.json", "package-lock.json"):
        (project.fn / name).unlink()
    run = project.doit("package")
    assert run.rc == 0, run.text
    assert run.executed == {"package:demo"}
    assert not [n for n in project.names() if n.startswith("node_modules/")]


def test_parallel_processes(project: Project) -> None:
    run = project.doit("-n", "2", "-P", "process", "package")
    assert run.rc == 0, run.text
    assert run.executed == {"npm:demo", "package:demo"}


def test_clean_removes_the_zip(project: Project) -> None:
    from dodo_lambda.files import spare_path

    assert project.doit("package").rc == 0
    (project.fn / "index.js").write_text((project.fn / "index.js").read_text() + "// 2\n")
    assert project.doit("package").rc == 0  # the first zip is now the spare
    spare = spare_path(project.zip_path())
    assert spare.is_file()
    assert project.doit("clean", "package").rc == 0
    assert not project.zip_path().exists() and not spare.exists()


def test_list_documents_tasks(project: Project) -> None:
    run = project.doit("list", "--all")
    assert run.rc == 0
    assert "npm:demo" in run.out and "package:demo" in run.out
    assert "production dependencies" in run.out


def test_native_addon_for_the_wrong_cpu_is_reported(project: Project) -> None:
    import struct

    addon = project.fn / "native" / "addon.node"
    addon.parent.mkdir()
    # a minimal ELF header: 64-bit little-endian, e_machine x86-64 (0x3E)
    addon.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 3, 0x3E) + b"\0" * 40)
    (project.fn / "native" / "mac.node").write_bytes(b"\xcf\xfa\xed\xfe" + b"\0" * 40)
    project.configure([{**FUNCTION, "architecture": "arm64"}])
    run = project.doit("package")
    assert run.rc == 0, run.text
    assert "native/addon.node is built for x86_64, the function runs on arm64" in run.err
    assert "native/mac.node is not a Linux binary" in run.err
    project.configure([FUNCTION])
    run = project.doit("package")
    assert "addon.node" not in run.err and "mac.node is not a Linux binary" in run.err


def test_noop_package_does_not_import_boto(project: Project) -> None:
    import sys

    project.configure([{**FUNCTION, "bucket": "my-artifacts", "role": "arn:aws:iam::123456789012:role/r"}])
    assert project.doit("package").rc == 0
    script = ("import sys\nfrom doit.doit_cmd import DoitMain\n"
              "rc = DoitMain().run(['package'])\n"
              "assert rc == 0\n"
              "assert 'botocore' not in sys.modules and 'boto3' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=project.root, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "-- package:demo" in res.stdout


def test_dodo_inside_the_function_folder(tmp_path: Path) -> None:
    root = tmp_path / "fn"
    root.mkdir()
    (root / "index.js").write_text("exports.handler = async () => 1;\n")
    (root / "dodo.py").write_text(
        "from dodo_lambda import Function, lambda_tasks\n"
        "DOIT_CONFIG = {'backend': 'sqlite3'}\n"
        "def task_lambda():\n"
        "    yield from lambda_tasks(Function('here', source='.', handler='index.handler'))\n")
    project = Project(root)
    assert project.doit("package").rc == 0
    names = project.names("here")
    assert "index.js" in names
    assert not [n for n in names if n.startswith((".doit.db", ".dodo_lambda/"))], names
    again = project.doit("package")
    assert again.executed == set(), again.text


def test_two_concurrent_runs_agree(project: Project) -> None:
    import subprocess as sp
    import sys

    from projects import npm_env

    cmd = [sys.executable, "-m", "doit", "package"]
    procs = [sp.Popen(cmd, cwd=project.root, stdout=sp.PIPE, stderr=sp.STDOUT, text=True,
                      env=npm_env()) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    first = project.zip_path().read_bytes()
    assert project.manifest()["sha256"] == __import__("hashlib").sha256(first).hexdigest()
    again = project.doit("package")
    assert again.executed == set(), again.text
    assert project.zip_path().read_bytes() == first
