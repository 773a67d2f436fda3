"""dodo_lambda with TypeScript: a function bundled by esbuild, a native package
shipped beside the bundle, and a layer; deployed to a local AWS emulator.

    doit deploy       # typecheck, npm ci, bundle, zip, publish the layer, deploy
    doit package      # only build: .dodo_lambda/dist/dodo-lambda-ts-orders.zip
    doit bundle       # only esbuild: .dodo_lambda/bundle/dodo-lambda-ts-orders/out/
    doit typecheck    # tsc --noEmit (after `npm install` in functions/orders)

Run ``npm install`` in functions/orders once: it installs TypeScript (for
``typecheck`` and your editor) and esbuild (which the bundle step then uses; without
it, dodo_lambda installs its own pinned esbuild into ~/.cache/dodo_lambda/).

What goes where:

- ``order-id`` (CommonJS that requires Node's ``crypto``) is bundled into
  ``index.mjs``; the ESM bundle's ``createRequire`` banner is what lets its
  ``require("crypto")`` work.
- ``fast-checksum`` ships a prebuilt ``.node`` binary, so it is left out of the bundle
  and shipped in the zip's ``node_modules`` with what it needs (``checksum-core``),
  installed for the function's architecture. It stands in for a real native addon such
  as ``sharp``, ``bcrypt`` or ``better-sqlite3``, which dodo_lambda treats the same way.
- ``shared-format`` comes from the layer (``/opt/nodejs/node_modules`` at run time):
  ``external=["shared-format"]`` leaves it out, and it is not a dependency of the
  function, so nothing ships it twice.
"""

from pathlib import Path

from dodo_lambda import Function, Layer, lambda_tasks

# sqlite3: doit's only state backend that survives `doit -n N` and two doit runs at
# once (its default dbm, and json, corrupt .doit.db); dodo_lambda warns about the others.
# A bare `doit` builds the zips: it never deploys (`doit deploy` does), nor starts a
# watch that runs until Ctrl-C.
DOIT_CONFIG = {"backend": "sqlite3", "default_tasks": ["package"]}

shared = Layer(
    "dodo-lambda-ts-shared",
    source="layers/shared",
    runtimes=["nodejs22.x"],
)

orders = Function(
    "dodo-lambda-ts-orders",
    source="functions/orders",
    handler="index.handler",  # functions/orders/index.ts, bundled into index.mjs
    runtime="nodejs22.x",  # esbuild targets node22
    layers=[shared],
    bundle={
        "external": ["shared-format"],  # provided by the layer
        "sourcemap": True,  # index.mjs.map ships; add "enable_source_maps": True to use it
    },
    memory=256,
    timeout=10,
    # The emulator creates this role; on AWS use your own role's ARN.
    role="arn:aws:iam::123456789012:role/dodo-lambda-local",
)

SOURCES = [str(p) for p in Path("functions/orders").rglob("*.ts") if "node_modules" not in p.parts]


def task_typecheck():
    """Type-check the function's TypeScript (esbuild only strips types)."""
    return {
        # the TypeScript pinned in the function's devDependencies (`npm install` there)
        "actions": ["functions/orders/node_modules/.bin/tsc --noEmit -p functions/orders"],
        "file_dep": [*SOURCES, "functions/orders/tsconfig.json"],
        "verbosity": 2,
    }


def task_lambda():
    """Build and deploy the example's function and layer."""
    # emulator=True: deploys go to the project's local moto server (kept running
    # between runs; `doit emulator-stop` stops it), never to AWS
    for task in lambda_tasks(orders, shared, emulator=True):
        if task["basename"] == "deploy" and task.get("name"):
            task["task_dep"] = [*task.get("task_dep", []), "typecheck"]  # no deploy unchecked
        yield task
