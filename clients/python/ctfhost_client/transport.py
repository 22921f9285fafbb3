"""HTTP to ctfhost: credentials, retries with backoff that honours Retry-After, typed errors, the version check.

What is retried, and why it is safe:

- a request that never left (the connection could not be made): always;
- 429 and 503: always, after Retry-After (or the backoff) — ctfhost answers
  them only when it did nothing ("nothing was created");
- 502 and 504 (a proxy's answers: the server may have acted), and a
  connection that broke after the request was sent (the answer is lost):
  only idempotent requests (GET, DELETE, and calls marked so), or a call
  that can find out what happened (``recover``: a launch looks the team's
  instance up instead of creating a second one).

Attempts and total time are bounded (:class:`RetryPolicy`).
"""

from __future__ import annotations

import random
import threading
import time
import warnings
from dataclasses import dataclass, field

import httpx

from ctfhost_client import errors
from ctfhost_client.models import Meta
from ctfhost_client.version import SUPPORTED_API_MAJOR, SUPPORTED_SERVER_MAJOR, __version__

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# a request that failed with these never reached the server
UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# answers that say the server did nothing
NOTHING_DONE = frozenset({429, 503})


@dataclass
class RetryPolicy:
    """How the client retries: at most ``attempts`` tries in ``total_seconds``.

    Waits grow from ``backoff`` seconds, doubling up to ``max_backoff``, with
    up to ``jitter`` (a fraction) added; a Retry-After header replaces the
    computed wait. A wait that would end past ``total_seconds`` after the
    first try is not waited: the last error is raised instead.
    ``RetryPolicy(attempts=1)`` turns retries off.
    """

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    total_seconds: float = 120.0
    jitter: float = 0.1
    statuses: frozenset = field(default_factory=lambda: frozenset({429, 502, 503, 504}))

    def delay(self, attempt, retry_after=None):
        """Seconds to wait after failed try number `attempt` (1 for the first)."""
        if retry_after is not None:
            return retry_after
        wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return wait * (1 + random.uniform(0, self.jitter))

    def allows(self, attempt, started, wait):
        """Whether another try may follow try number `attempt` after waiting `wait` seconds."""
        return attempt < self.attempts and time.monotonic() - started + wait <= self.total_seconds


def _major(version):
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


class Transport:
    """One httpx.Client with the caller's credentials; every SDK call goes through :meth:`call`."""

    def __init__(self, url, *, token=None, api_key=None, admin_token=None, timeout=30.0, retry=None,
                 check_version=True, user_agent=None, http_transport=None, sleep=time.sleep):
        if not url:
            raise ValueError("the ctfhost URL is missing (CTFHOST_URL)")
        headers = {"User-Agent": user_agent or f"ctfhost-client/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if api_key:
            headers["x-api-key"] = api_key
        if admin_token:
            headers["X-Admin-Token"] = admin_token
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=http_transport)
        self.check_version = check_version
        self.meta = None  # the server's /api/v1/meta once read
        self._checked = False
        self._check_lock = threading.Lock()

    def close(self):
        self.http.close()

    # -- the version check ------------------------------------------------

    def ensure_checked(self):
        """On first use: read /api/v1/meta once and warn if the server's major versions are not this client's."""
        if self._checked:
            return
        with self._check_lock:
            if self._checked:
                return
            self._checked = True
            try:
                response = self.http.get("/api/v1/meta")
            except httpx.HTTPError:
                return  # the request that follows reports the server's trouble, with retries
            if response.status_code != 200:
                return  # a server older than /api/v1/meta, or one refusing the credentials (reported later)
            try:
                self.meta = Meta.from_json(response.json())
            except (ValueError, TypeError):
                return
            warn_on_version(self.meta, self.url)

    # -- requests ---------------------------------------------------------

    def call(self, method, path, *, params=None, json=None, idempotent=None, recover=None, timeout=None):
        """Send a request with retries; the httpx.Response of a success, else a typed error.

        `recover` (for requests that are not idempotent): called before a
        retry when an earlier try may have reached the server, and when such
        a retry answers 409; a non-None result is returned instead of
        sending the request again.
        """
        if self.check_version:
            self.ensure_checked()
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        params = {k: v for k, v in (params or {}).items() if v is not None}
        started = time.monotonic()
        attempt = 0
        maybe_sent = False  # an earlier try may have reached the server
        while True:
            attempt += 1
            if maybe_sent and recover is not None:
                found = recover()
                if found is not None:
                    return found
            try:
                response = self.http.request(method, path, params=params, json=json,
                                             timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, UNSENT_ERRORS)
                if sent and not idempotent and recover is None:
                    raise errors.AnswerLost(
                        f"{method} {path}: the connection broke after the request was sent ({exc.__class__.__name__}: "
                        f"{exc}); it may have been done, so it was not sent again") from exc
                maybe_sent = maybe_sent or sent
                wait = self.retry.delay(attempt)
                if not self.retry.allows(attempt, started, wait):
                    raise errors.ConnectionFailed(
                        f"{method} {self.url}{path}: {exc.__class__.__name__}: {exc or 'no answer'} "
                        f"(after {attempt} tries)") from exc
                self.sleep(wait)
                continue
            status = response.status_code
            if status < 400:
                return response
            if status == 409 and maybe_sent and recover is not None:
                found = recover()
                if found is not None:
                    return found
            if status in self.retry.statuses and (status in NOTHING_DONE or idempotent or recover is not None):
                wait = self.retry.delay(attempt, errors.retry_after_seconds(response.headers.get("Retry-After")))
                if self.retry.allows(attempt, started, wait):
                    maybe_sent = maybe_sent or status not in NOTHING_DONE
                    self.sleep(wait)
                    continue
            raise errors.error_from_response(response)

    def json(self, method, path, **kwargs):
        """:meth:`call`, and the answer's JSON (None for an empty answer); a recovered value is returned as is."""
        response = self.call(method, path, **kwargs)
        if not isinstance(response, httpx.Response):
            return response
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def warn_on_version(meta, url):
    """Warn (CtfhostVersionWarning) when a server's major API or server version differs from this client's."""
    problems = []
    api_major, server_major = _major(meta.api_version), _major(meta.server_version)
    if api_major is not None and api_major != SUPPORTED_API_MAJOR:
        problems.append(f"API version {meta.api_version} (this client speaks {SUPPORTED_API_MAJOR}.x)")
    if server_major is not None and server_major != SUPPORTED_SERVER_MAJOR:
        problems.append(f"server version {meta.server_version} (this client was written for {SUPPORTED_SERVER_MAJOR}.x)")
    if problems:
        warnings.warn(errors.CtfhostVersionWarning(
            f"ctfhost at {url} has {' and '.join(problems)}: update ctfhost-client or expect differences"),
            stacklevel=4)
