"""Several endpoints per instance (fake runtime): hostnames, the `endpoints` list, routes, forward-auth, access links."""

import re
import urllib.parse
import urllib.request

import pytest

from ctfhost.hooktypes import Backend, LaunchError
from ctfhost.models import Instance, InstanceEndpoint
from ctfhost.services import access
from ctfhost.services.routing import routed_endpoints
from ctfhost.testing import ask_forward_auth as forward
from ctfhost.testing import host_of, run_jobs
from ctfhost.worker import lifecycle

pytestmark = pytest.mark.usefixtures("redis_server")

EXPOSE = [{"name": "admin", "port": 8080, "protocol": "http"}, {"name": "shell", "port": 1337, "protocol": "tcp"}]


@pytest.fixture
def client(proxy_client):
    return proxy_client


@pytest.fixture
def running(api, app, worker_id):
    """Team red's and team blue's running instances of a challenge exposing `admin` (HTTP) and `shell` (TCP)."""
    response = api.post("/api/v1/challenges", json={
        "id": "web-multi", "name": "multi", "runtime": "fake", "image": "i", "port": 80, "expose": EXPOSE})
    assert response.status_code == 201, response.get_json()
    made = {}
    for team in ("red", "blue"):
        made[team] = api.post("/api/v1/instances", json={"team_id": team, "challenge_id": "web-multi"}).get_json()
    run_jobs(app, worker_id)
    return {team: api.get(f"/api/v1/instances/{made[team]['id']}").get_json() for team in made}


def endpoint(instance, name):
    return next(e for e in instance["endpoints"] if e["name"] == name)


def host(url):
    return urllib.parse.urlsplit(url).hostname


def cookie_value(response):
    return re.match(rf"{access.COOKIE_NAME}=([^;]+)", response.headers["Set-Cookie"]).group(1)


def test_every_endpoint_has_its_own_unguessable_host_under_the_challenge_domain(running):
    red = running["red"]
    assert red["status"] == "running"
    assert [(e["name"], e["service"], e["port"], e["protocol"]) for e in red["endpoints"]] == [
        ("main", "main", 80, "http"), ("admin", "main", 8080, "http"), ("shell", "main", 1337, "tcp")]
    main, admin, shell = red["endpoints"]
    assert main["url"] == red["endpoint"] and main["connection"] is None
    hosts = [host(e["url"]) for e in red["endpoints"]]
    assert len(set(hosts)) == 3
    for name in hosts:
        prefix, challenge, domain = name.split(".", 2)
        assert re.fullmatch(r"[0-9a-f]{12}", prefix) and (challenge, domain) == ("web-multi", "localhost")
        assert prefix[0] == hosts[0][0]  # one Traefik shard holds all of an instance's routers
    assert admin["url"] == f"http://{hosts[1]}" and admin["connection"] is None
    assert re.fullmatch(rf"tls://{re.escape(hosts[2])}:\d+", shell["url"])
    assert shell["connection"]["openssl"].endswith(f"-servername {hosts[2]}")
    assert f"remote('{hosts[2]}'" in shell["connection"]["pwntools"]
    # the other team's instance has hosts of its own
    assert not set(hosts) & {host(e["url"]) for e in running["blue"]["endpoints"]}


def test_the_pending_answer_already_lists_every_endpoint_and_lists_keep_them(api, app, running):
    listed = api.get("/api/v1/instances", query_string={"team_id": "red"}).get_json()
    rows = listed["items"] if isinstance(listed, dict) else listed
    assert [e["name"] for e in rows[0]["endpoints"]] == ["main", "admin", "shell"]
    restarted = api.post(f"/api/v1/instances/{running['red']['id']}/restart").get_json()
    assert restarted["status"] == "pending" and [e["name"] for e in restarted["endpoints"]] == ["main", "admin", "shell"]


def test_each_endpoint_is_routed_to_its_own_backend(app, running):
    red = running["red"]
    rows = [row for row in routed_endpoints() if row[0] == red["id"]]
    assert [(name, hostname, protocol) for _, name, hostname, _, protocol in rows] == [
        ("admin", host(endpoint(red, "admin")["url"]), "http"), ("shell", host(endpoint(red, "shell")["url"]), "tcp")]
    main_backend = Instance.get_by_id(red["id"]).backend
    assert len({main_backend, rows[0][3], rows[1][3]}) == 3
    with urllib.request.urlopen(rows[0][3] + "/", timeout=5) as response:
        assert response.read().decode() == f"fake instance {red['id']} of web-multi, endpoint admin\n"


def test_restart_rotates_every_hostname_and_withdraws_the_old_routes(api, app, running, worker_id):
    red = running["red"]
    new = api.post(f"/api/v1/instances/{red['id']}/restart").get_json()
    run_jobs(app, worker_id)
    new = api.get(f"/api/v1/instances/{new['id']}").get_json()
    assert new["status"] == "running"
    old_hosts = {host(e["url"]) for e in red["endpoints"]}
    assert not old_hosts & {host(e["url"]) for e in new["endpoints"]}
    routed = {row[0] for row in routed_endpoints()}
    assert red["id"] not in routed and new["id"] in routed
    # the old instance keeps its endpoints as history
    assert InstanceEndpoint.select().where(InstanceEndpoint.instance_id == red["id"]).count() == 2


def test_the_access_link_of_an_endpoint_opens_that_host_and_the_cookie_is_the_instances(api, client, running):
    red, blue = running["red"], running["blue"]
    admin_host = host(endpoint(red, "admin")["url"])
    assert forward(client, admin_host).status_code == 401  # no cookie
    link = api.post(f"/api/v1/instances/{red['id']}/access", json={"endpoint": "admin", "next": "/panel"}).get_json()
    parsed = urllib.parse.urlsplit(link["url"])
    assert f"{parsed.scheme}://{parsed.netloc}" == endpoint(red, "admin")["url"]
    redeemed = forward(client, admin_host, f"{parsed.path}?{parsed.query}")
    assert redeemed.status_code == 302
    assert redeemed.headers["Location"] == f"http://{admin_host}/panel"  # back on the endpoint's own host
    cookie = cookie_value(redeemed)
    allowed = forward(client, admin_host, "/panel", cookie=cookie)
    assert allowed.status_code == 200
    assert (allowed.headers["X-Ctfhost-Team"], allowed.headers["X-Ctfhost-Instance"]) == ("red", red["id"])
    # the cookie is bound to the instance: the same value lets in on its main host (a browser keeps one per host)
    assert forward(client, red, cookie=cookie).status_code == 200
    # and only there: another team's instance refuses it on every endpoint
    assert forward(client, host(endpoint(blue, "admin")["url"]), cookie=cookie).status_code == 401
    assert forward(client, blue, cookie=cookie).status_code == 401
    # a ticket redeemed on the main host opens the main host
    main_link = api.post(f"/api/v1/instances/{red['id']}/access").get_json()
    assert host(main_link["url"]) == host_of(red)


def test_a_tcp_endpoints_host_is_no_http_instance(client, running):
    assert forward(client, host(endpoint(running["red"], "shell")["url"])).status_code == 404


def test_ended_instances_endpoints_are_refused(api, client, running):
    red = running["red"]
    link = api.post(f"/api/v1/instances/{red['id']}/access", json={"endpoint": "admin"}).get_json()
    parsed = urllib.parse.urlsplit(link["url"])
    cookie = cookie_value(forward(client, host(link["url"]), f"{parsed.path}?{parsed.query}"))
    assert api.delete(f"/api/v1/instances/{red['id']}").status_code in (200, 202, 204)
    assert forward(client, host(link["url"]), cookie=cookie).status_code == 404


def test_access_links_name_the_endpoint_field_when_they_cannot_be_made(api, team_api, running):
    red = running["red"]
    unknown = api.post(f"/api/v1/instances/{red['id']}/access", json={"endpoint": "nope"})
    assert unknown.status_code == 422
    message = unknown.get_json()["errors"]["json"]["endpoint"][0]
    assert "has no endpoint named 'nope'" in message and "its HTTP endpoints: main, admin" in message
    tcp = api.post(f"/api/v1/instances/{red['id']}/access", json={"endpoint": "shell"})
    assert tcp.status_code == 422 and "TCP endpoint" in tcp.get_json()["errors"]["json"]["endpoint"][0]
    assert api.post(f"/api/v1/instances/{red['id']}/access", json={"endpoint": ""}).status_code == 422
    assert api.post(f"/api/v1/instances/{red['id']}/access", json={"endpoint": 3}).status_code == 422
    # team tokens: their own instance's endpoints only
    assert team_api("red").post(f"/api/v1/instances/{red['id']}/access", json={"endpoint": "admin"}).status_code == 200
    blue_id = running["blue"]["id"]
    assert team_api("red").post(f"/api/v1/instances/{blue_id}/access", json={"endpoint": "admin"}).status_code == 404


def test_the_traefik_config_routes_every_endpoint(api, running):
    red = running["red"]
    config = api.get("/api/v1/traefik/config").get_json()
    http_routers, tcp_routers = config["http"]["routers"], config["tcp"]["routers"]
    admin = http_routers[f"ctfhost-{red['id']}-admin"]
    assert admin["rule"] == f"Host(`{host(endpoint(red, 'admin')['url'])}`)"
    assert admin["middlewares"] == http_routers[f"ctfhost-{red['id']}"]["middlewares"]
    shell = tcp_routers[f"ctfhost-{red['id']}-shell"]
    assert shell["rule"] == f"HostSNI(`{host(endpoint(red, 'shell')['url'])}`)"
    backend = InstanceEndpoint.get(InstanceEndpoint.instance_id == red["id"], InstanceEndpoint.name == "shell").backend
    assert config["tcp"]["services"][f"ctfhost-{red['id']}-shell"]["loadBalancer"]["servers"] == [
        {"address": backend.split("://", 1)[1]}]


def test_a_launch_the_queue_refuses_leaves_no_endpoint_row(api, app, running, monkeypatch):
    from ctfhost.worker import queue

    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(queue, "enqueue_launch", down)
    refused = api.post("/api/v1/instances", json={"team_id": "green", "challenge_id": "web-multi"})
    assert refused.status_code == 503
    assert InstanceEndpoint.select().count() == 4  # red's and blue's only


def test_a_runtime_that_returns_no_backend_for_an_endpoint_fails_the_launch(api, app, running):
    instance = Instance.get_by_id(running["red"]["id"])
    with pytest.raises(LaunchError, match="the fake runtime gave no address for endpoint\\(s\\) 'shell'"):
        lifecycle._endpoint_backends(instance, Backend("127.0.0.1:1", endpoints={"admin": Backend("127.0.0.1:2")}))


def test_an_endpoint_that_does_not_answer_fails_the_launch_and_leaves_nothing(api, app, worker_id):
    api.post("/api/v1/challenges", json={"id": "web-deaf", "name": "s", "runtime": "fake", "image": "i", "port": 80,
                                         "expose": EXPOSE, "extra_config": {"readiness_timeout": 1,
                                                                            "endpoints_down": ["shell"]}})
    created = api.post("/api/v1/instances", json={"team_id": "t", "challenge_id": "web-deaf"}).get_json()
    run_jobs(app, worker_id)
    failed = api.get(f"/api/v1/instances/{created['id']}").get_json()
    assert failed["status"] == "error"
    assert failed["error"] == "the instance did not accept connections on endpoint 'shell' within 1 s"
    assert failed["public_error"] == "it did not become ready in time"
    assert created["id"] in app.fake_runtime.destroyed and created["id"] not in app.fake_runtime.endpoint_servers
    assert created["id"] not in {row[0] for row in routed_endpoints()}


def test_the_redirect_on_an_endpoints_host_keeps_that_endpoints_public_port(api, app, client, worker_id):
    """A TCP main (tls://host:<tcp port>) with an HTTP endpoint: the browser goes back to the HTTP endpoint's URL."""
    api.post("/api/v1/challenges", json={"id": "pwn-panel", "name": "p", "runtime": "fake", "image": "i", "port": 1337,
                                         "protocol": "tcp", "expose": [{"name": "panel", "port": 8080}]})
    created = api.post("/api/v1/instances", json={"team_id": "red", "challenge_id": "pwn-panel"}).get_json()
    run_jobs(app, worker_id)
    panel = endpoint(created, "panel")
    InstanceEndpoint.update(endpoint=f"http://{host(panel['url'])}:8000").where(
        InstanceEndpoint.instance_id == created["id"]).execute()
    link = api.post(f"/api/v1/instances/{created['id']}/access", json={"endpoint": "panel", "next": "/x"}).get_json()
    assert link["url"].startswith(f"http://{host(panel['url'])}:8000/.ctfhost/access?")
    parsed = urllib.parse.urlsplit(link["url"])
    response = forward(client, f"{host(panel['url'])}:9999", f"{parsed.path}?{parsed.query}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"http://{host(panel['url'])}:8000/x"
