"""The code's own rules, checked: the combined selection regex matches exactly as
pathspec does, state between calls lives in the run's context only, errors render
their next step and keep their cause."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pathspec
import pytest

from dodo_lambda.errors import DodoLambdaError, NextStep
from dodo_lambda.selection import DEFAULT_EXCLUDES, _compile

PACKAGE = Path(__file__).resolve().parents[1] / "dodo_lambda"

PATTERNS = [
    *DEFAULT_EXCLUDES, "*.js", "/build/", "docs/", "**/test/**", "a?c.txt", "[ab].md",
    "foo/**/bar", "/node_modules/pkg/", "*.d.ts", "lib/*.map", "\\#notes", "space\\ name",
    "deep/dir/", "/root-only.txt", "*.[oa]", "**/fixtures", "x/", "trailing/**",
]
PATHS = [
    "index.js", "index.mjs", "build/out.js", "src/build/out.js", "docs/a.md", "src/docs/b.md",
    "test/x.txt", "a/test/b/c.txt", "abc.txt", "aXc.txt", "ac.txt", "a.md", "c.md",
    "foo/bar", "foo/a/b/bar", "foo/bar/x", "node_modules/pkg/index.js",
    "x/node_modules/pkg/index.js", "types/a.d.ts", "lib/a.map", "lib/sub/a.map", "#notes",
    "space name", ".env", ".env.local", "config/.env.prod", "server.pem", "id_rsa.pub",
    ".git/config", "sub/.git/HEAD", ".npmrc", ".aws/credentials", ".DS_Store",
    ".lambdaignore", "sub/.lambdaignore", ".doit.db", "deep/dir/f", "deep/dir",
    "root-only.txt", "sub/root-only.txt", "main.o", "lib.a", "fixtures/x.json",
    "a/fixtures/y.json", "x/y", "trailing/a/b", "trailing", "README", "Dockerfile",
    "id_ed25519", "keys/id_ecdsa.pub", ".ssh/config", "a/.docker/config.json", "cert.p12",
    "x.pfx", "prod.tfvars", "prod.tfvars.json", "terraform.tfstate.backup", "sub/.git",
    ".netrc", ".git-credentials", ".pypirc", ".yarnrc.yml", ".env.example.js",
]
# the same paths in other cases: the default excludes match them all the same
CASE_PATHS = [*PATHS, *(p.upper() for p in PATHS), "Server.PEM", ".Env.Local", "SUB/.Git/HEAD",
              "Keys/ID_Ed25519.pub", ".SSH/Config", "Terraform.TFState"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_combined_regex_matches_like_pathspec_one_pattern(pattern: str) -> None:
    ours = _compile([pattern])
    theirs = pathspec.GitIgnoreSpec.from_lines([pattern]).match_file
    assert [p for p in PATHS if ours(p)] == [p for p in PATHS if theirs(p)]


def test_combined_regex_matches_like_pathspec_together() -> None:
    for size in (2, 5, len(PATTERNS)):
        for lines in itertools.islice(itertools.combinations(PATTERNS, size), 40):
            ours = _compile(lines)
            theirs = pathspec.GitIgnoreSpec.from_lines(lines).match_file
            assert [p for p in PATHS if ours(p)] == [p for p in PATHS if theirs(p)], lines


@pytest.mark.parametrize("pattern", PATTERNS)
def test_case_insensitive_regex_matches_like_pathspec_on_lowercase(pattern: str) -> None:
    ours = _compile([pattern], ignore_case=True)
    theirs = pathspec.GitIgnoreSpec.from_lines([pattern.lower()]).match_file
    assert [p for p in CASE_PATHS if ours(p)] == [p for p in CASE_PATHS if theirs(p.lower())]


def test_default_excludes_match_in_any_case() -> None:
    ours = _compile(DEFAULT_EXCLUDES, ignore_case=True)
    theirs = pathspec.GitIgnoreSpec.from_lines([x.lower() for x in DEFAULT_EXCLUDES]).match_file
    assert [p for p in CASE_PATHS if ours(p)] == [p for p in CASE_PATHS if theirs(p.lower())]
    assert ours("Server.PEM") and ours("SUB/.Git/HEAD") and ours(".ENV") and ours("sub/.git")
    assert not ours("index.js") and not ours("lib/environment.js")
    with pytest.raises(ValueError):
        _compile(["*.pem", "!keep.pem"], ignore_case=True)


def test_kept_default_regex_matches_like_pathspec() -> None:
    """selection keeps pathspec's regex for DEFAULT_EXCLUDES (so that a build without
    patterns of its own never imports pathspec): it must match as pathspec does, also
    on paths made from each pattern."""
    from dodo_lambda import selection

    ours = re.compile(selection._DEFAULT_SOURCE, re.IGNORECASE).search
    theirs = pathspec.GitIgnoreSpec.from_lines([x.lower() for x in DEFAULT_EXCLUDES]).match_file
    made = []
    for line in DEFAULT_EXCLUDES:
        name = line.strip("/").replace("*", "x")
        for path in (name, f"a/{name}", f"a/b/{name}/c.js", f"{name}.js", f"x{name}",
                     name.upper(), f"{name}/f"):
            made.append(path)
    for path in (*PATHS, *CASE_PATHS, *made):
        assert bool(ours(path)) == bool(theirs(path.lower())), path


def test_no_module_level_caches_outside_the_context() -> None:
    """State kept between calls lives in context.RunContext; a module-level empty
    dict/list/set (the usual shape of a hidden cache) anywhere else is a mistake."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "context.py":
            continue
        for node in ast.parse(path.read_text()).body:
            value = getattr(node, "value", None)
            empty = (isinstance(value, (ast.Dict, ast.List, ast.Set)) and not (
                getattr(value, "keys", None) or getattr(value, "elts", None))) or (
                isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("dict", "list", "set") and not value.args)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and empty:
                found.append(f"{path.name}:{node.lineno}")
        assert "global " not in path.read_text(), path.name
    assert found == []


def test_error_renders_its_next_step_and_keeps_its_cause() -> None:
    try:
        try:
            raise OSError("disk")
        except OSError as exc:
            raise DodoLambdaError("function 'a': dependencies\nare not installed",
                                  next_step=NextStep("npm", "a")) from exc
    except DodoLambdaError as err:
        assert str(err) == ("function 'a': dependencies are not installed;"
                            " run the npm step of 'a'")
        assert err.render(lambda s: f"`doit {s.step}:{s.name}`") == (
            "function 'a': dependencies are not installed; run `doit npm:a`")
        assert isinstance(err.__cause__, OSError)


def test_test_modules_do_not_import_each_other() -> None:
    """Shared test code lives in helper modules (helpers, projects, awsfixtures, ...),
    so that a test module can be run, moved or removed on its own."""
    tests = Path(__file__).resolve().parent
    modules = {p.stem for p in tests.glob("test_*.py")}
    found = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in modules]
    assert found == []

