"""Expiry at scale: one agent's sweep at 10,000 active instances, and expiry lateness on a real Docker stack.

(a) --sweep: a fresh SQLite database (or --database-url) with 10,000 active
    instances and a history of ended ones inserted directly (fake backends),
    Redis DB --redis-url (flushed). Times one agent sweep (`Agent.sweep()`:
    lock, expiry, lost workers' instances) with nothing due and with 200 due,
    p50 over --runs runs, prints the query plan of the due-instance query,
    and times the placement of one launch (its count of active instances).
(b) --lateness: a real stack (gunicorn API, one `flask ctfhost worker
    --runtime docker` agent, Docker with the busybox test image built by
    ctfhost_plugin_docker.testing.build_image); launches 200 instances, sets
    their expires_at spread over --spread seconds (the same minute), and
    watches Docker: lateness = expires_at -> container gone, p50/p95/max, and
    expires_at -> ended in the database (the sweep's share of it).

No flag runs both (about 1 + 3 minutes on 2 cores). Everything runs on
127.0.0.1 with its own ports, Redis DB, database file, worker id, Docker
network and labels; every process and container it starts is removed on exit.
It prints figures and asserts nothing about time. For before figures, run the
same file from an older checkout (it imports ctfhost from the checkout that
holds it):

    .venv/bin/python bench/scale_expiry.py --sweep --runs 7
    .venv/bin/python bench/scale_expiry.py --lateness --instances 200 --spread 50
"""

import argparse
import concurrent.futures
import datetime
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

from launch_latency import fmt, say, summarize  # noqa: E402

from ctfhost.app import create_app  # noqa: E402
from ctfhost.db import database, is_postgresql  # noqa: E402
from ctfhost.models import ACTIVE, Instance, Worker, utcnow  # noqa: E402
from ctfhost.redis_client import redis_connection  # noqa: E402
from ctfhost.services.placement import choose_worker  # noqa: E402
from ctfhost.testing import app_server, free_port, http, machine_description, upgrade_database, worker_process  # noqa: E402
from ctfhost.worker.agent import Agent  # noqa: E402

API_KEY = "bench-expiry-key"
INSERT_BATCH = 500
CHALLENGE_ID = "bench-expiry"
CHALLENGE_PORT = 8080


def figures(values, unit="ms", digits=1):
    fig = summarize(values)
    return (f"p50 {fmt(fig['p50'], digits)} {unit}  p95 {fmt(fig['p95'], digits)} {unit}  "
            f"max {fmt(fig['max'], digits)} {unit}  (n {fig['n']})")


def bench_env(args, directory, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTFHOST_")}
    env.update(
        CTFHOST_DATABASE_URL=args.database_url or f"sqlite:///{directory}/ctfhost.sqlite3",
        CTFHOST_REDIS_URL=args.redis_url,
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


def bench_sweep(args):
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


# -- (b) expiry lateness on a real stack -------------------------------------------------


def to_epoch(naive_utc):
    return naive_utc.replace(tzinfo=datetime.timezone.utc).timestamp()


class Stack:
    """gunicorn API + one docker worker agent; everything it starts goes in stop()."""

    def __init__(self, args):
        self.args = args
        self.run_id = secrets.token_hex(4)
        self.worker_id = f"bench-expiry-{self.run_id}"
        self.network = f"ctfhost-bench-{self.run_id}"
        self.directory = tempfile.mkdtemp(prefix="ctfhost-expiry-")
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.headers = {"x-api-key": API_KEY}
        self.services = []
        self.docker = None
        self.app = None

    def log(self, name):
        return os.path.join(self.directory, f"{name}.log")

    def start(self):
        import docker

        from ctfhost_plugin_docker import containers
        from ctfhost_plugin_docker.testing import build_image

        self.docker = docker.from_env(timeout=120)
        self.docker.ping()
        build_image(self.args.image, port=CHALLENGE_PORT, client=self.docker)
        env = bench_env(self.args, self.directory, CTFHOST_DOCKER_NETWORK=self.network, CTFHOST_LOG_LEVEL="INFO",
                        CTFHOST_MAX_INSTANCES_PER_TEAM="1000", CTFHOST_LAUNCH_COOLDOWN_SECONDS="0")
        self.app = open_app(env)
        with self.app.app_context():
            containers.ensure_network()
        api = app_server(env, self.port, self.log("app"), workers=2, threads=8)
        self.services.append(api.start())
        api.wait_for(lambda: http("GET", f"{self.api}/health", timeout=2)[0] == 200, 60, "the API", interval=0.2)
        agent = worker_process(
            env, self.log("worker"), worker_id=self.worker_id, concurrency=self.args.concurrency,
            extra=["--runtime", "docker", "--max-instances", str(self.args.instances + 20)],
        )
        self.services.append(agent.start())

        def registered():
            status, body = http("GET", f"{self.api}/workers", headers=self.headers, timeout=5)
            return status == 200 and any(w["id"] == self.worker_id and w["status"] == "active" for w in body)

        agent.wait_for(registered, 60, "the worker agent to register", interval=0.2)
        challenge = {"id": CHALLENGE_ID, "name": "expiry bench", "runtime": "docker", "image": self.args.image,
                     "port": CHALLENGE_PORT, "memory_mb": 512, "ttl_seconds": 3600}
        status, body = http("POST", f"{self.api}/challenges", challenge, self.headers)
        if status != 201:
            raise RuntimeError(f"registering the challenge failed: {status} {body}")
        return agent

    def containers(self):
        """instance id -> container id of this run's containers (one list call)."""
        rows = self.docker.api.containers(all=True, filters={"label": f"ctfhost.worker={self.worker_id}"})
        return {(row.get("Labels") or {}).get("ctfhost.instance"): row["Id"] for row in rows}

    def stop(self):
        for service in reversed(self.services):  # the agent first: nothing launches again
            try:
                service.stop(timeout=40)
            except Exception as exc:
                say(f"stopping {service.name}: {exc}")
        if self.docker is not None:
            for container_id in self.containers().values():
                try:
                    self.docker.api.remove_container(container_id, force=True, v=True)
                except Exception:
                    pass
            for network in self.docker.networks.list(names=[self.network]):
                if network.name == self.network:
                    try:
                        network.remove()
                    except Exception as exc:
                        say(f"could not remove network {self.network}: {exc}")
        if self.app is not None:
            try:
                redis_connection(self.app).flushdb()
            except Exception:
                pass
        if self.args.keep_logs:
            say(f"logs kept in {self.directory}")
        else:
            shutil.rmtree(self.directory, ignore_errors=True)


def bench_lateness(args):
    stack = Stack(args)
    try:
        started = time.monotonic()
        agent = stack.start()
        say(f"(b) expiry lateness: {args.instances} busybox instances on real Docker, one agent "
            f"(concurrency {args.concurrency}), expiring over {args.spread:g} s; stack up in "
            f"{time.monotonic() - started:.0f} s")

        def launch(team):
            return http("POST", f"{stack.api}/instances", {"team_id": f"team-{team}", "challenge_id": CHALLENGE_ID},
                        stack.headers, timeout=60)

        launched = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(launch, range(args.instances)))
        ids = [body["id"] for status, body in answers if status == 201]
        if len(ids) < len(answers):
            say(f"    {len(answers) - len(ids)} launch(es) refused: {[a for a in answers if a[0] != 201][:3]}")

        def settled():
            with stack.app.app_context(), database.connection_context():
                return not Instance.select().where(Instance.id.in_(ids), Instance.status == "pending").exists()

        stack.wait(settled, args.launch_timeout, "the launches", agent)
        with stack.app.app_context(), database.connection_context():
            running = [i.id for i in Instance.select(Instance.id).where(Instance.id.in_(ids), Instance.status == "running")]
        say(f"    {len(running)} of {len(ids)} running after {time.monotonic() - launched:.0f} s; "
            f"{len(stack.containers())} containers")
        listing = []
        for _ in range(5):
            started = time.perf_counter()
            stack.containers()  # the listing reconcile makes of a worker's containers
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
            present = stack.containers()
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="(a) only: one sweep at 10,000 active instances")
    parser.add_argument("--lateness", action="store_true", help="(b) only: expiry lateness on a real Docker stack")
    parser.add_argument("--active", type=int, default=10000, help="(a) active instances inserted")
    parser.add_argument("--history", type=int, default=10000, help="(a) ended instances inserted")
    parser.add_argument("--due", type=int, default=200, help="(a) instances due in a busy sweep")
    parser.add_argument("--runs", type=int, default=5, help="(a) runs of each sweep")
    parser.add_argument("--database-url", help="(a) and (b): a database of the bench's own (default: a fresh SQLite file)")
    parser.add_argument("--instances", type=int, default=200, help="(b) instances launched and expired")
    parser.add_argument("--spread", type=float, default=50.0, help="(b) their expiries spread over this many seconds")
    parser.add_argument("--lead", type=float, default=5.0, help="(b) seconds from setting expiries to the first")
    parser.add_argument("--grace", type=float, default=60.0, help="(b) bound on waiting after the last expiry, s")
    parser.add_argument("--poll", type=float, default=0.2, help="(b) seconds between Docker listings")
    parser.add_argument("--concurrency", type=int, default=4, help="(b) the agent's RQ worker processes")
    parser.add_argument("--launch-timeout", type=float, default=300.0, help="(b) bound on launching them all, s")
    parser.add_argument("--image", default="ctfhost-bench/busybox-httpd:expiry", help="(b) image tag built here")
    parser.add_argument("--keep-logs", action="store_true", help="(b) keep the app and worker logs")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="a Redis DB of the bench's own (flushed)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    say(machine_description())
    say(f"ctfhost from {os.path.dirname(os.path.dirname(os.path.abspath(sys.modules['ctfhost'].__file__)))}")
    both = not (args.sweep or args.lateness)
    for wanted, run in ((args.sweep, bench_sweep), (args.lateness, bench_lateness)):
        if wanted or both:
            started = time.monotonic()
            run(args)
            say(f"    (took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
