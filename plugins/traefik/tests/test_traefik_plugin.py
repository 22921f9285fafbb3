"""The Traefik plugin: rendering, the config endpoint, and the real traefik binary loading it."""

import json
import time

import pytest

from ctfhost import devstack
from ctfhost.hooktypes import LaunchError
from ctfhost.models import Instance
from ctfhost_plugin_traefik import config_cache, dynamic, readiness
from ctfhost_plugin_traefik.settings import RenderOptions, options

ROWS = [
    ("b-instance", "bbbbbbbbbbbb.web.localhost", "http://127.0.0.1:32001", "http"),
    ("a-instance", "aaaaaaaaaaaa.web.localhost", "http://127.0.0.1:32000", "http"),
]


def plain_options(**overrides):
    return RenderOptions(**overrides)


def test_render_one_router_and_service_per_instance():
    config = dynamic.render(ROWS, plain_options())
    router = config["http"]["routers"]["ctfhost-a-instance"]
    assert router == {
        "rule": "Host(`aaaaaaaaaaaa.web.localhost`)", "service": "ctfhost-a-instance", "entryPoints": ["web"],
    }
    service = config["http"]["services"]["ctfhost-a-instance"]
    assert service == {"loadBalancer": {"servers": [{"url": "http://127.0.0.1:32000"}], "passHostHeader": True}}
    assert "middlewares" not in config["http"]


def test_render_is_byte_stable_whatever_the_row_order():
    first = dynamic.dumps(dynamic.render(ROWS, plain_options()))
    second = dynamic.dumps(dynamic.render(list(reversed(ROWS)), plain_options()))
    assert first == second
    assert first.index(b"ctfhost-a-instance") < first.index(b"ctfhost-b-instance")
    assert json.loads(first) == dynamic.render(ROWS, plain_options())


def test_empty_fleet_leaves_out_empty_sections():
    # Traefik rejects empty maps ("routers cannot be a standalone element")
    assert dynamic.dumps(dynamic.render([], plain_options())) == b"{}"
    cert = {"certFile": "/etc/ctf/wild.pem", "keyFile": "/etc/ctf/wild.key"}
    assert dynamic.render([], plain_options(), cert) == {"tls": {"stores": {"default": {"defaultCertificate": cert}}}}


def test_a_default_certificate_is_generated_once_and_shared(app):
    from ctfhost_plugin_traefik import default_certificate as module

    module._cached.clear()
    first = module.default_certificate()
    assert first["certFile"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in first["keyFile"]
    module._cached.clear()  # another process reads the stored one
    assert module.default_certificate() == first
    saved = dict(app.config)
    try:
        app.config["CTFHOST_TRAEFIK_DEFAULT_CERT_FILE"] = "/etc/ctf/wild.pem"
        app.config["CTFHOST_TRAEFIK_DEFAULT_KEY_FILE"] = "/etc/ctf/wild.key"
        assert module.default_certificate() == {"certFile": "/etc/ctf/wild.pem", "keyFile": "/etc/ctf/wild.key"}
        app.config["CTFHOST_TRAEFIK_DEFAULT_CERTIFICATE"] = "none"
        assert module.default_certificate() is None
    finally:
        app.config.clear()
        app.config.update(saved)


def test_tls_entrypoints_and_forward_auth():
    config = dynamic.render(
        ROWS,
        plain_options(entrypoints=("websecure",), tls=True, cert_resolver="le", tls_options="modern",
                      auth_url="http://127.0.0.1:5000/api/v1/auth/forward"),
    )
    router = config["http"]["routers"]["ctfhost-a-instance"]
    assert router["entryPoints"] == ["websecure"]
    assert router["tls"] == {"certResolver": "le", "options": "modern"}
    assert router["middlewares"] == [dynamic.AUTH_MIDDLEWARE]
    middleware = config["http"]["middlewares"][dynamic.AUTH_MIDDLEWARE]["forwardAuth"]
    assert middleware["address"] == "http://127.0.0.1:5000/api/v1/auth/forward"
    assert middleware["trustForwardHeader"] is False  # always written explicitly
    assert middleware["authResponseHeaders"] == ["X-Ctfhost-Team", "X-Ctfhost-Instance"]


def test_tcp_instances_get_sni_routers_with_tls():
    rows = ROWS + [("c-instance", "cccccccccccc.pwn.localhost", "tcp://127.0.0.1:32002", "tcp")]
    config = dynamic.render(rows, plain_options(auth_url="http://127.0.0.1:5000/api/v1/auth/forward", cert_resolver="le"))
    router = config["tcp"]["routers"]["ctfhost-c-instance"]
    assert router == {
        "rule": "HostSNI(`cccccccccccc.pwn.localhost`)", "service": "ctfhost-c-instance",
        "entryPoints": ["websecure"], "tls": {"certResolver": "le"},
    }
    assert config["tcp"]["services"]["ctfhost-c-instance"] == {"loadBalancer": {"servers": [{"address": "127.0.0.1:32002"}]}}
    assert "ctfhost-c-instance" not in config["http"]["routers"]
    assert "middlewares" not in router  # forwardAuth does not exist for TCP


def test_settings_follow_base_domain_and_environment(app):
    saved = dict(app.config)
    try:
        app.config["CTFHOST_BASE_DOMAIN"] = "ctf.example.org"
        assert options()[:2] == (("websecure",), True)
        app.config["CTFHOST_TRAEFIK_TLS"] = "false"
        app.config["CTFHOST_TRAEFIK_ENTRYPOINTS"] = "web, internal"
        app.config["CTFHOST_TRAEFIK_TCP_ENTRYPOINTS"] = "tls"
        assert options()[:2] == (("web", "internal"), False)
        assert options().tcp_entrypoints == ("tls",)
    finally:
        app.config.clear()
        app.config.update(saved)


def test_config_endpoint_needs_the_api_key(client):
    response = client.get("/api/v1/traefik/config")
    assert response.status_code == 401
    assert response.json["code"] == 401


def routers_in(api):
    response = api.get("/api/v1/traefik/config")
    assert response.status_code == 200
    return response.json.get("http", {}).get("routers", {})


def test_config_endpoint_follows_route_changes(api, app, redis_server):
    assert routers_in(api) == {}
    assert "defaultCertificate" in api.get("/api/v1/traefik/config").json["tls"]["stores"]["default"]
    Instance.create(
        id="11111111-1111-4111-8111-111111111111", team_id="t", challenge_id="web", runtime="fake", status="running",
        hostname="cccccccccccc.web.localhost", endpoint="http://cccccccccccc.web.localhost",
        backend="http://127.0.0.1:39999", expires_at=Instance.created_at.default(),
    )
    config_cache.invalidate()
    body = api.get("/api/v1/traefik/config").data
    assert b"Host(`cccccccccccc.web.localhost`)" in body
    assert api.get("/api/v1/traefik/config").data == body  # unchanged fleet, same bytes
    Instance.update(status="destroyed").execute()
    config_cache.invalidate()
    assert routers_in(api) == {}


def test_wait_routed_gives_a_clear_error_when_traefik_never_loads_the_route(app, traefik_proxy):
    instance = Instance(id="22222222-2222-4222-8222-222222222222", hostname="dddddddddddd.web.localhost")
    started = time.monotonic()
    with pytest.raises(LaunchError, match="did not load the route for dddddddddddd.web.localhost"):
        readiness.wait_until_loaded(instance, 0.3)
    assert time.monotonic() - started < 5


def test_real_traefik_routes_a_fake_instance(api, app, traefik_proxy, redis_server):
    """The whole path without Docker: fake runtime, real Traefik loading our config."""
    from ctfhost.testing import run_jobs

    assert api.post("/api/v1/workers", json={"id": "traefik-w", "address": "127.0.0.1", "runtime": "fake"}).status_code == 201
    challenge = {"id": "web-fake", "name": "f", "runtime": "fake", "image": "none", "port": 80}
    assert api.post("/api/v1/challenges", json=challenge).status_code == 201
    instance = api.post("/api/v1/instances", json={"team_id": 3, "challenge_id": "web-fake"}).json
    run_jobs(app, "traefik-w")
    instance = api.get(f"/api/v1/instances/{instance['id']}").json
    assert instance["status"] == "running", instance["error"]
    host = instance["endpoint"].split("://")[1]
    assert f"ctfhost-{instance['id']}@http" in traefik_proxy.routers()
    status, body = traefik_proxy.fetch(host)
    assert (status, body) == (200, f"fake instance {instance['id']} of web-fake\n")
    assert api.delete(f"/api/v1/instances/{instance['id']}").status_code == 204
    devstack.wait_until(lambda: traefik_proxy.fetch(host)[0] == 404, 10, what="Traefik to drop the route")


def test_cli_prints_a_ready_traefik_setup(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["ctfhost", "traefik", "command", "--config-url", "http://127.0.0.1:5000/api/v1/traefik/config"])
    assert result.exit_code == 0, result.output
    assert "--providers.http.endpoint=http://127.0.0.1:5000/api/v1/traefik/config" in result.output
    assert "--providers.http.headers.x-api-key=" in result.output
    assert "--providers.providersThrottleDuration=0s" in result.output
    result = runner.invoke(args=["ctfhost", "traefik", "static-config"])
    assert result.exit_code == 0, result.output
    assert "pollInterval: 50ms" in result.output
