"""Challenges of several services on the real engine: one network per instance, names, hardening, isolation, cleanup."""

import json
import socket
import uuid
from urllib.parse import urlparse

import pytest

from ctfhost.plugin_api import LaunchError
from ctfhost.testing import Challenge, Instance, Worker, wait_until
from ctfhost_plugin_docker import containers
from ctfhost_plugin_docker.testing import TEST_IMAGE, build_image

from test_hardening import host_addresses, http_get, listener, probe, sh  # noqa: E402  (the tests' shared helpers)

DB_IMAGE = "ctfhost-test/db:latest"
DB_CONTENT = "the secret the database keeps\n"


def make(services, options=None):
    challenge = Challenge(
        id="web-services", name="s", runtime="docker", image=TEST_IMAGE, port=8080, cpu_count=1, memory_mb=512,
        extra_config=json.dumps(options or {}), services=json.dumps(services),
    )
    instance = Instance(id=str(uuid.uuid4()), team_id=f"team-{uuid.uuid4().hex[:6]}", challenge_id=challenge.id,
                        runtime="docker", flag=f"flag{{{uuid.uuid4().hex}}}")
    worker = Worker(id=f"test-services-{uuid.uuid4().hex[:6]}", address="127.0.0.1", runtime="docker")
    return challenge, instance, worker


def db(**spec):
    return {"image": DB_IMAGE, "cpu_count": 1, "memory_mb": 512, "expose": [], "options": {}, **spec}


@pytest.fixture(scope="module")
def db_image(docker_client, test_image):
    return build_image(DB_IMAGE, content=DB_CONTENT, client=docker_client)


@pytest.fixture
def launch(app, docker_client, db_image):
    """launch(services, options) runs an instance through the runtime: (challenge, instance, worker, port)."""
    started = []

    def start(services, options=None):
        challenge, instance, worker = make(services, options)
        started.append(instance.id)
        return challenge, instance, worker, containers.run(challenge, instance, worker)[0]

    yield start
    for instance_id in started:
        containers.remove(instance_id)


def of(docker_client, instance, service):
    name = containers.container_name(instance.id) if service == "main" else \
        containers.service_container_name(instance.id, service)
    return docker_client.containers.get(name)


def fetch_by_name(container, name, port=8080):
    """GET http://<name>:<port>/ from inside, the name resolved by the engine's DNS (busybox's nslookup and nc: the
    test image's static wget cannot resolve names)."""
    script = (f"address=$(nslookup {name} 2>/dev/null | awk '/^Address/ {{a=$NF}} END {{print a}}'); "
              f"case $address in *:53|'') echo unresolved;; "
              f"*) printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $address {port};; esac")
    return sh(container, script)[1]


def leftovers(docker_client, instance_id):
    label = {"label": f"ctfhost.instance={instance_id}"}
    return ([c.name for c in docker_client.containers.list(all=True, filters=label)]
            + [n.name for n in docker_client.networks.list(filters=label)])


def test_services_reach_each_other_by_name_in_a_network_of_their_own(launch, docker_client):
    challenge, instance, worker, port = launch({"db": db(environment={"ROLE": "db"})})
    main, database = of(docker_client, instance, "main"), of(docker_client, instance, "db")
    network = containers.instance_network_name(instance.id)
    assert set(main.attrs["NetworkSettings"]["Networks"]) == {network}
    assert set(database.attrs["NetworkSettings"]["Networks"]) == {network}
    # main fetches the database's secret by its name, and the database reaches main by `main`
    assert DB_CONTENT.strip() in fetch_by_name(main, "db")
    assert "hello from a ctfhost test instance" in fetch_by_name(database, "main")
    assert "unresolved" in fetch_by_name(main, "no-such-service")  # control: the lookup can fail
    # only main is published, on 127.0.0.1
    assert main.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert int(main.ports["8080/tcp"][0]["HostPort"]) == port
    assert not database.attrs["HostConfig"]["PortBindings"]
    # every service gets the instance's flag; a service's own environment stays its own
    assert f"FLAG={instance.flag}" in main.attrs["Config"]["Env"]
    assert f"FLAG={instance.flag}" in database.attrs["Config"]["Env"]
    assert "ROLE=db" in database.attrs["Config"]["Env"] and "ROLE=db" not in main.attrs["Config"]["Env"]
    assert database.labels["ctfhost.service"] == "db" and main.labels["ctfhost.service"] == "main"
    assert database.labels["ctfhost.instance"] == instance.id
    assert containers.state(instance.id) == (True, None)


def test_every_service_is_hardened_with_its_own_limits(launch, docker_client):
    services = {"db": db(memory_mb=1024, cpu_count=2, options={"cap_add": ["NET_BIND_SERVICE"], "read_only": True})}
    _, instance, _, _ = launch(services)
    database = of(docker_client, instance, "db")
    host = database.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["NET_BIND_SERVICE"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 256
    assert host["Memory"] == host["MemorySwap"] == 1024 * 1024 * 1024
    assert host["NanoCpus"] == 2 * 10**9
    assert host["ReadonlyRootfs"] is True
    status = sh(database, "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")[1]
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    assert fields["NoNewPrivs"].strip() == "1" and int(fields["CapEff"], 16) == 1 << 10
    main_host = of(docker_client, instance, "main").attrs["HostConfig"]
    assert main_host["Memory"] == 512 * 1024 * 1024 and main_host["ReadonlyRootfs"] is False


def test_command_and_entrypoint_replace_the_images(launch, docker_client):
    services = {"bot": db(entrypoint=["/bin/sh", "-c"], command=["echo bot ready; exec sleep 600"])}
    _, instance, _, _ = launch(services)
    bot = of(docker_client, instance, "bot")
    assert bot.attrs["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert bot.attrs["Config"]["Cmd"] == ["echo bot ready; exec sleep 600"]
    assert containers.state(instance.id)[0]


def test_services_of_two_instances_cannot_reach_each_other(launch, docker_client):
    _, first, _, _ = launch({"db": db()})
    _, second, _, second_port = launch({"db": db()})
    mine = of(docker_client, first, "db")
    theirs = [of(docker_client, second, service) for service in ("main", "db")]
    network = containers.instance_network_name(second.id)
    addresses = [container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"] for container in theirs]
    assert all(addresses)
    # control: reached from inside their own instance
    assert "200 OK" in http_get(theirs[0], addresses[1], 8080)
    for address in addresses:
        assert "200 OK" not in http_get(mine, address, 8080), address
    # `db` is always the instance's own: first's main reads first's db
    assert DB_CONTENT.strip() in fetch_by_name(of(docker_client, first, "main"), "db")
    # the other instance's published port (on the host's 127.0.0.1) is not reachable through the gateway
    gateway = mine.attrs["NetworkSettings"]["Networks"][containers.instance_network_name(first.id)]["Gateway"]
    assert "200 OK" not in http_get(mine, gateway, second_port)


def test_a_service_cannot_reach_the_api_or_redis(app, launch, docker_client, live_server, redis_server):
    redis_port = urlparse(app.config["CTFHOST_REDIS_URL"]).port or 6379
    assert live_server.call("GET", "/health", key=None)[0] == 200 and redis_server.ping()
    _, instance, _, _ = launch({"db": db()})
    database = of(docker_client, instance, "db")
    gateway = database.attrs["NetworkSettings"]["Networks"][containers.instance_network_name(instance.id)]["Gateway"]
    with listener(gateway) as port:  # control: what listens on the bridge address is reached
        assert "ctfhost-probe-ok" in probe(database, gateway, port, "hello\n")
    for address in sorted({gateway, *host_addresses()}) + ["127.0.0.1"]:
        assert "HTTP/" not in http_get(database, address, live_server.port), address
        answer = probe(database, address, redis_port, "PING\r\nQUIT\r\n")
        assert "PONG" not in answer and "+OK" not in answer, (address, answer)


def test_a_crashing_service_is_named_with_its_output(launch, docker_client):
    services = {"db": db(), "bot": db(entrypoint=["/bin/sh", "-c"], command=["echo admin bot crashed; exit 3"])}
    _, instance, _, _ = launch(services)
    bot = of(docker_client, instance, "bot")
    bot.wait(timeout=30)
    alive, reason = containers.state(instance.id)
    assert not alive
    assert reason.startswith("service 'bot': the container exited with code 3") and "admin bot crashed" in reason


def test_a_service_that_cannot_start_fails_the_launch_and_leaves_nothing(app, docker_client, db_image):
    challenge, instance, worker = make({"db": db(), "bot": db(entrypoint=["/no/such/binary"])})
    with pytest.raises(LaunchError) as failure:
        containers.run(challenge, instance, worker)
    assert "'bot'" in str(failure.value)
    assert leftovers(docker_client, instance.id) == []


def test_remove_takes_every_container_and_the_network(launch, docker_client):
    _, instance, _, _ = launch({"db": db(), "cache": db()})
    assert len(leftovers(docker_client, instance.id)) == 4  # main, db, cache and the network
    containers.remove(instance.id)
    containers.remove(instance.id)  # idempotent
    assert leftovers(docker_client, instance.id) == []


def test_relaunch_replaces_what_an_earlier_attempt_left(launch, docker_client):
    challenge, instance, worker, _ = launch({"db": db()})
    containers.run(challenge, instance, worker)
    assert sorted(leftovers(docker_client, instance.id)) == sorted(
        [containers.container_name(instance.id), containers.service_container_name(instance.id, "db"),
         containers.instance_network_name(instance.id)])


def test_reconcile_removes_partial_instances_and_reports_a_dead_service(app, launch, docker_client):
    challenge, kept, worker, _ = launch({"db": db()})
    # a partial instance of the same worker: its network and one service, as a worker killed mid-launch leaves
    partial = Instance(id=str(uuid.uuid4()), team_id="team-p", challenge_id=challenge.id, runtime="docker")
    network = containers._instance_network(challenge, partial, worker)
    docker_client.containers.create(**containers._service_kwargs(challenge, partial, worker, "db", db(), network))
    assert len(leftovers(docker_client, partial.id)) == 2
    assert containers.reconcile(worker.id, {kept.id}) == []
    assert leftovers(docker_client, partial.id) == []
    # one service of a kept instance dies: the instance is reported
    of(docker_client, kept, "db").kill()
    assert containers.reconcile(worker.id, {kept.id}) == [kept.id]


def test_a_missing_service_or_main_is_noticed(launch, docker_client):
    _, instance, worker, _ = launch({"db": db(), "cache": db()})
    assert containers.state(instance.id) == (True, None)
    of(docker_client, instance, "cache").remove(force=True)
    assert containers.state(instance.id) == (False, "service 'cache': the container is gone")
    assert containers.reconcile(worker.id, {instance.id}) == [instance.id]
    # main gone while the services run: reconcile reports the instance as well
    _, other, other_worker, _ = launch({"db": db()})
    of(docker_client, other, "main").remove(force=True)
    assert containers.reconcile(other_worker.id, {other.id}) == [other.id]


def test_instance_bridges_share_one_interface_prefix_for_the_firewall(launch, docker_client):
    _, instance, _, _ = launch({"db": db()})
    network = docker_client.networks.get(containers.instance_network_name(instance.id))
    interface = network.attrs["Options"]["com.docker.network.bridge.name"]
    assert interface == containers.bridge_interface(instance.id)
    assert interface.startswith("ctfh") and len(interface) == 15
    with open(f"/sys/class/net/{interface}/address"):  # the host really has that interface
        pass


def get_from_host(port, payload=b"GET / HTTP/1.0\r\n\r\n"):
    """What 127.0.0.1:port answers (the host side of a published port); "" when nothing answers yet."""
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(payload)
            conn.settimeout(2)
            while chunk := conn.recv(4096):
                chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks).decode("utf-8", "replace")


def answers(port, text, payload=b"GET / HTTP/1.0\r\n\r\n"):
    """Whether 127.0.0.1:port answers `text` within 10 s (a container just started listens a moment later)."""
    return wait_until(lambda: text in get_from_host(port, payload), timeout=10)


# main serves its own page on 8080 and 9000, and an echo on TCP 7000
MAIN_ENDPOINTS = {"command": ["/bin/sh", "-c", "httpd -p 9000 -h /www && (nc -ll -p 7000 -e /bin/cat &) "
                                               "&& exec httpd -f -p 8080 -h /www"]}


def test_exposed_ports_of_main_and_of_a_service_are_published_on_loopback_only(app, docker_client, db_image):
    challenge, instance, worker = make({"db": db(expose=[{"name": "dbadmin", "port": 8080, "protocol": "http"}])},
                                       MAIN_ENDPOINTS)
    challenge.expose = json.dumps([{"name": "api", "port": 9000, "protocol": "http"},
                                   {"name": "echo", "port": 7000, "protocol": "tcp"}])
    try:
        port, endpoints = containers.run(challenge, instance, worker)
        assert list(endpoints) == ["api", "echo", "dbadmin"]  # the challenge's order: main's, then each service's
        assert len({port, *endpoints.values()}) == 4
        assert answers(port, "hello from a ctfhost test instance")
        assert answers(endpoints["api"], "hello from a ctfhost test instance")
        assert answers(endpoints["dbadmin"], DB_CONTENT.strip())
        assert answers(endpoints["echo"], "ping", b"ping\n")
        main, database = of(docker_client, instance, "main"), of(docker_client, instance, "db")
        bound = {**main.attrs["HostConfig"]["PortBindings"], **{
            f"db {key}": value for key, value in database.attrs["HostConfig"]["PortBindings"].items()}}
        assert set(bound) == {"8080/tcp", "9000/tcp", "7000/tcp", "db 8080/tcp"}
        assert {binding[0]["HostIp"] for binding in bound.values()} == {"127.0.0.1"}
    finally:
        containers.remove(instance.id)


def test_one_container_challenge_publishes_its_exposed_ports_on_the_shared_bridge(app, docker_client, test_image):
    challenge, instance, worker = make({}, MAIN_ENDPOINTS)
    challenge.expose = json.dumps([{"name": "api", "port": 9000, "protocol": "http"}])
    try:
        port, endpoints = containers.run(challenge, instance, worker)
        main = of(docker_client, instance, "main")
        assert set(main.attrs["NetworkSettings"]["Networks"]) == {containers.network_name()}
        assert answers(endpoints["api"], "hello from a ctfhost test instance")
        assert endpoints["api"] != port
    finally:
        containers.remove(instance.id)
