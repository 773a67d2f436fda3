"""The static handler check, on in-memory packages: where Lambda finds the file,
which export forms are read, module type, callback handlers on nodejs24.x, and
what stays a warning. No user code is run, no subprocess."""

from __future__ import annotations

import pytest

from dodo_lambda import jsmodule
from dodo_lambda.handlers import check_handler

TYPE_MODULE = '{"name": "demo", "type": "module"}'


def check(files: dict[str, str], handler: str = "index.handler", runtime: str = "nodejs24.x",
          layers: tuple = ()):
    return check_handler(files, lambda name: files[name].encode(), handler, runtime,
                         source="fn", layers=layers)


def ok(files: dict[str, str], **kw) -> None:
    verdict = check(files, **kw)
    assert verdict.error is None and verdict.warnings == (), verdict


def refused(files: dict[str, str], *needles: str, **kw) -> str:
    verdict = check(files, **kw)
    assert verdict.error, verdict
    for needle in needles:
        assert needle in verdict.error, verdict.error
    return verdict.error


@pytest.mark.parametrize("source", [
    "exports.handler = async (event) => 1;",
    "module.exports.handler = async function (event, context) { return 1; };",
    "module.exports = { handler };\nasync function handler(event) {}",
    "module.exports = { handler: async (e) => e, other: 1 };",
    "module.exports = {\n  async handler(event) { return 1; },\n};",
    'exports["handler"] = async () => 1;',
    'Object.defineProperty(exports, "handler", { value: async () => 1 });',
    "const api = { handler: async () => 1 };\nmodule.exports = api;",
    # esbuild's CommonJS output
    "var src_exports = {};\n__export(src_exports, {\n  handler: () => handler\n});\n"
    "module.exports = __toCommonJS(src_exports);\nvar handler = async (event) => event;",
    # TypeScript's CommonJS output
    '"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\n'
    "exports.handler = void 0;\nconst handler = async (event) => event;\n"
    "exports.handler = handler;",
])
def test_commonjs_forms(source: str) -> None:
    ok({"index.js": source})


@pytest.mark.parametrize("source", [
    "export const handler = async (event) => 1;",
    "export let handler = async (event) => 1;",
    "export function handler(event) {}",
    "export async function handler(event, context) {}",
    "const main = async () => 1;\nexport { main as handler };",
    "async function handler(e) {}\nexport { handler, handler as other };",
    "export default { handler: async () => 1 };",
    "import { x } from './x.js';\nexport { handler } from './impl.js';",
])
def test_esm_forms(source: str) -> None:
    ok({"index.mjs": source})
    ok({"index.js": source, "package.json": TYPE_MODULE})


def test_strings_and_comments_do_not_count() -> None:
    refused({"index.js": "// exports.handler = async () => 1;\n"
                         "/* module.exports = { handler } */\n"
                         "const s = 'exports.handler = 1';\n"
                         "const t = `export const handler = 1`;\n"
                         "exports.other = async () => s + t;\n"},
            "fn/index.js does not export 'handler'", "it exports other")


def test_export_typo_names_the_file_and_the_fix() -> None:
    error = refused({"index.js": "exports.handlr = async () => 1;"},
                    "fn/index.js does not export 'handler'", "handlr",
                    "handler='index.handler'")
    assert error.count("\n") == 0


def test_unreadable_forms_are_warnings() -> None:
    for source, kind in [
        ("export * from './impl.js';", "export * from"),
        ("module.exports = require('./impl');", "module.exports = require"),
        ("module.exports = { ...require('./impl') };", "spread"),
        ("module.exports = makeHandlers();", "makeHandlers"),
        ("Object.assign(module.exports, require('./impl'));", "module.exports"),
        ("if (x) { module.exports = require('./a'); }", "module.exports used another way"),
        ("const cmd = module.exports;\ncmd.handler = async () => 1;", "another way"),
        ("mergeModules(exports, module);", "exports used another way"),
    ]:
        name = "index.mjs" if "export *" in source else "index.js"
        verdict = check({name: source})
        assert verdict.error is None and len(verdict.warnings) == 1, (source, verdict)
        assert "cannot tell whether" in verdict.warnings[0] and kind in verdict.warnings[0]


def test_file_resolution_follows_lambda() -> None:
    ok({"index.mjs": "export const handler = async () => 1;"})
    ok({"index.cjs": "exports.handler = async () => 1;"})
    ok({"index": "exports.handler = async () => 1;"})  # tried as is, first
    ok({"src/app.js": "exports.handler = async () => 1;"}, handler="src/app.handler")
    ok({"src/app.js": "exports.handler = async () => 1;"}, handler="./src/app.handler")
    ok({"app.js": "exports.handler = async () => 1;"}, handler="/var/task/app.handler")
    # a dotted export: the module is the part before the first dot
    ok({"app.js": "module.exports = { handlers: { main: async () => 1 } };"},
       handler="app.handlers.main")
    # require(module): a package in node_modules
    ok({"node_modules/shared/index.js": "exports.handler = async () => 1;"},
       handler="shared.handler")


def test_missing_file() -> None:
    refused({"lib/index.js": ""}, "needs fn/index.js (or .mjs/.cjs)", "fix handler=")
    refused({"index.js": ""}, "outside the package", handler="/etc/x.handler")


def test_handler_file_in_a_layer() -> None:
    layer = {"nodejs/node_modules/shared/index.js", "nodejs/node_modules/shared/package.json"}
    ok({"other.js": ""}, handler="shared.handler", layers=(layer,))
    ok({}, handler="/opt/nodejs/entry.handler", layers=({"nodejs/entry.js"},))
    node24 = {"nodejs/node24/node_modules/shared/index.js"}
    ok({}, handler="shared.handler", layers=(node24,))
    refused({}, "needs", handler="shared.handler", layers=({"nodejs/node_modules/other/a.js"},))
    # a layer given as an ARN: its files are unknown, so a warning
    verdict = check({}, handler="shared.handler", layers=(None,))
    assert verdict.error is None and "ARN" in verdict.warnings[0]


def test_esm_in_commonjs_js_names_both_fixes() -> None:
    error = refused({"index.js": "export const handler = async () => 1;",
                     "package.json": '{"name": "demo"}'},
                    "fn/index.js uses ES module syntax (export const)",
                    "fn/package.json has no \"type\": \"module\"",
                    "add \"type\": \"module\" to fn/package.json", "rename the file to index.mjs")
    assert "\n" not in error
    refused({"index.js": "import x from 'x';\nexports.handler = x;"},
            "no package.json", "add \"type\": \"module\" to fn/package.json", "index.mjs")
    refused({"index.cjs": "export const handler = async () => 1;"}, ".cjs file is always CommonJS")
    # the nearest package.json decides; one in node_modules is not looked past
    refused({"src/index.js": "export const handler = 1;", "package.json": TYPE_MODULE,
             "src/package.json": '{"name": "inner"}'},
            "fn/src/package.json has no", handler="src/index.handler")
    ok({"src/index.js": "export const handler = async () => 1;", "package.json": TYPE_MODULE},
       handler="src/index.handler")


def test_commonjs_in_esm_is_refused() -> None:
    refused({"index.js": "module.exports.handler = async () => 1;", "package.json": TYPE_MODULE},
            "uses CommonJS (module.exports)", "\"type\": \"module\" in fn/package.json",
            "rename it to index.cjs")
    refused({"index.mjs": "const x = require('x');\nexport const handler = x;"},
            "uses CommonJS (require(", "the .mjs extension")


def test_esm_that_declares_require_or_bundles_commonjs_is_fine() -> None:
    ok({"index.mjs": "import { createRequire } from 'module';\n"
                     "const require = createRequire(import.meta.url);\n"
                     "const x = require('x');\nexport const handler = async () => x;"})
    # esbuild's ESM bundle wraps CommonJS modules in functions
    ok({"index.mjs": "var __commonJS = (cb, mod) => function () { return mod; };\n"
                     "var lib = __commonJS({ \"lib.js\"(exports, module) {\n"
                     "  module.exports = { x: 1 };\n} });\n"
                     "var handler = async (event) => lib();\nexport { handler };"})


@pytest.mark.parametrize("source", [
    "exports.handler = (event, context, callback) => callback(null, 1);",
    "exports.handler = function (event, context, callback) { callback(null, 1); };",
    "exports.handler = async (event, context, callback) => 1;",
    "module.exports = { handler(event, context, callback) { callback(); } };",
    "function handler(e, c, cb) { cb(); }\nmodule.exports = { handler };",
    "const handler = (e, c, cb) => cb();\nexports.handler = handler;",
])
def test_callback_handlers_on_nodejs24(source: str) -> None:
    refused({"index.js": source}, "takes a callback", "make it async",
            "runtime='nodejs22.x'", "nodejs24.x")
    ok({"index.js": source}, runtime="nodejs22.x")


@pytest.mark.parametrize("source", [
    "exports.handler = async (event, context) => 1;",
    "exports.handler = async (event, context, callback = null) => 1;",  # length 2
    "exports.handler = async (event, ...rest) => 1;",
    "exports.handler = awslambda.streamifyResponse(async (event, stream, context) => {});",
    "exports.handler = middy(base);",
])
def test_not_callback_handlers_on_nodejs24(source: str) -> None:
    ok({"index.js": source})


def test_export_callback_handler_esm() -> None:
    refused({"index.mjs": "export function handler(event, context, callback) {}"},
            "takes a callback (3 parameters")


def test_regexes_and_templates_do_not_derail_the_reader() -> None:
    source = ("const quote = /['\"`]/g;\nconst half = total / 2 / count;\n"
              "const t = `a ${ cond ? `b ${x}` : '}' } c`;\n"
              "exports.handler = async (event) => event.replace(quote, '');\n")
    ok({"index.js": source})


def test_parameter_count_counts_like_function_length() -> None:
    code = "const f = (a, { b = 1, c } = {}, d) => 1;"
    assert jsmodule.parameter_count("(a, { b = 1, c }, d) => 1") == 3
    assert jsmodule.parameter_count("(a, b = 1, c) => 1") == 1
    assert jsmodule.parameter_count("x => x") == 1
    assert jsmodule.parameter_count("async function named(a, b) {}") == 2
    assert jsmodule.parameter_count("f", code) == 1
    assert jsmodule.parameter_count("wrap(f)", code) is None


def test_a_default_function_export_is_not_the_named_handler() -> None:
    # Lambda looks the name up in the module, then in its default export's properties
    refused({"index.mjs": "export default async function handler(event) {}"},
            "does not export 'handler' (it exports default)")
