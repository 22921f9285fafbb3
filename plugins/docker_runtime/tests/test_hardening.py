"""Container hardening on the real engine, shown from inside instance containers (see docs/security.md).

Every container here is started the way a worker starts it, through
``containers.run``, and every check runs inside it (``docker exec``) or reads
what the engine reports about it. Each test also shows the check can fail:
a control that passes only because the protection is in place.
"""

import contextlib
import json
import socket
import subprocess
import threading
import time
import uuid
from urllib.parse import urlparse

import pytest

from ctfhost.testing import Challenge, Instance, Worker
from ctfhost_plugin_docker.testing import TEST_IMAGE
from ctfhost_plugin_docker import containers

pytestmark = pytest.mark.docker

MIB = 1024 * 1024
CAP_NET_BIND_SERVICE = 1 << 10
NOBODY = "65534"


def make(options=None):
    challenge = Challenge(
        id="web-hardening", name="h", runtime="docker", image=TEST_IMAGE, port=8080,
        cpu_count=1, memory_mb=512, extra_config=json.dumps(options or {}),
    )
    instance = Instance(
        id=str(uuid.uuid4()), team_id=f"team-{uuid.uuid4().hex[:6]}", challenge_id=challenge.id, runtime="docker"
    )
    worker = Worker(id=f"test-hardening-{uuid.uuid4().hex[:6]}", address="127.0.0.1", runtime="docker")
    return challenge, instance, worker


@pytest.fixture
def launch(app, docker_client, test_image):
    """start(options) runs an instance container through the runtime and returns it; all are removed after."""
    started = []

    def start(options=None):
        challenge, instance, worker = make(options)
        started.append(instance.id)
        containers.run(challenge, instance, worker)
        return docker_client.containers.get(containers.container_name(instance.id))

    yield start
    for instance_id in started:
        containers.remove(instance_id)


def sh(container, script, user="", seconds=60):
    """Run a shell script in the container, killed after `seconds`; returns (exit code, output)."""
    result = container.exec_run(["/bin/timeout", "-s", "KILL", str(seconds), "/bin/sh", "-c", script], user=user)
    return result.exit_code, result.output.decode("utf-8", "replace")


def status_fields(text):
    """/proc/<pid>/status as a dict of stripped values."""
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines()) if value}


def cgroup_file(container, v1_path, v2_name):
    """A cgroup file of the container's own cgroup, read from inside (cgroup v1 or v2); None if absent."""
    code, out = sh(container, f"cat /sys/fs/cgroup/{v1_path} 2>/dev/null || cat /sys/fs/cgroup/{v2_name}")
    return out if code == 0 else None


def keyed(text):
    """'key value' lines (pids.events, memory.events, memory.oom_control) as a dict of ints."""
    return {key: int(value) for key, value in (line.split() for line in (text or "").splitlines() if line.strip())}


def probe(container, address, port, payload):
    """What a TCP server at address:port answers a payload sent from inside the container ('' if none)."""
    printable = payload.replace("\r", "\\r").replace("\n", "\\n")
    _, out = sh(container, f"printf '{printable}' | nc -w 2 {address} {port} 2>&1", seconds=10)
    return out


def http_get(container, address, port):
    return probe(container, address, port, "GET / HTTP/1.0\r\n\r\n")


def network(container):
    return container.attrs["NetworkSettings"]["Networks"][containers.network_name()]


def published_port(container):
    return int(container.ports["8080/tcp"][0]["HostPort"])


# -- 1. privileges ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options, expected_caps",
    [({}, 0), ({"cap_add": ["NET_BIND_SERVICE"]}, CAP_NET_BIND_SERVICE)],
    ids=["no-cap_add", "cap_add-NET_BIND_SERVICE"],
)
def test_no_new_privileges_and_only_the_added_capabilities(launch, options, expected_caps):
    container = launch(options)
    # the challenge's own process (pid 1) and a process started later both
    for pid in ("1", "self"):
        code, out = sh(container, f"cat /proc/{pid}/status")
        assert code == 0, out
        fields = status_fields(out)
        assert fields["NoNewPrivs"] == "1", (pid, fields)
        assert fields["Seccomp"] == "2", (pid, fields)  # filtered by the engine's seccomp profile
        for name in ("CapEff", "CapPrm", "CapBnd"):
            assert int(fields[name], 16) == expected_caps, (pid, name, fields[name])
        assert int(fields["CapInh"], 16) == int(fields["CapAmb"], 16) == 0, (pid, fields)
    # root in the container, without CAP_CHOWN (Docker grants it by default), cannot give a file away
    code, out = sh(container, "touch /tmp/mine && chown 65534 /tmp/mine")
    assert code != 0 and "Operation not permitted" in out, out


def test_setuid_root_binary_gives_no_privileges(launch):
    # the challenge runs as nobody; NET_BIND_SERVICE is in the bounding set, so a setuid-root
    # binary would put it in the permitted set (and uid 0 in the saved uid) without no-new-privileges
    container = launch({"user": NOBODY, "cap_add": ["NET_BIND_SERVICE"]})
    plant = "cp /bin/busybox /tmp/busybox && chmod 4755 /tmp/busybox && ls -ln /tmp/busybox"
    code, out = sh(container, plant, user="0")  # root in the container owns what it copies
    assert code == 0, out
    mode, _, owner = out.split()[:3]
    assert mode == "-rwsr-xr-x" and owner == "0", out  # a setuid-root binary, runnable by anyone
    result = container.exec_run(["/tmp/busybox", "cat", "/proc/self/status"], user=NOBODY)
    assert result.exit_code == 0, result.output
    fields = status_fields(result.output.decode())
    # real, effective, saved and filesystem uid: the setuid bit was ignored
    assert fields["Uid"].split() == [NOBODY] * 4, fields["Uid"]
    assert fields["NoNewPrivs"] == "1"
    assert int(fields["CapPrm"], 16) == int(fields["CapEff"], 16) == 0, fields


# -- 2. processes ---------------------------------------------------------------

# A fork bomb bounded in size and time: a binary tree of shells 10 levels deep,
# each sleeping 8 s before it exits. Without a PID limit it reaches 2047
# processes (shells and sleeps), then all end; with the limit, forks fail.
FORK_BOMB = "f(){ if [ $1 -gt 0 ]; then f $(($1-1)) & f $(($1-1)) & fi; sleep 8; }; f 9"


def pids_current(container):
    return container.stats(stream=False, one_shot=True).get("pids_stats", {}).get("current", 0)


def test_fork_bomb_stops_at_the_pid_limit_and_the_host_survives(app, launch, docker_client, monkeypatch):
    limit = 64
    monkeypatch.setitem(app.config, "CTFHOST_DOCKER_PIDS_LIMIT", str(limit))
    container = launch()
    assert container.attrs["HostConfig"]["PidsLimit"] == limit
    container.exec_run(["/bin/timeout", "-s", "KILL", "30", "/bin/sh", "-c", FORK_BOMB], detach=True)
    seen = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        seen.append(pids_current(container))
        # the host still starts processes and the engine still answers, while the bomb runs
        assert subprocess.run(["true"], timeout=10).returncode == 0
        assert docker_client.ping()
        time.sleep(0.2)
    assert max(seen) <= limit, seen
    assert max(seen) >= limit // 2, f"the fork bomb never pressed against the limit: {seen}"
    # once the bomb's processes have ended, the container's own counters say forks were refused
    deadline = time.monotonic() + 30
    while pids_current(container) > 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    events = keyed(cgroup_file(container, "pids/pids.events", "pids.events"))
    assert events.get("max", 0) > 0, events
    peak = cgroup_file(container, "pids/pids.peak", "pids.peak")
    if peak is not None:  # pids.peak needs Linux 6.1 or later
        assert int(peak) <= limit
    # the engine removes the container, and the runtime sees it gone
    containers.remove(container.labels["ctfhost.instance"])
    assert containers.state(container.labels["ctfhost.instance"]) == (False, "the container is gone")


# -- 3. memory --------------------------------------------------------------------


def test_memory_limit_kills_the_process_that_exceeds_it(launch):
    container = launch()
    host = container.attrs["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 512 * MIB  # no swap on top of the limit
    # tail keeps a "line" with no newline in memory: 300 MiB fits in 512, 700 MiB does not
    code, out = sh(container, "head -c 300m /dev/zero | tail >/dev/null; echo small=$?; "
                              "head -c 700m /dev/zero | tail >/dev/null; echo big=$?")
    assert "small=0" in out, out
    assert "big=137" in out, out  # SIGKILL, from the memory cgroup's OOM killer
    peak = cgroup_file(container, "memory/memory.max_usage_in_bytes", "memory.peak")
    assert peak is not None and int(peak) <= 512 * MIB, peak
    oom = keyed(cgroup_file(container, "memory/memory.oom_control", "memory.events"))
    assert oom.get("oom_kill", 0) >= 1, oom
    swap = cgroup_file(container, "memory/memory.memsw.limit_in_bytes", "memory.swap.max")
    if swap is not None:  # v1 shows it only with swap accounting on
        assert int(swap) in (0, 512 * MIB), swap  # v2: no swap; v1: memory plus swap = memory
    container.reload()
    assert container.status == "running"  # only the offending process was killed


# -- 4. instances against each other ---------------------------------------------


def test_instances_cannot_connect_to_each_other_in_either_direction(launch):
    # a second server on 9000: isolation is not about the challenge port
    command = ["/bin/sh", "-c", "httpd -p 9000 -h /www; exec httpd -f -p 8080 -h /www"]
    a, b = launch({"command": command}), launch({"command": command})
    for container in (a, b):
        for port in (8080, 9000):
            assert "200 OK" in http_get(container, "127.0.0.1", port)  # both servers are up
    for source, target in ((a, b), (b, a)):
        for port in (8080, 9000):
            assert "200 OK" not in http_get(source, network(target)["IPAddress"], port)
        # nor through the host, where the target's port is published (on 127.0.0.1)
        assert "200 OK" not in http_get(source, network(source)["Gateway"], published_port(target))


def test_limit_publishing_on_an_address_containers_reach_exposes_instances(app, launch, docker_client, monkeypatch):
    """Not a guarantee: shows why CTFHOST_DOCKER_PUBLISH_IP must stay off addresses containers reach."""
    gateway = docker_client.networks.get(containers.ensure_network()).attrs["IPAM"]["Config"][0]["Gateway"]
    monkeypatch.setitem(app.config, "CTFHOST_DOCKER_PUBLISH_IP", gateway)
    target, source = launch(), launch()
    # docker-proxy listens on the host address; the bridge's isolation does not apply to it
    assert "200 OK" in http_get(source, gateway, published_port(target))


# -- 5. the control plane ------------------------------------------------------------


def host_addresses():
    """The host's own IPv4 addresses (besides 127.0.0.0/8): a container reaches every one of them."""
    with open("/proc/net/fib_trie") as handle:
        lines = handle.read().splitlines()
    local = {previous.split()[-1] for previous, line in zip(lines, lines[1:]) if "/32 host LOCAL" in line}
    return sorted(address for address in local if not address.startswith("127."))


@contextlib.contextmanager
def listener(address, answer=b"ctfhost-probe-ok\n"):
    """A TCP server on address that answers every connection (at most 20, for at most 60 s); yields its port."""
    server = socket.socket()
    server.bind((address, 0))
    server.listen()
    server.settimeout(60)

    def serve():
        with contextlib.suppress(OSError):
            for _ in range(20):
                connection, _ = server.accept()
                with connection:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        thread.join(5)


def test_instance_cannot_reach_the_api_or_redis(app, launch, live_server, redis_server):
    redis_url = urlparse(app.config["CTFHOST_REDIS_URL"])
    redis_port = redis_url.port or 6379
    # both answer on the host
    assert live_server.call("GET", "/health", key=None)[0] == 200
    assert redis_server.ping()
    container = launch()
    gateway = network(container)["Gateway"]
    # control: a server bound to the bridge address is reached from the container, so the probe
    # works, and an API or Redis bound there (or on 0.0.0.0) would be reached too
    with listener(gateway) as port:
        assert "ctfhost-probe-ok" in probe(container, gateway, port, "hello\n")
    addresses = sorted({gateway, *host_addresses()}) + ["127.0.0.1"]  # 127.0.0.1: the container's own
    for address in addresses:
        answer = http_get(container, address, live_server.port)
        assert "HTTP/" not in answer, (address, answer)
        answer = probe(container, address, redis_port, "PING\r\nQUIT\r\n")
        assert "PONG" not in answer and "+OK" not in answer, (address, answer)
