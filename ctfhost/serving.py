"""Serving the API with gunicorn: launches queue in a lane of their own.

    gunicorn --worker-class ctfhost.serving.LaneWorker --workers 2 --threads 8 'ctfhost:create_app()'

At the start of a CTF hundreds of teams press Launch in the same second.
With gunicorn's threaded worker every request waits in one queue, so the
health checks of a load balancer, forward-auth for the instances already
running, Traefik's config polls and the scoreboard's reads would wait behind
every launch in the rush. `LaneWorker` is that worker with one change: a
request that changes instances (POST, PUT, PATCH or DELETE under
/api/v1/instances) is handled by a few threads of its own
(CTFHOST_LAUNCH_LANE_THREADS per process, default 2; launches write the
database one at a time anyway), in the order they arrived; everything else
keeps the `--threads` pool. The request line is read with MSG_PEEK, so
nothing is consumed before gunicorn parses the request as usual.

Requests that wait — an event stream (GET /api/v1/events) or a `?wait=`
on /api/v1/instances — hold their thread for minutes, so they get a lane of
their own too: CTFHOST_EVENTS_MAX_STREAMS threads, made as needed. A
thousand open streams never take a thread of the `--threads` pool, and the
API answers beside them. (gunicorn's `--worker-connections`, default 1000,
bounds the connections of a process: raise it with the streams.)
"""

import selectors
import socket
import time
from concurrent import futures
from functools import partial
from urllib.parse import unquote_to_bytes

from gunicorn.workers.gthread import ThreadWorker

from ctfhost.config import from_environment

LANE_METHODS = (b"POST", b"PUT", b"PATCH", b"DELETE")
LANE_PATH = b"/api/v1/instances"
STREAM_PATH = b"/api/v1/events"
# the longest request line gunicorn accepts (limit_request_line, 4094, plus CRLF): the whole target is seen
PEEK_BYTES = 4096


def in_launch_lane(head):
    """Whether a request whose first bytes are `head` changes instances (a launch, renew, restart or stop)."""
    if head.partition(b" ")[0] not in LANE_METHODS:
        return False
    path = _target(head)[0]
    return path == LANE_PATH or path.startswith(LANE_PATH + b"/")


def _target(head):
    """(path, query) of a request line's target as the app will read them: percent-decoded, origin form."""
    _method, _, rest = head.partition(b" ")
    target = rest.split(b" ", 1)[0].split(b"\r", 1)[0]
    if b"://" in target.split(b"?", 1)[0]:  # absolute form: http://host/path?query
        target = b"/" + target.split(b"://", 1)[1].partition(b"/")[2]
    path, _, query = target.partition(b"?")
    return unquote_to_bytes(path), [unquote_to_bytes(part.replace(b"+", b" ")) for part in query.split(b"&")]


def in_stream_lane(head):
    """Whether a request whose first bytes are `head` may wait long: the event stream, or a `?wait=` on instances."""
    path, query = _target(head)
    path = path.rstrip(b"/") or b"/"
    if path == STREAM_PATH:
        return True
    if not (path == LANE_PATH or path.startswith(LANE_PATH + b"/")):
        return False
    return any(part.startswith(b"wait=") and part.strip() not in (b"wait=", b"wait=0") for part in query)


class LaneWorker(ThreadWorker):
    """gunicorn's threaded worker with a separate, first-come-first-served lane for instance changes."""

    def init_process(self):
        threads = from_environment()["CTFHOST_LAUNCH_LANE_THREADS"]
        self.lane_pool = (
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="launch-lane") if threads > 0 else None
        )
        streams = from_environment()["CTFHOST_EVENTS_MAX_STREAMS"]
        # one more than the app admits: the one beyond is answered 503 instead of waiting for a thread
        self.stream_pool = futures.ThreadPoolExecutor(max_workers=streams + 1, thread_name_prefix="stream-lane")
        # gunicorn stops accepting at worker_connections (default 1000): streams must not use up every connection
        self.worker_connections = max(self.worker_connections, streams + 2 * self.cfg.threads + max(threads, 0) + 64)
        self.max_keepalived = self.worker_connections - self.cfg.threads
        super().init_process()

    def request_head(self, conn):
        """The first bytes of the connection's next request, without consuming them; None if none arrived yet."""
        parser = getattr(conn, "parser", None)
        unreader = getattr(parser, "unreader", None)
        buffered = getattr(unreader, "buf", None)
        if buffered is not None and buffered.getvalue():
            return buffered.getvalue()[:PEEK_BYTES]  # read ahead by the previous request on this connection
        if self.cfg.is_ssl:
            return b""  # a TLS socket cannot be peeked at: the main pool
        try:
            return conn.sock.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT) or b""
        except BlockingIOError:
            return None
        except OSError:
            return b""  # gunicorn's own handling meets the error

    def enqueue_req(self, conn):
        head = self.request_head(conn)
        if head is None and self.wait_for_request_line(conn):
            return
        if head and in_stream_lane(head):
            return self._enqueue_in(self.stream_pool, conn)
        if head and self.lane_pool is not None and in_launch_lane(head):
            return self._enqueue_in(self.lane_pool, conn)
        return super().enqueue_req(conn)

    def _enqueue_in(self, pool, conn):
        main, self.tpool = self.tpool, pool  # the base class submits to self.tpool
        try:
            return super().enqueue_req(conn)
        finally:
            self.tpool = main

    def wait_for_request_line(self, conn):
        """Park a connection that sent nothing yet until it does; False when this gunicorn cannot.

        gunicorn 24 and later hand a new connection to a thread as soon as it
        is accepted, before its client's first bytes may have arrived; the
        worker's own pending-connection queue (with its keep-alive timeout)
        gives it back here once it is readable. Earlier versions only hand
        over readable connections.
        """
        pending = getattr(self, "pending_conns", None)
        readable = getattr(self, "on_pending_socket_readable", None)
        if pending is None or readable is None or getattr(conn, "ctfhost_parked", False):
            return False
        conn.ctfhost_parked = True  # once: a client that then sends nothing is gunicorn's to time out
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.cfg.keepalive
        pending.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(readable, conn))
        return True

    def _shutdown_lanes(self):
        for pool in (self.lane_pool, self.stream_pool):
            if pool is not None:
                pool.shutdown(wait=False)

    def handle_quit(self, sig, frame):
        self._shutdown_lanes()
        super().handle_quit(sig, frame)

    def run(self):
        try:
            super().run()
        finally:
            self._shutdown_lanes()
