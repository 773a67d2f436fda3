"""dodo_lambda in an npm workspaces monorepo: two functions and a layer built from
one root package-lock.json, inside a doit project that also installs, lints and
tests; deployed to a local AWS emulator.

    doit deploy      # npm ci, lint, test; then per function and layer: install its
                     # closure, zip, publish the layer, deploy (in the emulator)
    doit package     # only build: .dodo_lambda/dist/acme-orders.zip, ...
    doit test        # node --test packages/ (after `doit install`)
    doit list --all  # every task

The workspaces (package.json "workspaces"): functions/*, layers/*, packages/*.

- ``@acme/money`` (packages/money) depends on ``round-half-even``, an external
  package (vendored here as vendor/round-half-even-1.0.0.tgz so that the example
  works offline; from a registry it would be "^1.0.0"). ``@acme/log`` has none.
- ``acme-orders`` uses both; its zip holds them as plain folders in node_modules,
  with round-half-even, and nothing that only another workspace needs.
- ``acme-common`` (a layer) ships ``@acme/money`` under /opt/nodejs/node_modules;
  ``acme-invoices`` uses ``@acme/log`` itself and ``@acme/money`` from the layer.

Edit packages/money/index.js and run ``doit deploy``: the orders function and the
layer are packaged again (the invoices function is not), without running npm.
Change an entry of the root lock and npm runs again for the items whose closure
holds it, and only for those.
"""

from pathlib import Path

from dodo_lambda import Function, Layer, lambda_tasks

# sqlite3: doit's only state backend that survives `doit -n N` and two doit runs at
# once (its default dbm, and json, corrupt .doit.db); dodo_lambda warns about the others.
# A bare `doit` builds the zips: it never deploys (`doit deploy` does), nor starts a
# watch that runs until Ctrl-C.
DOIT_CONFIG = {"backend": "sqlite3", "default_tasks": ["package"]}
ROLE = "arn:aws:iam::123456789012:role/dodo-lambda-local"  # created by the emulator

common = Layer(
    "acme-common",
    source="layers/common",
    runtimes=["nodejs24.x"],
)

orders = Function(
    "acme-orders",
    source="functions/orders",
    handler="index.handler",
    runtime="nodejs24.x",
    memory=256,
    role=ROLE,
)

invoices = Function(
    "acme-invoices",
    source="functions/invoices",
    handler="index.handler",
    runtime="nodejs24.x",
    layers=[common],  # @acme/money comes from the layer
    role=ROLE,
)

SOURCES = sorted(str(p) for p in Path(".").glob("*/*/**/*.js")
                 if "node_modules" not in p.parts and ".dodo_lambda" not in p.parts)


def task_install():
    """The developer's install at the root: every workspace, dev tools included
    (what the tests run against; dodo_lambda stages its own production installs)."""
    return {
        "actions": ["npm ci --ignore-scripts --no-audit --no-fund"],
        "file_dep": ["package-lock.json"],
        "targets": ["node_modules/.package-lock.json"],
    }


def task_lint():
    """Syntax-check every JavaScript file."""
    return {
        "actions": [f"node --check {path}" for path in SOURCES],
        "file_dep": SOURCES,
    }


def task_test():
    """The workspace packages' tests (node --test)."""
    return {
        "actions": ["node --test packages/"],
        "file_dep": SOURCES,
        "task_dep": ["install"],
        "verbosity": 2,
    }


def task_lambda():
    """Build and deploy the functions and the layer."""
    # emulator=True: deploys go to the project's local moto server (kept running
    # between runs; `doit emulator-stop` stops it), never to AWS
    for task in lambda_tasks(orders, invoices, common, emulator=True):
        if task["basename"] in ("deploy", "layer") and task.get("name"):
            task["task_dep"] = [*task.get("task_dep", []), "lint", "test"]  # nothing ships untested
        yield task
