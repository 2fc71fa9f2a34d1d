"""Budget periods: calendar days, ISO weeks (from Monday) and months in UTC, or one period for all time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

# The start of the one period of a ``total`` budget.
ALL_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"
    total = "total"


def period_bounds(period: Period | str, now: datetime) -> tuple[datetime, datetime | None]:
    """The period holding ``now``: its start, and its end (when it resets; None for ``total``)."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    match Period(period):
        case Period.day:
            return day, day + timedelta(days=1)
        case Period.week:
            start = day - timedelta(days=day.weekday())
            return start, start + timedelta(days=7)
        case Period.month:
            start = day.replace(day=1)
            end = (
                start.replace(year=start.year + 1, month=1)
                if start.month == 12
                else start.replace(month=start.month + 1)
            )
            return start, end
        case Period.total:
            return ALL_TIME, None
