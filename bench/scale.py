"""What one control plane costs as the fleet grows: sub-benchmarks selected by flags, each printing its figures.

    .venv/bin/python bench/scale.py                      # every sub-benchmark (~35 minutes on 2 cores)
    .venv/bin/python bench/scale.py --traefik-config     # the Traefik configuration at 0 / 1,000 / 10,000 instances
    .venv/bin/python bench/scale.py --reachable          # launch-to-reachable at 0 / 2,000 / 10,000 routed instances
    .venv/bin/python bench/scale.py --expiry             # one sweep at 10,000, and how late 200 instances go
    .venv/bin/python bench/scale.py --flood              # the API alone: 300 launches at once, health meanwhile
    .venv/bin/python bench/scale.py --rush               # 300 launches at once against the Docker floor
    .venv/bin/python bench/scale.py --live               # 1,000 live instances: cost each, sample, destroy

Each sub-benchmark is a function `bench_<name>(args)` listed in
SUB_BENCHMARKS with its flag. `Fleet` is a fresh SQLite database and Redis
DB with instances inserted directly (fake backends); `real_stack` is
launch_latency's Bench (gunicorn, a real Traefik, a docker worker agent).
It prints figures and asserts nothing about time; everything runs on
127.0.0.1, and everything it starts is removed on exit.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def _plugin_override(argv):
    """--traefik-plugin-from DIR, read before anything imports the plugin."""
    for index, arg in enumerate(argv):
        if arg == "--traefik-plugin-from" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--traefik-plugin-from="):
            return arg.split("=", 1)[1]
    return None


PLUGIN_FROM = _plugin_override(sys.argv[1:])
if PLUGIN_FROM:
    # before the editable installs' finders: this checkout's plugin wins, in this process and in gunicorn
    sys.path.insert(0, os.path.abspath(PLUGIN_FROM))
    os.environ["PYTHONPATH"] = os.path.abspath(PLUGIN_FROM) + os.pathsep + os.environ.get("PYTHONPATH", "")

from launch_latency import CONTENT, Bench, CpuMeter, fmt, percentile, processes, say, summarize  # noqa: E402
from launch_latency import parse_args as latency_args  # noqa: E402

from ctfhost.app import create_app  # noqa: E402
from ctfhost.db import database  # noqa: E402
from ctfhost.db import is_postgresql  # noqa: E402
from ctfhost.models import ACTIVE, Instance, Worker, utcnow  # noqa: E402
from ctfhost.services.placement import choose_worker  # noqa: E402
from ctfhost.worker.agent import Agent  # noqa: E402
from ctfhost.plugins import get_plugins  # noqa: E402
from ctfhost.redis_client import redis_connection  # noqa: E402
from ctfhost.services.routing import routed_endpoints, routed_instances  # noqa: E402
from ctfhost.testing import (  # noqa: E402
    app_server, fetch_via_proxy, free_port, http, machine_description, open_access_link, upgrade_database, wait_until,
)

import ctfhost_plugin_traefik  # noqa: E402
from ctfhost_plugin_traefik import config_cache, dynamic, static  # noqa: E402
from ctfhost_plugin_traefik.default_certificate import default_certificate  # noqa: E402
from ctfhost_plugin_traefik.settings import options  # noqa: E402

API_KEY = "bench-api-key"
BASE_URL = "http://127.0.0.1:5000/"  # the address the in-process Traefik "polls": part of the render options
INSERT_BATCH = 500


def stats(values_ms):
    return f"p50 {fmt(percentile(values_ms, 50), 2):>8}  p90 {fmt(percentile(values_ms, 90), 2):>8}  n {len(values_ms)}"


class Fleet:
    """A fresh SQLite database and Redis DB, the app in this process, and instances inserted directly."""

    def __init__(self, redis_url):
        self.directory = tempfile.mkdtemp(prefix="ctfhost-scale-")
        self.env = dict(os.environ)
        self.env.update({
            "CTFHOST_DATABASE_URL": f"sqlite:///{self.directory}/ctfhost.sqlite3",
            "CTFHOST_REDIS_URL": redis_url,
            "CTFHOST_API_KEY": API_KEY,
            "CTFHOST_BASE_DOMAIN": "localhost",
            "CTFHOST_LOG_LEVEL": "WARNING",
        })
        os.environ.update(self.env)
        upgrade_database(self.env)
        self.app = create_app()
        self.redis = redis_connection(self.app)
        self.redis.flushdb()
        self.client = self.app.test_client()
        self.size = 0  # instances inserted: numbered 1..size
        self.extra = 0  # instances the benchmarks add and end beyond those

    def context(self):
        return self.app.test_request_context(base_url=BASE_URL)

    def grow(self, size):
        """Insert active instances until `size` are routed."""
        now = utcnow()
        with self.app.app_context(), database.connection_context():
            for start in range(self.size + 1, size + 1, INSERT_BATCH):
                rows = [self.row(number, now) for number in range(start, min(start + INSERT_BATCH, size + 1))]
                with database.atomic():
                    Instance.insert_many(rows).execute()
        self.size = max(self.size, size)
        with self.app.app_context():
            # rows changed straight in the database: every process renders the whole fleet again
            config_cache.invalidate()

    @staticmethod
    def row(number, now, status="running", expires_at=None):
        # 12 hex digits spread like a launch's random ones: Traefik shards split the fleet by the first
        prefix = hashlib.sha1(str(number).encode()).hexdigest()[:12]
        hostname = f"{prefix}.bench-{number % 50}.localhost"
        return {
            "id": str(uuid.UUID(int=number)), "team_id": f"team-{number}", "challenge_id": f"bench-{number % 50}",
            "runtime": "fake", "status": status, "hostname": hostname, "endpoint": f"http://{hostname}",
            "backend": f"http://127.0.0.1:{10000 + number % 50000}", "created_at": now, "started_at": now,
            "expires_at": expires_at or now,
        }

    def get(self, path):
        response = self.client.get(path, base_url=BASE_URL, headers={"X-API-Key": API_KEY})
        assert response.status_code == 200, response.status_code
        return response.data

    def get_config(self):
        return self.get("/api/v1/traefik/config")

    def route(self, instance_id, action):
        """What the launch job (publish) or an ending (withdraw) does: the row changes, then the route hook runs."""
        with self.app.app_context(), database.connection_context():
            if action == "publish":
                Instance.insert(self.row(int(uuid.UUID(instance_id)), utcnow())).execute()
            else:
                Instance.update(status="destroyed").where(Instance.id == instance_id).execute()
            get_plugins(self.app).route(Instance.get_by_id(instance_id), action)

    def full_render(self):
        with self.context(), database.connection_context():
            return dynamic.dumps(dynamic.render(routed_instances(), options(), default_certificate(), routed_endpoints()))

    def close(self):
        try:
            self.redis.flushdb()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


# -- the Traefik configuration ---------------------------------------------------


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def gunicorn_worker(master_pid):
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as handle:
        children = handle.read().split()
    return int(children[0]) if children else None


def measure_config(fleet, args, size, server):
    """One fleet size: render after one change, serve unchanged, size, byte-identity, and the app server's RSS."""
    fleet.grow(size)
    started = time.perf_counter()
    first = fleet.get_config()  # this process renders the whole fleet once, as after a start
    cold_ms = (time.perf_counter() - started) * 1000
    announce, render = [], []
    for sample in range(args.changes):
        # publish a new instance, then withdraw it: the fleet stays at `size`
        fleet.extra += sample % 2 == 0
        instance_id = str(uuid.UUID(int=10**9 + fleet.extra))
        started = time.perf_counter()
        fleet.route(instance_id, "publish" if sample % 2 == 0 else "withdraw")
        announced = time.perf_counter()
        fleet.get_config()
        done = time.perf_counter()
        announce.append((announced - started) * 1000)
        render.append((done - announced) * 1000)
    body = fleet.get_config()
    unchanged = []
    deadline = time.monotonic() + args.time_limit
    for _ in range(args.polls):
        started = time.perf_counter()
        again = fleet.get_config()
        unchanged.append((time.perf_counter() - started) * 1000)
        if again != body or time.monotonic() > deadline:
            break
    identical = again == body and body == fleet.full_render()
    floor = []
    for _ in range(min(args.polls, 100)):
        started = time.perf_counter()
        fleet.get("/api/v1/health")
        floor.append((time.perf_counter() - started) * 1000)
    print(f"  {size:>6} instances  body {len(first) / 1e6:6.2f} MB   first GET (full render) {cold_ms:8.1f} ms")
    print(f"    render after one change: {stats(render)} ms   (row change + route hook: {stats(announce)} ms)")
    print(f"    serve unchanged:         {stats(unchanged)} ms   byte-identical to a full render: {'yes' if identical else 'NO'}")
    print(f"    (floor: GET /api/v1/health in the same client: {stats(floor)} ms)")
    if server is not None:
        # the same fleet through a real app server: warm it up as Traefik would, then read its worker's RSS
        url = f"{server['url']}/api/v1/traefik/config"
        for sample in range(4):
            fleet.extra += 1
            fleet.route(str(uuid.UUID(int=10**9 + fleet.extra)), "publish")
            status, _ = http("GET", url, headers={"X-API-Key": API_KEY}, timeout=60)
            fleet.route(str(uuid.UUID(int=10**9 + fleet.extra)), "withdraw")
            status, _ = http("GET", url, headers={"X-API-Key": API_KEY}, timeout=60)
        rss = rss_kb(gunicorn_worker(server["service"].pid))
        server["rss"].setdefault("base", rss)
        print(f"    gunicorn worker RSS {rss / 1024:7.1f} MB, {(rss - server['rss']['base']) / 1024:+7.1f} MB against the empty fleet")


def bench_traefik_config(args):
    fleet = Fleet(args.redis_url)
    try:
        _traefik_config(args, fleet)
    finally:
        fleet.close()


def _traefik_config(args, fleet):
    print(f"Traefik configuration ({'plugin from ' + PLUGIN_FROM if PLUGIN_FROM else 'this checkout'}); "
          f"{args.changes} changes and up to {args.polls} unchanged polls per size, times in the API process")
    server = None
    if not args.no_gunicorn:
        port = free_port()
        log_path = os.path.join(fleet.directory, "gunicorn.log")
        service = app_server(fleet.env, port, log_path, workers=1, threads=2).start()
        server = {"service": service, "url": f"http://127.0.0.1:{port}", "rss": {}}
        try:
            wait_until(lambda: http("GET", f"{server['url']}/health")[0] == 200, 30, what="gunicorn")
        except TimeoutError:
            service.stop()
            raise
    try:
        for size in args.sizes:
            measure_config(fleet, args, size, server)
    finally:
        if server is not None:
            server["service"].stop()


# -- the real stack: gunicorn API, Traefik, one docker worker agent -------------------------


def real_stack(args, **options):
    """launch_latency's Bench (its defaults, then `options`), started; stopped again if starting fails."""
    settings = latency_args([])
    settings.redis_url = args.stack_redis_url
    settings.concurrency = args.concurrency
    settings.keep_logs = args.keep_logs
    settings.launch_timeout = args.launch_timeout
    settings.traefik_shards = args.traefik_shards
    for name, value in options.items():
        setattr(settings, name, value)
    stack = Bench(settings)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def traefik_routers(stack):
    """How many HTTP routers the stack's Traefik (all its shards) has loaded (their APIs' overview)."""
    total = 0
    for api in stack.traefik_apis():
        status, body = http("GET", f"{api}/api/overview", timeout=10)
        if status != 200:
            return None
        total += body["http"]["routers"]["total"]
    return total


def group_rss_kb(pgid, command=None):
    """The RSS of every process in a process group (a Service and its children; only `command`'s), in kB."""
    total = 0
    for pid, comm, fields in processes():
        if int(fields[2]) == pgid and (not command or comm == command):
            try:
                total += rss_kb(pid) or 0
            except OSError:  # gone meanwhile
                continue
    return total


def insert_routed(stack, start, end):
    """Instances start..end-1 straight into the stack's database: routed to fake backends, expiring in a day."""
    now = utcnow()
    later = now + datetime.timedelta(days=1)
    with stack.app.app_context(), database.connection_context():
        for first in range(start, end, INSERT_BATCH):
            rows = [Fleet.row(n, now, expires_at=later) for n in range(first, min(first + INSERT_BATCH, end))]
            with database.atomic():
                Instance.insert_many(rows).execute()
        config_cache.invalidate()  # rows changed behind the route hook's back: every process renders again


def wait_routers(stack, at_least, timeout):
    """Seconds until Traefik has at least `at_least` HTTP routers loaded."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (traefik_routers(stack) or 0) >= at_least:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise TimeoutError(f"Traefik did not load {at_least} routers within {timeout:g} s (has {traefik_routers(stack)})")


def bench_reachable(args):
    """Launch-to-reachable (POST -> first 200 through Traefik) with 0, 2,000 and 10,000 routed instances."""
    stack = real_stack(args, forward_auth=args.forward_auth, traefik_extra=traefik_tuning(args))
    try:
        print(f"launch-to-reachable through Traefik: {args.reachable_runs} sequential launches per fleet size "
              f"(+1 warm-up), each deleted before the next; Traefik poll {args.traefik_poll}, "
              f"throttle {args.traefik_throttle}, {args.traefik_shards} shard(s)"
              f"{' behind a front Traefik' if args.traefik_shards > 1 else ''}"
              + ("; forward-auth on: each instance router has its access middleware, polled with the team's cookie"
                 if args.forward_auth else "; forward-auth off (the route's liveness is measured)"))
        base = traefik_routers(stack)
        size = 0
        rows = []
        for target in args.reachable_sizes:
            loaded = None
            if target > size:
                insert_routed(stack, size + 1, target + 1)
                size = target
                loaded = wait_routers(stack, base + size, 300)
            stack.ctfhost_once(f"warm-{target}")
            results = []
            for run in range(args.reachable_runs):
                results.append(stack.ctfhost_once(f"reach-{target}-{run}"))
            errors = [r["error"] for r in results if r.get("error")]
            reach = summarize([r.get("reachable_ms") for r in results if not r.get("error")])
            phases = stack.worker_phases({r["instance"]: r["t0_wall"] for r in results if r.get("instance")})
            traefik_pid = next(s.pid for s in stack.services if s.name == "traefik")
            rows.append((target, reach, phases, loaded, group_rss_kb(traefik_pid, "traefik"), errors))
            print(f"  {target:>6} routed: POST -> 200 p50 {fmt(reach['p50'])} ms  p95 {fmt(reach['p95'])} ms  "
                  f"max {fmt(reach['max'])} ms; until Traefik has the router p50 {fmt(phases['routed']['p50'])} ms "
                  f"p95 {fmt(phases['routed']['p95'])} ms; errors {len(errors)}"
                  + (f"; Traefik loaded the {target} in {loaded:.1f} s" if loaded is not None else ""))
            for error in errors[:3]:
                print(f"      e.g. {error[:160]}")
            print("      each, in order (ms): " + " ".join(fmt(r.get("reachable_ms")) for r in results))
        print()
        print(f"  {'routed':>7} {'POST->200 p50':>14} {'p95':>8} {'max':>8} {'router loaded p50':>18} {'p95':>8} "
              f"{'docker p50':>11} {'Traefik RSS':>12} {'errors':>7}")
        for target, reach, phases, loaded, traefik_rss, errors in rows:
            print(f"  {target:>7} {fmt(reach['p50']):>11} ms {fmt(reach['p95']):>5} ms {fmt(reach['max']):>5} ms "
                  f"{fmt(phases['routed']['p50']):>15} ms {fmt(phases['routed']['p95']):>5} ms "
                  f"{fmt(phases['launch']['p50']):>8} ms {traefik_rss / 1024:>9.0f} MB {len(errors):>7}")
        empty = rows[0][1]["p50"]
        last = rows[-1]
        if empty is not None and last[1]["p95"] is not None:
            print(f"  p95 at {last[0]} minus p50 on the empty fleet: {(last[1]['p95'] - empty) / 1000:+.2f} s")
    finally:
        stack.stop()


def traefik_tuning(args):
    return {
        "providers": {"providersThrottleDuration": args.traefik_throttle, "http": {"pollInterval": args.traefik_poll}},
        "log": {"level": args.traefik_log_level},
    }


class HealthProbe:
    """GET /api/v1/health every `interval` s while a phase runs, each in its own thread: the API's latency under load.

    Sent on a fixed clock (not one after the other), so a slow period is
    sampled as often as a quick one; at most 32 in flight, timeout 10 s. The
    probe runs in a process of its own, so the bench's hundreds of launching
    threads (and their GIL) are not part of the latency it reports.
    """

    def __init__(self, api, interval=0.05):
        self.api, self.interval = api, interval
        self.latencies, self.sent_at, self.failures = [], [], 0
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), PROBE_CHILD, self.api, str(self.interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.process.stdout.readline()  # "probing": the clock starts now
        return self

    def __exit__(self, *exc):
        out, _ = self.process.communicate(input="stop\n", timeout=60)  # the child stops when its stdin says so
        found = json.loads(out)
        self.latencies, self.sent_at, self.failures = found["latencies"], found["sent_at"], found["failures"]

    def within(self, seconds):
        """The latencies of the requests sent in the first `seconds` of the probe."""
        return [latency for latency, sent in zip(self.latencies, self.sent_at) if sent <= seconds]


PROBE_CHILD = "--health-probe-child"


def health_probe_child(api, interval):
    """HealthProbe's process: probe until a line arrives on stdin, then print what it measured as JSON."""
    found = {"latencies": [], "sent_at": [], "failures": 0}
    lock = threading.Lock()
    pool = concurrent.futures.ThreadPoolExecutor(32)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()

    def probe(sent):
        started = time.perf_counter()
        status, _ = http("GET", f"{api}/health", timeout=10)
        with lock:
            if status == 200:
                found["latencies"].append((time.perf_counter() - started) * 1000)
                found["sent_at"].append(sent)
            else:
                found["failures"] += 1

    began = time.perf_counter()
    print("probing", flush=True)
    while not stop.wait(interval):
        pool.submit(probe, time.perf_counter() - began)
    pool.shutdown(wait=True)
    print(json.dumps(found))


def arrival_order(stack, team_prefix):
    """How far each launch's start (running) strays from its arrival (created) order: |rank difference|."""
    with stack.app.app_context(), database.connection_context():
        rows = list(Instance.select(Instance.id, Instance.created_at, Instance.started_at)
                    .where(Instance.team_id.startswith(team_prefix)))
    rows = [row for row in rows if row.started_at is not None]
    arrived = {row.id: rank for rank, row in enumerate(sorted(rows, key=lambda r: (r.created_at, r.id)))}
    served = sorted(rows, key=lambda r: (r.started_at, r.id))
    return [abs(rank - arrived[row.id]) for rank, row in enumerate(served)]


def bench_rush(args):
    """The launch rush: N launches requested at once by N teams, against Docker starting the same N containers."""
    n = args.rush_launches
    stack = real_stack(args, burst=n, burst_timeout=900.0, floor_parallelism=args.concurrency,
                       max_instances=n + 20, traefik_extra=traefik_tuning(args))
    try:
        print(f"the launch rush: {n} launches requested at once by {n} teams (worker concurrency {args.concurrency}); "
              f"the floor: the docker SDK creating and starting the same {n} containers, {args.concurrency} at a time; "
              f"GET /api/v1/health every 50 ms meanwhile")
        floor = stack.floor_burst(n, 0)
        with HealthProbe(stack.api) as idle:
            time.sleep(3)
        with HealthProbe(stack.api) as health:
            rush = stack.ctfhost_burst(n, 0)
        stray = arrival_order(stack, f"burst-{stack.run_id}-0-")
        for name, result in (("floor", floor), ("ctfhost", rush)):
            errors = result["errors"]
            print(f"  {name:8s} all {result['n']} answered after {fmt(result['all_answered_s'], 1)} s "
                  f"({result['answered']}/{result['n']}); each answered p50 {fmt(result['reachable_ms']['p50'])} ms "
                  f"p95 {fmt(result['reachable_ms']['p95'])} ms; errors {errors['total']}; teardown {fmt(result['teardown_s'], 1)} s")
            for example in errors["examples"][:3]:
                print(f"      e.g. {example[:160]}")
        calls = rush["launch_call_ms"]
        print(f"  POST /instances answered: p50 {fmt(calls['p50'])} ms  p95 {fmt(calls['p95'])} ms  max {fmt(calls['max'])} ms")
        print(f"  ratio ctfhost / floor, time until all answered: "
              f"{fmt(ratio_of(rush['all_answered_s'], floor['all_answered_s']), 2)}")
        order = summarize(stray)
        print(f"  arrival order: started {fmt(order['p50'])} / {fmt(order['p95'])} / {fmt(order['max'])} places "
              f"(p50 / p95 / max) from the order the API accepted them; "
              f"{sum(1 for d in stray if d > args.concurrency)} of {len(stray)} more than {args.concurrency} "
              f"(the worker's concurrency) places away")
        print(f"  GET /api/v1/health during the rush: {stats_p95(health.latencies)} ms, failures {health.failures} "
              f"(idle before: {stats_p95(idle.latencies)} ms)")
        flood = (calls["max"] or 0) / 1000
        print(f"    of which sent while launch requests were in flight (the first {flood:.1f} s): "
              f"{stats_p95(health.within(flood))} ms")
        print(f"  CPU s until all answered: ctfhost {cpu_text(rush.get('cpu_s'))}")
        print(f"                            floor   {cpu_text(floor.get('cpu_s'))}")
    finally:
        stack.stop()


def ratio_of(a, b):
    return a / b if a is not None and b else None


def stats_p95(values_ms):
    fig = summarize(values_ms)
    return f"p50 {fmt(fig['p50'], 1)}  p95 {fmt(fig['p95'], 1)}  max {fmt(fig['max'], 1)}  n {fig['n']}"


def cpu_text(cpu):
    if not cpu:
        return "-"
    return "  ".join(f"{key} {cpu.get(key, 0.0):.1f}" for key in ("app", "worker", "traefik", "docker", "bench", "others"))


def mem_available_kb():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def footprint(stack, redis_client):
    """RSS (kB) of the API, the worker agent with its RQ processes, Traefik and Redis; and the machine's."""
    pids = {service.name: service.pid for service in stack.services}
    info = redis_client.info()
    return {
        "api": group_rss_kb(pids["app"]), "worker": group_rss_kb(pids["worker"]),
        "traefik": group_rss_kb(pids["traefik"], "traefik"), "redis": rss_kb(info["process_id"]) or 0,
        "machine": -mem_available_kb(),
    }


def redis_cpu_s(redis_client):
    info = redis_client.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def bench_live(args):
    """N live busybox instances at once: launch, sample through Traefik with forward-auth, cost each, destroy."""
    n = args.live_instances
    stack = real_stack(args, forward_auth=True, burst=16, max_instances=n + 20, traefik_extra=traefik_tuning(args))
    redis_client = stack.redis
    ids = []
    try:
        print(f"{n} live instances of the busybox image (forward-auth on, worker concurrency {args.concurrency})")
        base_routers = traefik_routers(stack)
        time.sleep(2)
        before = footprint(stack, redis_client)
        cpu_before, redis_before, started = stack.cpu.snapshot(), redis_cpu_s(redis_client), time.perf_counter()

        def launch(k):
            return stack.launch(f"live-{stack.run_id}-{k}", timeout=120)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(launch, range(n)))
        ids = [body["id"] for status, body in answers if status == 201]
        refused = [f"{status}: {body}" for status, body in answers if status != 201]

        def settled():
            with stack.app.app_context(), database.connection_context():
                return not Instance.select().where(Instance.id.in_(ids), Instance.status == "pending").exists()

        wait_until(settled, args.live_timeout, interval=1.0, what=f"{n} launches to settle")
        launched_s = time.perf_counter() - started
        with stack.app.app_context(), database.connection_context():
            running = [row.id for row in Instance.select(Instance.id).where(Instance.id.in_(ids), Instance.status == "running")]
        launch_cpu = CpuMeter.delta(cpu_before, stack.cpu.snapshot())
        launch_redis = redis_cpu_s(redis_client) - redis_before
        print(f"  launched: {len(running)} of {n} running after {launched_s:.0f} s; refused {len(refused)}; "
              f"containers {len(stack.container_ids(f'ctfhost.worker={stack.worker_id}'))}; "
              f"Traefik routers {traefik_routers(stack)} (base {base_routers})")
        for example in refused[:3]:
            print(f"      e.g. {example[:160]}")
        print(f"  CPU s to launch them: {cpu_text(launch_cpu)}  redis {launch_redis:.1f}")

        # idle with the fleet live: what each live instance costs the control plane
        cpu_before, redis_before = stack.cpu.snapshot(), redis_cpu_s(redis_client)
        time.sleep(args.live_idle)
        idle_cpu = CpuMeter.delta(cpu_before, stack.cpu.snapshot())
        idle_redis = redis_cpu_s(redis_client) - redis_before
        after = footprint(stack, redis_client)
        live = max(1, len(running))
        print(f"  per live instance, with {len(running)} live ({args.live_idle:g} s idle window):")
        for name in ("api", "worker", "traefik", "redis"):
            cpu = idle_redis if name == "redis" else idle_cpu.get("app" if name == "api" else name, 0.0)
            print(f"    {name:8s} memory {(after[name] - before[name]) / live:8.1f} kB  "
                  f"({before[name] / 1024:.0f} -> {after[name] / 1024:.0f} MB)   "
                  f"CPU {cpu / args.live_idle / live * 100 * 1000:7.2f} m%  ({cpu / args.live_idle * 100:.1f} % of a core in all)")
        print(f"    machine  memory {(after['machine'] - before['machine']) / live:8.1f} kB  (Docker, its shims and "
              f"proxies, and the containers themselves included)   docker CPU "
              f"{idle_cpu.get('docker', 0.0) / args.live_idle * 100:.1f} % of a core in all")

        # a sample through Traefik, as its team and as a stranger
        sample = random.Random(7).sample(running, min(args.live_sample, len(running)))
        ok, strangers_kept_out, problems = 0, 0, []
        for instance_id in sample:
            status, link = http("POST", f"{stack.api}/instances/{instance_id}/access", {}, stack.headers)
            if status != 200:
                problems.append(f"access link: {status} {link}")
                continue
            code, text = open_access_link(stack.web_port, link["url"])
            ok += code == 200 and text == CONTENT
            if code != 200 or text != CONTENT:
                problems.append(f"{instance_id}: {code} {text[:80]!r}")
            hostname = urllib.parse.urlsplit(link["url"]).hostname
            code, _ = fetch_via_proxy(stack.web_port, hostname)
            strangers_kept_out += code in (401, 403)
        print(f"  sample of {len(sample)} through Traefik: {ok} answered their team with the content; "
              f"{strangers_kept_out} refused a request without the team's cookie (401/403)")
        for problem in problems[:3]:
            print(f"      e.g. {problem[:160]}")

        # destroy them all, and check that nothing is left
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(stack.delete, ids))

        def emptied():
            with stack.app.app_context(), database.connection_context():
                active = Instance.select().where(Instance.id.in_(ids), Instance.status.in_(list(ACTIVE))).count()
            return active == 0 and not stack.container_ids(f"ctfhost.worker={stack.worker_id}")

        wait_until(emptied, args.live_timeout, interval=1.0, what=f"{n} instances to be destroyed")
        gone_s = time.perf_counter() - started
        wait_routers_at_most(stack, base_routers, 60)
        with stack.app.app_context(), database.connection_context():
            active = Instance.select().where(Instance.status.in_(list(ACTIVE))).count()
        print(f"  destroyed: DELETE answered {sorted(set(codes))}; all containers gone after {gone_s:.0f} s; left: "
              f"{len(stack.container_ids(f'ctfhost.worker={stack.worker_id}'))} containers, {active} active rows, "
              f"{traefik_routers(stack) - base_routers} routers beyond the base {base_routers}")
    finally:
        stack.stop()


def wait_routers_at_most(stack, most, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (traefik_routers(stack) or 0) > most:
        time.sleep(0.2)


# -- expiry ---------------------------------------------------------------------------------


def figures(values, unit="ms", digits=1):
    fig = summarize(values)
    return (f"p50 {fmt(fig['p50'], digits)} {unit}  p95 {fmt(fig['p95'], digits)} {unit}  "
            f"max {fmt(fig['max'], digits)} {unit}  (n {fig['n']})")


def bench_env(args, directory, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTFHOST_")}
    env.update(
        CTFHOST_DATABASE_URL=args.database_url or f"sqlite:///{directory}/ctfhost.sqlite3",
        CTFHOST_REDIS_URL=args.expiry_redis_url,
        CTFHOST_API_KEY=API_KEY,
        CTFHOST_BASE_DOMAIN="localhost",
        CTFHOST_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def open_app(env):
    """`db upgrade`, then the app in this process (settings from `env`)."""
    upgrade_database({**env, "CTFHOST_LOG_LEVEL": "WARNING"})
    os.environ.update({k: v for k, v in env.items() if k.startswith("CTFHOST_")})
    app = create_app()
    redis_connection(app).flushdb()
    return app


# -- (a) one sweep at 10,000 active instances --------------------------------------


def instance_row(number, worker_id, now, status, expires_at):
    hostname = f"{number:012x}.bench-{number % 50}.localhost"
    return {
        "id": str(uuid.UUID(int=number)), "team_id": f"team-{number}", "challenge_id": f"bench-{number % 50}",
        "runtime": "docker", "status": status, "hostname": hostname, "endpoint": f"http://{hostname}",
        "backend": f"http://127.0.0.1:{10000 + number % 50000}", "worker_id": worker_id, "created_at": now,
        "started_at": now, "expires_at": expires_at, "ended_at": None if status in ACTIVE else now,
    }


def due_query(now):
    """The due-instance query of the sweep (services.instances.expire_due), for its plan."""
    return (Instance.select().where(Instance.status.in_(list(ACTIVE)), Instance.expires_at <= now)
            .order_by(Instance.expires_at).limit(100))


def query_plan(query):
    sql, params = query.sql()
    if is_postgresql():
        return [row[0] for row in database.execute_sql("EXPLAIN " + sql, params)]
    return [row[-1] for row in database.execute_sql("EXPLAIN QUERY PLAN " + sql, params)]


def expiry_sweep(args):
    directory = tempfile.mkdtemp(prefix="ctfhost-expiry-")
    try:
        app = open_app(bench_env(args, directory))
        worker_id = f"bench-expiry-{secrets.token_hex(3)}"
        now = utcnow()
        later = now + datetime.timedelta(hours=1)
        with app.app_context(), database.connection_context():
            Instance.delete().execute()
            Worker.create(id=worker_id, address="127.0.0.1", runtime="docker", max_instances=100000,
                          last_heartbeat_at=now, registered_at=now)
            rows = [instance_row(n, worker_id, now, "running", later + datetime.timedelta(seconds=n % 3600))
                    for n in range(1, args.active + 1)]
            rows += [instance_row(n, worker_id, now, "expired", now - datetime.timedelta(seconds=n % 86400))
                     for n in range(args.active + 1, args.active + args.history + 1)]
            for start in range(0, len(rows), INSERT_BATCH):
                with database.atomic():
                    Instance.insert_many(rows[start:start + INSERT_BATCH]).execute()
            if is_postgresql():
                database.execute_sql("ANALYZE instance")
            say(f"(a) one sweep: {args.active} active instances, {args.history} ended ones, "
                f"{'PostgreSQL' if is_postgresql() else 'SQLite'}, p50 over {args.runs} runs")
            say("    due-instance query plan: " + " | ".join(query_plan(due_query(utcnow()))))
        agent = Agent(app, worker_id=worker_id, address="127.0.0.1", runtimes=["docker"])
        active_ids = [str(uuid.UUID(int=n)) for n in range(1, args.active + 1)]
        rng = random.Random(10)

        def heartbeat():
            Worker.update(last_heartbeat_at=utcnow()).where(Worker.id == worker_id).execute()

        def timed_sweep():
            started = time.perf_counter()
            agent.sweep()
            return (time.perf_counter() - started) * 1000.0

        idle, busy, ended = [], [], []
        for _ in range(args.runs):
            with app.app_context(), database.connection_context():
                heartbeat()
            idle.append(timed_sweep())
        for _ in range(args.runs):
            chosen = rng.sample(active_ids, args.due)
            with app.app_context(), database.connection_context():
                heartbeat()
                Instance.update(expires_at=utcnow() - datetime.timedelta(seconds=1)).where(
                    Instance.id.in_(chosen)).execute()
            busy.append(timed_sweep())
            with app.app_context(), database.connection_context():
                ended.append(Instance.select().where(Instance.id.in_(chosen), Instance.status == "expired").count())
                # back to running, as they were: every run sweeps the same fleet
                Instance.update(status="running", ended_at=None, error=None, expires_at=later).where(
                    Instance.id.in_(chosen)).execute()
            redis_connection(app).flushdb()  # the destroy jobs nobody runs
        say(f"    nothing due:  {figures(idle, digits=2)}")
        say(f"    {args.due} due:      {figures(busy, digits=1)}  (expired per run: {sorted(set(ended))})")
        placing = []
        with app.app_context(), database.connection_context():
            heartbeat()
            for _ in range(args.runs):
                started = time.perf_counter()
                with database.atomic():
                    choose_worker("docker")
                placing.append((time.perf_counter() - started) * 1000.0)
        say(f"    placement of one launch (choose_worker, {args.active} active on its worker): {figures(placing, digits=2)}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def to_epoch(naive_utc):
    return naive_utc.replace(tzinfo=datetime.timezone.utc).timestamp()


def containers_by_instance(stack):
    """instance id -> container id of the stack's worker's containers (one list call)."""
    rows = stack.docker.api.containers(all=True, filters={"label": f"ctfhost.worker={stack.worker_id}"})
    return {(row.get("Labels") or {}).get("ctfhost.instance"): row["Id"] for row in rows}


def expiry_lateness(args):
    stack = real_stack(args, burst=16, max_instances=args.expiring + 20, traefik_extra=traefik_tuning(args))
    agent = next(service for service in stack.services if service.name == "worker")
    try:
        say(f"(b) expiry lateness: {args.expiring} busybox instances on the real stack, one agent "
            f"(concurrency {args.concurrency}), expiring over {args.spread:g} s")
        launched = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda k: stack.launch(f"expiry-{stack.run_id}-{k}", timeout=60), range(args.expiring)))
        ids = [body["id"] for status, body in answers if status == 201]
        if len(ids) < len(answers):
            say(f"    {len(answers) - len(ids)} launch(es) refused: {[a for a in answers if a[0] != 201][:3]}")

        def settled():
            with stack.app.app_context(), database.connection_context():
                return not Instance.select().where(Instance.id.in_(ids), Instance.status == "pending").exists()

        agent.wait_for(settled, args.live_timeout, "the launches", interval=0.5)
        with stack.app.app_context(), database.connection_context():
            running = [i.id for i in Instance.select(Instance.id).where(Instance.id.in_(ids), Instance.status == "running")]
        say(f"    {len(running)} of {len(ids)} running after {time.monotonic() - launched:.0f} s; "
            f"{len(containers_by_instance(stack))} containers")
        listing = []
        for _ in range(5):
            started = time.perf_counter()
            containers_by_instance(stack)  # the listing reconcile makes of a worker's containers
            listing.append((time.perf_counter() - started) * 1000.0)
        say(f"    one Docker listing of the worker's {len(running)} containers: {figures(listing, digits=1)}")

        # expires_at spread evenly over `spread` seconds, starting `lead` seconds from now
        first = utcnow() + datetime.timedelta(seconds=args.lead)
        step = args.spread / max(1, len(running) - 1)
        expiry = {instance_id: first + datetime.timedelta(seconds=n * step) for n, instance_id in enumerate(running)}
        with stack.app.app_context(), database.connection_context(), database.atomic():
            for instance_id, when in expiry.items():
                Instance.update(expires_at=when).where(Instance.id == instance_id).execute()

        gone = {}
        deadline = time.time() + args.lead + args.spread + args.grace
        while len(gone) < len(running) and time.time() < deadline and agent.alive():
            present = containers_by_instance(stack)
            seen_at = time.time()
            for instance_id in running:
                if instance_id not in gone and instance_id not in present:
                    gone[instance_id] = seen_at
            time.sleep(args.poll)
        with stack.app.app_context(), database.connection_context():
            rows = {i.id: i for i in Instance.select().where(Instance.id.in_(running))}
        lateness = [gone[i] - to_epoch(expiry[i]) for i in running if i in gone]
        swept = [to_epoch(rows[i].ended_at) - to_epoch(expiry[i]) for i in running
                 if rows[i].ended_at is not None and rows[i].status == "expired"]
        early = sum(1 for value in lateness if value < 0)
        say(f"    expires_at -> container gone: {figures(lateness, 's', 2)}"
            + (f"; {early} gone before expiry (!)" if early else ""))
        say(f"    expires_at -> ended (sweep):  {figures(swept, 's', 2)}")
        say(f"    not gone within {args.grace:g} s of the last expiry: {len(running) - len(gone)}; "
            f"statuses: {sorted({r.status for r in rows.values()})}")
    finally:
        stack.stop()


def bench_expiry(args):
    """Expiry at 10,000 active instances: one sweep, and how late 200 real instances go."""
    if args.expiry_only != "lateness":
        expiry_sweep(args)
    if args.expiry_only != "sweep":
        expiry_lateness(args)

def bench_flood(args):
    """The API alone under a flood of launches: health while N POSTs arrive at once, with and without the launch lane."""
    n = args.rush_launches
    print(f"the API alone: {n} POST /api/v1/instances at once (a registered worker, no agent: nothing starts), "
          f"GET /api/v1/health every 50 ms from another process; gunicorn 2 workers x 8 threads, SQLite")
    for worker_class in ("ctfhost.serving.LaneWorker", "gthread"):
        directory = tempfile.mkdtemp(prefix="ctfhost-bench-flood-")
        env = dict(os.environ, CTFHOST_DATABASE_URL=f"sqlite:///{directory}/ctfhost.sqlite3",
                   CTFHOST_REDIS_URL=args.stack_redis_url, CTFHOST_API_KEY=API_KEY, CTFHOST_BASE_DOMAIN="localhost",
                   CTFHOST_LOG_LEVEL="WARNING", CTFHOST_MAX_INSTANCES_PER_TEAM="3", CTFHOST_LAUNCH_COOLDOWN_SECONDS="10")
        redis.Redis.from_url(args.stack_redis_url).flushdb()
        upgrade_database(env)
        port = free_port()
        api = f"http://127.0.0.1:{port}/api/v1"
        server = app_server(env, port, os.path.join(directory, "app.log"), worker_class=worker_class).start()
        headers = {"x-api-key": API_KEY}
        try:
            server.wait_for(lambda: http("GET", f"{api}/health", timeout=2)[0] == 200, 60, "the API")
            http("POST", f"{api}/workers", {"id": "flood", "address": "127.0.0.1", "runtime": "docker",
                                            "max_instances": 10000}, headers)
            http("POST", f"{api}/challenges", {"id": "flood", "name": "Flood", "image": "busybox:latest", "port": 80,
                                               "runtime": "docker"}, headers)
            barrier = threading.Barrier(n + 1)
            calls, errors = [], []

            def launch(team):
                barrier.wait()
                started = time.perf_counter()
                status, body = http("POST", f"{api}/instances", {"team_id": team, "challenge_id": "flood"}, headers,
                                    timeout=120)
                calls.append((time.perf_counter() - started) * 1000)
                if status != 201:
                    errors.append(f"{status}: {body}")

            threads = [threading.Thread(target=launch, args=(team,)) for team in range(1, n + 1)]
            for thread in threads:
                thread.start()
            with HealthProbe(api) as health:
                began = time.perf_counter()
                barrier.wait()
                for thread in threads:
                    thread.join()
                flood = time.perf_counter() - began
                time.sleep(1)
            print(f"  {worker_class:28s} all {n} POSTs answered after {flood:.2f} s, errors {len(errors)}; "
                  f"POST {stats_p95(calls)} ms")
            print(f"  {'':28s} health while they were in flight: {stats_p95(health.within(flood))} ms, "
                  f"failures {health.failures}")
        finally:
            server.stop()
            shutil.rmtree(directory, ignore_errors=True)


SUB_BENCHMARKS = [
    # (flag, function, help)
    ("--traefik-config", bench_traefik_config, "the Traefik configuration: render after one change, serve unchanged, size, memory"),
    ("--reachable", bench_reachable, "launch-to-reachable through a real Traefik with 0 / 2,000 / 10,000 routed instances"),
    ("--flood", bench_flood, "the API alone: N launches at once, health meanwhile, with and without the launch lane"),
    ("--rush", bench_rush, "the launch rush: 300 launches at once against the Docker floor, health and arrival order meanwhile"),
    ("--expiry", bench_expiry, "expiry: one sweep at 10,000 active instances, and how late 200 real instances go"),
    ("--live", bench_live, "1,000 live busybox instances: launch, sample through Traefik, cost per instance, destroy"),
]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for flag, _, help_text in SUB_BENCHMARKS:
        parser.add_argument(flag, action="store_true", help=help_text + " (no flag: every sub-benchmark)")
    parser.add_argument("--sizes", default="0,1000,10000", type=lambda text: [int(n) for n in text.split(",")],
                        help="fleet sizes, growing")
    parser.add_argument("--changes", type=int, default=40, help="route changes measured per size (half publish, half withdraw)")
    parser.add_argument("--polls", type=int, default=200, help="unchanged polls measured per size")
    parser.add_argument("--time-limit", type=float, default=30.0, help="bound on the unchanged polls of one size, s")
    parser.add_argument("--no-gunicorn", action="store_true", help="skip the memory figure from a real app server")
    parser.add_argument("--traefik-plugin-from", metavar="DIR",
                        help="import ctfhost_plugin_traefik from DIR (e.g. an older checkout's plugins/traefik), for before figures")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11", help="a Redis DB of the bench's own (flushed)")
    real = parser.add_argument_group("the real stack (--reachable, --rush, --live, --expiry's lateness)")
    real.add_argument("--stack-redis-url", default="redis://127.0.0.1:6379/9", help="the stack's own Redis DB (flushed)")
    real.add_argument("--concurrency", type=int, default=8, help="RQ processes of the worker agent")
    real.add_argument("--launch-timeout", type=float, default=60.0, help="bound on one sequential launch, s")
    real.add_argument("--keep-logs", action="store_true", help="keep the app, worker and Traefik logs")
    real.add_argument("--reachable-sizes", default="0,2000,10000", type=lambda text: [int(n) for n in text.split(",")],
                      help="routed instances, growing")
    real.add_argument("--reachable-runs", type=int, default=10, help="launches measured per size")
    real.add_argument("--forward-auth", action="store_true",
                      help="--reachable with forward-auth on: the access middleware on every router, the team's cookie")
    real.add_argument("--rush-launches", type=int, default=300, help="launches requested at once in --rush")
    real.add_argument("--live-instances", type=int, default=1000, help="live instances in --live")
    real.add_argument("--live-sample", type=int, default=50, help="of them, fetched through Traefik as their team")
    real.add_argument("--live-idle", type=float, default=30.0, help="idle window with the fleet live, for CPU, s")
    real.add_argument("--live-timeout", type=float, default=900.0, help="bound on launching or destroying them all, s")
    expiry = parser.add_argument_group("--expiry")
    expiry.add_argument("--expiry-only", choices=("sweep", "lateness"), help="run only (a) or only (b)")
    expiry.add_argument("--active", type=int, default=10000, help="(a) active instances inserted")
    expiry.add_argument("--history", type=int, default=10000, help="(a) ended instances inserted")
    expiry.add_argument("--due", type=int, default=200, help="(a) instances due in a busy sweep")
    expiry.add_argument("--runs", type=int, default=5, help="(a) runs of each sweep")
    expiry.add_argument("--database-url", help="(a) a database of the bench's own (default: a fresh SQLite file)")
    expiry.add_argument("--expiry-redis-url", default="redis://127.0.0.1:6379/12", help="(a) its Redis DB (flushed)")
    expiry.add_argument("--expiring", type=int, default=200, help="(b) instances launched and expired")
    expiry.add_argument("--spread", type=float, default=50.0, help="(b) their expiries spread over this many seconds")
    expiry.add_argument("--lead", type=float, default=5.0, help="(b) seconds from setting expiries to the first")
    expiry.add_argument("--grace", type=float, default=60.0, help="(b) bound on waiting after the last expiry, s")
    expiry.add_argument("--poll", type=float, default=0.2, help="(b) seconds between Docker listings")
    real.add_argument("--traefik-shards", type=int, default=1, choices=(1, 2, 4, 8, 16),
                      help="split the fleet across this many Traefiks behind a front (`traefik run --shards`)")
    real.add_argument("--traefik-log-level", default="INFO", help="Traefik's log.level (DEBUG shows each reload)")
    real.add_argument("--traefik-poll", default=static.DEFAULT_POLL_INTERVAL, help="Traefik's HTTP provider pollInterval")
    real.add_argument("--traefik-throttle", default=static.DEFAULT_THROTTLE, help="Traefik's providersThrottleDuration")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [PROBE_CHILD]:
        return health_probe_child(argv[1], float(argv[2]))
    args = parse_args(argv)
    print(machine_description())
    print(f"ctfhost_plugin_traefik from {os.path.dirname(ctfhost_plugin_traefik.__file__)}")
    chosen = [(flag, run) for flag, run, _ in SUB_BENCHMARKS if getattr(args, flag[2:].replace("-", "_"))]
    for flag, run in chosen or [(flag, run) for flag, run, _ in SUB_BENCHMARKS]:
        started = time.monotonic()
        print()
        run(args)
        print(f"({flag[2:]} took {time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
