"""Pulls on a real Docker engine from a local registry (Debian's docker-registry on 127.0.0.1), through the API and a
worker agent: unpulled -> pulling -> pulled, and a missing image failed with the engine's message."""

import contextlib
import shutil
import socket
import threading
import time

import pytest

from ctfhost.testing import Service, free_port, http, need, wait_until
from ctfhost_plugin_docker import containers

pytestmark = [pytest.mark.docker, pytest.mark.redis]

# each connection to the registry waits this long first, so the pull lasts long enough to be seen `pulling`
DELAY_SECONDS = 0.4


def _forward(source, target):
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class SlowProxy:
    """A TCP proxy on 127.0.0.1 that waits DELAY_SECONDS before forwarding each connection (at most 200, 120 s)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(120)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        for _ in range(200):
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        time.sleep(DELAY_SECONDS)
        with contextlib.suppress(OSError), client, socket.create_connection(("127.0.0.1", self.target_port)) as up:
            back = threading.Thread(target=_forward, args=(up, client), daemon=True)
            back.start()
            _forward(client, up)
            back.join(60)

    def close(self):
        self.server.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, docker_client, test_image):
    """A registry on 127.0.0.1 (behind a slow proxy) holding the test image as <proxy>/ctfhost-test/pull:1."""
    binary = shutil.which("docker-registry")
    need(binary is not None, "docker-registry is not installed (apt-get install docker-registry)")
    directory = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {directory / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    service = Service("registry", [binary, "serve", str(config)], {"PATH": "/usr/bin:/bin"},
                      str(directory / "registry.log")).start()
    proxy = None
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/v2/")[0] == 200, 20, what="the registry")
        proxy = SlowProxy(port)
        reference = f"127.0.0.1:{proxy.port}/ctfhost-test/pull"
        docker_client.images.get(test_image).tag(reference, tag="1")
        for line in docker_client.images.push(reference, tag="1", stream=True, decode=True):
            assert "error" not in line, line
        docker_client.images.remove(f"{reference}:1")  # only the registry has it now
        yield f"{reference}:1", f"127.0.0.1:{proxy.port}/ctfhost-test/absent:1"
    finally:
        if proxy:
            proxy.close()
        service.stop()


def pull_states(live_server, challenge_id, worker_id):
    status, body = live_server.call("GET", f"/api/v1/challenges/{challenge_id}/status")
    assert status == 200, body
    return [row for row in body["workers"] if row["worker_id"] == worker_id]


def test_an_image_is_pulled_from_the_registry_and_a_missing_one_fails(live_server, worker_agent, registry,
                                                                    docker_client):
    image, absent = registry
    with contextlib.suppress(Exception):
        docker_client.images.remove(image, force=True)
    assert not containers.has_image(image)
    seen = []
    status, created = live_server.call("POST", "/api/v1/challenges", {
        "id": "web-pulled", "name": "p", "runtime": "docker", "image": image, "port": 8080})
    assert status == 201, created

    def pulled():
        (row,) = pull_states(live_server, "web-pulled", worker_agent.worker_id)
        if not seen or seen[-1] != row["state"]:
            seen.append(row["state"])
        assert row["state"] != "failed", row
        return row["state"] == "pulled"

    wait_until(pulled, 60, interval=0.02, what="the pull")
    assert seen[-2:] == ["pulling", "pulled"] and set(seen) <= {"unpulled", "pulling", "pulled"}, seen
    assert containers.has_image(image)
    _, workers = live_server.call("GET", "/api/v1/workers")
    held = next(w for w in workers if w["id"] == worker_agent.worker_id)["images"]
    assert {"runtime": "docker", "image": image, "state": "pulled"}.items() <= next(
        i for i in held if i["image"] == image).items()

    status, _ = live_server.call("POST", "/api/v1/challenges", {
        "id": "web-absent", "name": "a", "runtime": "docker", "image": absent, "port": 8080})
    assert status == 201

    def failed():
        (row,) = pull_states(live_server, "web-absent", worker_agent.worker_id)
        return row if row["state"] == "failed" else None

    wait_until(failed, 60, what="the failed pull")
    row = failed()
    assert row["error"].startswith(f"image {absent!r} is not on this host and pulling it failed: "), row
    assert "not found" in row["error"] or "unknown" in row["error"], row  # the registry's words, via the engine
    _, body = live_server.call("GET", "/api/v1/challenges/web-absent/status")
    assert body["status"] == "failed"
    for challenge_id in ("web-pulled", "web-absent"):
        live_server.call("DELETE", f"/api/v1/challenges/{challenge_id}?force=true")
