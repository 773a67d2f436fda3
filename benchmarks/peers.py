"""The peers, timed on the benchmark's base tree: AWS SAM CLI (`sam build --cached`)
and the Serverless Framework v3 (`serverless package`), each with the function's
production node_modules, as their users run them.

    python benchmarks/peers.py --install     # once: SAM from PyPI, Serverless from npm

installs them under ``benchmarks/.work/peers/`` (a virtualenv for SAM, an npm
folder for Serverless); ``bench_package.py --peers`` then times them in the same
rounds as dodo_lambda and Info-ZIP. Neither contacts AWS for these commands
(dummy credentials keep them from looking for real ones).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lambda_project as lp

SERVERLESS_YML = """\
service: bench
frameworkVersion: '3'
provider:
  name: aws
  runtime: nodejs20.x
  region: us-east-1
functions:
  bench:
    handler: index.handler
"""

SAM_TEMPLATE = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  Bench:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: index.handler
      Runtime: nodejs20.x
"""

ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    "AWS_ACCESS_KEY_ID": "benchmark", "AWS_SECRET_ACCESS_KEY": "benchmark",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "SAM_CLI_TELEMETRY": "0", "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
    "SLS_DEPRECATION_DISABLE": "*",
}


def root(workdir: Path) -> Path:
    return workdir / "peers"


def sam_exe(workdir: Path) -> Path:
    return root(workdir) / "sam-venv" / "bin" / "sam"


def serverless_exe(workdir: Path) -> Path:
    return root(workdir) / "sls" / "node_modules" / ".bin" / "serverless"


def install(workdir: Path) -> None:
    folder = root(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    if not sam_exe(workdir).exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder / "sam-venv")], check=True)
        subprocess.run([str(folder / "sam-venv" / "bin" / "pip"), "install", "-q",
                        "aws-sam-cli"], check=True)
    if not serverless_exe(workdir).exists():
        (folder / "sls").mkdir(exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "serverless@3"],
                       cwd=folder / "sls", check=True)


def version(exe: Path) -> str:
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=ENV,
                         check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else "?"


@dataclass
class Peer:
    """One peer's project (a copy of the base function) and its three cases."""

    label: str
    exe: Path
    folder: Path  # where the command runs
    fn_dir: Path  # the function's source, edited by the edit case
    output: Path  # deleted for a cold build
    command: list[str]

    def cold(self) -> None:
        shutil.rmtree(self.output, ignore_errors=True)

    def edit(self, mark: Callable[[Path], str]) -> None:
        mark(self.fn_dir / lp.EDITED_MODULE)


def setup(workdir: Path, ws: lp.Workspace) -> list[Peer]:
    """The peers' projects, fresh copies of the base function: SAM's with its
    package.json and lock (`sam build` runs npm itself), Serverless's with the
    production node_modules beside the code (as `serverless package` expects)."""
    peers = []
    folder = root(workdir)
    staged = ws.library_staging / "node_modules"
    if serverless_exe(workdir).exists():
        svc = folder / "svc"
        shutil.rmtree(svc, ignore_errors=True)
        shutil.copytree(ws.fn_dir, svc, ignore=shutil.ignore_patterns("node_modules"))
        shutil.copytree(staged, svc / "node_modules", symlinks=True)
        (svc / "serverless.yml").write_text(SERVERLESS_YML)
        exe = serverless_exe(workdir)
        peers.append(Peer(f"Serverless v3 `serverless package` ({version(exe)})", exe, svc, svc,
                          svc / ".serverless", [str(exe), "package"]))
    if sam_exe(workdir).exists():
        sam = folder / "sam"
        shutil.rmtree(sam, ignore_errors=True)
        shutil.copytree(ws.fn_dir, sam / "fn", ignore=shutil.ignore_patterns("node_modules"))
        (sam / "template.yaml").write_text(SAM_TEMPLATE)
        exe = sam_exe(workdir)
        peers.append(Peer(f"SAM `sam build --cached` ({version(exe)})", exe, sam, sam / "fn",
                          sam / ".aws-sam", [str(exe), "build", "--cached"]))
    return peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install SAM and Serverless v3")
    parser.add_argument("--workdir", type=Path, default=lp.DEFAULT_WORKDIR)
    args = parser.parse_args()
    if args.install:
        install(args.workdir.resolve())
    for exe in (sam_exe(args.workdir.resolve()), serverless_exe(args.workdir.resolve())):
        print(f"{exe}: {version(exe) if exe.exists() else 'not installed'}")


if __name__ == "__main__":
    main()
