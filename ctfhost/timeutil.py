"""UTC time as the API shows it: ISO 8601 with a Z suffix."""

import datetime


def to_iso(value, timespec="seconds"):
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec=timespec) + "Z"


def to_iso_ms(value):
    """ISO 8601 UTC with milliseconds (event times, which clients compare and measure)."""
    return to_iso(value, "milliseconds")


def parse_iso(text):
    """Parse ISO 8601 (with Z or an offset) into naive UTC."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value
