"""A five-field cron schedule (minute hour day-of-month month day-of-week), UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def _field(text: str, low: int, high: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"cron {name}: step must be positive")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(body)
            end = high if step_text else start
        if not (low <= start <= end <= high):
            raise ValueError(f"cron {name}: {part!r} outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    # Standard cron: when both day fields are restricted, either one matching is enough.
    days_restricted: bool = False
    weekdays_restricted: bool = False

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"cron needs 5 fields, got {len(parts)}")
        try:
            fields = [
                _field(p.replace("7", "0") if i == 4 else p, lo, hi, _NAMES[i])
                for i, (p, (lo, hi)) in enumerate(zip(parts, _RANGES, strict=True))
            ]
        except ValueError as error:
            raise ValueError(str(error)) from None
        minutes, hours, days, months, weekdays = fields
        return cls(
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted=parts[2] != "*",
            weekdays_restricted=parts[4] != "*",
        )

    def day_matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # cron counts from Sunday = 0
        by_day, by_weekday = moment.day in self.days, weekday in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday
        return by_day and by_weekday

    def matches(self, moment: datetime) -> bool:
        return (
            moment.month in self.months
            and self.day_matches(moment)
            and moment.hour in self.hours
            and moment.minute in self.minutes
        )

    def fired_between(self, after: datetime, until: datetime) -> bool:
        """Whether a scheduled minute lies in (after, until]; scans at most one year."""
        moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = min(until, after + timedelta(days=366))
        while moment <= limit:
            if self.matches(moment):
                return True
            # Skip whole days and hours that cannot match, so a year is a few thousand steps.
            if moment.month not in self.months or not self.day_matches(moment):
                moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0) + timedelta(hours=1)
            else:
                moment += timedelta(minutes=1)
        return False
