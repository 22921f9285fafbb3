"""What one control plane costs as the fleet grows: sub-benchmarks selected by flags, each printing its figures.

    .venv/bin/python bench/scale.py                      # every sub-benchmark
    .venv/bin/python bench/scale.py --traefik-config     # the Traefik configuration at 0 / 1,000 / 10,000 instances

Each sub-benchmark is a function `bench_<name>(args, fleet)` listed in
SUB_BENCHMARKS with its flag; `Fleet` is a fresh SQLite database and Redis
DB with instances inserted directly (fake backends), shared by them. It
prints figures and asserts nothing about time; everything runs on 127.0.0.1.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid

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

from launch_latency import fmt, percentile  # noqa: E402

from ctfhost.app import create_app  # noqa: E402
from ctfhost.db import database  # noqa: E402
from ctfhost.models import Instance, utcnow  # noqa: E402
from ctfhost.plugins import get_plugins  # noqa: E402
from ctfhost.redis_client import redis_connection  # noqa: E402
from ctfhost.services.routing import routed_instances  # noqa: E402
from ctfhost.testing import app_server, free_port, http, machine_description, upgrade_database, wait_until  # noqa: E402

import ctfhost_plugin_traefik  # noqa: E402
from ctfhost_plugin_traefik import config_cache, dynamic  # noqa: E402
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
    def row(number, now, status="running"):
        hostname = f"{number:012x}.bench-{number % 50}.localhost"
        return {
            "id": str(uuid.UUID(int=number)), "team_id": f"team-{number}", "challenge_id": f"bench-{number % 50}",
            "runtime": "fake", "status": status, "hostname": hostname, "endpoint": f"http://{hostname}",
            "backend": f"http://127.0.0.1:{10000 + number % 50000}", "created_at": now, "started_at": now,
            "expires_at": now,
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
            return dynamic.dumps(dynamic.render(routed_instances(), options(), default_certificate()))

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


def bench_traefik_config(args, fleet):
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


SUB_BENCHMARKS = [
    # (flag, function, help)
    ("--traefik-config", bench_traefik_config, "the Traefik configuration: render after one change, serve unchanged, size, memory"),
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
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    print(machine_description())
    print(f"ctfhost_plugin_traefik from {os.path.dirname(ctfhost_plugin_traefik.__file__)}")
    chosen = [(flag, run) for flag, run, _ in SUB_BENCHMARKS if getattr(args, flag[2:].replace("-", "_"))]
    fleet = Fleet(args.redis_url)
    try:
        for flag, run in chosen or [(flag, run) for flag, run, _ in SUB_BENCHMARKS]:
            started = time.monotonic()
            run(args, fleet)
            print(f"({flag[2:]} took {time.monotonic() - started:.0f} s)")
    finally:
        fleet.close()


if __name__ == "__main__":
    main()
