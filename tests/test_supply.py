"""Supply chain and secrets: npm runs in a scrubbed environment with lifecycle
scripts off unless asked for, the staged .npmrc never outlives the install, the
default excludes keep credentials out of the item's own files (and only there),
and a killed run's temporary zip is removed."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from projects import FUNCTION, LAYER, Project, lock, make_package, npm_env, pack

from dodo_lambda import Function, Layer
from dodo_lambda import npm as npm_step
from dodo_lambda.build import patterns, roots
from dodo_lambda.npmpolicy import child_env, npmrc_variables
from dodo_lambda.selection import choose, walk_roots

# What a CI job's environment holds and no install script may see.
SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE0001",
           "AWS_SECRET_ACCESS_KEY": "fake-secret-0123456789abcdef",
           "AWS_SESSION_TOKEN": "fake-session-token", "AWS_PROFILE": "fake-profile-7",
           "DEPLOY_SIGNING_KEY": "fake-signing-key-42", "NODE_OPTIONS": "--no-warnings"}
# A minimal 64-bit little-endian ELF header for x86-64 (what a compiled addon starts with).
ELF_X64 = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 3, 0x3E) + b"\0" * 44


def _add_dependency(project: Project, name: str, tarball: str) -> None:
    manifest = json.loads((project.fn / "package.json").read_text())
    manifest["dependencies"][name] = f"file:../pkgs/{tarball}"
    (project.fn / "package.json").write_text(json.dumps(manifest, indent=2))


def _zip_text(project: Project, name: str) -> str:
    with zipfile.ZipFile(project.zip_path()) as z:
        return z.read(name).decode()


def test_scripts_off_by_default_and_npm_never_sees_secrets(project: Project,
                                                            tmp_path: Path) -> None:
    # a dependency whose postinstall writes the environment it was given (and the
    # mode of the staged .npmrc, from the folder npm runs in) beside itself
    dump = make_package(tmp_path, "envdump", {"index.js": "", "dump.js": (
        "const fs = require('fs');\n"
        "const mode = (fs.statSync(process.env.INIT_CWD + '/.npmrc').mode & 0o777).toString(8);\n"
        "fs.writeFileSync(__dirname + '/env.json', JSON.stringify({env: process.env, mode}));\n")})
    # a native addon whose install script is its build (a stand-in for node-gyp)
    native = make_package(tmp_path, "nativepkg", {
        "index.js": "", "binding.gyp": "{}\n",
        "build.js": "const fs = require('fs');\n"
                    "fs.mkdirSync(__dirname + '/build/Release', {recursive: true});\n"
                    f"fs.writeFileSync(__dirname + '/build/Release/addon.node',"
                    f" Buffer.from('{ELF_X64.hex()}', 'hex'));\n"})
    for folder, script in ((dump, {"postinstall": "node dump.js"}),
                           (native, {"install": "node build.js"})):
        manifest = json.loads((folder / "package.json").read_text())
        manifest["scripts"] = script
        (folder / "package.json").write_text(json.dumps(manifest))
        _add_dependency(project, folder.name, pack(folder, project.root / "pkgs"))
    # the root's own scripts need the developer's tools: they never run in staging
    manifest = json.loads((project.fn / "package.json").read_text())
    manifest["scripts"] = {"prepare": "husky", "postinstall": "node scripts/setup.js"}
    (project.fn / "package.json").write_text(json.dumps(manifest, indent=2))
    lock(project.fn)
    env = {**npm_env(), **SECRETS, "PUPPETEER_SKIP_DOWNLOAD": "1",
           "DODO_LAMBDA_NPM_ENV": "PUPPETEER_*"}

    run = project.doit("package", env=env)
    assert run.rc == 0, run.text
    names = project.names()
    assert "node_modules/envdump/index.js" in names
    assert "node_modules/envdump/env.json" not in names  # its postinstall did not run
    assert not [n for n in names if n.endswith(".node")]
    assert ("function 'demo': package nativepkg looks unbuilt (binding.gyp and no compiled"
            " .node file)") in run.err
    assert "set scripts=True on the function" in run.err
    assert "install scripts not run (scripts=False): envdump, nativepkg" in run.err

    project.configure([{**FUNCTION, "scripts": True}])
    run = project.doit("package", env=env)
    assert run.rc == 0, run.text
    assert run.executed == {"npm:demo", "package:demo"}  # the flag is part of the install key
    assert "node_modules/nativepkg/build/Release/addon.node" in project.names()
    assert "looks unbuilt" not in run.err and "install scripts not run" not in run.err
    seen = json.loads(_zip_text(project, "node_modules/envdump/env.json"))
    child = seen["env"]
    assert not [k for k in child if k.upper().startswith("AWS_")], sorted(child)
    assert "DEPLOY_SIGNING_KEY" not in child and "NODE_OPTIONS" not in child
    blob = json.dumps(child)
    assert not [v for v in SECRETS.values() if v in blob]
    assert child["PATH"] and child["HOME"] and child["PUPPETEER_SKIP_DOWNLOAD"] == "1"
    assert seen["mode"] == "600"  # the staged .npmrc, while npm ran
    assert not list(project.build_dir.rglob(".npmrc"))  # and gone once it ended


def test_scripts_option_is_validated_and_keys_the_install(project: Project) -> None:
    on = Function("demo", source=str(project.fn), handler="index.handler", scripts=True)
    off = Function("demo", source=str(project.fn), handler="index.handler")
    assert "--ignore-scripts" in npm_step.flags(off)
    assert "--ignore-scripts=false" in npm_step.flags(on)
    assert npm_step.install_key(on, {"node": "20", "npm": "11"}) != \
        npm_step.install_key(off, {"node": "20", "npm": "11"})
    assert Layer("shared", source="x", scripts=True).scripts is True
    project.configure([{**FUNCTION, "scripts": "yes"}])
    run = project.doit("package")
    assert run.rc != 0 and "Traceback" not in run.text
    assert "function 'demo': scripts='yes' must be True" in run.text


def test_child_env_is_an_allow_list() -> None:
    parent = {**SECRETS, "PATH": "/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C",
              "TMPDIR": "/tmp", "HTTPS_PROXY": "http://p:3128", "no_proxy": "localhost",
              "NODE_EXTRA_CA_CERTS": "/ca.pem", "SSL_CERT_FILE": "/ca.pem", "CI": "true",
              "npm_config_cache": "/c", "NPM_CONFIG_USERCONFIG": "/u/.npmrc",
              "NODE_AUTH_TOKEN": "t1", "NPM_TOKEN": "t2", "GITHUB_TOKEN": "t3",
              "AWS_CA_BUNDLE": "/ca.pem", "DODO_LAMBDA_NPM_ENV": "SHARP_*, EXTRA_ONE",
              "SHARP_DIST_BASE_URL": "http://m", "EXTRA_ONE": "1", "EXTRA_TWO": "2"}
    env = child_env(parent)
    assert set(env) == {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HTTPS_PROXY", "no_proxy",
                        "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "CI", "npm_config_cache",
                        "NPM_CONFIG_USERCONFIG", "SHARP_DIST_BASE_URL", "EXTRA_ONE",
                        "npm_config_update_notifier", "npm_config_fund", "npm_config_audit"}
    # a token an npmrc references reaches npm, and only that one
    env = child_env(parent, {"NODE_AUTH_TOKEN", "UNSET_VAR"})
    assert env["NODE_AUTH_TOKEN"] == "t1" and "NPM_TOKEN" not in env and "UNSET_VAR" not in env


def test_esbuilds_install_never_sees_secrets(tmp_path: Path) -> None:
    """The esbuild install (whose package runs an install script) gets the same scrubbed
    environment as every other npm run."""
    from dodo_lambda import esbuild

    bin_dir, seen = tmp_path / "bin", tmp_path / "env.json"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(f"#!{sys.executable}\nimport json, os\n"
                                 f"open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))\n")
    (bin_dir / "npm").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    esbuild._npm_install(work, "function 'demo'",
                         {**SECRETS, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                          "HOME": str(tmp_path)})
    env = json.loads(seen.read_text())
    assert env["HOME"] == str(tmp_path) and not set(SECRETS) & set(env)


def test_npmrc_variables_follow_npms_syntax(tmp_path: Path) -> None:
    rc = tmp_path / ".npmrc"
    rc.write_text("//r.example/:_authToken=${NPM_TOKEN}\n@s:registry=${REG?}\n"
                  "literal=\\${NOT_ME}\nescaped=\\\\${YES_ME}\n# ${IN_COMMENT}\n")
    assert npmrc_variables([rc, tmp_path / "missing"]) == {"NPM_TOKEN", "REG", "YES_ME",
                                                           "IN_COMMENT"}


class _Registry:
    """A registry of one tarball on loopback that records the Authorization header."""

    def __init__(self, tarball: Path) -> None:
        data = tarball.read_bytes()
        auth: list[str | None] = []
        self.auth = auth
        path = f"/{tarball.name.rsplit('-', 1)[0]}/-/{tarball.name}"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                auth.append(self.headers.get("Authorization"))
                ok = self.path == path
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", str(len(data) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.tarball_url = self.url + path
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[_Registry]:
    pkg = make_package(tmp_path / "private", "private-lib", {"index.js": "exports.x = 1;\n"})
    tarballs = tmp_path / "tarballs"
    tarballs.mkdir()
    reg = _Registry(tarballs / pack(pkg, tarballs))
    yield reg
    reg.close()


def _grep(folder: Path, *needles: str) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def test_private_registry_token_reaches_npm_and_nothing_stays(project: Project,
                                                               registry: _Registry,
                                                               tmp_path: Path) -> None:
    import base64
    import hashlib

    env_token, literal_token = "npm_FAKEfromENV0123456789", "npm_FAKEliteral9876543210"
    host = registry.url.removeprefix("http:")
    (project.fn / ".npmrc").write_text(
        f"registry={registry.url}/\n{host}/:_authToken=${{NPM_TOKEN}}\n"
        f"//registry.invalid/:_authToken={literal_token}\n")
    # a dependency resolved from the private registry, as `npm install` would lock it
    tarball = (tmp_path / "tarballs").glob("*.tgz").__next__().read_bytes()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    manifest = json.loads((project.fn / "package.json").read_text())
    manifest["dependencies"]["private-lib"] = "1.0.0"
    (project.fn / "package.json").write_text(json.dumps(manifest, indent=2))
    locked = json.loads((project.fn / "package-lock.json").read_text())
    locked["packages"][""]["dependencies"]["private-lib"] = "1.0.0"
    locked["packages"]["node_modules/private-lib"] = {
        "version": "1.0.0", "resolved": registry.tarball_url, "integrity": integrity,
        "license": "MIT"}
    (project.fn / "package-lock.json").write_text(json.dumps(locked, indent=2))
    # npm reads the token from our environment; its own cache must not answer instead
    env = {**npm_env(), **SECRETS, "NPM_TOKEN": env_token,
           "npm_config_cache": str(tmp_path / "npm-cache")}

    run = project.doit("package", env=env)
    assert run.rc == 0, run.text
    assert "node_modules/private-lib/index.js" in project.names()
    assert f"Bearer {env_token}" in registry.auth, registry.auth
    assert not list(project.build_dir.rglob(".npmrc"))
    assert _grep(project.build_dir, env_token, literal_token) == []

    # a failed install leaves no token either
    (project.root / "pkgs" / "greet-1.0.0.tgz").unlink()
    env["npm_config_cache"] = str(tmp_path / "empty-cache")  # npm must read the tarball
    project.configure([{**FUNCTION, "scripts": True}])  # a new install key: npm runs again
    run = project.doit("package", env=env)
    assert run.rc != 0 and "npm ci" in run.text, run.text
    assert not list(project.build_dir.rglob(".npmrc"))
    assert _grep(project.build_dir, env_token, literal_token) == []


def _own_secrets(fn: Path) -> None:
    """Credentials and state in every shape the default excludes know, in any case."""
    files = {".ENV": "A=1", "Server.PEM": "k", "ID_ED25519": "k", "keys/id_ecdsa.pub": "k",
             ".ssh/config": "Host x", ".netrc": "machine x", ".git-credentials": "https://t@x",
             ".pypirc": "[pypi]", ".yarnrc.yml": "npmAuthToken: x", ".docker/config.json": "{}",
             "cert.P12": "k", "store.pfx": "k", "prod.tfvars": "a=1", "dev.tfvars": "a=2",
             "terraform.tfstate.backup": "{}", "vendor/sub/.git": "gitdir: ../../.git/modules/s",
             ".env.example.js": "module.exports = {};\n"}
    for rel, text in files.items():
        (fn / rel).parent.mkdir(parents=True, exist_ok=True)
        (fn / rel).write_text(text)
    os.symlink(".ENV", fn / "settings.txt")  # a link to an excluded file
    os.symlink(".ssh", fn / "sshconf")  # a link to an excluded folder


def test_default_excludes_list_and_warn(project: Project, aws_env) -> None:
    for name in ("package.json", "package-lock.json"):
        (project.fn / name).unlink()
    _own_secrets(project.fn)
    # a role: deploy would create the function, so plan has nothing to refuse
    project.configure([{**FUNCTION, "include": ["prod.tfvars"], "role": aws_env.role_arn()}])
    run = project.doit("package")
    assert run.rc == 0, run.text
    names = project.names()
    assert "prod.tfvars" in names  # include= wins, with a warning naming it
    assert ("include= brings back prod.tfvars, which the default excludes leave out"
            " (it matches *.tfvars)") in run.err
    assert (".env.example.js is not packed: the default excludes leave it out (it matches"
            " .env*); if it is code the function needs, add it to include=") in run.err
    assert set(names) == {"index.js", "lib/util.js", "README.md", "run.sh", "prod.tfvars"}
    dropped = [".DS_Store", ".ENV", ".docker/", ".env", ".env.example.js", ".env.local",
               ".git-credentials", ".netrc", ".npmrc", ".pypirc", ".ssh/", ".yarnrc.yml",
               "ID_ED25519", "Server.PEM", "cert.P12", "dev.tfvars", "keys/id_ecdsa.pub",
               "server.pem", "settings.txt", "sshconf/config", "store.pfx",
               "terraform.tfstate.backup", "vendor/sub/.git"]
    assert project.manifest()["excluded_by_default"] == dropped

    plan = project.doit("plan")
    assert plan.rc == 0, plan.text
    assert "function 'demo': not packed (default excludes): .DS_Store, .ENV, .docker/" in plan.out

    # a new default-excluded file changes no byte of the zip, but the manifest says so
    zip_bytes = project.zip_path().read_bytes()
    (project.fn / ".env.production").write_text("B=2")
    assert project.doit("package").executed == {"package:demo"}
    assert ".env.production" in project.manifest()["excluded_by_default"]
    assert project.zip_path().read_bytes() == zip_bytes


def test_default_excludes_spare_the_staged_tree(project: Project) -> None:
    """A layer's own nodejs/ folder is the user's; npm's tree under it is not."""
    source = project.root / LAYER["source"]
    layer = Layer(**{**LAYER, "source": str(source)})
    (source / "nodejs" / ".env").write_text("SECRET=1\n")
    (source / "nodejs" / "lib" / "key.PEM").write_text("k\n")
    staged = project.layout("shared", "layer").node_modules / "ca-certs"
    staged.mkdir(parents=True)
    for name in ("index.js", "root.pem", ".env.defaults"):
        (staged / name).write_text("x\n")
    build_dir = project.build_dir
    item_roots = roots(layer, build_dir)
    chosen = choose(walk_roots(item_roots, "layer"), patterns(layer, build_dir), "layer",
                    item_roots)
    assert [e.arcname for e in chosen.entries] == [
        "nodejs/lib/helper.js", "nodejs/node_modules/ca-certs/.env.defaults",
        "nodejs/node_modules/ca-certs/index.js", "nodejs/node_modules/ca-certs/root.pem"]
    assert chosen.dropped == ["nodejs/.env", "nodejs/lib/key.PEM"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_a_killed_runs_leftovers_are_removed(project: Project) -> None:
    assert project.doit("package").rc == 0
    layout = project.layout()
    pid = _dead_pid()
    leftovers = [layout.zip.with_name(f".{layout.zip.name}.{pid}.tmp"),
                 layout.manifest.with_name(f".{layout.manifest.name}.{pid}.tmp")]
    for path in leftovers:
        path.write_bytes(b"PK half a zip")
    other = project.layout("demo2").zip.with_name(f".demo2.zip.{pid}.tmp")
    other.write_bytes(b"another function's")
    (project.fn / "lib" / "util.js").write_text("exports.wrap = (s) => s;\n")
    run = project.doit("package")
    assert run.executed == {"package:demo"}, run.text
    assert [p for p in leftovers if p.exists()] == []
    assert other.exists()  # not this item's: left to its own run

    leftovers[0].write_bytes(b"PK half a zip")
    # a killed install's folder, with the project's .npmrc in it
    (layout.install_work / "node_modules").mkdir(parents=True)
    shutil.copyfile(project.fn / ".npmrc", layout.install_work / ".npmrc")
    assert project.doit("clean", "package:demo", "npm:demo").rc == 0
    assert not leftovers[0].exists() and not layout.zip.exists()
    assert not layout.install_work.exists() and not layout.staging.exists()
