"""pytest fixtures for ctfhost and its plugins: the app, callers, a fake runtime, real Redis, and processes on 127.0.0.1.

Load with ``pytest_plugins = ["ctfhost.testing"]`` in a root conftest.py;
the Docker engine and Traefik fixtures are the docker and traefik plugins'
own (``ctfhost_plugin_docker.testing``, ``ctfhost_plugin_traefik.testing``).
A test needing a part this machine lacks is skipped with the reason; with
``CI=true`` it fails instead, so CI never reports a skipped test as passing.
"""

import http.client as http_client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from marshmallow import fields
from werkzeug.serving import make_server

from ctfhost import hookimpl, schema
from ctfhost.app import create_app
from ctfhost.db import database, open_database
from ctfhost.hooktypes import Backend, LaunchError, RuntimeOptions, RuntimeState
from ctfhost.models import ACTIVE, MODELS, Challenge, FlagSharingEvent, Instance, InstanceEndpoint, Setting, Worker, utcnow
from ctfhost.plugins import get_plugins
from ctfhost.redis_client import redis_connection
from ctfhost.services import access as _access
from ctfhost.services.access import COOKIE_KEYS_SETTING
from ctfhost.services.access import COOKIE_NAME as ACCESS_COOKIE
from ctfhost.services.instances import destroy_instance
from ctfhost.worker import lifecycle
from ctfhost.worker.agent import SWEEP_LOCK
from ctfhost.worker.jobs import JobWorker
from ctfhost.worker.queue import worker_queue

# What plugin tests may use of the core besides ctfhost.plugin_api: rows to
# build and inspect, the lifecycle a worker's jobs run, the access cookie's
# name. Plugin tests import these from here, never from the core's modules
# (tests/test_plugin_api.py checks it), so the core can move them freely.
TEST_SURFACE = [
    "ACCESS_COOKIE", "ACTIVE", "Challenge", "FlagSharingEvent", "Instance", "Worker", "destroy_active_instances",
    "get_plugins", "lifecycle", "utcnow", "instance_cookie", "cookie_keyring",
]

API_KEY = "test-api-key"
ADMIN_TOKEN = "test-admin-token"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need(ok, reason):
    """Skip (or, in CI, fail) when a required part is missing."""
    if not ok:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: integration tests fail instead of skipping)", pytrace=False)
        pytest.skip(reason)


# -- a runtime that needs no engine: each instance is an HTTP server thread ----


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        content = self.server.content
        if getattr(self.server, "echo_headers", False):
            content += "".join(f"{name}: {value}\n" for name, value in self.headers.items())
        body = content.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class FakeOptions(RuntimeOptions):
    """extra_config of a fake challenge."""

    # each endpoint of `expose` gets a server of its own (services are not run: the fake has no network)
    supports_endpoints = True

    fail = fields.String(metadata={"description": "make every launch fail with this reason", "must_be": "a string"})
    die = fields.Boolean(metadata={"description": "true for a server that stops right after starting", "must_be": "true or false"})
    echo_headers = fields.Boolean(
        metadata={"description": "true for a server that answers with the headers it received", "must_be": "true or false"}
    )
    endpoints_down = fields.List(
        fields.String(), metadata={"description": "endpoints (of `expose`) whose address nothing listens on",
                                   "must_be": "a list of endpoint names"}
    )


class FakeRuntime:
    """Runtime "fake": in-process HTTP servers, so lifecycle logic is tested without Docker.

    ``extra_config`` may say ``{"fail": "reason"}`` to make launches fail,
    ``{"die": true}`` for a server that stops right after starting, or
    ``{"echo_headers": true}`` for one that answers with the headers it received
    (:class:`FakeOptions`). Each endpoint of the challenge's ``expose`` gets a
    server of its own (``{"endpoints_down": ["name"]}``: an address nothing
    listens on). The core calls its runtime hooks only for "fake".
    """

    name = "fake"
    server_class = ThreadingHTTPServer

    def __init__(self):
        self.servers = {}
        self.endpoint_servers = {}  # instance id -> {endpoint name: server}
        self.launched, self.destroyed = [], []
        self.images = set()  # (worker id, image) pulled; an image whose name holds "missing" fails to pull
        self.pulled = []  # (worker id, image) of every pull, in order
        self.phases_during_pull = []  # per pull: {pending instance id: phase} of that worker's instances

    @hookimpl
    def prepare_image(self, runtime, image, worker):
        self.pulled.append((worker.id, image))
        self.phases_during_pull.append({row.id: row.phase for row in Instance.select(Instance.id, Instance.phase).where(
            Instance.worker_id == worker.id, Instance.status == "pending")})
        if "missing" in image:
            raise LaunchError(f"pull access denied for {image}, repository does not exist (fake registry)")
        self.images.add((worker.id, image))
        return True

    @hookimpl
    def image_state(self, runtime, image, worker):
        return "pulled" if (worker.id, image) in self.images else "unpulled"

    @hookimpl
    def register_runtimes(self):
        return [self.name]

    @hookimpl
    def runtime_options(self, runtime):
        return FakeOptions

    @hookimpl
    def launch(self, challenge, instance, worker):
        self.launched.append(instance.id)
        if challenge.options.get("fail"):
            raise LaunchError(challenge.options["fail"])
        echo = bool(challenge.options.get("echo_headers"))
        server = self._serve(f"fake instance {instance.id} of {challenge.id}\n", echo)
        self.servers[instance.id] = server
        endpoints = {}
        for spec in challenge.endpoint_specs:
            if spec["name"] in challenge.options.get("endpoints_down", ()):
                endpoints[spec["name"]] = Backend(f"127.0.0.1:{free_port()}", scheme=spec["protocol"])
                continue
            # HTTP servers for TCP endpoints too: they hold a connection open, as the readiness probe wants
            other = self._serve(f"fake instance {instance.id} of {challenge.id}, endpoint {spec['name']}\n", echo)
            self.endpoint_servers.setdefault(instance.id, {})[spec["name"]] = other
            endpoints[spec["name"]] = Backend(f"127.0.0.1:{other.server_address[1]}", scheme=spec["protocol"])
        if challenge.options.get("die"):
            self._stop(instance.id)
        return Backend(f"127.0.0.1:{server.server_address[1]}", endpoints=endpoints)

    def _serve(self, content, echo_headers):
        server = self.server_class(("127.0.0.1", 0), _Handler)
        server.content = content
        server.echo_headers = echo_headers
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _stop(self, instance_id):
        servers = [self.servers.pop(instance_id, None), *self.endpoint_servers.pop(instance_id, {}).values()]
        for server in servers:
            if server is not None:
                server.shutdown()
                server.server_close()

    @hookimpl
    def inspect(self, instance, worker):
        alive = instance.id in self.servers
        return RuntimeState(alive, None if alive else "the fake server is gone")

    @hookimpl
    def destroy(self, instance, worker):
        self.destroyed.append(instance.id)
        self._stop(instance.id)
        return True

    @hookimpl
    def reconcile(self, worker, runtime, instances):
        keep = {i.id for i in instances}
        for instance_id in list(self.servers):
            if instance_id not in keep:
                self._stop(instance_id)
        return [i for i in keep if i not in self.servers]


# -- environment and app -----------------------------------------------------


@pytest.fixture(scope="session")
def test_env(tmp_path_factory):
    """CTFHOST_* settings for the session, exported so subprocesses share them."""
    base = tmp_path_factory.mktemp("ctfhost")
    env = {
        "CTFHOST_DATABASE_URL": os.environ.get("CTFHOST_TEST_DATABASE_URL") or f"sqlite:///{base}/ctfhost.sqlite3",
        "CTFHOST_REDIS_URL": os.environ.get("CTFHOST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
        "CTFHOST_API_KEY": API_KEY,
        "CTFHOST_ADMIN_TOKEN": ADMIN_TOKEN,
        "CTFHOST_BASE_DOMAIN": "localhost",
        "CTFHOST_WORKER_HEARTBEAT_SECONDS": "2",
        "CTFHOST_EXPIRY_INTERVAL_SECONDS": "1",
        "CTFHOST_RECONCILE_INTERVAL_SECONDS": "3600",
        "CTFHOST_DOCKER_NETWORK": "ctfhost-test-instances",
        # fair-use limits off by default in tests; tests of them turn them on
        "CTFHOST_MAX_INSTANCES_PER_TEAM": "1000",
        "CTFHOST_LAUNCH_COOLDOWN_SECONDS": "0",
        "CTFHOST_LOG_LEVEL": "INFO",
    }
    saved = {key: os.environ.get(key) for key in env}
    for key in [k for k in os.environ if k.startswith("CTFHOST_") and k not in env]:
        saved[key] = os.environ.pop(key)
    os.environ.update(env)
    yield base
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _reset_database(url):
    """Drop every table (the migration history too) and build the schema as an operator does: by the migrations."""
    pool = open_database(url)
    with database.connection_context():
        for table in database.get_tables():
            database.execute_sql(f'DROP TABLE "{table}"')
        schema.upgrade()
    pool.close_all()


@pytest.fixture(scope="session")
def app(test_env):

    # before the app: create_app refuses a database whose schema is behind
    _reset_database(os.environ["CTFHOST_DATABASE_URL"])
    application = create_app({"TESTING": True})
    application.fake_runtime = FakeRuntime()
    get_plugins(application).register(application.fake_runtime, name="fake-runtime")
    application.keep_workers = set()
    # worker agent subprocesses fixtures keep running across tests (each has .stop(); a fixture restarts it)
    application.live_agents = set()
    try:
        redis_connection(application).flushdb()
    except Exception:
        pass
    return application


@pytest.fixture(autouse=True)
def clean_state(request):
    """Every test starts with empty tables (session workers are kept)."""
    if "app" not in request.fixturenames:
        yield
        return
    application = request.getfixturevalue("app")

    def wipe():
        with database.connection_context():
            for model in MODELS:
                if model is Setting:
                    # the cookie keys stay: the session's Traefik holds them in its keys file
                    Setting.delete().where(Setting.key != COOKIE_KEYS_SETTING).execute()
                elif model is not Worker:
                    model.delete().execute()
            Worker.delete().where(Worker.id.not_in(list(application.keep_workers) or [""])).execute()

    wipe()
    with application.app_context():
        database.connect(reuse_if_open=True)
        yield
        if not database.is_closed():
            database.close()


@pytest.fixture
def client(app):
    return app.test_client()


class Api:
    """The Flask test client sending one caller's credentials (the API key by default)."""

    def __init__(self, client, key=API_KEY, credentials=None):
        self.client = client
        self.credentials = credentials if credentials is not None else ({"x-api-key": key} if key else {})

    def _call(self, method, path, **kwargs):
        headers = dict(kwargs.pop("headers", {}) or {})
        given = {k.lower() for k in headers}
        if not given & {"x-api-key", "x-admin-token", "authorization"}:
            headers.update(self.credentials)
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path, **kw):
        return self._call("GET", path, **kw)

    def post(self, path, **kw):
        return self._call("POST", path, **kw)

    def patch(self, path, **kw):
        return self._call("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self._call("DELETE", path, **kw)


@pytest.fixture
def api(client):
    return Api(client)


@pytest.fixture
def proxy_client(app):
    """The test client as Traefik calls forward-auth: no cookie jar, only the Cookie header it forwards."""
    return app.test_client(use_cookies=False)


def host_of(instance):
    """The host name of an instance (as the API shows it) without scheme or port."""
    return instance["endpoint"].split("://", 1)[1].split(":")[0]


def ask_forward_auth(client, instance_or_host, uri="/", cookie=None, proto="http", **headers):
    """GET /api/v1/auth/forward as Traefik sends it for a request to that instance (or host)."""
    host = instance_or_host if isinstance(instance_or_host, str) else host_of(instance_or_host)
    headers.update({"X-Forwarded-Host": host, "X-Forwarded-Uri": uri, "X-Forwarded-Proto": proto,
                    "X-Forwarded-Method": "GET"})
    if cookie:
        headers["Cookie"] = f"{ACCESS_COOKIE}={cookie}"
    return client.get("/api/v1/auth/forward", headers=headers)


@pytest.fixture
def no_live_agents(app):
    """Stop the worker agent subprocesses other tests left running (their fixtures start them again when needed).

    Their expiry sweeps cover every instance of the shared database, so a
    test about sweeping or about which agent acts must run without them.
    """
    for agent in list(app.live_agents):
        agent.stop()
    redis_connection(app).delete(SWEEP_LOCK)  # a stopped agent's lock must not outlive it here
    yield


def register_fake_worker(api, max_instances=50, prefix="fake"):
    """Register a worker serving the fake runtime (its jobs run with run_jobs); returns its id."""
    worker = f"{prefix}-{uuid.uuid4().hex[:8]}"
    body = {"id": worker, "address": "127.0.0.1", "runtime": "fake", "max_instances": max_instances}
    response = api.post("/api/v1/workers", json=body)
    assert response.status_code == 201, response.get_json()
    return worker


@pytest.fixture
def worker_id(api):
    """A fake-runtime worker, unique per test so no job leaks between tests."""
    return register_fake_worker(api)


@pytest.fixture
def localhost_dns(monkeypatch):
    """Resolve *.localhost to 127.0.0.1 as browsers do (glibc here does not)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def admin(client):
    """The test client acting as the admin (X-Admin-Token)."""
    return Api(client, credentials={"X-Admin-Token": ADMIN_TOKEN})


@pytest.fixture
def team_api(client, admin):
    """A factory: team_api(team_id) issues a team token and returns a client using it."""

    def make(team_id, name="test token", **fields):
        """`fields`: more of the token's (scopes, expires_at)."""
        response = admin.post("/api/v1/tokens", json={"team_id": team_id, "name": name, **fields})
        assert response.status_code == 201, response.get_json()
        caller = Api(client, credentials={"Authorization": f"Bearer {response.get_json()['token']}"})
        caller.token = response.get_json()
        return caller

    return make


# -- processes and HTTP on 127.0.0.1 -------------------------------------------
# (what the tests, the benchmarks and `make demo` start, the way an operator would)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_ports_in_a_row(length):
    """The first of `length` consecutive loopback ports nothing listens on (e.g. for Traefik shards).

    Below the kernel's ephemeral range, so no outgoing connection takes one
    as its source port before the server that is to listen on it starts.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            ephemeral = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(10000, max(10001, ephemeral - length))
        if not any(port_open(port) for port in range(first, first + length)):
            return first
    raise RuntimeError(f"found no {length} free ports in a row")


class Service:
    """A background process in its own process group, logging to a file."""

    def __init__(self, name, argv, env, log_path, cwd=None):
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, env, log_path, cwd
        self.process = None

    def start(self):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.cwd,
        )
        log.close()
        return self

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Kill the whole process group at once (what a crash looks like)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)

    def stop(self, timeout=20):
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as handle:
                return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_for(self, predicate, timeout, what, interval=0.1):
        """Wait until `predicate()` holds; RuntimeError with the log's tail if this process exits or time runs out."""
        def check():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            return predicate()

        try:
            wait_until(check, timeout, interval=interval, what=what)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n--- {self.name} log ---\n{self.tail()}") from None


def machine_description():
    """One line on the machine a benchmark ran on: cores, load average at start, Python and system."""
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def venv_bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def app_server(env, port, log_path, workers=2, threads=8, worker_class="ctfhost.serving.LaneWorker", extra=()):
    # gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl),
    # shared by every gunicorn that user runs: this one goes without
    argv = [
        venv_bin("gunicorn"), "--workers", str(workers), "--threads", str(threads), "--bind", f"127.0.0.1:{port}",
        "--worker-class", worker_class, "--graceful-timeout", "5", "--timeout", "60", "--no-control-socket",
        "--config", "python:ctfhost.gunicorn_config", *extra, "ctfhost:create_app()",
    ]
    return Service("app", argv, env, log_path)


FLASK_CTFHOST = [sys.executable, "-m", "flask", "--app", "ctfhost", "ctfhost"]


def upgrade_database(env):
    """`flask ctfhost db upgrade` on the database `env` names: the app and the worker refuse a schema that is behind."""
    subprocess.run([*FLASK_CTFHOST, "db", "upgrade"], env=env, check=True)


def worker_process(env, log_path, worker_id=None, concurrency=None, extra=()):
    argv = [*FLASK_CTFHOST, "worker"]
    if worker_id:
        argv += ["--id", worker_id]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return Service("worker", argv + list(extra), env, log_path)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def http(method, url, body=None, headers=None, timeout=10):
    """(status, parsed JSON or text) without raising on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


class EventStream:
    """A client of GET /api/v1/events: reads Server-Sent Events one at a time (and the comment lines, counted)."""

    def __init__(self, url, headers, path="/api/v1/events", timeout=10):
        parts = urllib.parse.urlsplit(url)
        self.connection = http_client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.connection.request("GET", path, headers={"Accept": "text/event-stream", **headers})
        self.sock = self.connection.sock  # the connection forgets it once the answer says it will close
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.comments = []

    def next(self, timeout=10):
        """The next event as {"id", "event", "data"} (data parsed), or None when the stream ends; TimeoutError if none
        comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        fields = {}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event within {timeout} s")
            self.sock.settimeout(left)
            try:
                line = self.response.readline()
            except (socket.timeout, TimeoutError):
                raise TimeoutError(f"no event within {timeout} s") from None
            if not line:
                return None
            line = line.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    fields["data"] = json.loads(fields["data"])
                    return fields
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    def until(self, predicate, timeout=10):
        """Events read until one satisfies `predicate` (it included)."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            event = self.next(max(0.05, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"the stream ended; events so far: {[e['event'] for e in seen]}")
            seen.append(event)
            if predicate(event):
                return seen

    def close(self):
        self.response.close()
        self.connection.close()
        self.sock.close()


def fetch_via_proxy(proxy_port, hostname, path="/", timeout=5, headers=None):
    """GET through Traefik with the instance's Host header: (status, body)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy_port}{path}", headers={"Host": hostname, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def access_cookie(proxy_port, link_url, timeout=10):
    """Redeem an access link through the proxy as a browser would: ("name=value" of the cookie, landing path)."""
    parts = urllib.parse.urlsplit(link_url)
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy_port}{parts.path}?{parts.query}", headers={"Host": parts.hostname}
    )
    try:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307):
            landing = urllib.parse.urlsplit(exc.headers.get("Location", "/"))
            return exc.headers.get("Set-Cookie", "").split(";", 1)[0], landing.path or "/"
        raise RuntimeError(f"the access link answered {exc.code}: {exc.read()[:200]!r}") from None
    raise RuntimeError("the access link did not redirect")


def open_access_link(proxy_port, link_url, timeout=10):
    """What a browser does with an access link: follow it, keep the cookie, load the page: (status, body)."""
    cookie, path = access_cookie(proxy_port, link_url, timeout)
    hostname = urllib.parse.urlsplit(link_url).hostname
    return fetch_via_proxy(proxy_port, hostname, path, timeout=timeout, headers={"Cookie": cookie})


# -- real parts --------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(app):
    try:
        redis_connection(app).ping()
        ok = True
    except Exception:
        ok = False
    need(ok, f"Redis is not reachable at {app.config['CTFHOST_REDIS_URL']} (apt-get install redis-server)")
    return redis_connection(app)


class LiveServer:
    def __init__(self, app):

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def call(self, method, path, body=None, key=API_KEY, headers=None):
        headers = dict(headers or {})
        if key:
            headers["x-api-key"] = key
        return http(method, self.url + path, body, headers)

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="session")
def live_server(app, redis_server):
    server = LiveServer(app)
    yield server
    server.stop()


def instance_cookie(instance_id, team_id):
    """The access cookie's value ctfhost mints for this instance and team (in an app context)."""
    return _access.cookie_for(Instance(id=instance_id, team_id=str(team_id)))[0]


def cookie_keyring():
    """The cookie keys as the database holds them now, no process's copy (in an app context)."""
    _access._keyrings.clear()
    return _access.keyring(fresh=True)


def destroy_active_instances(app):
    """End every active instance (as DELETE does) and queue the removal of its resources."""
    with app.app_context():
        for instance in Instance.select().where(Instance.status.in_(list(ACTIVE))):
            try:
                destroy_instance(instance.id)
            except Exception:  # already ending, or its worker is gone: cleanup goes on for the others
                pass


# -- running jobs in the test process ----------------------------------------


def run_jobs(app, worker_id, max_jobs=None):
    """Run every queued job of a worker's queue in this process, then return (what an agent's RQ worker does)."""
    connection = redis_connection(app)
    worker = JobWorker([worker_queue(worker_id, connection)], app, connection=connection)
    worker.work(burst=True, max_jobs=max_jobs, logging_level="WARNING")
