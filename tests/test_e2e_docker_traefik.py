"""End to end on the real parts: API -> RQ worker agent -> Docker -> Traefik, and back down."""

import concurrent.futures
import os
import signal
import time

import pytest

from ctfhost.testing import wait_until
from ctfhost_plugin_docker.testing import TEST_CONTENT

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.traefik]


def hostname_of(instance):
    return instance["endpoint"].split("://", 1)[1].split(":")[0]


def create_challenge(live_server, image, **overrides):
    body = {"id": "web-e2e", "name": "E2E web", "runtime": "docker", "image": image, "port": 8080, "ttl_seconds": 600}
    body.update(overrides)
    status, challenge = live_server.call("POST", "/api/v1/challenges", body)
    assert status == 201, challenge
    return challenge


def launch(live_server, team="team-a", challenge="web-e2e"):
    status, instance = live_server.call("POST", "/api/v1/instances", {"team_id": team, "challenge_id": challenge})
    assert status == 201, instance
    assert instance["status"] == "pending"
    return instance


def wait_status(live_server, instance_id, wanted, timeout=60):
    def current():
        return live_server.call("GET", f"/api/v1/instances/{instance_id}")[1]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instance = current()
        if instance["status"] in wanted:
            return instance
        time.sleep(0.05)
    raise AssertionError(f"instance stayed {current()['status']} (wanted {wanted}): {current()}")


def containers_of(docker_client, instance_id):
    return docker_client.containers.list(
        all=True, sparse=True, filters={"label": f"ctfhost.instance={instance_id}"}
    )


def wait_gone(docker_client, instance_id, timeout=30):
    wait_until(lambda: not containers_of(docker_client, instance_id), timeout, what="the container to go")


def open_as_team(live_server, traefik_proxy, instance):
    """What the team's browser sees: an access link from the API, followed through Traefik."""
    status, link = live_server.call("POST", f"/api/v1/instances/{instance['id']}/access")
    assert status == 200, link
    return traefik_proxy.open_link(link["url"])


def wait_route_dropped(traefik_proxy, instance):
    wait_until(lambda: f"ctfhost-{instance['id']}@http" not in traefik_proxy.routers(), 10,
                        what="Traefik to drop the route")


def routed_hosts(live_server):
    status, config = live_server.call("GET", "/api/v1/traefik/config")
    assert status == 200
    routers = (config or {}).get("http", {}).get("routers", {})
    return {router["rule"] for router in routers.values()}


def test_launch_renew_restart_delete_through_traefik(live_server, traefik_proxy, worker_agent, test_image, docker_client):
    create_challenge(live_server, test_image)
    instance = launch(live_server)
    host = hostname_of(instance)
    assert host.endswith(".web-e2e.localhost")

    instance = wait_status(live_server, instance["id"], {"running", "error"})
    assert instance["status"] == "running", instance["error"]
    assert instance["started_at"] is not None
    # running means reachable through the proxy at once: no 404 window (for the team: forward-auth is on)
    assert open_as_team(live_server, traefik_proxy, instance) == (200, TEST_CONTENT)
    assert traefik_proxy.fetch(host)[0] == 401

    (container,) = containers_of(docker_client, instance["id"])
    container.reload()
    assert container.labels["ctfhost.team"] == "team-a"
    assert container.labels["ctfhost.challenge"] == "web-e2e"
    host_config = container.attrs["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["PidsLimit"] > 0
    assert host_config["Memory"] == 512 * 1024 * 1024
    assert host_config["NanoCpus"] == 1_000_000_000
    bindings = host_config["PortBindings"]["8080/tcp"]
    assert bindings[0]["HostIp"] == "127.0.0.1"

    status, renewed = live_server.call("POST", f"/api/v1/instances/{instance['id']}/renew")
    if status == 200:
        assert renewed["expires_at"] >= instance["expires_at"]
        assert renewed["seconds_added"] >= 1
    else:
        assert status == 409, renewed  # under a second since launch: nothing to add

    status, fresh = live_server.call("POST", f"/api/v1/instances/{instance['id']}/restart")
    assert status in (200, 201), fresh
    assert fresh["id"] != instance["id"]
    new_host = hostname_of(fresh)
    assert new_host != host and new_host.endswith(".web-e2e.localhost")
    assert live_server.call("GET", f"/api/v1/instances/{instance['id']}")[1]["status"] == "destroyed"
    fresh = wait_status(live_server, fresh["id"], {"running", "error"})
    assert fresh["status"] == "running", fresh["error"]
    assert open_as_team(live_server, traefik_proxy, fresh) == (200, TEST_CONTENT)
    wait_route_dropped(traefik_proxy, instance)
    assert traefik_proxy.fetch(host)[0] == 404
    wait_gone(docker_client, instance["id"])

    status, _ = live_server.call("DELETE", f"/api/v1/instances/{fresh['id']}")
    assert status == 204
    # the route leaves the proxy config at once, before the container is removed
    assert f"Host(`{new_host}`)" not in routed_hosts(live_server)
    wait_route_dropped(traefik_proxy, fresh)
    assert traefik_proxy.fetch(new_host)[0] == 404
    wait_gone(docker_client, fresh["id"])
    assert live_server.call("GET", f"/api/v1/instances/{fresh['id']}")[1]["status"] == "destroyed"


def test_expiry_destroys_instance(live_server, traefik_proxy, worker_agent, test_image, docker_client):
    create_challenge(live_server, test_image, id="web-ttl", ttl_seconds=3)
    instance = launch(live_server, challenge="web-ttl")
    running = wait_status(live_server, instance["id"], {"running", "error"})
    assert running["status"] == "running", running["error"]
    expired = wait_status(live_server, instance["id"], {"expired", "destroyed", "error"}, timeout=3 + 15)
    assert expired["status"] == "expired"
    # the agent withdraws the route right after it commits the status
    wait_until(lambda: f"Host(`{hostname_of(instance)}`)" not in routed_hosts(live_server), 2,
                        what="the route to leave the config")
    wait_gone(docker_client, instance["id"])
    wait_route_dropped(traefik_proxy, instance)
    assert traefik_proxy.fetch(hostname_of(instance))[0] == 404


def test_missing_image_fails_cleanly(live_server, traefik_proxy, worker_agent, docker_client):
    create_challenge(live_server, "ctfhost-test/no-such-image:1", id="web-missing")
    instance = launch(live_server, challenge="web-missing")
    failed = wait_status(live_server, instance["id"], {"running", "error"})
    assert failed["status"] == "error"
    assert "no-such-image" in failed["error"] and "pull" in failed["error"]
    assert not containers_of(docker_client, instance["id"])
    assert f"Host(`{hostname_of(instance)}`)" not in routed_hosts(live_server)


def test_exiting_container_fails_with_reason(live_server, traefik_proxy, worker_agent, test_image, docker_client):
    create_challenge(
        live_server, test_image, id="web-exits",
        extra_config='{"command": ["/bin/sh", "-c", "echo bad config; exit 3"]}',
    )
    instance = launch(live_server, challenge="web-exits")
    failed = wait_status(live_server, instance["id"], {"running", "error"})
    assert failed["status"] == "error"
    assert "exited with code 3" in failed["error"]
    assert "bad config" in failed["error"]
    wait_gone(docker_client, instance["id"])


def test_readiness_timeout_fails_and_cleans_up(live_server, traefik_proxy, worker_agent, test_image, docker_client):
    create_challenge(
        live_server, test_image, id="web-slow",
        extra_config='{"command": ["/bin/sleep", "60"], "readiness_timeout": 2}',
    )
    instance = launch(live_server, challenge="web-slow")
    failed = wait_status(live_server, instance["id"], {"running", "error"})
    assert failed["status"] == "error"
    assert "within 2 s" in failed["error"]
    wait_gone(docker_client, instance["id"])
    assert f"Host(`{hostname_of(instance)}`)" not in routed_hosts(live_server)


def test_fifty_concurrent_identical_launches_make_one_instance(live_server, traefik_proxy, worker_agent, test_image, docker_client):
    create_challenge(live_server, test_image, id="web-race")
    body = {"team_id": 7, "challenge_id": "web-race"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: live_server.call("POST", "/api/v1/instances", body), range(50)))
    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 49, statuses
    (created,) = [body for status, body in results if status == 201]
    _, listing = live_server.call("GET", "/api/v1/instances?challenge_id=web-race")
    assert [i["id"] for i in listing] == [created["id"]]
    running = wait_status(live_server, created["id"], {"running", "error"})
    assert running["status"] == "running", running["error"]
    containers = docker_client.containers.list(all=True, filters={"label": "ctfhost.challenge=web-race"})
    assert len(containers) == 1


def test_reconcile_after_worker_killed_mid_launch(live_server, traefik_proxy, worker_agent, test_image, docker_client, app):
    # an orphan: a container labelled for this worker whose instance does not exist
    orphan = docker_client.containers.run(
        test_image, detach=True,
        labels={"ctfhost.managed": "true", "ctfhost.runtime": "docker", "ctfhost.worker": worker_agent.worker_id,
                "ctfhost.instance": "00000000-0000-4000-8000-000000000000"},
    )
    create_challenge(
        live_server, test_image, id="web-killed",
        extra_config='{"command": ["/bin/sh", "-c", "sleep 30; exec httpd -f -p 8080 -h /www"], "readiness_timeout": 60}',
    )
    create_challenge(live_server, test_image, id="web-lost")
    lost = launch(live_server, team="team-lost", challenge="web-lost")
    assert wait_status(live_server, lost["id"], {"running", "error"})["status"] == "running"

    instance = launch(live_server, challenge="web-killed")
    wait_until(lambda: containers_of(docker_client, instance["id"]), 30, what="the container to be created")
    assert live_server.call("GET", f"/api/v1/instances/{instance['id']}")[1]["status"] == "pending"

    worker_agent.kill()  # SIGKILL to the agent and its RQ workers: a crash mid-launch
    for container in containers_of(docker_client, lost["id"]):
        container.remove(force=True)  # the running instance's container vanishes while the worker is down
    worker_agent.start()

    failed = wait_status(live_server, instance["id"], {"running", "error"}, timeout=30)
    assert failed["status"] == "error"
    assert "interrupted" in failed["error"]
    wait_gone(docker_client, instance["id"])
    assert wait_status(live_server, lost["id"], {"error"}, timeout=30)["status"] == "error"
    wait_until(lambda: not docker_client.containers.list(all=True, filters={"id": orphan.id}), 30,
                        what="the orphan container to be removed")


def children_of(pid):
    """Pids of the live processes whose parent is `pid` (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def test_killing_only_the_agent_kills_its_rq_workers_and_the_next_agent_recovers(
    live_server, traefik_proxy, worker_agent, test_image, docker_client
):
    create_challenge(
        live_server, test_image, id="web-orphaned",
        extra_config='{"command": ["/bin/sh", "-c", "sleep 20; exec httpd -f -p 8080 -h /www"], "readiness_timeout": 60}',
    )
    create_challenge(live_server, test_image, id="web-after")
    instance = launch(live_server, challenge="web-orphaned")
    wait_until(lambda: containers_of(docker_client, instance["id"]), 30, what="the container to be created")
    agent_pid = worker_agent.service.pid
    children = children_of(agent_pid)
    assert len(children) >= 2  # RQ workers and the scheduler

    os.kill(agent_pid, signal.SIGKILL)  # the agent only, not its process group
    # its RQ workers die with it, the one busy launching included: no job
    # finishes behind the back of the next agent
    wait_until(lambda: not [pid for pid in children if _alive(pid)], 5,
                        what="the agent's RQ workers to die with it")

    worker_agent.start()  # the next agent takes the worker over at once and fails the dead launch
    failed = wait_status(live_server, instance["id"], {"running", "error"}, timeout=30)
    assert failed["status"] == "error" and "interrupted" in failed["error"]
    wait_gone(docker_client, instance["id"])
    after = launch(live_server, team="team-after", challenge="web-after")
    assert wait_status(live_server, after["id"], {"running", "error"})["status"] == "running"
    time.sleep(1)
    assert live_server.call("GET", f"/api/v1/instances/{instance['id']}")[1]["status"] == "error"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
