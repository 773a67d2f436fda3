"""The one exception family: a user's mistake, reported as a single line."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class NextStep(NamedTuple):
    """What to run to fix a problem, as data: the step (``npm``, ``package``, ...)
    and the item's name. The doit adapter renders it as ``doit npm:NAME``."""

    step: str
    name: str


class DodoLambdaError(Exception):
    """Something the user can fix: one line that names the function, the file and
    the fix, never shown with a traceback (unless DODO_LAMBDA_DEBUG=1). The cause,
    when there is one, stays in ``__cause__``."""

    def __init__(self, message: str, *, next_step: NextStep | None = None) -> None:
        self.message = " ".join(message.split("\n"))
        self.next_step = next_step
        super().__init__(self.render())

    def render(self, command: Callable[[NextStep], str] | None = None) -> str:
        """The whole line; ``command`` says how to run the next step (the adapter's
        ``doit npm:NAME``), by default it is named in words."""
        if self.next_step is None:
            return self.message
        how = command(self.next_step) if command else \
            f"the {self.next_step.step} step of '{self.next_step.name}'"
        return f"{self.message}; run {how}"


class Refused(DodoLambdaError):
    """Deploy would refuse this item before sending anything (a missing role for a
    function to create, a zip too big without a bucket, one of Lambda's rules). The
    planner raises it where it decides; ``plan`` reports it as "deploy would be
    refused: ..." and exits nonzero."""
