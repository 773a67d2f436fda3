"""dodo_lambda quickstart: one Node.js function with a local dependency,
deployed to a local AWS emulator — no AWS account needed.

    doit deploy      # npm ci, zip, create/update the function (in the emulator)
    doit package     # only build .dodo_lambda/dist/dodo-lambda-hello.zip
    doit plan        # what deploy would change, and why
    doit invoke:dodo-lambda-hello --event event.json   # run the zip locally in node
    doit watch       # rebuild and redeploy on every save (Ctrl-C to stop)
    doit emulator-stop   # stop the local emulator (it otherwise stops when idle)
    doit list --all  # every task

To deploy to your real AWS account instead, drop ``emulator=True``: the first deploy
creates the function's execution role (dodo-lambda-dodo-lambda-hello), or set ``role=``
to the ARN of an IAM role of yours that Lambda may assume.
"""

from dodo_lambda import Function, lambda_tasks

# sqlite3: doit's only state backend that survives `doit -n N` and two doit runs at
# once (its default dbm, and json, corrupt .doit.db); dodo_lambda warns about the others.
# A bare `doit` builds the zip: it never deploys, nor starts a watch that runs until Ctrl-C.
DOIT_CONFIG = {"backend": "sqlite3", "default_tasks": ["package"]}

hello = Function(
    "dodo-lambda-hello",
    source="functions/hello",
    handler="index.handler",
    runtime="nodejs24.x",
    architecture="x86_64",
    memory=256,
    timeout=10,
    environment={"GREETING_STYLE": "friendly"},
    # no role=: the first deploy creates the function's execution role
)


def task_lambda():
    """Build and deploy the example's Lambda function."""
    # emulator=True: an explicit opt-in to a local moto server that keeps running
    # in the background between runs (and remembers what was deployed to it).
    # Deploys go there, never to AWS.
    yield from lambda_tasks(hello, emulator=True)
