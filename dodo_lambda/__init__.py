"""dodo_lambda: incremental, deterministic AWS Lambda (Node.js) builds and
deploys as doit tasks."""

from .config import Function, Layer
from .errors import DodoLambdaError
from .stages import Stage
from .tasks import lambda_tasks

__all__ = ["Function", "Layer", "Stage", "DodoLambdaError", "lambda_tasks"]
