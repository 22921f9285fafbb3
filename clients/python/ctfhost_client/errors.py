"""Typed errors of the SDK: one class per kind of refusal, built from ctfhost's JSON error answers."""

import email.utils
import time


class CtfhostVersionWarning(UserWarning):
    """The server's major version differs from the one this client was written for."""


class CtfhostError(Exception):
    """Base of every error the SDK raises.

    ``status`` is the HTTP status (None when no answer came), ``message`` the
    server's (or the SDK's) sentence, ``errors`` the server's ``errors`` object
    when it sent one, ``reason`` its stable word (``no_worker``...) if any.
    """

    def __init__(self, message, *, status=None, errors=None, reason=None, response=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors
        self.reason = reason
        self.response = response

    def __str__(self):
        return f"{self.status}: {self.message}" if self.status else self.message


class ConnectionFailed(CtfhostError):
    """No answer from the server (it could not be reached, or the connection broke), after the retries allowed."""


class AnswerLost(ConnectionFailed):
    """A request that changes state may have reached the server, but its answer was lost; it was not sent again."""


class Unauthorized(CtfhostError):
    """401: missing, wrong, revoked or expired credentials."""


class Forbidden(CtfhostError):
    """403: the credentials may not do this; ``scope`` names the token scope that was missing, if that was why."""

    @property
    def scope(self):
        return self.errors.get("scope") if isinstance(self.errors, dict) else None


class NotFound(CtfhostError):
    """404: no such challenge, instance, worker or token (or another team's)."""


class Conflict(CtfhostError):
    """409: the state forbids it (an active instance exists, the instance ended, the challenge is closed...)."""


class Invalid(CtfhostError):
    """422: bad input; ``field_errors`` maps each bad field to its messages."""

    @property
    def field_errors(self):
        found = {}
        for location in (self.errors or {}).values() if isinstance(self.errors, dict) else ():
            if isinstance(location, dict):
                found.update(location)
        return found


class RateLimited(CtfhostError):
    """429: a fair-use limit; ``retry_after`` is the seconds to wait the server asked for (None if it did not say)."""

    def __init__(self, message, *, retry_after=None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(CtfhostError):
    """5xx: the server (or a proxy before it) failed."""


class Unavailable(ServerError):
    """503 (or 502/504 from a proxy): no worker has room, Redis or the database is down; ``retry_after`` in seconds."""

    def __init__(self, message, *, retry_after=None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InstanceFailed(CtfhostError):
    """The instance ended in ``error`` (or ended otherwise) while the client waited for it to run."""

    def __init__(self, instance, error=None):
        self.instance = instance
        self.error = error if error is not None else (instance.error or instance.status)
        super().__init__(f"instance {instance.id} of {instance.challenge_id} is {instance.status}: {self.error}")


class InstanceTimeout(CtfhostError, TimeoutError):
    """The instance was still not running when the timeout passed; ``instance`` is its last state seen."""

    def __init__(self, instance, timeout):
        self.instance = instance
        self.timeout = timeout
        super().__init__(f"instance {instance.id} of {instance.challenge_id} is still {instance.status} "
                         f"after {timeout:g} s")


BY_STATUS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: Invalid, 429: RateLimited,
             502: Unavailable, 503: Unavailable, 504: Unavailable}


def retry_after_seconds(value):
    """Seconds from a Retry-After header (a number of seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response):
    """The typed error for an HTTP error answer (ctfhost's ``{"code", "status", "message", "errors"?}`` or anything)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    message = body.get("message") or (response.text.strip()[:200] if response.text else "") or response.reason_phrase
    kwargs = {"status": status, "errors": body.get("errors"), "reason": body.get("reason"), "response": response}
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else CtfhostError)
    if cls in (RateLimited, Unavailable):
        kwargs["retry_after"] = retry_after_seconds(response.headers.get("Retry-After"))
    return cls(message, **kwargs)
