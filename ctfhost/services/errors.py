"""Errors that services raise and the API turns into JSON answers."""


class ServiceError(Exception):
    """A refused request: carries the HTTP status the API answers with."""

    status = 400

    def __init__(self, message, errors=None, headers=None, reason=None):
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        # a stable word for programs telling apart refusals with the same status ("no_worker", "capacity")
        self.reason = reason


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


def invalid_fields_message(errors):
    """One line naming the bad fields in {location: {field: [messages]}}, e.g. "Invalid field(s): port."."""
    names = sorted({name for fields in (errors or {}).values() if isinstance(fields, dict) for name in fields})
    return f"Invalid field(s): {', '.join(names)}." if names else "One or more fields are invalid."


class Invalid(ServiceError):
    """Bad input; `errors` maps each location ("json") to each bad field and its messages."""

    status = 422

    def __init__(self, errors, message=None):
        super().__init__(message or invalid_fields_message(errors), errors=errors)


class TooManyRequests(ServiceError):
    status = 429


class Unavailable(ServiceError):
    status = 503


def require_changes(changes):
    """A PATCH must name something to change: an empty one is a mistake, not a silent success."""
    if not changes:
        raise Invalid({"json": {"_schema": ["give at least one field to change"]}}, message="Nothing to change: the body names no field.")
