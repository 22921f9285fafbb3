"""The live event stream (``GET /api/v1/events``, Server-Sent Events) as an iterator that reconnects.

After a broken connection, a 502/503/504 or a stream the server ended, it
connects again after a backoff (the server's ``retry:`` field or
Retry-After when given) and sends ``Last-Event-ID`` so the server replays
what was missed. Comments (``: keepalive``) only keep the connection
alive. Refusals (401, 403, 404, 422) are raised as typed errors.
"""

from __future__ import annotations

import threading
import time

import httpx

from ctfhost_client import errors
from ctfhost_client.models import Event

EVENTS_PATH = "/api/v1/events"
RETRYABLE = frozenset({502, 503, 504})


def parse_sse(lines):
    """Yield (id, event, data) per event of a text/event-stream given as lines (without their line ends).

    As the SSE specification says: ``id`` carries over to later events,
    ``event`` and ``data`` do not; several ``data:`` lines join with newlines;
    a line starting with ``:`` is a comment, yielded as ``(":", text, None)``
    (a heartbeat: the reader checks its time limits on it). ``retry:`` yields
    ``("retry", milliseconds, None)`` for the reconnection delay.
    """
    event_id, event_type, data = None, None, []
    for line in lines:
        if line == "":
            if data:
                yield event_id, event_type or "message", "\n".join(data)
            event_type, data = None, []
            continue
        if line.startswith(":"):
            yield ":", line[1:].strip(), None
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "retry" and value.isdigit():
            yield "retry", int(value), None


class EventStream:
    """An iterator over :class:`Event` objects; ``last_event_id`` is the id of the last one it gave.

    ``max_duration`` (seconds) ends the iteration that long after it started;
    ``idle_timeout`` is how long a silent connection is kept before a
    reconnect (the server sends a heartbeat every 15 s); ``reconnect=False``
    ends the iteration when the connection ends. Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, transport, params=None, *, last_event_id=None, reconnect=True, max_duration=None,
                 idle_timeout=45.0, backoff=0.5, max_backoff=30.0, max_failures=None):
        self.transport = transport
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.last_event_id = last_event_id
        self.reconnect = reconnect
        self.max_duration = max_duration
        self.idle_timeout = idle_timeout
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_failures = max_failures
        self.connections = 0  # connections made, the first included
        self._closed = False
        self._response = None
        self._lock = threading.Lock()
        self._generator = self._events()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._generator)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop: the iteration ends, and the connection is closed (also from another thread)."""
        self._closed = True
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # closing a stream another thread is reading may fail in several ways; it is closed
                pass
        try:
            self._generator.close()
        except ValueError:  # the generator is running in another thread: closing the response stops it
            pass

    def _remaining(self, deadline):
        return None if deadline is None else deadline - time.monotonic()

    def _events(self):
        if self.transport.check_version:
            self.transport.ensure_checked()
        deadline = None if self.max_duration is None else time.monotonic() + self.max_duration
        failures = 0
        server_delay = None
        while not self._closed:
            remaining = self._remaining(deadline)
            if remaining is not None and remaining <= 0:
                return
            read_timeout = self.idle_timeout if remaining is None else max(0.05, min(self.idle_timeout, remaining))
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            params = dict(self.params)
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            wait = None
            try:
                with self.transport.http.stream("GET", EVENTS_PATH, params=params, headers=headers,
                                                timeout=httpx.Timeout(self.transport.timeout, read=read_timeout)) as response:
                    self.connections += 1
                    if response.status_code >= 400:
                        response.read()
                        error = errors.error_from_response(response)
                        if response.status_code not in RETRYABLE:
                            raise error
                        wait = getattr(error, "retry_after", None)
                        failures += 1
                        if not self.reconnect:
                            raise error
                    else:
                        with self._lock:
                            self._response = response
                        for item in parse_sse(response.iter_lines()):
                            if item[0] == ":":
                                # a heartbeat: it keeps the connection's read timeout from firing, so the
                                # iteration's own time limit is checked here too
                                remaining = self._remaining(deadline)
                                if self._closed or (remaining is not None and remaining <= 0):
                                    return
                                continue
                            if item[0] == "retry":
                                server_delay = item[1] / 1000
                                continue
                            event = Event.from_sse(*item)
                            failures = 0
                            if event.id:
                                self.last_event_id = event.id
                            yield event
                            remaining = self._remaining(deadline)
                            if self._closed or (remaining is not None and remaining <= 0):
                                return
            except httpx.TransportError as exc:
                if self._closed:
                    return
                timed_out = isinstance(exc, httpx.ReadTimeout)
                remaining = self._remaining(deadline)
                if timed_out and remaining is not None and remaining <= 0:
                    return
                if not timed_out:
                    failures += 1
                if not self.reconnect:
                    raise errors.ConnectionFailed(f"the event stream broke: {exc.__class__.__name__}: {exc}") from exc
                if self.max_failures is not None and failures > self.max_failures:
                    raise errors.ConnectionFailed(
                        f"the event stream failed {failures} times in a row: {exc.__class__.__name__}: {exc}") from exc
            finally:
                with self._lock:
                    self._response = None
            if self._closed or not self.reconnect:
                return
            if self.max_failures is not None and failures > self.max_failures:
                raise errors.ConnectionFailed(f"the event stream failed {failures} times in a row")
            if wait is None:
                wait = server_delay if failures <= 1 and server_delay is not None else \
                    min(self.max_backoff, self.backoff * 2 ** max(0, failures - 1))
            remaining = self._remaining(deadline)
            if remaining is not None:
                if remaining <= 0:
                    return
                wait = min(wait, remaining)
            time.sleep(wait)
