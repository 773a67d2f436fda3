"""Lambda's rules, held in our own code (moto accepts all of these): the runtime
lifecycle with an injected today, names, limits, and settings of the wrong type
that must not raise while dodo.py loads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from dodo_lambda import Function, Layer, rules
from dodo_lambda.config import function_problem, layer_problem

# -- runtimes ------------------------------------------------------------------------


def test_the_table_holds_the_published_dates() -> None:
    life = rules.NODE_RUNTIMES["nodejs20.x"]
    assert (life.deprecated, life.block_create, life.block_update) == (
        date(2026, 4, 30), date(2026, 8, 31), date(2026, 9, 30))
    assert rules.NODE_RUNTIMES["nodejs24.x"].block_update == date(2028, 7, 1)
    assert rules.DEFAULT_RUNTIME == "nodejs24.x"
    assert Function("f", "src", "index.handler").runtime == "nodejs24.x"


@pytest.mark.parametrize(("today", "error", "create_error", "warning"), [
    (date(2027, 4, 29), False, False, False),  # supported
    (date(2027, 4, 30), False, False, True),  # deprecated: a warning
    (date(2027, 6, 1), False, True, True),  # no creating: refused only on create
    (date(2027, 7, 1), True, False, False),  # no updating either: refused
])
def test_nodejs22_over_its_life(today: date, error: bool, create_error: bool,
                                warning: bool) -> None:
    verdict = rules.runtime_verdict("nodejs22.x", today)
    assert (bool(verdict.error), bool(verdict.create_error), bool(verdict.warning)) == (
        error, create_error, warning)


def test_blocked_runtime_names_the_date_and_where_to_go() -> None:
    verdict = rules.runtime_verdict("nodejs20.x", date(2026, 11, 30))
    assert verdict.error is not None
    assert "2026-09-30" in verdict.error and "runtime='nodejs24.x'" in verdict.error
    assert "allow_deprecated_runtime=True" in verdict.error


def test_create_block_names_both_dates() -> None:
    verdict = rules.runtime_verdict("nodejs24.x", date(2028, 6, 15))
    assert verdict.create_error and "2028-06-01" in verdict.create_error
    assert "2028-07-01" in verdict.create_error


def test_the_escape_hatch_turns_refusals_into_warnings() -> None:
    for runtime in ("nodejs20.x", "nodejs16.x"):
        verdict = rules.runtime_verdict(runtime, date(2026, 11, 30), allow_deprecated=True)
        assert verdict.error is None and verdict.create_error is None
        assert verdict.warning and "allow_deprecated_runtime" in verdict.warning
    # not a Node.js runtime at all: no hatch
    assert rules.runtime_verdict("python3.12", allow_deprecated=True).error


def test_unknown_runtimes_newer_warn_older_refuse() -> None:
    newer = rules.runtime_verdict("nodejs26.x", date(2026, 11, 30))
    assert newer.error is None and newer.warning and "newer" in newer.warning
    for older in ("nodejs16.x", "nodejs21.x", "nodejs4.x"):
        assert rules.runtime_verdict(older, date(2026, 11, 30)).error, older


@pytest.mark.parametrize("runtime", ["python3.12", "nodejs20.x\n", "nodejs", "", None, 20])
def test_not_a_node_runtime(runtime: object) -> None:
    assert "not a Node.js runtime" in (rules.runtime_verdict(runtime).error or "")


def test_move_to_the_newest_supported_runtime() -> None:
    assert rules.current_runtime(date(2026, 11, 30)) == "nodejs24.x"
    assert rules.update_blocked("nodejs20.x", date(2026, 11, 30))
    assert not rules.update_blocked("nodejs22.x", date(2026, 11, 30))
    assert rules.update_blocked("nodejs16.x", date(2026, 11, 30))
    assert rules.callbacks_removed("nodejs24.x") and rules.callbacks_removed("nodejs26.x")
    assert not rules.callbacks_removed("nodejs22.x")


# -- names and settings ----------------------------------------------------------------


@pytest.mark.parametrize(("check", "good", "bad"), [
    (rules.function_name_problem, "orders-v2_x", ["orders\n", "a" * 65, "", "a:b", None,
                                                 "arn:aws:lambda:us-east-1:1:function:f"]),
    (rules.layer_name_problem, "l" * 140, ["l" * 141, "shared\n", "a b"]),
    (rules.alias_problem, "live", ["1", "42", "live\n", "a.b", "x" * 129, 7]),
    (rules.description_problem, "d" * 256, ["d" * 257, 5]),
    (rules.bucket_problem, "my-artifacts.eu", [
        "s3://my-artifacts", "b", "My-Bucket", "a..b", "192.168.1.1", "xn--abc", "bucket-",
        "arn:aws:s3:::my-artifacts", "x" * 64, "bucket\n", "", 3, "data--x-s3"]),
    (rules.bucket_prefix_problem, "lambda/", ["../up/", "/abs/", "a/../b", "a\\b", None]),
    (rules.role_problem, "arn:aws:iam::123456789012:role/service/runner",
     ["arn:aws:iam::1:role/x", "arn:aws:iam::123456789012:role/r\n", "a b"]),
])
def test_names_are_matched_whole(check, good: str, bad: list) -> None:
    assert check(good) is None
    for value in bad:
        assert check(value), value


def test_s3_url_names_the_bucket() -> None:
    problem = rules.bucket_problem("s3://my-artifacts/lambda")
    assert problem and "bucket='my-artifacts'" in problem and "bucket_prefix=" in problem


@pytest.mark.parametrize(("env", "needle"), [
    ({"TABLE": "orders"}, None),
    ({"TABLE": None}, "values must be strings"),
    ({"TABLE": 5}, "values must be strings"),
    ({"AWS_REGION": "eu-west-1"}, "reserved"),
    ({"_HANDLER": "x"}, "not allowed"),  # also reserved, but the name itself is refused
    ({"1ABC": "x"}, "not allowed"),
    ({"A-B": "x"}, "not allowed"),
    ({"X": "x"}, "not allowed"),  # Lambda's pattern wants two characters or more
    ({"BIG": "x" * 4094}, "4,096"),
    ({"BIG": "x" * 4093}, None),  # 3 + 4093 bytes: exactly 4 KB
    (["TABLE", "orders"], "must be a dict"),
    ({5: "x"}, "not allowed"),
])
def test_environment(env: object, needle: str | None) -> None:
    problem = rules.environment_problem(env)
    assert (problem is None) if needle is None else (needle in (problem or "")), problem


def test_memory_and_timeout_refuse_bools_and_ranges() -> None:
    check = rules.int_setting_problem
    assert check("memory", 128, *rules.MEMORY_RANGE, "MB") is None
    for value in (True, False, 127, 10241, 256.0, "256"):
        assert check("memory", value, *rules.MEMORY_RANGE, "MB"), value
    assert check("timeout", True, *rules.TIMEOUT_RANGE, "seconds")


def test_layer_lists() -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:layer:shared:3"
    assert rules.layers_problem([arn], ["own"]) is None
    assert "twice" in (rules.layers_problem([arn, arn[:-1] + "4"], []) or "")
    assert "twice" in (rules.layers_problem([], ["own", "own"]) or "")
    assert "at most 5" in (rules.layers_problem([], [f"l{i}" for i in range(6)]) or "")
    assert "not a layer version ARN" in (rules.layers_problem([arn + "\n"], []) or "")


@pytest.mark.parametrize(("handler", "needle"), [
    ("index.handler", None),
    ("src/app.handlers.main", None),
    ("/opt/nodejs/shared.handler", None),
    ("../x.handler", "outside the package"),
    ("src/../x.handler", "outside the package"),
    ("index..handler", "contains '..'"),
    ("index", "'file.export'"),
    (".handler", "'file.export'"),
    ("index.", "'file.export'"),
    ("index handler", "no spaces"),
    ("x" * 121 + ".handler", "128"),
    (None, "'file.export'"),
])
def test_handler_string(handler: object, needle: str | None) -> None:
    problem = rules.handler_problem(handler, "fn")
    assert (problem is None) if needle is None else (needle in (problem or "")), problem


def test_layer_fit() -> None:
    fit = rules.layer_fit("shared", [], [], [("a", "nodejs24.x", "arm64")])
    assert (fit.architecture, fit.problem, fit.misfits) == ("arm64", None, {})
    fit = rules.layer_fit("shared", [], [], [("a", "nodejs24.x", "arm64"),
                                             ("b", "nodejs24.x", "x86_64")])
    assert fit.problem and "function 'a' (arm64)" in fit.problem
    assert "function 'b' (x86_64)" in fit.problem
    fit = rules.layer_fit("shared", ["nodejs22.x"], ["x86_64"],
                          [("a", "nodejs24.x", "arm64"), ("b", "nodejs24.x", "x86_64"),
                           ("c", "nodejs22.x", "x86_64")])
    assert "runs on arm64" in fit.misfits["a"] and "layer 'shared'" in fit.misfits["a"]
    assert "nodejs24.x" in fit.misfits["b"] and "c" not in fit.misfits
    assert fit.architecture == "x86_64"


# -- wrong types never raise while dodo.py loads ----------------------------------------


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"name": None}, "invalid name"),
    ({"name": "orders\n"}, "invalid name"),
    ({"source": None}, "source="),
    ({"source": 42}, "source="),
    ({"handler": None}, "handler"),
    ({"exclude": 123}, "exclude="),
    ({"include": [1]}, "include="),
    ({"include": b"*.js"}, "include="),
    ({"environment": ["A", "B"]}, "environment must be a dict"),
    ({"environment": {"TABLE": None}}, "values must be strings"),
    ({"memory": True}, "memory="),
    ({"timeout": "30"}, "timeout="),
    ({"layers": 5}, "layers="),
    ({"layers": [5]}, "layers must be Layer objects"),
    ({"runtime": None}, "not a Node.js runtime"),
    ({"runtime": "nodejs18.x"}, "2025-11-01"),
    ({"architecture": ["arm64"]}, "architecture"),
    ({"publish": "yes"}, "publish="),
    ({"alias": "1", "publish": True}, "alias="),
    ({"bucket": "s3://my-artifacts"}, "bucket='my-artifacts'"),
    ({"bucket_prefix": None}, "bucket_prefix="),
    ({"description": "x" * 300}, "256"),
    ({"role": 12}, "role="),
    ({"allow_deprecated_runtime": "yes"}, "allow_deprecated_runtime="),
])
def test_function_with_wrong_values_constructs_and_explains(
        tmp_path: Path, kwargs: dict, needle: str) -> None:
    (tmp_path / "index.js").write_text("exports.handler = async () => 1;\n")
    args = {"name": "demo", "source": str(tmp_path), "handler": "index.handler", **kwargs}
    fn = Function(**args)  # must not raise
    problem = fn.problem
    assert problem and needle in problem, problem
    assert problem.startswith("function ")
    assert "\n" not in problem


def test_function_accepts_paths_and_single_strings(tmp_path: Path) -> None:
    fn = Function("demo", tmp_path, "index.handler", include="*.txt", exclude=("*.md",),
                  environment={"TABLE": "orders"})
    assert fn.source == str(tmp_path) and fn.include == ("*.txt",)
    assert fn.problem is None
    assert fn.settings()["Environment"] == {"Variables": {"TABLE": "orders"}}


def test_source_that_is_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "index.js").write_text("exports.handler = async () => 1;\n")
    problem = Function("demo", str(tmp_path / "index.js"), "index.handler").problem
    assert problem and "is a file, not a folder" in problem and str(tmp_path) in problem


def test_the_escape_hatch_on_the_function(tmp_path: Path) -> None:
    fn = Function("demo", str(tmp_path), "index.handler", runtime="nodejs20.x")
    assert "2026-09-30" in (function_problem(fn, date(2026, 11, 30)) or "")
    ok = Function("demo", str(tmp_path), "index.handler", runtime="nodejs20.x",
                  allow_deprecated_runtime=True)
    assert function_problem(ok, date(2026, 11, 30)) is None
    assert function_problem(fn, date(2026, 5, 1)) is None  # deprecated only: deploys


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"name": None}, "invalid name"),
    ({"name": "l" * 141}, "1-140"),
    ({"runtimes": 24}, "runtimes="),
    ({"runtimes": ["nodejs20.x"]}, "2026-09-30"),
    ({"architectures": ["arm"]}, "architecture"),
    ({"include": [None]}, "include="),
    ({"description": "x" * 257}, "256"),
])
def test_layer_with_wrong_values_constructs_and_explains(
        tmp_path: Path, kwargs: dict, needle: str) -> None:
    (tmp_path / "package.json").write_text('{"name": "shared"}')
    layer = Layer(**{"name": "shared", "source": str(tmp_path), **kwargs})
    problem = layer.problem
    assert problem and needle in problem and problem.startswith("layer "), problem


def test_layer_without_dependencies_needs_no_lock(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "shared"}')
    assert layer_problem(Layer("shared", str(tmp_path))) is None
    (tmp_path / "package.json").write_text('{"name": "shared", "dependencies": {"x": "1"}}')
    assert "package-lock.json" in (layer_problem(Layer("shared", str(tmp_path))) or "")
