"""Live events: how soon a client hears that an instance runs, and how many streams one API process holds.

(a) latency: N sequential launches of a Docker challenge (busybox httpd) through
    a real API (gunicorn, LaneWorker), worker agent and Traefik; one client
    follows GET /api/v1/events (types=instance.running). Figure: the time from
    the instance turning running in the database (the event's `started_at`,
    set in the same statement) to the event's arrival at the client.
(b) open streams: S event streams held open against ONE gunicorn process
    (--app-workers 1) while events are published at a steady rate, and
    meanwhile paced reads of GET /api/v1/instances: their p50/p95, how many
    streams are open and how many events each received, and the process's
    threads and memory.

Everything runs on 127.0.0.1 (the setup of bench/launch_latency.py, its own
Redis DB, SQLite file, worker, network); everything started is removed on
exit. It prints figures and asserts nothing.

    .venv/bin/python bench/events.py                    # 50 launches, 500 streams
    .venv/bin/python bench/events.py --launches 20 --streams 1000
"""

import argparse
import datetime
import os
import selectors
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import launch_latency  # noqa: E402

from ctfhost.testing import EventStream, http, machine_description  # noqa: E402
from ctfhost.timeutil import parse_iso  # noqa: E402


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def say(text):
    print(text, flush=True)


def measure_latency(bench, launches):
    stream = EventStream(f"http://127.0.0.1:{bench.app_port}", bench.headers,
                         path="/api/v1/events?types=instance.running", timeout=30)
    assert stream.status == 200, stream.status
    delays = []
    try:
        for number in range(launches):
            status, body = http("POST", f"{bench.api}/instances",
                                {"team_id": f"events-{number}", "challenge_id": launch_latency.CHALLENGE_ID},
                                bench.headers, timeout=30)
            if status != 201:
                raise RuntimeError(f"launch {number}: {status} {body}")
            event = stream.until(lambda e: e["data"]["instance_id"] == body["id"], timeout=60)[-1]
            arrived = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            running = parse_iso(event["data"]["data"]["started_at"])
            delays.append((arrived - running).total_seconds() * 1000)
            http("DELETE", f"{bench.api}/instances/{body['id']}", None, bench.headers, timeout=30)
    finally:
        stream.close()
    return delays


class Streams:
    """Raw SSE connections (one per credentials header), drained by one selector thread counting each one's events."""

    def __init__(self, port, credentials):
        self.selector = selectors.DefaultSelector()
        self.events = {}
        self.refused = 0
        self.stop = threading.Event()
        for header in credentials:
            request = (f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n"
                       "Accept: text/event-stream\r\n\r\n").encode()
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            self.events[sock] = head.count(b"\nevent: ")
            self.selector.register(sock, selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if data:
                    self.events[key.fileobj] += data.count(b"\nevent: ")
                else:
                    self.selector.unregister(key.fileobj)

    def open(self):
        return len(self.selector.get_map())

    def received(self):
        return sorted(self.events.values())

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in list(self.events):
            sock.close()


def app_process_stats(bench):
    """(pid, threads, RSS MiB) of the gunicorn worker process (the child of the app's master)."""
    master = bench.services[0].pid
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                status = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        if status.get("PPid", "").strip() == str(master):
            return int(entry), int(status["Threads"]), int(status["VmRSS"].split()[0]) / 1024
    return None, None, None


def api_reads(bench, reads):
    """(p50, p95, max, failures) of `reads` paced GET /api/v1/instances?limit=20, ms."""
    latencies, failures = [], 0
    for _ in range(reads):
        started = time.perf_counter()
        status, _ = http("GET", f"{bench.api}/instances?limit=20", None, bench.headers, timeout=10)
        latencies.append((time.perf_counter() - started) * 1000)
        failures += status != 200
        time.sleep(0.05)
    return percentile(latencies, 50), percentile(latencies, 95), max(latencies), failures


def publishing(conn, rate, teams):
    """A thread XADDing events at `rate` per second, each for one of `teams` in turn, until .stop is set."""
    from ctfhost.services.events import STREAM

    stop = threading.Event()

    def run():
        sent = 0
        while not stop.is_set():
            conn.xadd(STREAM, {"type": "submission.correct", "time": "", "team_id": teams[sent % len(teams)],
                               "challenge_id": "bench", "instance_id": "", "data": "{}"},
                      maxlen=10000, approximate=True)
            sent += 1
            thread.sent = sent
            time.sleep(1 / rate)

    thread = threading.Thread(target=run, daemon=True)
    thread.sent = 0
    thread.stop = stop
    thread.start()
    return thread


def report(label, figures):
    p50, p95, top, failures = figures
    say(f"    {label}: GET /api/v1/instances p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {top:.1f} ms, {failures} failed")


def measure_streams(bench, count, rate, reads):
    import redis

    conn = redis.Redis.from_url(bench.args.redis_url)
    report("no stream open", api_reads(bench, reads))
    before = app_process_stats(bench)
    # one team token per stream: each follows its own team, as players' and harnesses' clients do
    teams, credentials = [], []
    for number in range(count):
        team = f"stream-{number}"
        status, body = http("POST", f"{bench.api}/tokens", {"team_id": team, "name": "bench"}, bench.headers)
        if status != 201:
            raise RuntimeError(f"minting a token: {status} {body}")
        teams.append(team)
        credentials.append(f"Authorization: Bearer {body['token']}")
    opened_at = time.monotonic()
    streams = Streams(bench.app_port, credentials)
    say(f"    {streams.open()} of {count} team streams open in {time.monotonic() - opened_at:.1f} s "
        f"(refused {streams.refused}); the gunicorn worker: {before[1]} -> {app_process_stats(bench)[1]} threads, "
        f"RSS {before[2]:.0f} -> {app_process_stats(bench)[2]:.0f} MiB")
    report(f"{streams.open()} idle streams", api_reads(bench, reads))
    publisher = publishing(conn, rate, teams)
    figures = api_reads(bench, reads)
    publisher.stop.set()
    publisher.join()
    time.sleep(1)
    report(f"{streams.open()} streams, {rate:g} events/s each to its team's stream", figures)
    received = streams.received()
    say(f"    delivered: {sum(received)} of {publisher.sent} published (each event reaches its team's stream); "
        f"streams still open {streams.open()}")
    streams.close()
    time.sleep(16)  # the server ends a closed stream at its next write: the keepalive (15 s)
    # the worst case: every stream receives every event (the API key's unfiltered view)
    everyone = Streams(bench.app_port, [f"x-api-key: {bench.api_key}"] * count)
    publisher = publishing(conn, rate, teams)
    figures = api_reads(bench, reads)
    publisher.stop.set()
    publisher.join()
    time.sleep(1)
    report(f"{everyone.open()} API-key streams, {rate:g} events/s each to EVERY stream", figures)
    received = everyone.received()
    say(f"    delivered: min {received[0] if received else 0}, median "
        f"{statistics.median(received) if received else 0:g} per stream of {publisher.sent} published; "
        f"the worker: {app_process_stats(bench)[1]} threads, RSS {app_process_stats(bench)[2]:.0f} MiB")
    everyone.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launches", type=int, default=50, help="sequential launches timed for (a); 0: skip (a)")
    parser.add_argument("--streams", type=int, default=500, help="event streams held open for (b)")
    parser.add_argument("--rate", type=float, default=20.0, help="events published per second during (b)")
    parser.add_argument("--reads", type=int, default=200, help="paced GET /api/v1/instances during (b)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="a Redis DB of the bench's own (flushed)")
    ours = parser.parse_args(argv)
    args = launch_latency.parse_args(["--mode", "sequential", "--burst", "1", "--app-workers", "1",
                                      "--app-threads", "8", "--concurrency", "2", "--redis-url", ours.redis_url])
    args.extra_env = {"CTFHOST_EVENTS_MAX_STREAMS": str(max(1000, ours.streams + 50))}
    say(machine_description())
    bench = launch_latency.Bench(args)
    try:
        bench.start()
        if ours.launches:
            say(f"(a) {ours.launches} launches, time from running in the database to the event at a client ...")
            delays = measure_latency(bench, ours.launches)
            say(f"    event delay: p50 {percentile(delays, 50):.1f} ms, p95 {percentile(delays, 95):.1f} ms, "
                f"max {max(delays):.1f} ms over {len(delays)} launches")
        say(f"(b) {ours.streams} event streams on one gunicorn process (LaneWorker, --threads 8), "
            f"{ours.rate:g} events/s published, {ours.reads} paced API reads ...")
        measure_streams(bench, ours.streams, ours.rate, ours.reads)
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
