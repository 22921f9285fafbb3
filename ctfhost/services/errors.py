"""Errors that services raise and the API turns into JSON answers."""


class ServiceError(Exception):
    """A refused request: carries the HTTP status the API answers with."""

    status = 400

    def __init__(self, message, errors=None, headers=None):
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    """Bad input; `errors` maps each bad field to its messages."""

    status = 422

    def __init__(self, errors, message="One or more fields are invalid."):
        super().__init__(message, errors=errors)


class TooManyRequests(ServiceError):
    status = 429


class Unavailable(ServiceError):
    status = 503
