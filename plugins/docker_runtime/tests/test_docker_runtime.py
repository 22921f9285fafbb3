"""The docker runtime against the real engine: options, hardening, isolation, cleanup."""

import json
import uuid

import pytest

import ctfhost_plugin_docker
from ctfhost.testing import Challenge, Instance, Worker
from ctfhost.plugin_api import LaunchError
from ctfhost_plugin_docker import containers


def make(challenge_options=None, image=None, worker_id=None):
    challenge = Challenge(
        id="web-docker", name="d", runtime="docker", image=image or "ctfhost-test/web:latest", port=8080,
        cpu_count=1, memory_mb=512, extra_config=json.dumps(challenge_options or {}),
    )
    instance = Instance(id=str(uuid.uuid4()), team_id="team-x", challenge_id=challenge.id, runtime="docker")
    worker = Worker(id=worker_id or f"test-docker-{uuid.uuid4().hex[:6]}", address="127.0.0.1", runtime="docker")
    return challenge, instance, worker


@pytest.fixture
def engine(app, docker_client, test_image):
    created = []
    yield created
    for instance_id in created:
        containers.remove(instance_id)


def started(engine, challenge, instance, worker):
    engine.append(instance.id)
    return containers.run(challenge, instance, worker)[0]


# -- options -------------------------------------------------------------------


def options_body(options):
    return {"id": "web-opts", "name": "o", "runtime": "docker", "image": "x", "port": 80,
            "extra_config": json.dumps(options)}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"privileged": True}, "unknown key 'privileged'"),
        ({"env": {"A": 1}}, "env must be"),
        ({"env": ["A=1"]}, "env must be"),
        ({"environment": {"A": None}}, "environment must be"),
        ({"env": {"A": "1"}, "environment": {"B": "2"}}, "not both"),
        ({"command": 5}, "command must be"),
        ({"command": []}, "command must be"),
        ({"cap_add": ["NET_ADMIN", "FLY"]}, "unknown capabilities: FLY"),
        ({"cap_add": "NET_ADMIN"}, "cap_add must be"),
        ({"read_only": "yes"}, "read_only must be true or false"),
        ({"tmpfs": {"tmp": "size=1m"}}, "tmpfs must be"),
        ({"user": ""}, "user must be a non-empty string"),
    ],
)
def test_bad_options_are_named(api, options, message):
    response = api.post("/api/v1/challenges", json=options_body(options))
    assert response.status_code == 422, response.json
    errors = response.json["errors"]["json"]["extra_config"]
    assert any(message in error for error in errors), errors


def test_good_options_pass(api):
    options = {
        "env": {"MODE": "hard"}, "command": ["/bin/httpd", "-f"], "cap_add": ["cap_net_bind_service"],
        "read_only": True, "tmpfs": {"/tmp": "size=8m"}, "user": "65534", "working_dir": "/www",
        "readiness_timeout": 10,
    }
    response = api.post("/api/v1/challenges", json=options_body(options))
    assert response.status_code == 201, response.json


def test_capabilities_beyond_dockers_defaults_are_refused(api, app):
    body = {"id": "web-caps", "name": "c", "runtime": "docker", "image": "x", "port": 80,
            "extra_config": json.dumps({"cap_add": ["SYS_ADMIN", "NET_BIND_SERVICE"]})}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422
    (message,) = response.json["errors"]["json"]["extra_config"]
    assert "SYS_ADMIN" in message and "NET_BIND_SERVICE" not in message
    assert "CTFHOST_DOCKER_ALLOWED_CAPABILITIES" in message
    app.config["CTFHOST_DOCKER_ALLOWED_CAPABILITIES"] = "SYS_ADMIN, NET_BIND_SERVICE"
    try:
        assert api.post("/api/v1/challenges", json=body).status_code == 201
    finally:
        app.config.pop("CTFHOST_DOCKER_ALLOWED_CAPABILITIES")


def test_net_raw_is_opt_in(api, app):
    # docs/security.md: never NET_RAW on a shared host, so it is not granted unless the operator names it
    body = {"id": "web-raw", "name": "r", "runtime": "docker", "image": "x", "port": 80,
            "extra_config": json.dumps({"cap_add": ["NET_RAW"]})}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422
    (message,) = response.json["errors"]["json"]["extra_config"]
    assert "NET_RAW" in message and "CTFHOST_DOCKER_ALLOWED_CAPABILITIES" in message
    app.config["CTFHOST_DOCKER_ALLOWED_CAPABILITIES"] = "NET_RAW"
    try:
        assert api.post("/api/v1/challenges", json=body).status_code == 201
    finally:
        app.config.pop("CTFHOST_DOCKER_ALLOWED_CAPABILITIES")


def test_unknown_option_is_422_at_challenge_creation(api):
    body = {"id": "web-opts", "name": "o", "runtime": "docker", "image": "x", "port": 80,
            "extra_config": json.dumps({"volumes": ["/:/host"]})}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422
    (message,) = response.json["errors"]["json"]["extra_config"]
    assert "unknown key 'volumes'" in message


# -- containers on the real engine ----------------------------------------------


def test_container_is_hardened_and_labelled(engine, docker_client):
    challenge, instance, worker = make({"env": {"MODE": "hard"}, "cap_add": ["NET_BIND_SERVICE"]})
    port = started(engine, challenge, instance, worker)
    container = docker_client.containers.get(containers.container_name(instance.id))
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["NET_BIND_SERVICE"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 256
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024 * 1024
    assert host["NanoCpus"] == 10**9
    assert host["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert int(container.ports["8080/tcp"][0]["HostPort"]) == port
    assert "MODE=hard" in container.attrs["Config"]["Env"]
    labels = container.labels
    assert labels["ctfhost.instance"] == instance.id
    assert labels["ctfhost.team"] == "team-x"
    assert labels["ctfhost.challenge"] == "web-docker"
    assert labels["ctfhost.worker"] == worker.id
    # inside: no capabilities beyond the one added back, no-new-privileges on
    status = container.exec_run(["/bin/sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"]).output.decode()
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapEff"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE only


def test_the_instance_flag_is_in_the_environment(engine, docker_client):
    challenge, instance, worker = make({"env": {"FLAG": "static", "MODE": "x"}})
    instance.flag = "flag{0123456789abcdef}"
    started(engine, challenge, instance, worker)
    container = docker_client.containers.get(containers.container_name(instance.id))
    env = container.attrs["Config"]["Env"]
    assert "FLAG=flag{0123456789abcdef}" in env and "FLAG=static" not in env and "MODE=x" in env


def test_environment_is_an_alias_of_env(engine, docker_client):
    challenge, instance, worker = make({"environment": {"LEVEL": "3"}})
    started(engine, challenge, instance, worker)
    container = docker_client.containers.get(containers.container_name(instance.id))
    assert "LEVEL=3" in container.attrs["Config"]["Env"]


def test_read_only_root_gets_a_writable_tmp(engine, docker_client):
    challenge, instance, worker = make({"read_only": True})
    started(engine, challenge, instance, worker)
    container = docker_client.containers.get(containers.container_name(instance.id))
    assert container.exec_run(["/bin/touch", "/www/x"]).exit_code != 0
    assert container.exec_run(["/bin/touch", "/tmp/x"]).exit_code == 0


def test_instances_cannot_reach_each_other(engine, docker_client):
    first = make()
    second = make()
    started(engine, *first)
    started(engine, *second)
    a = docker_client.containers.get(containers.container_name(first[1].id))
    b = docker_client.containers.get(containers.container_name(second[1].id))
    a_ip = a.attrs["NetworkSettings"]["Networks"][containers.network_name()]["IPAddress"]
    assert a_ip
    def get(container, address):
        command = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {address} 8080'
        return container.exec_run(["/bin/sh", "-c", command]).output.decode()

    # a reaches its own server; b cannot open a connection to a (icc=false on the bridge)
    assert "200 OK" in get(a, "127.0.0.1")
    assert "200 OK" not in get(b, a_ip)


def test_missing_image_pull_fails_with_clear_error(engine):
    challenge, instance, worker = make(image="ctfhost-test/absent:404")
    with pytest.raises(LaunchError, match="not on this host and pulling it failed"):
        started(engine, challenge, instance, worker)


def test_never_pull_policy_fails_at_once_without_pulling(engine, app, docker_client, monkeypatch):
    attempts = []
    monkeypatch.setattr(docker_client.images, "pull", lambda *a, **k: attempts.append(a))
    monkeypatch.setattr(containers, "client", lambda: docker_client)
    app.config["CTFHOST_DOCKER_PULL_POLICY"] = "never"
    try:
        with pytest.raises(LaunchError, match="never pulls"):
            started(engine, *make(image="127.0.0.1:5999/absent/web:1"))
        # an image the engine holds still runs
        challenge, instance, worker = make()
        assert started(engine, challenge, instance, worker)
    finally:
        app.config["CTFHOST_DOCKER_PULL_POLICY"] = ""
    assert attempts == []


def test_unknown_pull_policy_is_a_clear_launch_error(engine, app):
    app.config["CTFHOST_DOCKER_PULL_POLICY"] = "sometimes"
    try:
        with pytest.raises(LaunchError, match="CTFHOST_DOCKER_PULL_POLICY='sometimes'"):
            started(engine, *make(image="127.0.0.1:5999/absent/web:1"))
    finally:
        app.config["CTFHOST_DOCKER_PULL_POLICY"] = ""


def test_state_reports_exit_code_and_output(engine):
    challenge, instance, worker = make({"command": ["/bin/sh", "-c", "echo oops; sleep 0.3; exit 4"]})
    started(engine, challenge, instance, worker)
    import time

    deadline = time.monotonic() + 10
    while containers.state(instance.id)[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    alive, reason = containers.state(instance.id)
    assert not alive
    assert "exited with code 4" in reason and "oops" in reason


def test_relaunch_replaces_leftover_and_remove_is_idempotent(engine, docker_client):
    challenge, instance, worker = make()
    first_port = started(engine, challenge, instance, worker)
    second_port = started(engine, challenge, instance, worker)  # a retried job
    found = docker_client.containers.list(all=True, filters={"label": f"ctfhost.instance={instance.id}"})
    assert len(found) == 1 and first_port and second_port
    containers.remove(instance.id)
    containers.remove(instance.id)
    assert containers.state(instance.id) == (False, "the container is gone")


def test_reconcile_removes_orphans_and_reports_missing(engine, docker_client):
    worker_id = f"test-reconcile-{uuid.uuid4().hex[:6]}"
    kept = make(worker_id=worker_id)
    orphan = make(worker_id=worker_id)
    other_worker = make()
    for triple in (kept, orphan, other_worker):
        started(engine, *triple)
    missing_id = str(uuid.uuid4())
    missing = containers.reconcile(worker_id, {kept[1].id, missing_id})
    assert missing == [missing_id]
    assert containers.state(kept[1].id)[0] is True
    assert containers.state(orphan[1].id) == (False, "the container is gone")
    assert containers.state(other_worker[1].id)[0] is True  # another worker's container is left alone


def test_check_runtime_passes_when_the_engine_answers(app, docker_client):
    worker = Worker(id="probe", address="127.0.0.1", runtime="docker")
    assert ctfhost_plugin_docker.check_runtime("docker", worker) is None
    assert containers.engine_problem() is None
