"""The one exception family: a user's mistake, reported as a single line."""

from __future__ import annotations


class DodoLambdaError(Exception):
    """Something the user can fix. ``str(err)`` is the whole message: one line
    that names the function, the file and the fix. Never shown with a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))
