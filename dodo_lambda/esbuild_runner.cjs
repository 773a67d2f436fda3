// Runs esbuild's JS API for dodo_lambda's bundle step (see bundle.py).
//
// Reads one JSON request on stdin; writes the outputs and the metafile where it
// is told, then one JSON answer on stdout: {errors, warnings, builtins}.
//
// Bare imports from the user's own code resolve from the staged production tree
// (npm ci --omit=dev for the target platform), never from the developer's own
// node_modules: esbuild looks for node_modules beside the importing file first,
// so a plugin redirects those lookups. Imports from inside a package resolve
// normally (they are inside the staged tree already).
"use strict";

const fs = require("fs");
const path = require("path");
const { builtinModules } = require("module");

const SKIP = "dodo-lambda-resolving";
const BARE = /^[^./]|^\.[^./]|^\.\.[^/]/; // not "/", "./" or "../": a package or a builtin

function isBuiltin(spec) {
  return spec.startsWith("node:") || builtinModules.includes(spec.split("/")[0]);
}

function inside(file, folder) {
  return file === folder || file.startsWith(folder + path.sep);
}

function inPackage(req, file) {
  // judged on the path below the project folder: where the checkout lives is no matter
  return path.relative(req.cwd, file).split(path.sep).includes("node_modules");
}

function packageName(spec) {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

function stagedPlugin(req) {
  const stagedModules = req.staged_node_modules;
  const stagedFolder = path.dirname(stagedModules);
  return {
    name: "dodo-lambda-staged",
    setup(build) {
      build.onResolve({ filter: BARE }, async (args) => {
        if (args.pluginData === SKIP || args.kind === "entry-point") return undefined;
        if (isBuiltin(args.path) || inPackage(req, args.importer)) {
          return undefined;
        }
        const opts = { kind: args.kind, importer: args.importer, pluginData: SKIP };
        const r = await build.resolve(args.path, { ...opts, resolveDir: stagedFolder });
        if (r.errors.length === 0 && (r.external || inside(r.path, stagedModules))) {
          return { path: r.path, external: r.external, namespace: r.namespace,
                   sideEffects: r.sideEffects, suffix: r.suffix };
        }
        if (r.errors.length && fs.existsSync(path.join(stagedModules, packageName(args.path)))) {
          return { errors: r.errors }; // installed, yet esbuild cannot use it: say why
        }
        // not a staged package: a tsconfig "paths" alias to the user's own code?
        const own = await build.resolve(args.path, { ...opts, resolveDir: args.resolveDir });
        if (own.errors.length === 0 && !own.external && !inPackage(req, own.path)) {
          return { path: own.path, namespace: own.namespace, sideEffects: own.sideEffects,
                   suffix: own.suffix };
        }
        return { errors: [{ text:
          `"${packageName(args.path)}" is not among the production dependencies installed` +
          ` for the target (${req.package_json}: a devDependency, or missing); add it to` +
          ` "dependencies", or to bundle external= when a layer or the runtime provides it` }] };
      });
    },
  };
}

function message(m) {
  const loc = m.location;
  const where = loc ? `${loc.file}:${loc.line}:${loc.column + 1}: ` : "";
  return where + m.text;
}

async function main() {
  const req = JSON.parse(fs.readFileSync(0, "utf8"));
  const esbuild = require(req.esbuild);
  const answer = { errors: [], warnings: [], builtins: builtinModules };
  try {
    const result = await esbuild.build({
      ...req.options,
      absWorkingDir: req.cwd,
      entryPoints: [req.entry],
      outfile: req.outfile,
      bundle: true,
      platform: "node",
      metafile: true,
      write: true,
      logLevel: "silent",
      sourcesContent: false,
      plugins: [stagedPlugin(req)],
    });
    answer.warnings = result.warnings.map(message);
    fs.writeFileSync(req.metafile, JSON.stringify(result.metafile));
  } catch (err) {
    answer.errors = err && Array.isArray(err.errors) && err.errors.length
      ? err.errors.map(message) : [String((err && err.message) || err)];
  }
  process.stdout.write(JSON.stringify(answer));
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ errors: [String((err && err.stack) || err)] }));
});
