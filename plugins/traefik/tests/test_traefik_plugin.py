"""The Traefik plugin: rendering, the config endpoint, and the real traefik binary loading it."""

import datetime
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import yaml

from ctfhost.testing import Service, access_cookie, free_port, http, wait_until
from ctfhost.plugin_api import LaunchError
from ctfhost.testing import Instance
from ctfhost.testing import API_KEY
from ctfhost_plugin_traefik import config_cache, dynamic, readiness
from ctfhost_plugin_traefik.settings import RenderOptions, options

# routed_instances() rows: id, hostname, backend, protocol, team, expiry (naive UTC)
EXPIRES = datetime.datetime(2030, 1, 1, 12, 0, 0)
ROWS = [
    ("b-instance", "bbbbbbbbbbbb.web.localhost", "http://127.0.0.1:32001", "http", "2", EXPIRES),
    ("a-instance", "aaaaaaaaaaaa.web.localhost", "http://127.0.0.1:32000", "http", "1", EXPIRES),
]


def plain_options(**overrides):
    return RenderOptions(**overrides)


def test_render_one_router_and_service_per_instance():
    config = dynamic.render(ROWS, plain_options())
    router = config["http"]["routers"]["ctfhost-a-instance"]
    assert router == {
        "rule": "Host(`aaaaaaaaaaaa.web.localhost`)", "service": "ctfhost-a-instance", "entryPoints": ["web"],
        # one priority for every instance router: Traefik's sort after each added route is then one pass
        "priority": dynamic.INSTANCE_PRIORITY,
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
    assert router["tls"] == {"certResolver": "le", "options": "modern", "domains": [{"main": "*.web.localhost"}]}
    assert router["middlewares"] == [dynamic.AUTH_MIDDLEWARE]
    middleware = config["http"]["middlewares"][dynamic.AUTH_MIDDLEWARE]["forwardAuth"]
    assert middleware["address"] == "http://127.0.0.1:5000/api/v1/auth/forward"
    assert middleware["trustForwardHeader"] is False  # always written explicitly
    assert middleware["authResponseHeaders"] == ["X-Ctfhost-Team", "X-Ctfhost-Instance"]
    # without it Traefik logs a warning per router on every reload
    assert middleware["maxResponseBodySize"] == 262144


def test_a_resolver_is_asked_for_one_wildcard_per_challenge_never_an_instance_name():
    # an instance's own name in a certificate would be published in Certificate Transparency logs
    rows = ROWS + [("c-instance", "cccccccccccc.pwn.ctf.example.org", "tcp://127.0.0.1:32002", "tcp", "3", EXPIRES)]
    config = dynamic.render(rows, plain_options(tls=True, cert_resolver="le-dns"))
    tls = [router["tls"] for kind in ("http", "tcp") for router in config[kind]["routers"].values()]
    assert [t["domains"] for t in tls] == [
        [{"main": "*.web.localhost"}], [{"main": "*.web.localhost"}], [{"main": "*.pwn.ctf.example.org"}],
    ]
    body = dynamic.dumps(config).decode()
    for hostname in [row[1] for row in rows]:
        assert body.count(hostname) == 1  # only in the rule, never asked of the resolver
    # without a resolver Traefik asks for nothing: no domains
    config = dynamic.render(rows, plain_options(tls=True))
    assert config["tcp"]["routers"]["ctfhost-c-instance"]["tls"] == {}


def test_hosts_no_instance_claims_fall_to_forward_auth_at_the_lowest_priority():
    auth = "http://127.0.0.1:5000/api/v1/auth/forward"
    config = dynamic.render([], plain_options(auth_url=auth, base_domain="ctf.example.org"))
    router = config["http"]["routers"][dynamic.ENDED_ROUTER]
    assert router == {
        "rule": r"HostRegexp(`^[a-z0-9]+\.[a-z0-9-]+\.ctf\.example\.org$`)", "entryPoints": ["web"], "priority": 1,
        "middlewares": [dynamic.AUTH_MIDDLEWARE], "service": dynamic.ENDED_ROUTER,
    }
    assert config["http"]["middlewares"][dynamic.AUTH_MIDDLEWARE]["forwardAuth"]["address"] == auth
    # with TLS it serves the stored certificates but never asks a resolver for a name
    config = dynamic.render(ROWS, plain_options(auth_url=auth, base_domain="ctf.example.org", tls=True, cert_resolver="le"))
    assert config["http"]["routers"][dynamic.ENDED_ROUTER]["tls"] == {}
    # without forward-auth there is nothing to answer those hosts
    assert dynamic.ENDED_ROUTER not in dynamic.render(ROWS, plain_options(base_domain="ctf.example.org"))["http"]["routers"]


def test_tcp_instances_get_sni_routers_with_tls():
    rows = ROWS + [("c-instance", "cccccccccccc.pwn.localhost", "tcp://127.0.0.1:32002", "tcp", "3", EXPIRES)]
    config = dynamic.render(rows, plain_options(auth_url="http://127.0.0.1:5000/api/v1/auth/forward", cert_resolver="le"))
    router = config["tcp"]["routers"]["ctfhost-c-instance"]
    assert router == {
        "rule": "HostSNI(`cccccccccccc.pwn.localhost`)", "service": "ctfhost-c-instance",
        "entryPoints": ["websecure"], "tls": {"certResolver": "le", "domains": [{"main": "*.pwn.localhost"}]},
        "priority": dynamic.INSTANCE_PRIORITY,
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
    """The instance routers of the served config (not the catch-all for ended hosts)."""
    response = api.get("/api/v1/traefik/config")
    assert response.status_code == 200
    routers = response.json.get("http", {}).get("routers", {})
    return {name: router for name, router in routers.items() if name != dynamic.ENDED_ROUTER}


def test_config_endpoint_follows_route_changes(api, app, redis_server):
    assert routers_in(api) == {}
    assert "defaultCertificate" in api.get("/api/v1/traefik/config").json["tls"]["stores"]["default"]
    Instance.create(
        id="11111111-1111-4111-8111-111111111111", team_id="t", challenge_id="web", runtime="fake", status="running",
        hostname="cccccccccccc.web.localhost", endpoint="http://cccccccccccc.web.localhost",
        backend="http://127.0.0.1:39999",
        expires_at=Instance.created_at.default() + datetime.timedelta(hours=1),  # no agent's sweep ends it
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
    # forward-auth is on without any setting: a stranger gets ctfhost's 401, the team's access link gets in
    assert traefik_proxy.fetch(host)[0] == 401
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    assert traefik_proxy.open_link(link) == (200, f"fake instance {instance['id']} of web-fake\n")
    assert api.delete(f"/api/v1/instances/{instance['id']}").status_code == 204
    wait_until(lambda: f"ctfhost-{instance['id']}@http" not in traefik_proxy.routers(), 10,
                        what="Traefik to drop the route")
    # the ended host gets ctfhost's page (with its way back), not Traefik's bare "404 page not found"
    status, body = traefik_proxy.fetch(host)
    assert status == 404 and "Nothing runs at this address" in body, body
    assert f"{dynamic.ENDED_ROUTER}@http" in traefik_proxy.routers()


def launch_fake(api, app, challenge_id, extra_config=None):
    """A running fake-runtime instance (the team is 3), its route loaded by Traefik."""
    from ctfhost.testing import register_fake_worker, run_jobs

    worker = register_fake_worker(api, prefix="traefik")
    challenge = {"id": challenge_id, "name": "f", "runtime": "fake", "image": "none", "port": 80}
    if extra_config:
        challenge["extra_config"] = json.dumps(extra_config)
    assert api.post("/api/v1/challenges", json=challenge).status_code == 201
    instance = api.post("/api/v1/instances", json={"team_id": 3, "challenge_id": challenge_id}).json
    run_jobs(app, worker)
    instance = api.get(f"/api/v1/instances/{instance['id']}").json
    assert instance["status"] == "running", instance["error"]
    return instance


def test_forward_auth_defaults_to_the_address_traefik_fetched_the_config_from(api, app, redis_server):
    launch_fake(api, app, "web-derived")
    for base in ("http://127.0.0.1:5000", "https://ctfhost.internal:8443"):
        config = api.get("/api/v1/traefik/config", base_url=base).json
        middleware = config["http"]["middlewares"][dynamic.AUTH_MIDDLEWARE]["forwardAuth"]
        assert middleware["address"] == f"{base}/api/v1/auth/forward"
        routers = config["http"]["routers"]
        assert len(routers) == 2 and dynamic.ENDED_ROUTER in routers
        # hosts no instance claims: forwardAuth, behind Traefik's rateLimit per host
        assert routers.pop(dynamic.ENDED_ROUTER)["middlewares"] == [
            dynamic.AUTH_CLIENT_LIMIT_MIDDLEWARE, dynamic.AUTH_LIMIT_MIDDLEWARE, dynamic.AUTH_MIDDLEWARE]
        # the instance's own router checks cookies in Traefik and asks the same address without one
        [(name, router)] = routers.items()
        [access] = router["middlewares"]
        check = config["http"]["middlewares"][access]["plugin"][dynamic.ACCESS_PLUGIN]
        assert check["forwardAuth"] == f"{base}/api/v1/auth/forward"
    # the cache keys on the derived address; an unchanged fleet polled at one address gives the same bytes
    first = api.get("/api/v1/traefik/config", base_url="http://127.0.0.1:5000").data
    assert api.get("/api/v1/traefik/config", base_url="http://127.0.0.1:5000").data == first
    # a client-sent X-Forwarded-Host is not believed without CTFHOST_PROXY_COUNT
    spoofed = api.get("/api/v1/traefik/config", base_url="http://127.0.0.1:5000",
                      headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}).data
    assert spoofed == first
    # an explicit address wins
    app.config["CTFHOST_TRAEFIK_FORWARD_AUTH_URL"] = "http://ctfhost-api:5000/api/v1/auth/forward"
    try:
        config = api.get("/api/v1/traefik/config").json
    finally:
        app.config.pop("CTFHOST_TRAEFIK_FORWARD_AUTH_URL")
    assert config["http"]["middlewares"][dynamic.AUTH_MIDDLEWARE]["forwardAuth"]["address"] == (
        "http://ctfhost-api:5000/api/v1/auth/forward"
    )


def test_forward_auth_off_takes_the_explicit_setting_and_is_warned_once(api, app, redis_server, caplog, monkeypatch):
    from ctfhost_plugin_traefik import settings

    launch_fake(api, app, "web-open")
    monkeypatch.setattr(settings, "_warned", [])
    for value in ("", "no-such-value", "on"):  # nothing but an explicit off turns it off
        app.config["CTFHOST_TRAEFIK_FORWARD_AUTH"] = value
        assert "middlewares" in api.get("/api/v1/traefik/config").json["http"]
    assert "CTFHOST_TRAEFIK_FORWARD_AUTH" not in caplog.text
    app.config["CTFHOST_TRAEFIK_FORWARD_AUTH"] = "off"
    try:
        for _ in range(3):
            config = api.get("/api/v1/traefik/config").json
    finally:
        app.config.pop("CTFHOST_TRAEFIK_FORWARD_AUTH")
    assert "middlewares" not in config["http"]
    assert all("middlewares" not in router for router in config["http"]["routers"].values())
    warnings = [r.getMessage() for r in caplog.records if "CTFHOST_TRAEFIK_FORWARD_AUTH=off" in r.getMessage()]
    assert len(warnings) == 1 and "anyone who knows an instance's hostname" in warnings[0]


def test_traefik_command_warns_when_forward_auth_is_off(app, tmp_path, caplog, monkeypatch):
    from ctfhost_plugin_traefik import settings

    runner = app.test_cli_runner()
    command = ["ctfhost", "traefik", "command", "--config-dir", str(tmp_path)]
    monkeypatch.setattr(settings, "_warned", [])
    assert runner.invoke(args=command).exit_code == 0
    assert "CTFHOST_TRAEFIK_FORWARD_AUTH=off" not in caplog.text
    app.config["CTFHOST_TRAEFIK_FORWARD_AUTH"] = "off"
    try:
        assert runner.invoke(args=command).exit_code == 0
    finally:
        app.config.pop("CTFHOST_TRAEFIK_FORWARD_AUTH")
    assert "forward-auth is off (CTFHOST_TRAEFIK_FORWARD_AUTH=off)" in caplog.text


def test_cli_help_prints_no_forward_auth_warning(tmp_path):
    # the warning belongs where Traefik starts or polls, not on every command
    env = {k: v for k, v in os.environ.items() if k != "CTFHOST_TRAEFIK_FORWARD_AUTH_URL"}
    for setting in ({}, {"CTFHOST_TRAEFIK_FORWARD_AUTH": "off"}):
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "ctfhost", "ctfhost", "--help"],
            env={**env, **setting}, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "FORWARD_AUTH" not in result.stderr + result.stdout
        assert "forward-auth" not in (result.stderr + result.stdout).lower()


def test_alias_headers_do_not_reach_the_backend_and_traefik_logs_no_body_size_warning(api, app, traefik_proxy, redis_server):
    """CVE-2026-88011: X.Ctfhost.Team / X_Ctfhost_Team beside the forwardAuth header must not reach the backend."""
    instance = launch_fake(api, app, "web-echo", {"echo_headers": True})
    wait_until(lambda: f"ctfhost-{instance['id']}@http" in traefik_proxy.routers(), 10, what="the route")
    host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    cookie, _ = access_cookie(traefik_proxy.web_port, link)
    status, body = traefik_proxy.fetch(
        host, headers={"Cookie": cookie, "X.Ctfhost.Team": "evil", "X_Ctfhost_Team": "evil", "X-Ctfhost-Team": "evil"},
    )
    assert status == 200, body
    received = [line.split(": ", 1) for line in body.splitlines()[1:]]
    team_headers = [(name, value) for name, value in received
                    if name.lower().replace("_", "-").replace(".", "-") == "x-ctfhost-team"]
    assert team_headers == [("X-Ctfhost-Team", "3")], body
    with open(traefik_proxy.service.log_path) as handle:
        log = handle.read()
    assert "maxResponseBodySize is not configured" not in log


def test_traefik_gets_the_api_key_from_a_0600_file_never_its_command_line(traefik_proxy):
    # the session's Traefik, started as make demo, the tests and the benchmarks start it
    with open(f"/proc/{traefik_proxy.service.pid}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert API_KEY.encode() not in b" ".join(argv)
    (config_flag,) = [arg for arg in argv if arg.startswith(b"--configFile=")]
    path = config_flag.split(b"=", 1)[1].decode()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        config = yaml.safe_load(handle)
    assert config["providers"]["http"]["headers"]["x-api-key"] == API_KEY
    assert config["entryPoints"]["web"]["http"]["aliasHeadersStrategy"] == "delete"
    assert config["entryPoints"]["websecure"]["http"]["aliasHeadersStrategy"] == "delete"


def test_traefik_run_writes_a_0600_file_and_keeps_the_key_off_the_command_line(api, app, live_server, tmp_path):
    web, api_port, tls = free_port(), free_port(), free_port()
    config_dir = tmp_path / "traefik-conf"
    env = {k: v for k, v in os.environ.items() if k != "CTFHOST_TRAEFIK_FORWARD_AUTH"}
    service = Service("traefik-run", [
        sys.executable, "-m", "flask", "--app", "ctfhost", "ctfhost", "traefik", "run",
        "--config-url", f"{live_server.url}/api/v1/traefik/config", "--config-dir", str(config_dir),
        "--web-address", f"127.0.0.1:{web}", "--websecure-address", f"127.0.0.1:{tls}",
        "--api-address", f"127.0.0.1:{api_port}",
    ], env, str(tmp_path / "run.log")).start()
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{api_port}/ping")[0] == 200, 30,
                            what=f"traefik run to start:\n{service.tail()}")
        [child] = children(service.pid)  # run supervises one traefik
        for pid in (service.pid, child):
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
            assert API_KEY.encode() not in cmdline
        assert cmdline.split(b"\0")[1] == f"--configFile={config_dir}/traefik.yml".encode()
        # in the config directory, where it finds the access middleware (plugins-local/) and the cookie keys
        assert os.readlink(f"/proc/{child}/cwd") == str(config_dir)
        assert (config_dir / "plugins-local/src/github.com/ctfhost/access/access.go").exists()
        for private in ("traefik.yml", "ctfhost-access.keys"):
            assert stat.S_IMODE(os.stat(config_dir / private).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(config_dir).st_mode) == 0o700
        # and it works: Traefik polls ctfhost with the key from the file and loads the routes
        instance = launch_fake(api, app, "web-run")
        router = f"ctfhost-{instance['id']}@http"
        wait_until(
            lambda: router in str(http("GET", f"http://127.0.0.1:{api_port}/api/http/routers")[1]), 15,
            what=f"traefik run to load the route:\n{service.tail()}",
        )
    finally:
        service.stop()


def children(pid):
    """The pids of the processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_cli_prints_a_ready_traefik_setup(app, tmp_path):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["ctfhost", "traefik", "command", "--config-dir", str(tmp_path),
                                 "--config-url", "http://127.0.0.1:5000/api/v1/traefik/config"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "traefik.yml"
    assert result.stdout.strip().endswith(f"--configFile={path}")
    # run where Traefik finds the access middleware it loads as a local plugin
    assert result.stdout.startswith(f"cd {tmp_path} && ")
    assert (tmp_path / "plugins-local/src/github.com/ctfhost/access/.traefik.yml").exists()
    assert API_KEY not in result.stdout
    assert f"wrote {path} (mode 0600)" in result.stderr and "ps" in result.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["providers"]["http"]["endpoint"] == "http://127.0.0.1:5000/api/v1/traefik/config"
    # the YAML form of the config, which Traefik decodes fastest (test_config_cache.py)
    assert config["providers"]["http"]["headers"] == {"x-api-key": API_KEY, "Accept": "application/yaml"}
    assert config["providers"]["providersThrottleDuration"] == "0s"
    assert config["experimental"] == {"localPlugins": {"ctfhost-access": {"moduleName": "github.com/ctfhost/access"}}}
    result = runner.invoke(args=["ctfhost", "traefik", "static-config"])
    assert result.exit_code == 0, result.output
    assert "pollInterval: 50ms" in result.output
    assert "aliasHeadersStrategy: delete" in result.output
