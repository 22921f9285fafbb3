"""The quick start: scripts/system.sh, and `make demo` / `make demo-stop` run for real on 127.0.0.1."""

import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from ctfhost.testing import port_open
from ctfhost_dev import demo as devdemo
from ctfhost.testing import need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_SH = os.path.join(ROOT, "scripts", "system.sh")


def fake_bin(directory, **scripts):
    """A PATH of its own: the few real tools system.sh needs, plus fake ones (name -> shell body)."""
    directory.mkdir(parents=True)
    for tool in ("bash", "id", "mkdir", "dirname", "ls", "grep", "seq", "sleep", "cat", "rm", "mv", "sort", "tail"):
        if tool in scripts:
            continue  # faked below (writing through a symlink would overwrite the real tool)
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if real:
            os.symlink(real, directory / tool)
    for name, body in scripts.items():
        path = directory / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return str(directory)


def run_system(path, *args, state_dir):
    env = {"PATH": path, "CTFHOST_STATE_DIR": str(state_dir), "HOME": str(state_dir)}
    return subprocess.run(["bash", SYSTEM_SH, *args], env=env, capture_output=True, text=True, timeout=60)


def test_deps_names_the_missing_packages_with_python3_venv(tmp_path):
    # python3 without ensurepip is Debian's python3 without python3-venv: `python3 -m venv` fails there
    calls = tmp_path / "apt-calls"
    path = fake_bin(
        tmp_path / "bin",
        python3='[ "$1 $2" = "-c import ensurepip" ] && exit 1; exit 0',
        **{"apt-get": f'echo "$*" >> {calls}'},
    )
    result = run_system(path, "deps", state_dir=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    # no dockerd or redis-server on this PATH; busybox and PostgreSQL are checked by absolute path
    (line,) = [line for line in result.stderr.splitlines() if "installing" in line]
    assert line.startswith("ctfhost: installing docker.io redis-server ")  # was "installingdocker.io"
    assert line.endswith(" python3-venv")
    packages = line.split("installing ", 1)[1]
    assert calls.read_text().splitlines() == ["update -qq", f"install -y -qq {packages}"]


@pytest.mark.skipif(not os.path.isdir("/usr/lib/postgresql"), reason="system.sh postgres looks up /usr/lib/postgresql")
def test_postgres_prints_only_the_url_on_stdout(tmp_path):
    # `make test-postgresql` takes the database URL from stdout: pg_ctlcluster's "Removed stale pid
    # file." went there too and every PostgreSQL test failed on a URL that began with it
    path = fake_bin(
        tmp_path / "bin",
        id="echo 0",
        pg_lsclusters='echo "16 main 5432 down postgres /var/lib/postgresql/16/main log"',
        pg_createcluster="echo creating cluster",
        pg_ctlcluster="echo Removed stale pid file.",
        su='case "$3" in *"SELECT 1"*) echo 1 ;; *) echo chatter ;; esac',
    )
    result = run_system(path, "postgres", state_dir=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "postgresql://ctfhost:ctfhost@127.0.0.1:5432/ctfhost_test\n"
    assert "Removed stale pid file." in result.stderr


def test_stop_started_stops_only_what_the_demo_started_and_says_what_it_leaves(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    # system.sh started Redis earlier (make test), the demo started nothing
    (state / "started").write_text("redis\n")
    record = tmp_path / "demo" / "system-started"
    shutdown = tmp_path / "shutdowns"
    path = fake_bin(
        tmp_path / "bin",  # Redis and dockerd answer: they run
        **{"redis-cli": f'[ "$3" = shutdown ] && echo redis >> {shutdown}; exit 0', "docker": "exit 0"},
    )
    result = run_system(path, "stop-started", str(record), state_dir=state)
    assert result.returncode == 0, result.stderr
    assert not shutdown.exists()
    assert "leaving redis-server on 127.0.0.1:6379 running" in result.stderr
    assert "leaving dockerd running" in result.stderr
    assert (state / "started").read_text() == "redis\n"

    # now the demo did start Redis: it is stopped, and no longer listed as started
    record.parent.mkdir()
    record.write_text("redis\n")
    path = fake_bin(
        tmp_path / "bin2",  # once stopped, neither answers
        **{"redis-cli": f'[ "$3" = shutdown ] && echo redis >> {shutdown}; exit 1', "docker": "exit 1"},
    )
    result = run_system(path, "stop-started", str(record), state_dir=state)
    assert result.returncode == 0, result.stderr
    assert shutdown.read_text() == "redis\n"
    assert "stopping redis-server" in result.stderr and "leaving" not in result.stderr
    assert (state / "started").read_text() == "" and not record.exists()


def containers_of_demo(docker_client):
    return docker_client.containers.list(all=True, filters={"label": f"ctfhost.worker={devdemo.DEMO_WORKER}"})


@pytest.mark.docker
@pytest.mark.redis
@pytest.mark.traefik
def test_demo_then_demo_stop_leaves_no_container_network_or_process(tmp_path, docker_client, redis_server):
    ports = (devdemo.APP_PORT, devdemo.WEB_PORT, devdemo.TRAEFIK_API_PORT)
    need(not any(port_open(port) for port in ports), f"ports {ports} on 127.0.0.1 are in use")
    need(not docker_client.networks.list(names=[devdemo.DEMO_NETWORK]), "a `make demo` is running here")
    database = tmp_path / "demo.sqlite3"
    env = dict(os.environ, CTFHOST_DATABASE_URL=f"sqlite:///{database}",
               CTFHOST_REDIS_URL=os.environ.get("CTFHOST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))

    def make(target):  # what `make demo` / `make demo-stop` run, in a directory of the test's own
        return subprocess.run([sys.executable, "-m", "ctfhost_dev", target], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    directory = str(tmp_path / devdemo.DEMO_DIR)
    try:
        started = make("demo")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "with the team's access link: HTTP 200" in started.stdout
        key_file = os.path.join(directory, "api-key")
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        with open(key_file) as handle:
            key = handle.read().strip()
        pids = devdemo._demo_pids(directory)
        cmdlines = {}
        for name, pid in pids.items():
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdlines[name] = handle.read().split(b"\0")
        assert b"--no-control-socket" in cmdlines["app"]  # not the user's shared ~/.gunicorn socket
        assert all(key.encode() not in b" ".join(argv) for argv in cmdlines.values())
        (container,) = containers_of_demo(docker_client)
        assert devdemo.DEMO_NETWORK in container.attrs["NetworkSettings"]["Networks"]
    finally:
        stopped = make("demo-stop")
    out = stopped.stdout
    assert stopped.returncode == 0, out + stopped.stderr
    assert "destroying 1 instance(s) through the API" in out
    assert "their containers are gone" in out
    assert not containers_of_demo(docker_client)
    assert not docker_client.networks.list(names=[devdemo.DEMO_NETWORK])
    for pid in pids.values():
        assert not devdemo._group_alive(pid)
    assert not any(port_open(port) for port in ports)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT status FROM instance").fetchall() == [("destroyed",)]
    assert "kept: the image" in out
