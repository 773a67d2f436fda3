"""dodo_lambda quickstart: one Node.js function with a local dependency,
deployed to an embedded local AWS emulator — no AWS account needed.

    doit deploy      # npm ci, zip, create/update the function (in the emulator)
    doit package     # only build .dodo_lambda/dist/dodo-lambda-hello.zip
    doit plan        # what deploy would change, and why
    doit list --all  # every task

To deploy to your real AWS account instead, drop ``emulator=True`` and set
``role=`` to an IAM role that Lambda may assume.
"""

from dodo_lambda import Function, lambda_tasks

# sqlite3: doit's only state backend that survives `doit -n N` and two doit runs at
# once (its default dbm, and json, corrupt .doit.db); dodo_lambda warns about the others
DOIT_CONFIG = {"backend": "sqlite3", "default_tasks": ["deploy"]}

hello = Function(
    "dodo-lambda-hello",
    source="functions/hello",
    handler="index.handler",
    runtime="nodejs24.x",
    architecture="x86_64",
    memory=256,
    timeout=10,
    environment={"GREETING_STYLE": "friendly"},
    # The emulator creates this role; on AWS use your own role's ARN.
    role="arn:aws:iam::123456789012:role/dodo-lambda-local",
)


def task_lambda():
    """Build and deploy the example's Lambda function."""
    # emulator=True: an explicit opt-in to a local moto server started for this
    # run. Deploys go there, never to AWS.
    yield from lambda_tasks(hello, emulator=True)
