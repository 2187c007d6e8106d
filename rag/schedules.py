"""Cron schedules: validation and the slots they fire at.

A schedule is a cron expression (five fields, or six with seconds last, as
croniter reads them) in an IANA time zone, so "0 3 * * *" in Europe/Paris fires
at 03:00 Paris time through daylight-saving changes. Slots are returned in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rag.errors import InvalidRequestError

__all__ = ["RUN_KINDS", "RunKind", "due_slot", "next_slot", "validate_schedule"]

RunKind = Literal["sync", "full"]
RUN_KINDS: tuple[str, ...] = ("sync", "full")


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidRequestError(f"unknown time zone {timezone!r} (use an IANA name, e.g. Europe/Paris)") from exc


def validate_schedule(cron: str, timezone: str, kind: str) -> None:
    from croniter import croniter

    if kind not in RUN_KINDS:
        raise InvalidRequestError(f"kind must be one of {', '.join(RUN_KINDS)}")
    _zone(timezone)
    if len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
        raise InvalidRequestError(
            f"invalid cron expression {cron!r}: five fields (minute hour day month weekday), "
            "or six with seconds last"
        )


def next_slot(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot strictly after ``after``, in UTC."""
    from croniter import croniter

    start = after.astimezone(_zone(timezone))
    return croniter(cron, start).get_next(datetime).astimezone(UTC)  # type: ignore[no-any-return]


def due_slot(cron: str, timezone: str, now: datetime, *, not_before: datetime, grace_s: float) -> datetime | None:
    """The latest slot at or before ``now`` that is still worth running: after
    ``not_before`` (the schedule's creation or last edit) and no older than
    ``grace_s``. Older slots that were missed (beat down) are not caught up."""
    from croniter import croniter

    zone = _zone(timezone)
    # croniter's get_prev is strict, so start a hair after now to include now itself.
    prev = croniter(cron, (now + timedelta(microseconds=1)).astimezone(zone)).get_prev(datetime).astimezone(UTC)
    if prev <= not_before or prev < now - timedelta(seconds=grace_s):
        return None
    return prev  # type: ignore[no-any-return]
