"""Challenges of several services end to end: API -> worker agent -> Docker (a network per instance) -> Traefik."""

import json

import pytest

from ctfhost.testing import access_cookie, wait_until

from test_e2e_docker_traefik import (  # noqa: E402  (the end-to-end tests' shared helpers)
    containers_of, create_challenge, hostname_of, launch, open_as_team, routed_hosts, wait_status,
)
from test_tcp import tcp_port_setting, tls_session  # noqa: E402,F401  (a fixture and a helper of the TCP tests)

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.traefik]

# the database: serves its secret (with the instance's flag, which every service gets) on 8080
DATABASE = ["/bin/sh", "-c",
            'mkdir -p /tmp/db && echo "db secret for $FLAG" > /tmp/db/index.html && exec httpd -f -p 8080 -h /tmp/db']
# main: fetches the database's page by the name `db` (busybox nslookup and nc; its static wget cannot resolve),
# then serves what it got
MAIN = ["/bin/sh", "-c",
        "mkdir -p /tmp/www; "
        "until address=$(nslookup db 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}'); "
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $address 8080 > /tmp/www/index.html; "
        "grep -q 'db secret' /tmp/www/index.html; do sleep 0.2; done; "
        "exec httpd -f -p 8080 -h /tmp/www"]


def two_services(live_server, image, challenge_id, database=None, **overrides):
    return create_challenge(
        live_server, image, id=challenge_id, flag_template="flag{{{hex:12}}}",
        extra_config=json.dumps({"command": MAIN, "readiness_timeout": 30}),
        services={"db": {"image": image, "command": database or DATABASE}}, **overrides,
    )


def networks_of(docker_client, instance_id):
    return docker_client.networks.list(filters={"label": f"ctfhost.instance={instance_id}"})


def test_main_shows_what_it_fetched_from_its_database_by_name(live_server, traefik_proxy, worker_agent, test_image,
                                                              docker_client):
    two_services(live_server, test_image, "web-two")
    instance = launch(live_server, challenge="web-two")
    running = wait_status(live_server, instance["id"], {"running", "error"})
    assert running["status"] == "running", running["error"]
    status, body = open_as_team(live_server, traefik_proxy, running)
    assert status == 200, body
    flag = live_server.call("GET", f"/api/v1/instances/{instance['id']}")[1]["flag"]
    assert f"db secret for {flag}" in body  # main reached `db`, and db has the instance's flag
    # another team gets nothing from the host
    assert traefik_proxy.fetch(hostname_of(running))[0] in (401, 403)
    assert {c.attrs["Labels"]["ctfhost.service"] for c in containers_of(docker_client, instance["id"])} == {"main", "db"}
    assert len(networks_of(docker_client, instance["id"])) == 1

    assert live_server.call("DELETE", f"/api/v1/instances/{instance['id']}")[0] == 204
    wait_until(lambda: not containers_of(docker_client, instance["id"]) and not networks_of(docker_client, instance["id"]),
               30, what="every container and the network to go")
    assert f"Host(`{hostname_of(running)}`)" not in routed_hosts(live_server)


def test_two_instances_do_not_share_their_databases(live_server, traefik_proxy, worker_agent, test_image, docker_client):
    two_services(live_server, test_image, "web-two-teams")
    first, second = (launch(live_server, team=team, challenge="web-two-teams") for team in ("team-a", "team-b"))
    pages = []
    for instance in (first, second):
        running = wait_status(live_server, instance["id"], {"running", "error"})
        assert running["status"] == "running", running["error"]
        flag = live_server.call("GET", f"/api/v1/instances/{instance['id']}")[1]["flag"]
        status, body = open_as_team(live_server, traefik_proxy, running)
        pages.append((flag, body))
    # each main reached its own instance's db (each db holds its own instance's flag)
    (flag_a, page_a), (flag_b, page_b) = pages
    assert flag_a != flag_b and flag_a in page_a and flag_b in page_b and flag_b not in page_a


def test_a_crashing_sidecar_fails_the_launch_naming_it_and_leaves_nothing(live_server, traefik_proxy, worker_agent,
                                                                          test_image, docker_client):
    create_challenge(live_server, test_image, id="web-sidecar-crash", services={
        "db": {"image": test_image, "command": DATABASE},
        "bot": {"image": test_image, "command": ["/bin/sh", "-c", "echo admin bot: no browser found; exit 4"]},
    })
    instance = launch(live_server, challenge="web-sidecar-crash")
    failed = wait_status(live_server, instance["id"], {"running", "error"})
    assert failed["status"] == "error"
    assert "service 'bot'" in failed["error"] and "exited with code 4" in failed["error"], failed["error"]
    assert "no browser found" in failed["error"]
    wait_until(lambda: not containers_of(docker_client, instance["id"]) and not networks_of(docker_client, instance["id"]),
               30, what="every container and the network to go")
    assert f"Host(`{hostname_of(instance)}`)" not in routed_hosts(live_server)


def test_reconcile_removes_a_partial_instance_after_the_worker_is_killed(live_server, traefik_proxy, worker_agent,
                                                                        test_image, docker_client):
    # main waits 30 s before it listens: the worker is killed while the instance is partly up
    slow = ["/bin/sh", "-c", "sleep 30; exec httpd -f -p 8080 -h /www"]
    create_challenge(live_server, test_image, id="web-two-killed",
                     extra_config=json.dumps({"command": slow, "readiness_timeout": 60}),
                     services={"db": {"image": test_image, "command": DATABASE},
                               "cache": {"image": test_image, "command": DATABASE}})
    instance = launch(live_server, challenge="web-two-killed")
    wait_until(lambda: len(containers_of(docker_client, instance["id"])) == 3, 30, what="the containers")
    worker_agent.kill()  # SIGKILL mid-launch
    worker_agent.start()
    failed = wait_status(live_server, instance["id"], {"running", "error"}, timeout=30)
    assert failed["status"] == "error" and "interrupted" in failed["error"], failed
    wait_until(lambda: not containers_of(docker_client, instance["id"]) and not networks_of(docker_client, instance["id"]),
               30, what="every container and the network to go")


# main serves the test page on 8080 and an `api` page of its own on 9000
MAIN_WITH_API = ["/bin/sh", "-c",
                 'mkdir -p /tmp/api && echo "api of $FLAG" > /tmp/api/index.html && httpd -p 9000 -h /tmp/api '
                 "&& exec httpd -f -p 8080 -h /www"]
# db serves its secret on 8080 and a shell (greeting, then echo) on TCP 1337
DB_WITH_SHELL = ["/bin/sh", "-c",
                 'mkdir -p /tmp/db && echo "db secret for $FLAG" > /tmp/db/index.html && httpd -p 8080 -h /tmp/db '
                 """&& exec nc -ll -p 1337 -e /bin/sh -c 'echo "shell of $FLAG"; cat'"""]


def endpoint_of(instance, name):
    return next(endpoint for endpoint in instance["endpoints"] if endpoint["name"] == name)


def host_of_url(url):
    return url.split("://", 1)[1].split(":")[0].split("/")[0]


def test_every_endpoint_is_reached_through_traefik_by_its_team_only(live_server, traefik_proxy, worker_agent,
                                                                   test_image, docker_client, tcp_port_setting):
    create_challenge(
        live_server, test_image, id="web-endpoints", flag_template="flag{{{hex:12}}}",
        extra_config=json.dumps({"command": MAIN_WITH_API, "readiness_timeout": 30}),
        expose=[{"name": "api", "port": 9000, "protocol": "http"}],
        services={"db": {"image": test_image, "command": DB_WITH_SHELL,
                         "expose": [{"name": "dbadmin", "port": 8080, "protocol": "http"},
                                    {"name": "shell", "port": 1337, "protocol": "tcp"}]}},
    )
    instances = {}
    for team in ("team-a", "team-b"):
        created = launch(live_server, team=team, challenge="web-endpoints")
        running = wait_status(live_server, created["id"], {"running", "error"})
        assert running["status"] == "running", running["error"]
        instances[team] = live_server.call("GET", f"/api/v1/instances/{created['id']}")[1]
    a, b = instances["team-a"], instances["team-b"]
    assert [e["name"] for e in a["endpoints"]] == ["main", "api", "dbadmin", "shell"]
    expected = {"main": "hello from a ctfhost test instance", "api": f"api of {a['flag']}",
                "dbadmin": f"db secret for {a['flag']}"}
    for name, page in expected.items():
        host = host_of_url(endpoint_of(a, name)["url"])
        status, link = live_server.call("POST", f"/api/v1/instances/{a['id']}/access", {"endpoint": name})
        assert status == 200 and host_of_url(link["url"]) == host, link
        assert traefik_proxy.open_link(link["url"]) == (200, page + "\n"), name
        # nobody else gets in: no cookie, and team B's cookie for its own instance's same endpoint
        assert traefik_proxy.fetch(host)[0] == 401, name
        status, b_link = live_server.call("POST", f"/api/v1/instances/{b['id']}/access", {"endpoint": name})
        b_cookie, _ = access_cookie(traefik_proxy.web_port, b_link["url"])
        assert traefik_proxy.fetch(host, headers={"Cookie": b_cookie})[0] == 401, name
    # the TCP endpoint: TLS with SNI on the shared port, the connection commands name that host and port
    shell = endpoint_of(a, "shell")
    assert shell["url"] == f"tls://{host_of_url(shell['url'])}:{traefik_proxy.tls_port}"
    assert f"-servername {host_of_url(shell['url'])}" in shell["connection"]["openssl"]
    greeting, echo = tls_session(traefik_proxy.tls_port, host_of_url(shell["url"]))
    assert greeting.strip() == f"shell of {a['flag']}" and echo == b"ping\n"
    greeting, _ = tls_session(traefik_proxy.tls_port, host_of_url(endpoint_of(b, "shell")["url"]))
    assert greeting.strip() == f"shell of {b['flag']}"

    # restart: every hostname changes, the old ones route nothing
    status, restarted = live_server.call("POST", f"/api/v1/instances/{a['id']}/restart")
    assert status == 200, restarted
    new = wait_status(live_server, restarted["id"], {"running", "error"})
    assert new["status"] == "running", new["error"]
    old_hosts = {host_of_url(e["url"]) for e in a["endpoints"]}
    assert not old_hosts & {host_of_url(e["url"]) for e in new["endpoints"]}
    wait_until(lambda: not containers_of(docker_client, a["id"]), 30, what="the old instance's containers to go")
    for host in old_hosts - {host_of_url(shell["url"])}:
        assert traefik_proxy.fetch(host)[0] == 404

    for instance in (new, b):
        assert live_server.call("DELETE", f"/api/v1/instances/{instance['id']}")[0] == 204
    wait_until(lambda: not any(containers_of(docker_client, i["id"]) or networks_of(docker_client, i["id"])
                               for i in (new, b)), 30, what="every container and network to go")
    routed = set(traefik_proxy.routers())
    assert not any(name.startswith((f"ctfhost-{new['id']}", f"ctfhost-{b['id']}")) for name in routed)


def test_an_exposed_port_nothing_listens_on_fails_the_launch_naming_it(live_server, traefik_proxy, worker_agent,
                                                                       test_image, docker_client):
    create_challenge(live_server, test_image, id="web-deaf-endpoint",
                     extra_config=json.dumps({"readiness_timeout": 3}),
                     expose=[{"name": "api", "port": 9000, "protocol": "http"}])
    instance = launch(live_server, challenge="web-deaf-endpoint")
    failed = wait_status(live_server, instance["id"], {"running", "error"})
    assert failed["status"] == "error"
    assert failed["error"] == "the instance did not accept connections on endpoint 'api' within 3 s", failed["error"]
    wait_until(lambda: not containers_of(docker_client, instance["id"]), 30, what="the container to go")
    assert not any(name.startswith(f"ctfhost-{instance['id']}") for name in traefik_proxy.routers())
