"""Marshmallow fields shared by the API schemas."""

import re

from marshmallow import Schema, ValidationError, fields, validate

from ctfhost import limits
from ctfhost.timeutil import parse_iso, to_iso

TEAM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
# the largest signed 64-bit integer, as scoreboards store account ids
MAX_TEAM_NUMBER = 2**63 - 1


class UTCDateTime(fields.Field):
    """A naive-UTC datetime shown as ISO 8601 with a Z suffix."""

    def _serialize(self, value, attr, obj, **kwargs):
        return to_iso(value)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("Not a valid datetime.")
        try:
            return parse_iso(value)
        except ValueError:
            raise ValidationError("Not a valid ISO 8601 datetime.") from None


class StrictInteger(fields.Integer):
    """An integer that refuses strings, floats and booleans."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class TeamId(fields.Field):
    """A team id: a non-negative integer (CTFd account ids) or a short string.

    Stored as text; the API gives it back as the type the caller used.
    """

    def __init__(self, **kwargs):
        # the type always, beside whatever else the caller documents
        kwargs["metadata"] = {
            **kwargs.get("metadata", {}),
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_TEAM_NUMBER},
                {"type": "string", "pattern": TEAM_ID_PATTERN.pattern},
            ],
        }
        super().__init__(**kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return value

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Must be a non-negative integer or a string id.")
        if isinstance(value, int):
            if not 0 <= value <= MAX_TEAM_NUMBER:
                raise ValidationError(f"Must be an integer from 0 to {MAX_TEAM_NUMBER}, or a string id.")
            return value
        if isinstance(value, str):
            if not TEAM_ID_PATTERN.match(value):
                raise ValidationError(
                    "Must be 1-64 characters: letters, digits and _ . : @ - (starting with a letter or digit)."
                )
            return value
        raise ValidationError("Must be a non-negative integer or a string id.")


class PageArgsSchema(Schema):
    """LIMIT/OFFSET pagination arguments, bounded (an offset past a bigint would crash the database)."""

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=limits.MAX_PAGE_SIZE))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=limits.MAX_OFFSET))
