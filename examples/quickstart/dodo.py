"""dodo_lambda quickstart: one Node.js function with a local dependency.

    doit package     # install production deps, build .dodo_lambda/dist/hello.zip
    doit list        # every task, with what it does
"""

from dodo_lambda import Function, lambda_tasks

DOIT_CONFIG = {"backend": "sqlite3", "default_tasks": ["package"]}

hello = Function(
    "dodo-lambda-hello",
    source="functions/hello",
    handler="index.handler",
    runtime="nodejs20.x",
    architecture="x86_64",
)


def task_lambda():
    """Build (and deploy) the example's Lambda function."""
    yield from lambda_tasks(hello)
