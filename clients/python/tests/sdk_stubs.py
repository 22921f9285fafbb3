"""Small HTTP servers on 127.0.0.1 for the retry tests: scripted answers, and a proxy to the live server that can lose answers."""

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

META = {"server_version": "0.1.0", "api_version": "1.1", "runtimes": ["fake"], "features": ["wait"],
        "caller": {"kind": "team", "team_id": "7", "token_id": "t1", "scopes": ["instances:read"]}}

DROP = "drop"  # a scripted step: read the request, then close the connection without answering


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class StubServer:
    """Answers each (method, path) with the next scripted step, then with the last one again.

    A step is ``(status, body, headers)`` or DROP. Unscripted paths answer
    404, but /api/v1/meta answers META. ``requests`` records (method, path,
    time) of every request but the meta's.
    """

    def __init__(self, meta=META):
        self.script, self.requests, self.meta = {}, [], meta
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                if path == "/api/v1/meta" and stub.meta is not None:
                    return self._answer(200, stub.meta, {})
                stub.requests.append((self.command, path, time.monotonic()))
                steps = stub.script.get((self.command, path))
                if not steps:
                    return self._answer(404, {"code": 404, "status": "Not Found", "message": "not scripted"}, {})
                step = steps.pop(0) if len(steps) > 1 else steps[0]
                if step == DROP:
                    self.close_connection = True
                    return None
                return self._answer(*step)

            def _answer(self, status, body, headers):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, method, path, *steps):
        self.script[(method, path)] = list(steps)
        return self

    def count(self, method, path):
        return sum(1 for m, p, _ in self.requests if (m, p) == (method, path))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class LosingProxy:
    """Forwards every request to `upstream`; the first `drops[(method, path)]` ones are forwarded, then their answer lost.

    ``fake[(method, path)] = [(status, body), ...]``: answer the first such
    requests itself without forwarding (e.g. a lookup that says 404).
    """

    def __init__(self, upstream):
        host, port = upstream.split("://", 1)[1].split(":")
        self.drops, self.fake, self.requests = {}, {}, []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                key = (self.command, path)
                proxy.requests.append(key)
                if proxy.fake.get(key):
                    status, fake_body = proxy.fake[key].pop(0)
                    return self._answer(status, {"Content-Type": "application/json"}, json.dumps(fake_body).encode())
                upstream_conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream_conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream_conn.getresponse()
                data = answer.read()
                upstream_conn.close()
                if proxy.drops.get(key, 0) > 0:
                    proxy.drops[key] -= 1
                    self.close_connection = True  # the server acted; its answer never reaches the client
                    return None
                passed = {k: v for k, v in answer.getheaders()
                          if k.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive")}
                return self._answer(answer.status, passed, data)

            def _answer(self, status, headers, data):
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
