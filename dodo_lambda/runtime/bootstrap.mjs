// dodo_lambda's stand-in for Lambda's Node.js runtime client, for one invocation.
//
// It loads the handler from LAMBDA_TASK_ROOT the way Lambda's runtime does
// (require for CommonJS, import() for .mjs and "type": "module"), calls it with
// the event and a context, and reports on the file descriptor named by its one
// argument (a pipe to the caller), one JSON object a
// line: {"t": "start", node}, {"t": "ready", init_ms}, then
// {"t": "done", ok, payload | error, ms}. The invocation itself arrives on stdin.
// stdout and stderr belong to the handler (the caller sends both to its logs);
// the timeout is enforced by the caller, which kills this process.

import fs from "node:fs";
import path from "node:path";
import util from "node:util";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { performance } from "node:perf_hooks";

const REPORT = Number(process.argv[2]); // the caller's pipe
const report = (message) => {
  try {
    fs.writeSync(REPORT, JSON.stringify(message) + "\n");
  } catch {
    // the caller is gone: nothing left to tell
  }
};
report({ t: "start", node: process.versions.node });

const invocation = JSON.parse(fs.readFileSync(0, "utf8"));
const requestId = invocation.requestId;
const env = process.env;

// -- logs: Lambda's text format, written synchronously so nothing is lost on exit
const write = (level, args) => {
  const line = `${new Date().toISOString()}\t${requestId}\t${level}\t${util.format(...args)}\n`;
  fs.writeSync(2, line);
};
for (const [name, level] of [["log", "INFO"], ["info", "INFO"], ["debug", "DEBUG"],
  ["warn", "WARN"], ["error", "ERROR"], ["trace", "TRACE"], ["fatal", "FATAL"]]) {
  console[name] = (...args) => write(level, args);
}

// -- errors in Lambda's shape
class RuntimeError extends Error {
  constructor(name, message, stack) {
    super(message);
    this.name = name;
    if (stack) this.stack = stack;
  }
}
const isError = (e) => util.types.isNativeError(e) || (e && typeof e.name === "string"
  && typeof e.message === "string" && typeof e.stack === "string");
const errorShape = (e) => {
  try {
    if (isError(e)) {
      return { errorType: e.name, errorMessage: e.message, trace: String(e.stack).split("\n") };
    }
    return { errorType: typeof e, errorMessage: String(e), trace: [] };
  } catch {
    return { errorType: "handled", errorMessage: "callback called with Error argument, but"
      + " there was a problem while retrieving one or more of its message, name, and stack" };
  }
};

let finished = false;
let started = 0;
const finish = (ok, value) => {
  if (finished) return;
  finished = true;
  const ms = started ? performance.now() - started : 0;
  const rss = process.resourceUsage().maxRSS; // KiB, this process only
  if (ok) {
    let payload;
    try {
      payload = JSON.stringify(value === undefined ? null : value);
      if (payload === undefined) payload = "null";
    } catch (e) {
      return fail(new RuntimeError("Runtime.JSONStringifyError", "Unable to stringify response body"));
    }
    report({ t: "done", ok: true, payload, ms, rss });
  } else {
    const error = errorShape(value);
    write("ERROR", ["Invoke Error", JSON.stringify(error)]);
    report({ t: "done", ok: false, error, ms, rss });
  }
  process.exit(0);
};
const fail = (e) => {
  finished = false;
  finish(false, e);
};

process.on("uncaughtException", (e) => finish(false, e));
process.on("unhandledRejection", (reason) => {
  const text = isError(reason) ? `${reason.name}: ${reason.message}` : String(reason);
  finish(false, new RuntimeError("Runtime.UnhandledPromiseRejection", text,
    isError(reason) ? reason.stack : undefined));
});

// -- loading the handler, as Lambda's runtime does
const require = createRequire(import.meta.url);

function typeModule(folder) {
  // the nearest package.json decides; a node_modules folder or the root ends the search
  for (;;) {
    if (folder.endsWith(`${path.sep}node_modules`)) return false;
    const pj = path.join(folder, "package.json");
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, "utf8")).type === "module";
      } catch {
        return false;
      }
    }
    const parent = path.dirname(folder);
    if (parent === folder) return false;
    folder = parent;
  }
}

async function loadModule(root, moduleRoot, name) {
  const base = path.resolve(root, moduleRoot, name);
  const tryRequire = (file) => (fs.existsSync(file) ? require(file) : undefined);
  const tryImport = async (file) => (fs.existsSync(file) ? await import(pathToFileURL(file).href)
    : undefined);
  try {
    const plain = tryRequire(base);
    if (plain) return plain;
    const esm = typeModule(path.dirname(base));
    if (!esm) {
      const cjs = tryRequire(`${base}.js`);
      if (cjs) return cjs;
    }
    const found = (esm && await tryImport(`${base}.js`)) || await tryImport(`${base}.mjs`)
      || tryRequire(`${base}.cjs`);
    if (found) return found;
    return require(require.resolve(name, { paths: [root, path.join(root, moduleRoot)] }));
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new RuntimeError("Runtime.UserCodeSyntaxError", String(e), e.stack);
    }
    if (e && e.code === "MODULE_NOT_FOUND") {
      throw new RuntimeError("Runtime.ImportModuleError", String(e), e.stack);
    }
    throw e;
  }
}

async function loadHandler(root, handlerString) {
  if (handlerString.includes("..")) {
    throw new RuntimeError("Runtime.MalformedHandlerName", `'${handlerString}' is not a valid`
      + " handler name. Use absolute paths when specifying root directories in handler names.");
  }
  const base = path.basename(handlerString);
  const moduleRoot = handlerString.substring(0, handlerString.indexOf(base));
  const match = base.match(/^([^.]*)\.(.*)$/);
  if (!match) throw new RuntimeError("Runtime.MalformedHandlerName", "Bad handler");
  const mod = await loadModule(root, moduleRoot, match[1]);
  const find = (obj) => match[2].split(".").reduce((o, k) => (o ? o[k] : undefined), obj);
  const fn = find(mod) ?? (mod && typeof mod === "object" && "default" in mod ? find(mod.default)
    : undefined);
  if (!fn) {
    throw new RuntimeError("Runtime.HandlerNotFound", `${handlerString} is undefined or not exported`);
  }
  if (typeof fn !== "function") {
    throw new RuntimeError("Runtime.HandlerNotFound", `${handlerString} is not a function`);
  }
  return fn;
}

// -- one invocation
let handler;
try {
  handler = await loadHandler(env.LAMBDA_TASK_ROOT, env._HANDLER);
} catch (e) {
  finish(false, e);
}
report({ t: "ready", init_ms: performance.now() });

if (!invocation.callbacks && handler.length >= 3) {
  finish(false, new RuntimeError("Runtime.CallbackHandlerDeprecated", "ERROR: AWS Lambda has"
    + " removed support for callback-based function handlers starting with Node.js 24. You need"
    + " to modify this function to use a supported handler signature to use Node.js 24 or later."
    + " For more information see https://docs.aws.amazon.com/lambda/latest/dg/nodejs-handler.html."));
}

let waitForEmptyEventLoop = true;
let atExit = null; // what the end of the event loop reports: the callback's result, or null
process.on("beforeExit", () => {
  if (atExit) return atExit();
  if (handler.constructor && handler.constructor.name === "AsyncFunction") {
    return finish(false, new RuntimeError("Runtime.NodeJsExit",
      "Runtime exited without providing a reason"));
  }
  finish(true, null); // a handler that never called back: Lambda answers null
});
const done = (err, result) => {
  if (err !== undefined && err !== null) finish(false, err);
  else finish(true, result);
};
const callback = (err, result) => {
  if (err !== undefined && err !== null) return finish(false, err);
  if (!waitForEmptyEventLoop) return finish(true, result);
  atExit = () => setImmediate(() => finish(true, result));
};
const deadline = Date.now() + invocation.timeoutMs;
const context = {
  functionName: env.AWS_LAMBDA_FUNCTION_NAME,
  functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
  invokedFunctionArn: invocation.functionArn,
  memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
  awsRequestId: requestId,
  logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
  logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
  identity: invocation.identity ?? undefined,
  clientContext: invocation.clientContext ?? undefined,
  getRemainingTimeInMillis: () => deadline - Date.now(),
  get callbackWaitsForEmptyEventLoop() { return waitForEmptyEventLoop; },
  set callbackWaitsForEmptyEventLoop(value) { waitForEmptyEventLoop = value; },
  done,
  succeed: (result) => done(null, result),
  fail: (err) => done(err ?? "handled"),
};

started = performance.now();
try {
  const result = handler(JSON.parse(invocation.event), context, callback);
  if (result && typeof result.then === "function") {
    result.then((value) => finish(true, value), (err) => finish(false, err));
  }
} catch (e) {
  finish(false, e);
}
