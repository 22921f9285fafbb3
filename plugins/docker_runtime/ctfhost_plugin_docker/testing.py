"""pytest fixtures for the docker runtime: a real Docker engine, a busybox httpd test image, a worker agent.

Loaded by the repository's root conftest.py beside ``ctfhost.testing``; the
image is built with ``docker import`` from Debian's static busybox, so no
registry is needed.
"""

import io
import os
import socket
import subprocess
import tarfile
import time
import uuid

import docker
import pytest

from ctfhost.testing import Worker, destroy_active_instances, need, utcnow, wait_until, worker_process

BUSYBOX = "/bin/busybox"


def busybox_path():
    path = os.environ.get("CTFHOST_BUSYBOX", BUSYBOX)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} not found: install Debian's busybox-static (apt-get install busybox-static)")
    return path


def _applets(busybox):
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({name for name in out.split() if name and "/" not in name and name != "busybox"})


def image_tarball(content="hello from ctfhost\n", busybox=None):
    """A root filesystem holding static busybox, its applets and /www/index.html."""
    busybox = busybox or busybox_path()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:

        def add_dir(name, mode=0o755):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name, payload, mode=0o644):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(payload), mode
            tar.addfile(info, io.BytesIO(payload))

        for name in ("bin", "www", "etc"):
            add_dir(name)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as handle:
            add_file("bin/busybox", handle.read(), 0o755)
        for applet in _applets(busybox):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add_file("www/index.html", content.encode())
        add_file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return data.getvalue()


def build_image(tag, content="hello from ctfhost\n", port=8080, client=None):
    """Import a busybox httpd image (no registry needed); returns the tag."""
    client = client or docker.from_env()
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(
        image_tarball(content),
        repository=repository,
        tag=version or "latest",
        changes=[
            f'CMD ["/bin/httpd", "-f", "-p", "{port}", "-h", "/www"]',
            f"EXPOSE {port}",
            "ENV PATH=/bin",
        ],
    )
    return tag


TEST_IMAGE = "ctfhost-test/web:latest"


TEST_CONTENT = "hello from a ctfhost test instance\n"


@pytest.fixture(scope="session")
def docker_client():
    try:
        engine = docker.from_env(timeout=60)
        engine.ping()
    except Exception as exc:
        need(False, f"no Docker engine: {exc} (apt-get install docker.io; start dockerd)")
    return engine


@pytest.fixture(scope="session")
def test_image(docker_client):
    need(os.path.exists(os.environ.get("CTFHOST_BUSYBOX", BUSYBOX)),
         "busybox-static is not installed (apt-get install busybox-static)")
    return build_image(TEST_IMAGE, content=TEST_CONTENT, client=docker_client)


class WorkerAgent:
    """`flask ctfhost worker` as a subprocess serving the docker runtime."""

    def __init__(self, app, log_path, worker_id=None):
        self.app = app
        self.worker_id = worker_id or f"test-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.log_path = log_path
        self.service = None

    def start(self):
        self.started_at = utcnow()
        self.service = worker_process(
            dict(os.environ), self.log_path, worker_id=self.worker_id, concurrency=4, extra=["--runtime", "docker"]
        ).start()
        self.app.keep_workers.add(self.worker_id)
        self.app.live_agents.add(self)
        self.wait_registered()
        return self

    def wait_registered(self, timeout=60):
        """Until this run of the agent has registered: its row (kept across tests) carries a heartbeat from after its start."""
        def registered():
            if not self.service.alive():
                raise RuntimeError(f"the worker agent exited:\n{self.service.tail()}")
            with self.app.app_context():
                worker = Worker.get_or_none(Worker.id == self.worker_id)
                return worker is not None and worker.last_heartbeat_at >= self.started_at

        wait_until(registered, timeout, what="the worker agent to register")

    def kill(self):
        self.service.kill()

    def stop(self):
        if self.service:
            self.service.stop()
        self.app.live_agents.discard(self)

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
    destroy_active_instances(app)
    deadline = time.monotonic() + 30
    while agent.containers(docker_client) and time.monotonic() < deadline:
        time.sleep(0.2)
    for container in agent.containers(docker_client):
        container.remove(force=True)
