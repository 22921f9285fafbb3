"""The served config kept up to date one instance at a time: same bytes as a full render, across processes and restarts."""

import datetime
import json
import re
import threading
import uuid

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

import ctfhost_plugin_traefik
from ctfhost.plugin_api import routed_endpoints, routed_instances
from ctfhost.testing import Instance, InstanceEndpoint, http, wait_until
from ctfhost_plugin_traefik import config_cache, dynamic
from ctfhost_plugin_traefik.default_certificate import default_certificate
from ctfhost_plugin_traefik.settings import options


def make_instance(number, protocol="http", challenge="web", port=None):
    hostname = f"{number:012x}.{challenge}.localhost"
    scheme = "tcp" if protocol == "tcp" else "http"
    return Instance.create(
        id=str(uuid.UUID(int=number)), team_id=f"team-{number}", challenge_id=challenge, runtime="fake",
        status="running", hostname=hostname, endpoint=f"http://{hostname}", protocol=protocol,
        backend=f"{scheme}://127.0.0.1:{port or 20000 + number}",
        # an hour ahead: a worker agent another test started sweeps expiry every second
        expires_at=Instance.created_at.default() + datetime.timedelta(hours=1),
    )


def publish(instance):
    ctfhost_plugin_traefik.route(instance, "publish")


def withdraw(instance, status="destroyed"):
    Instance.update(status=status).where(Instance.id == instance.id).execute()
    ctfhost_plugin_traefik.route(instance, "withdraw")


def served(api):
    response = api.get("/api/v1/traefik/config")
    assert response.status_code == 200
    return response.data


def full_render(app):
    """What rendering the whole fleet from the database gives, for the test client's address."""
    with app.test_request_context(base_url="http://localhost/"):
        return dynamic.dumps(dynamic.render(routed_instances(), options(), default_certificate(), routed_endpoints()))


@pytest.fixture
def fresh_cache(app, redis_server, monkeypatch):
    """Every test starts as a process that never rendered, and records which rows each render reads."""
    monkeypatch.setattr(config_cache, "_states", {})
    reads = []

    test_thread = threading.current_thread()

    def recording(instance_ids=None):
        if threading.current_thread() is test_thread:  # not the session's Traefik polling the live server
            reads.append(None if instance_ids is None else set(instance_ids))
        return routed_instances(instance_ids)

    monkeypatch.setattr(config_cache, "routed_instances", recording)
    config_cache.invalidate()
    return reads


def test_incremental_body_equals_a_full_render_after_publish_and_withdraw(api, app, fresh_cache):
    first = make_instance(1)
    publish(first)
    body = served(api)
    assert body == full_render(app)
    config = json.loads(body)
    # forward-auth, the catch-all for ended hosts and the default TLS store are all in it
    assert dynamic.AUTH_MIDDLEWARE in config["http"]["middlewares"]
    assert dynamic.ENDED_ROUTER in config["http"]["routers"]
    assert "defaultCertificate" in config["tls"]["stores"]["default"]
    del fresh_cache[:]

    second, tcp = make_instance(2), make_instance(3, protocol="tcp", challenge="pwn")
    publish(second)
    publish(tcp)
    body = served(api)
    assert body == full_render(app)
    assert b"HostSNI(`000000000003.pwn.localhost`)" in body
    withdraw(first)
    assert served(api) == full_render(app)
    # a restart: the same id routed to another backend
    Instance.update(backend="http://127.0.0.1:30002").where(Instance.id == second.id).execute()
    publish(second)
    assert b"http://127.0.0.1:30002" in served(api)
    assert served(api) == full_render(app)
    withdraw(second, "expired")
    withdraw(tcp, "error")
    body = served(api)
    assert body == full_render(app)
    assert b"HostSNI" not in body and b'"tcp"' not in body
    assert dynamic.ENDED_ROUTER.encode() in body
    # each change re-read only the instances it named, never the whole fleet
    assert fresh_cache and None not in fresh_cache
    assert set().union(*fresh_cache) == {first.id, second.id, tcp.id}


def add_endpoints(instance, *endpoints):
    """Other endpoints of `instance`, routed: (name, protocol) each, hosts starting with the instance's first digit."""
    for position, (name, protocol) in enumerate(endpoints):
        hostname = instance.hostname[0] + f"{position + 1:011x}." + instance.hostname.split(".", 1)[1]
        scheme = "tcp" if protocol == "tcp" else "http"
        InstanceEndpoint.create(instance_id=instance.id, position=position, name=name, service="main", port=9000,
                                protocol=protocol, hostname=hostname, endpoint=f"{scheme}://{hostname}",
                                backend=f"{scheme}://127.0.0.1:{31000 + position}")


def test_an_instances_other_endpoints_come_and_go_with_it(api, app, fresh_cache):
    first, second = make_instance(0xa000000000a1), make_instance(0x5000000005b2)
    add_endpoints(first, ("admin", "http"), ("shell", "tcp"))
    publish(first)
    publish(second)
    body = served(api)
    assert body == full_render(app)
    config = json.loads(body)
    admin = config["http"]["routers"][f"ctfhost-{first.id}-admin"]
    assert admin["rule"] == "Host(`a00000000001.web.localhost`)"
    assert admin["middlewares"] == config["http"]["routers"][f"ctfhost-{first.id}"]["middlewares"]
    assert config["tcp"]["routers"][f"ctfhost-{first.id}-shell"]["rule"] == "HostSNI(`a00000000002.web.localhost`)"
    assert config["http"]["services"][f"ctfhost-{first.id}-admin"]["loadBalancer"]["servers"] == [
        {"url": "http://127.0.0.1:31000"}]
    # the shard of the instance's first digit holds every router of it; the other shard none
    shard_of_first = json.loads(api.get("/api/v1/traefik/config?shard=1&shards=2").data)
    assert {f"ctfhost-{first.id}", f"ctfhost-{first.id}-admin"} <= set(shard_of_first["http"]["routers"])
    assert f"ctfhost-{first.id}-shell" in shard_of_first["tcp"]["routers"]
    other_shard = json.loads(api.get("/api/v1/traefik/config?shard=0&shards=2").data)
    assert not any(name.startswith(f"ctfhost-{first.id}") for name in other_shard["http"]["routers"])
    assert f"ctfhost-{second.id}" in other_shard["http"]["routers"]
    # withdrawn: all of its routers, services and its access check go; the other instance's stay
    withdraw(first)
    body = served(api)
    assert body == full_render(app)
    assert first.id.encode() not in body and second.id.encode() in body
    assert b'"tcp"' not in body


def test_unchanged_fleet_serves_the_same_bytes_without_reading_the_database(api, app, fresh_cache):
    for number in range(1, 6):
        publish(make_instance(number))
    body = served(api)
    del fresh_cache[:]
    assert [served(api) for _ in range(3)] == [body] * 3
    assert fresh_cache == []


def test_two_processes_stay_coherent(api, app, fresh_cache, monkeypatch):
    """Two web processes, each with its own rendered state, told of changes through Redis."""
    process_a, process_b = {}, {}

    def serve_as(states):
        monkeypatch.setattr(config_cache, "_states", states)
        return served(api)

    first, second = make_instance(1), make_instance(2)
    publish(first)
    assert serve_as(process_a) == serve_as(process_b) == full_render(app)
    del fresh_cache[:]
    publish(second)  # the change happens in some third process: a worker's launch job
    assert serve_as(process_b) == full_render(app)
    withdraw(first)
    assert serve_as(process_a) == serve_as(process_b) == full_render(app)
    assert b"000000000001.web.localhost" not in serve_as(process_a)
    assert None not in fresh_cache  # both caught up instance by instance


def test_a_process_too_far_behind_the_change_log_renders_everything(api, app, fresh_cache, monkeypatch):
    monkeypatch.setattr(config_cache, "CHANGE_LOG_LENGTH", 3)
    behind = {}
    monkeypatch.setattr(config_cache, "_states", behind)
    publish(make_instance(1))
    served(api)
    monkeypatch.setattr(config_cache, "_states", {})
    for number in range(2, 8):
        publish(make_instance(number))
        served(api)
    monkeypatch.setattr(config_cache, "_states", behind)
    del fresh_cache[:]
    assert served(api) == full_render(app)
    assert fresh_cache == [None]


def test_a_cold_process_renders_the_whole_fleet(api, app, fresh_cache, monkeypatch):
    publish(make_instance(1))
    served(api)
    make_instance(2)  # routed in the database, never announced: only a full render sees it
    monkeypatch.setattr(config_cache, "_states", {})  # a process that just started
    body = served(api)
    assert b"000000000002.web.localhost" in body
    assert body == full_render(app)


def test_a_flushed_redis_makes_every_process_render_the_whole_fleet(api, app, fresh_cache, redis_server):
    publish(make_instance(1))
    served(api)
    make_instance(2)
    redis_server.flushdb()  # Redis restarted without its data: the change log is gone
    body = served(api)
    assert b"000000000002.web.localhost" in body
    assert body == full_render(app)
    # and changes announced after the flush are applied one by one again
    del fresh_cache[:]
    third = make_instance(3)
    publish(third)
    assert served(api) == full_render(app)
    assert fresh_cache == [{third.id}]


def test_an_announcement_without_an_instance_renders_everything(api, app, fresh_cache):
    publish(make_instance(1))
    served(api)
    make_instance(2)
    del fresh_cache[:]
    config_cache.invalidate()  # what a change made straight in the database must be followed by
    assert served(api) == full_render(app)
    assert fresh_cache == [None]


def unreachable_redis():
    # nothing listens on port 1; no retries, as ctfhost's own client
    return redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def traefik_errors(log_path, offset):
    """Error lines Traefik logged after `offset` (its console log colours the level: ESC[31mERR)."""
    with open(log_path, "rb") as handle:
        handle.seek(offset)
        text = re.sub(r"\x1b\[[0-9;]*m", "", handle.read().decode("utf-8", "replace"))
    return [line for line in text.splitlines() if re.search(r"\bERR\b|level=error", line)]


def test_real_traefik_loads_a_config_of_hundreds_of_instances(app, traefik_proxy, redis_server, monkeypatch):
    forms = []
    real_body = config_cache.body
    monkeypatch.setattr(config_cache, "body", lambda form=config_cache.JSON, shard=None: forms.append(form) or real_body(form, shard))
    with open(traefik_proxy.service.log_path, "rb") as handle:
        offset = len(handle.read())
    http_count, tcp_count = 280, 20
    for number in range(1, http_count + 1):
        make_instance(number)
    for number in range(http_count + 1, http_count + tcp_count + 1):
        make_instance(number, protocol="tcp", challenge="pwn")
    config_cache.invalidate()

    def loaded(kind):
        status, routers = http("GET", f"{traefik_proxy.api_url}/api/{kind}/routers?per_page=1000")
        assert status == 200
        return {router["name"] for router in routers if router["name"].startswith("ctfhost-")}

    try:
        # every instance router, plus the catch-all for ended hosts
        # Traefik asks for the YAML form (its static config's Accept header): these maps are merged from maps of 100
        assert http_count > dynamic.MERGE_CHUNK
        wait_until(lambda: len(loaded("http")) == http_count + 1, 20, what="Traefik to load the HTTP routers")
        wait_until(lambda: len(loaded("tcp")) == tcp_count, 20, what="Traefik to load the TCP routers")
        status, routers = http("GET", f"{traefik_proxy.api_url}/api/http/routers?per_page=1000")
        assert [router["name"] for router in routers if router.get("status") != "enabled"] == []
        assert traefik_errors(traefik_proxy.service.log_path, offset) == []
        assert forms and set(forms) == {config_cache.YAML}  # Traefik asked for, and loaded, the merged YAML
    finally:
        Instance.delete().execute()
        config_cache.invalidate()
        wait_until(lambda: len(loaded("http")) <= 1, 20, what="Traefik to drop the routers")


def largest_mapping(node):
    """The most key/value pairs of any mapping in a composed YAML document, merged maps counted on their own."""
    pairs = len(node.value) if isinstance(node, yaml.MappingNode) else 0
    children = [child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode) else (
        node.value if isinstance(node, yaml.SequenceNode) else [])
    return max([pairs] + [largest_mapping(child) for child in children])


def test_traefik_gets_the_same_config_as_yaml_merged_from_small_maps(api, app, fresh_cache):
    # Traefik's YAML decoder compares every key of a mapping with every other
    # one: at 10,000 instances its routers map alone cost 1.7 s per reload
    for number in range(1, 251):
        make_instance(number)
    config_cache.invalidate()
    as_json = served(api)
    response = api.get("/api/v1/traefik/config", headers={"Accept": "application/yaml"})
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    assert "Accept" in response.headers["Vary"]
    assert yaml.safe_load(response.data) == json.loads(as_json)
    assert len(json.loads(as_json)["http"]["routers"]) == 251  # with the catch-all
    assert largest_mapping(yaml.compose(response.data)) <= dynamic.MERGE_CHUNK
    assert response.data.count(b"<<:") == 3  # routers, services and their access middlewares
    # stable bytes for an unchanged fleet, and still after a change
    assert api.get("/api/v1/traefik/config", headers={"Accept": "application/yaml"}).data == response.data
    withdraw(Instance.get_by_id(str(uuid.UUID(int=7))))
    after = api.get("/api/v1/traefik/config", headers={"Accept": "application/yaml"}).data
    assert yaml.safe_load(after) == json.loads(served(api)) == json.loads(full_render(app))
    # anything else asks for JSON, as before
    for accept in (None, "*/*", "application/json", "application/json, application/yaml"):
        response = api.get("/api/v1/traefik/config", headers={"Accept": accept} if accept else {})
        assert response.mimetype == "application/json" and response.data == served(api), accept


def test_small_maps_are_plain_json_in_the_yaml_form(api, app, fresh_cache):
    publish(make_instance(1))
    response = api.get("/api/v1/traefik/config", headers={"Accept": "application/yaml"})
    assert response.data == served(api) and b"<<" not in response.data


def test_many_changes_since_the_last_poll_are_one_full_render(api, app, fresh_cache, monkeypatch):
    monkeypatch.setattr(config_cache, "MOST_CHANGES_APPLIED", 2)
    publish(make_instance(1))
    served(api)
    for number in range(2, 5):
        publish(make_instance(number))
    del fresh_cache[:]
    assert served(api) == full_render(app)
    assert fresh_cache == [None]


def test_while_redis_is_unreachable_a_process_serves_what_it_has_then_renders_from_the_database(
    api, app, fresh_cache, monkeypatch
):
    publish(make_instance(1))
    body = served(api)
    make_instance(2)
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_CACHE_SECONDS", "3600")
    monkeypatch.setitem(app.extensions, "ctfhost.redis", unreachable_redis())
    assert served(api) == body  # not older than CTFHOST_TRAEFIK_CACHE_SECONDS: kept
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_CACHE_SECONDS", "0")
    assert b"000000000002.web.localhost" in served(api)
    assert served(api) == full_render(app)
