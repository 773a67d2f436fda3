"""What a deployed function logged: its events in CloudWatch Logs (``/aws/lambda/<name>``),
the recent ones oldest first (newest last) and, when following, new ones as they come
(polling FilterLogEvents, as ``sam logs`` did before Live Tail: Live Tail streams over
a second protocol that emulators do not serve, and a poll every 2 s is enough for a
person reading along)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from . import rules
from .aws import _ACCESS_CODES, Clients, _error_code, translating
from .errors import DodoLambdaError
from .lambdas import pause

FOLLOW_EVERY = 2.0  # seconds between polls when following (times DODO_LAMBDA_WAIT_SCALE)
# Events reach CloudWatch Logs a little after their timestamp: each poll looks this far
# back before the newest event seen, and the event ids tell the ones already shown.
LOOK_BACK_MS = 10_000
_SINCE_RE = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Event:
    timestamp: int  # milliseconds since the epoch, as CloudWatch Logs keeps it
    message: str
    event_id: str

    def line(self) -> str:
        """The event as one line: its time (UTC, to the millisecond), then its message
        (a message of several lines keeps them, indented under the first)."""
        when = datetime.fromtimestamp(self.timestamp / 1000, timezone.utc)
        stamp = f"{when:%Y-%m-%d %H:%M:%S}.{self.timestamp % 1000:03d}Z"
        text = self.message.rstrip("\r\n").replace("\n", "\n" + " " * (len(stamp) + 1))
        return f"{stamp} {text}"


@dataclass(frozen=True)
class NoGroup:
    """The log group does not exist (yet): the function has not run since it was made."""

    group: str


group_name = rules.log_group


def parse_since(text: str) -> int:
    """``--since``: a whole number and a unit (s, m, h or d), e.g. 10m; in seconds."""
    found = _SINCE_RE.fullmatch(str(text).strip())
    if not found or int(found.group(1)) == 0:
        raise DodoLambdaError(f"logs: --since {text!r} is not a duration; use a number and a"
                              " unit, e.g. 30s, 10m, 2h or 1d")
    return int(found.group(1)) * _UNITS[found.group(2)]


def read(c: Clients, group: str, start_ms: int, *, who: str) -> list[Event] | None:
    """Every event of the group from ``start_ms`` on, oldest first; None when the
    group does not exist."""
    from botocore.exceptions import ClientError

    events: list[Event] = []
    with translating(who, c=c):
        try:
            for page in c.logs.get_paginator("filter_log_events").paginate(
                    logGroupName=group, startTime=start_ms):
                events += [Event(int(e["timestamp"]), str(e.get("message", "")),
                                 str(e.get("eventId", "")))
                           for e in page.get("events", [])]
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return None
            if _error_code(exc) in _ACCESS_CODES:  # not a lambda: action, as aws.py would say
                raise DodoLambdaError(
                    f"{who}: cannot read {group}: the AWS credentials are not allowed"
                    f" logs:FilterLogEvents ({_error_code(exc)}); allow it on the log group"
                ) from exc
            raise
    return sorted(events, key=lambda e: e.timestamp)  # stable: equal times keep AWS's order


def tail(c: Clients, function: str, *, since: int, follow: bool, who: str,
         now: Callable[[], float] = time.time) -> Iterator[Event | NoGroup]:
    """The function's events of the last ``since`` seconds, oldest first; with
    ``follow``, then every new one, polling until the caller stops (Ctrl-C). A missing
    log group is said once (``NoGroup``); following waits for it to appear."""
    group = group_name(function)
    start = int((now() - since) * 1000)
    seen: dict[str, int] = {}  # event id -> timestamp, of the events inside the look-back
    missing_said = False
    while True:
        events = read(c, group, start, who=who)
        if events is None and not missing_said:
            missing_said = True
            yield NoGroup(group)
        for event in events or []:
            if event.event_id not in seen:
                seen[event.event_id] = event.timestamp
                yield event
        if not follow:
            return
        if seen:
            start = max(start, max(seen.values()) - LOOK_BACK_MS)
            seen = {k: t for k, t in seen.items() if t >= start}
        pause(FOLLOW_EVERY)
