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
"""

import selectors
import socket
import time
from concurrent import futures
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

from ctfhost.config import from_environment

LANE_METHODS = (b"POST", b"PUT", b"PATCH", b"DELETE")
LANE_PATH = b"/api/v1/instances"
# enough for the longest request line the lane cares about
PEEK_BYTES = 256


def in_launch_lane(head):
    """Whether a request whose first bytes are `head` changes instances (a launch, renew, restart or stop)."""
    method, _, rest = head.partition(b" ")
    if method not in LANE_METHODS:
        return False
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    return path == LANE_PATH or path.startswith(LANE_PATH + b"/")


class LaneWorker(ThreadWorker):
    """gunicorn's threaded worker with a separate, first-come-first-served lane for instance changes."""

    def init_process(self):
        threads = from_environment()["CTFHOST_LAUNCH_LANE_THREADS"]
        self.lane_pool = (
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="launch-lane") if threads > 0 else None
        )
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
        if self.lane_pool is None:
            return super().enqueue_req(conn)
        head = self.request_head(conn)
        if head is None and self.wait_for_request_line(conn):
            return
        if head and in_launch_lane(head):
            main, self.tpool = self.tpool, self.lane_pool  # the base class submits to self.tpool
            try:
                return super().enqueue_req(conn)
            finally:
                self.tpool = main
        return super().enqueue_req(conn)

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

    def handle_quit(self, sig, frame):
        if self.lane_pool is not None:
            self.lane_pool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    def run(self):
        try:
            super().run()
        finally:
            if self.lane_pool is not None:
                self.lane_pool.shutdown(wait=False)
