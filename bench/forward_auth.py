"""What checking access costs: requests/s and latency through Traefik with and without the check, in one run.

One instance of a busybox httpd challenge is launched through ctfhost with
forward-auth on. Traefik gets three routers to its backend: ctfhost's own
(the access check in Traefik: the plugin's middleware, cookie from a real
access link), one as ctfhost configured it before (Traefik's forwardAuth
asking ctfhost about every request; a file-provider router that tells
forward-auth the instance's host), and a plain one (no middleware). wrk
drives all three, at one connection (latency: what the check adds to each
request) and at several (throughput). Everything runs on 127.0.0.1 and is
removed on exit; it prints figures and asserts nothing about time.

    .venv/bin/python bench/forward_auth.py
    .venv/bin/python bench/forward_auth.py --duration 10 --connections 1,8 --json out.json

Needs wrk (apt-get install wrk).
"""

import argparse
import http.client as httpclient
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from launch_latency import processes  # noqa: E402
from ctfhost.testing import app_server, fetch_via_proxy, free_port, http, upgrade_database, wait_until, worker_process  # noqa: E402
from ctfhost_plugin_docker.testing import build_image  # noqa: E402
from ctfhost_plugin_traefik.testing import traefik  # noqa: E402

IMAGE = "ctfhost-bench/web:latest"
CONTENT = "hello from a ctfhost benchmark instance\n"

# The `--backend go` challenge: a static Go HTTP server (keep-alive, ~14,000 requests/s on one core here), so that
# a flood measures the proxy and not busybox httpd, which serves a few hundred requests/s.
GO_SERVER = """package main

import "net/http"

func main() {
	body := []byte("hello from a ctfhost benchmark instance\\n")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	http.ListenAndServe(":8080", nil)
}
"""


def build_go_image(tag, engine, workdir):
    """Build GO_SERVER statically with the local Go toolchain and import it as an image (no registry)."""
    import io
    import tarfile

    source = os.path.join(workdir, "go-server")
    os.makedirs(source, exist_ok=True)
    with open(os.path.join(source, "main.go"), "w") as handle:
        handle.write(GO_SERVER)
    with open(os.path.join(source, "go.mod"), "w") as handle:
        handle.write("module benchserver\n\ngo 1.19\n")
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=os.path.join(tempfile.gettempdir(), "ctfhost-bench-gocache"),
               GOPATH=os.path.join(tempfile.gettempdir(), "ctfhost-bench-gopath"), GOFLAGS="-mod=mod")
    subprocess.run(["go", "build", "-ldflags=-s -w", "-o", "server", "."], cwd=source, env=env, check=True)
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w") as tar:
        tar.add(os.path.join(source, "server"), arcname="bin/server")
    engine.api.import_image_from_data(tarball.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1],
                                      changes=['CMD ["/bin/server"]', "EXPOSE 8080"])
    return tag


def parse_wrk(text):
    """requests/s and latency percentiles (ms) from `wrk --latency` output."""
    def to_ms(value, unit):
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        figures[f"p{pct}"] = to_ms(*match.groups()) if match else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    figures["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    figures["socket_errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    figures["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
    return figures


def run_wrk(port, host, cookie, connections, duration):
    threads = max(1, min(connections, 2))
    argv = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
            "-H", f"Host: {host}"]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    argv.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    return parse_wrk(out)


def api_latencies(url, headers, seconds, interval=0.05):
    """GET `url` every `interval` s for `seconds` (one after the other): latencies in ms, and failures."""
    latencies, failures = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        status, _ = http("GET", url, headers=headers, timeout=10)
        if status == 200:
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            failures += 1
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    return latencies, failures


def launch_seconds(api, headers, team, engine):
    """POST an instance of the bench challenge and wait until it runs: seconds; then stop it and wait until its
    container is gone (a removal overlapping the next launch would slow Docker's start by ~0.4 s here)."""
    started = time.perf_counter()
    status, instance = http("POST", f"{api}/instances", {"team_id": team, "challenge_id": "bench-fa"}, headers)
    assert status == 201, instance
    wait_until(lambda: http("GET", f"{api}/instances/{instance['id']}", headers=headers)[1]["status"] != "pending",
               60, interval=0.02, what="the launch")
    took = time.perf_counter() - started
    final = http("GET", f"{api}/instances/{instance['id']}", headers=headers)[1]
    assert final["status"] == "running", final["error"]
    http("DELETE", f"{api}/instances/{instance['id']}", headers=headers)
    wait_until(lambda: not engine.containers.list(all=True, filters={"label": f"ctfhost.instance={instance['id']}"}),
               60, what="the container to go")
    return took


def _table():
    """{pid: (command, parent pid)} of every process now (Linux)."""
    return {int(pid): (command, int(fields[1])) for pid, command, fields in processes()}


def tree(roots, table):
    """The pids of `roots` and of all their descendants."""
    found, todo = set(), [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(child for child, (_, parent) in table.items() if parent == pid)
    return found


def pin(pids, cpus):
    """Run every thread of these processes on `cpus` (new children inherit it)."""
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                os.sched_setaffinity(int(thread), cpus)
            except OSError:
                pass


def container_pids(container_id):
    """The processes of a container, found by its id in their cgroup."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cgroup") as handle:
                    if container_id in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


class SplitCores:
    """The proxy side on one core, the control plane and the runtime on the others: two machines, on one.

    In production the players' traffic goes through Traefik hosts, and
    instances start on runtime hosts; on this machine both share two cores,
    so any flood would slow Docker whatever checks access. The proxy side
    (wrk, Traefik, the flooded instance's container and its docker-proxy)
    gets the last core; dockerd, containerd (and the containers they start),
    the API and the worker get the rest. The engine's affinity is given back
    at the end.
    """

    def __init__(self, services, container_id, backend_port):
        self.all = set(range(os.cpu_count()))
        self.proxy = {max(self.all)}
        self.rest = self.all - self.proxy
        self.services, self.container_id, self.backend_port = services, container_id, backend_port

    def engine(self, table):
        return tree([pid for pid, (command, _) in table.items() if command in ("dockerd", "containerd")], table)

    def __enter__(self):
        table = _table()
        pin(self.engine(table), self.rest)
        for service in self.services:
            pin(tree([service.pid], table), self.proxy if service.name == "traefik" else self.rest)
        proxies = [pid for pid, (command, _) in table.items() if command == "docker-proxy" and
                   f"-host-port {self.backend_port}" in open(f"/proc/{pid}/cmdline").read().replace("\0", " ")]
        pin(container_pids(self.container_id) + proxies, self.proxy)
        return self

    def wrap(self, argv):
        return ["taskset", "-c", ",".join(map(str, sorted(self.proxy)))] + argv

    def __exit__(self, *exc):
        table = _table()
        pin(self.engine(table), self.all)
        for service in self.services:
            pin(tree([service.pid], table), self.all)


def p95(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.95))] if values else None


def flood_phase(args, web_port, host, cookie, direct_host, api, headers, instance_id, workdir, engine, split=None):
    """Another caller's API latency and launch time, quiet and while wrk floods one team's instance.

    The phases are interleaved: each round runs every phase once (one timed launch, then API reads until the
    flood ends), the order rotating from round to round, so that a drift of the machine (Docker's start time
    wanders by tens of percent over minutes here) falls on every phase alike.
    """
    url = f"{api}/instances/{instance_id}"
    # wrk paced to --flood-rate overall: each connection waits connections/rate seconds between its requests
    pace = os.path.join(workdir, "pace.lua")
    with open(pace, "w") as handle:
        handle.write(f"function delay()\n  return {args.flood_connections * 1000.0 / args.flood_rate:.3f}\nend\n")
    print()
    print(f"a flood against one team's instance (wrk paced to {args.flood_rate} req/s, {args.flood_connections} "
          f"connections, {args.flood_seconds} s per phase, {args.flood_launches} interleaved rounds), meanwhile another "
          f"caller's GET /api/v1/instances/{{id}} every 50 ms and one launch of another team per phase and round; "
          + (f"proxy side on core {sorted(split.proxy)}, the rest on {sorted(split.rest)}" if split else "all on every core"))
    phases = (("quiet", None, None), ("flood, no check (control)", direct_host, ""),
              ("flood with the team's cookie", host, cookie), ("flood without a cookie", host, ""))
    results = {name: {"launches": [], "latencies": [], "failures": 0, "floods": []} for name, _, _ in phases}
    for round_no in range(args.flood_launches):
        shift = round_no % len(phases)
        for name, target, jar in phases[shift:] + phases[:shift]:
            wrk = None
            if target is not None:
                argv = ["wrk", "--latency", "-t", "2", "-c", str(args.flood_connections), "-d", f"{args.flood_seconds}s",
                        "-s", pace, "-H", f"Host: {target}"] + (["-H", f"Cookie: {jar}"] if jar else [])
                argv = split.wrap(argv) if split else argv
                wrk = subprocess.Popen(argv + [f"http://127.0.0.1:{web_port}/"], stdout=subprocess.PIPE, text=True)
            started = time.monotonic()
            time.sleep(1)
            result = results[name]
            result["launches"].append(launch_seconds(api, headers, f"flood-{uuid.uuid4().hex[:6]}", engine))
            latencies, failures = api_latencies(url, headers, max(2.0, args.flood_seconds - 0.5 - (time.monotonic() - started)))
            result["latencies"] += latencies
            result["failures"] += failures
            if wrk:
                result["floods"].append(parse_wrk(wrk.communicate(timeout=args.flood_seconds + 30)[0]))
    rows = []
    for name, _, _ in phases:
        result = results[name]
        launches, latencies, floods = result["launches"], sorted(result["latencies"]), result["floods"]
        flood = ({"rps": sum(f["rps"] for f in floods) / len(floods), "non_2xx": sum(f["non_2xx"] for f in floods),
                  "requests": sum(f["requests"] for f in floods)} if floods else None)
        row = {"mode": name, "api_p50": latencies[len(latencies) // 2], "api_p95": p95(latencies),
               "api_failures": result["failures"], "launch_s": sorted(launches)[len(launches) // 2],
               "launches_s": launches, "flood": flood}
        rows.append(row)
        flood_text = (f"flood {flood['rps']:.0f} req/s ({flood['non_2xx']} not 2xx)" if flood else "no flood")
        print(f"  {name:<30} {flood_text:<34} GET p50 {row['api_p50']:.1f} ms p95 {row['api_p95']:.1f} ms "
              f"(failures {row['api_failures']}); launch to running {row['launch_s']:.2f} s (median of {len(launches)}: "
              + " ".join(f"{s:.2f}" for s in launches) + ")")
    quiet, control = rows[0], rows[1]
    for row in rows[1:]:
        print(f"  {row['mode']:<30} launch {row['launch_s'] / quiet['launch_s'] - 1:+.0%} against quiet"
              + (f", {row['launch_s'] / control['launch_s'] - 1:+.0%} against the same flood without a check"
                 if row is not control else ""))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", default="1,8", help="comma-separated wrk connection counts (default 1,8)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each mode (default 2)")
    parser.add_argument("--app-workers", type=int, default=2)
    parser.add_argument("--app-threads", type=int, default=8)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8", help="a Redis DB of the bench's own (flushed)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--flood-seconds", type=int, default=8, help="seconds of each flood phase (default 8)")
    parser.add_argument("--flood-connections", type=int, default=16, help="wrk connections of the flood (default 16)")
    parser.add_argument("--flood-rate", type=int, default=2000, help="requests per second of the flood (default 2000)")
    parser.add_argument("--flood-launches", type=int, default=5,
                        help="interleaved rounds: launches timed in each flood phase (default 5)")
    parser.add_argument("--no-flood", action="store_true", help="skip the flood phase")
    parser.add_argument("--backend", choices=("go", "busybox"), default="go" if shutil.which("go") else "busybox",
                        help="the challenge: a static Go HTTP server built here (default when `go` is installed) "
                             "or busybox httpd (a few hundred requests/s; caps the flood)")
    parser.add_argument("--split-cores", action=argparse.BooleanOptionalAction, default=True,
                        help="during the flood, the proxy side on the last core, the rest on the others (default on)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    connections = [int(c) for c in args.connections.split(",") if c.strip()]

    import docker
    import redis

    engine = docker.from_env()
    redis.Redis.from_url(args.redis_url).flushdb()
    workdir = tempfile.mkdtemp(prefix="ctfhost-bench-fa-")
    if args.backend == "go":
        build_go_image(IMAGE, engine, workdir)
    else:
        build_image(IMAGE, content=CONTENT, client=engine)
    api_key, admin = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    app_port, web_port, traefik_api_port = free_port(), free_port(), free_port()
    worker_id = f"bench-fa-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env.update(
        CTFHOST_DATABASE_URL=f"sqlite:///{workdir}/ctfhost.sqlite3",
        CTFHOST_REDIS_URL=args.redis_url,
        CTFHOST_API_KEY=api_key,
        CTFHOST_ADMIN_TOKEN=admin,
        CTFHOST_PUBLIC_PORT=str(web_port),
        CTFHOST_TRAEFIK_API_URL=f"http://127.0.0.1:{traefik_api_port}",
        CTFHOST_TRAEFIK_FORWARD_AUTH_URL=f"http://127.0.0.1:{app_port}/api/v1/auth/forward",
        CTFHOST_DOCKER_NETWORK="ctfhost-bench-instances",
        CTFHOST_LOG_LEVEL="WARNING",
    )
    upgrade_database(env)
    direct_file = os.path.join(workdir, "direct.yml")
    with open(direct_file, "w") as handle:
        handle.write("{}\n")
    proxy = traefik(
        f"http://127.0.0.1:{app_port}/api/v1/traefik/config", api_key, web_port, traefik_api_port,
        os.path.join(workdir, "traefik.log"), env=env,
        extra={"providers": {"file": {"filename": direct_file, "watch": True}}, "log": {"level": "ERROR"}},
    )
    services = [
        app_server(env, app_port, os.path.join(workdir, "app.log"), args.app_workers, args.app_threads),
        proxy,
        worker_process(env, os.path.join(workdir, "worker.log"), worker_id=worker_id),
    ]
    api = f"http://127.0.0.1:{app_port}/api/v1"
    headers = {"x-api-key": api_key}
    report = {"machine": {"cpus": os.cpu_count()}, "runs": []}
    try:
        for service in services:
            service.start()
        wait_until(lambda: http("GET", f"{api}/health")[0] == 200, 30, what="the API")
        wait_until(
            lambda: any(w["status"] == "active" for w in (http("GET", f"{api}/workers", headers=headers)[1] or [])),
            60, what="the worker",
        )
        body = {"id": "bench-fa", "name": "bench", "runtime": "docker", "image": IMAGE, "port": 8080, "ttl_seconds": 3600}
        assert http("POST", f"{api}/challenges", body, headers)[0] == 201
        status, instance = http("POST", f"{api}/instances", {"team_id": "bench", "challenge_id": "bench-fa"}, headers)
        assert status == 201, instance
        wait_until(
            lambda: http("GET", f"{api}/instances/{instance['id']}", headers=headers)[1]["status"] != "pending",
            60, what="the instance",
        )
        instance = http("GET", f"{api}/instances/{instance['id']}", headers=headers)[1]
        assert instance["status"] == "running", instance["error"]
        guarded_host = instance["endpoint"].split("://")[1].split(":")[0]

        # the cookie, the way a browser gets it: follow an access link through Traefik
        _, link = http("POST", f"{api}/instances/{instance['id']}/access", {}, headers)
        path = urllib.parse.urlsplit(link["url"])
        conn = httpclient.HTTPConnection("127.0.0.1", web_port, timeout=10)
        conn.request("GET", f"{path.path}?{path.query}", headers={"Host": guarded_host})
        answer = conn.getresponse()
        cookie = answer.getheader("Set-Cookie").split(";", 1)[0]
        assert answer.status == 302, answer.status

        # the same backend behind a router without the middleware
        (container,) = engine.containers.list(filters={"label": f"ctfhost.instance={instance['id']}"})
        backend_port = container.ports["8080/tcp"][0]["HostPort"]
        direct_host = "direct.bench-fa.localhost"
        forwarded_host = "forward-auth.bench-fa.localhost"
        backend = {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{backend_port}"}]}}
        with open(direct_file, "w") as handle:
            json.dump({"http": {
                "routers": {
                    "direct": {"rule": f"Host(`{direct_host}`)", "service": "direct", "entryPoints": ["web"]},
                    # forwardAuth on every request, as before the access check moved into Traefik; forward-auth
                    # is told the instance's own host, which this router's Host is not
                    "forward-auth": {"rule": f"Host(`{forwarded_host}`)", "service": "direct", "entryPoints": ["web"],
                                     "middlewares": ["as-the-instance", "forward-auth"]},
                },
                "middlewares": {
                    "as-the-instance": {"headers": {"customRequestHeaders": {"X-Forwarded-Host": guarded_host}}},
                    "forward-auth": {"forwardAuth": {
                        "address": f"http://127.0.0.1:{app_port}/api/v1/auth/forward", "trustForwardHeader": True,
                        "authResponseHeaders": ["X-Ctfhost-Team", "X-Ctfhost-Instance"], "maxResponseBodySize": 262144,
                    }},
                },
                "services": {"direct": backend},
            }}, handle)
        wait_until(lambda: fetch_via_proxy(web_port, direct_host)[0] == 200, 20, what="the direct router")
        assert fetch_via_proxy(web_port, guarded_host)[0] == 401  # guarded really is guarded
        assert fetch_via_proxy(web_port, forwarded_host)[0] == 401
        assert fetch_via_proxy(web_port, forwarded_host, headers={"Cookie": cookie})[0] == 200

        print(f"ctfhost forward-auth benchmark: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, backend {args.backend}, "
              f"gunicorn {args.app_workers}x{args.app_threads}, "
              f"wrk {args.duration} s per run, {args.rounds} round(s)")
        modes = [("no check", direct_host, None), ("check in Traefik", guarded_host, cookie),
                 ("forwardAuth", forwarded_host, cookie)]
        for conns in connections:
            for _ in range(2):  # warm-up
                for _, host, jar in modes:
                    run_wrk(web_port, host, jar, conns, 2)
            for round_no in range(args.rounds):
                order = modes if round_no % 2 == 0 else list(reversed(modes))
                for name, host, jar in order:
                    figures = run_wrk(web_port, host, jar, conns, args.duration)
                    figures.update(mode=name, connections=conns, round=round_no + 1)
                    report["runs"].append(figures)
                    print(f"  c={conns:<3} {name:<22} {figures['rps']:>9.0f} req/s  p50 {figures['p50']:.2f} ms  "
                          f"p99 {figures['p99']:.2f} ms  non-2xx {figures['non_2xx']}  errors {figures['socket_errors']}")
        print()
        print(f"{'connections':>11}  {'mode':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        summary = []
        for conns in connections:
            rows = {}
            for name, _, _ in modes:
                runs = [r for r in report["runs"] if r["mode"] == name and r["connections"] == conns]
                rows[name] = {
                    "rps": sum(r["rps"] for r in runs) / len(runs),
                    "p50": sorted(r["p50"] for r in runs)[len(runs) // 2],
                    "p99": sorted(r["p99"] for r in runs)[len(runs) // 2],
                }
                print(f"{conns:>11}  {name:<22} {rows[name]['rps']:>9.0f} {rows[name]['p50']:>8.2f} {rows[name]['p99']:>8.2f}")
            plain = rows["no check"]
            added = {}
            for name in ("check in Traefik", "forwardAuth"):
                added[name] = rows[name]["p50"] - plain["p50"]
                print(f"{conns:>11}  {name + ' adds':<22} {rows[name]['rps'] / plain['rps']:>8.2f}x "
                      f"{added[name]:>8.2f} {rows[name]['p99'] - plain['p99']:>8.2f}")
            summary.append({"connections": conns, **{k.replace(' ', '_'): v for k, v in rows.items()},
                            "p50_added_ms": {k.replace(' ', '_'): v for k, v in added.items()}})
        report["summary"] = summary
        if not args.no_flood:
            if args.split_cores and os.cpu_count() > 1:
                with SplitCores(services, container.id, backend_port) as split:
                    report["flood"] = flood_phase(args, web_port, guarded_host, cookie, direct_host, api, headers,
                                                  instance["id"], workdir, engine, split)
            else:
                report["flood"] = flood_phase(args, web_port, guarded_host, cookie, direct_host, api, headers,
                                              instance["id"], workdir, engine)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(report, handle, indent=2)
            print(f"wrote {args.json}")
    finally:
        for service in reversed(services):
            service.stop()
        for container in engine.containers.list(all=True, sparse=True, filters={"label": f"ctfhost.worker={worker_id}"}):
            container.remove(force=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
