"""Prometheus metrics the processes record (counters, histograms) and how a process exposes them.

Multiprocess mode: when PROMETHEUS_MULTIPROC_DIR is set in a process's
environment before it starts, prometheus_client writes its values to files
there and an exposition sums every process's files (gunicorn's workers, a
worker agent's RQ processes). Without it, values stay in the process that
records them. Fleet gauges (instances, workers, queues) are not recorded
here: the API computes them when Prometheus scrapes (ctfhost.services.fleet_metrics).
"""

import os

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

# decided as prometheus_client decides it: by the environment this process started with
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# seconds; launches take from a few milliseconds (fake runtime) to minutes (an image pull)
LAUNCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# an expiry sweep runs every CTFHOST_EXPIRY_INTERVAL_SECONDS (2 s): lateness beyond a few sweeps is a problem
LATENESS_BUCKETS = (0.5, 1, 2, 3, 5, 10, 30, 60, 300)
# forward-auth answers in about a millisecond
FORWARD_AUTH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

LAUNCH_PHASES = ("queued", "pulling", "starting", "probing", "routing")

launches = Counter("ctfhost_launches", "Launches that ended, by result (running or error)", ["result"])
launch_duration = Histogram(
    "ctfhost_launch_duration_seconds",
    "Seconds each phase of a successful launch took: queued (created to job start), starting (the runtime's launch), "
    "probing (readiness), routing (until the proxy routes it)",
    ["phase"], buckets=LAUNCH_BUCKETS,
)
destroys = Counter("ctfhost_destroys", "Destroy jobs run on workers (an instance's resources removed), by result (ok or error)",
                   ["result"])
expiries = Counter("ctfhost_expiries", "Instances ended by the expiry sweep")
expiry_lateness = Histogram("ctfhost_expiry_lateness_seconds",
                            "Seconds between an instance's expires_at and the sweep that expired it", buckets=LATENESS_BUCKETS)
forward_auth_decisions = Counter("ctfhost_forward_auth_decisions",
                                 "Forward-auth answers, by result (allowed, denied, redirect, not_found)", ["result"])
forward_auth_duration = Histogram("ctfhost_forward_auth_duration_seconds", "Seconds forward-auth took to decide",
                                  buckets=FORWARD_AUTH_BUCKETS)
http_requests = Counter("ctfhost_http_requests", "HTTP requests answered, by route (the URL rule), method and status",
                        ["route", "method", "status"])


def record_launch(result, phases=()):
    """Count a launch that ended with `result`; `phases`: [(phase, seconds)] of a successful one."""
    launches.labels(result).inc()
    for phase, seconds in phases:
        launch_duration.labels(phase).observe(max(0.0, seconds))


def record_destroy(result):
    destroys.labels(result).inc()


def record_expiry(instance, now):
    """Count one expired instance and how late (seconds after its expires_at, both naive UTC) the sweep ended it."""
    expiries.inc()
    expiry_lateness.observe(max(0.0, (now - instance.expires_at).total_seconds()))


def forward_auth_result(status):
    """The result label of a forward-auth answer with this HTTP status."""
    if status < 300:
        return "allowed"
    if status < 400:
        return "redirect"
    return "not_found" if status == 404 else "denied"


# labelled children of the hot paths' counters, kept: .labels() takes a lock and builds a key every call
_children = {}


def _child(metric, *labels):
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children.setdefault(key, metric.labels(*labels))
    return child


def record_forward_auth(status, seconds):
    _child(forward_auth_decisions, forward_auth_result(status)).inc()
    forward_auth_duration.observe(seconds)


def record_http_request(route, method, status):
    _child(http_requests, route, method, str(status)).inc()


class Exposition:
    """What one /metrics answer shows: the families of several collectors, merged by name (a registry for generate_latest)."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        families = {}
        for collector in self.collectors:
            for family in collector.collect():
                known = families.get(family.name)
                if known is None:
                    families[family.name] = family
                else:
                    known.samples = _sum_samples(known.samples + family.samples)
        return list(families.values())


def _sum_samples(samples):
    """Samples of one family from several sources, added up per (name, labels): counters and histograms add."""
    summed = {}
    for sample in samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        known = summed.get(key)
        summed[key] = sample if known is None else known._replace(value=known.value + sample.value)
    return list(summed.values())


def recorded(directory=None):
    """The collectors of what this process tree recorded: every process's files in `directory`
    (PROMETHEUS_MULTIPROC_DIR by default) when there is one, and this process's own values unless
    it writes them to files too."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    collectors = [MultiProcessCollector(None, directory)] if directory else []
    if not MULTIPROCESS:
        collectors.append(REGISTRY)
    return collectors


def clear_directory(directory, keep_pid=None):
    """Remove the value files a previous run left in a multiprocess directory (before its processes start).

    `keep_pid`: a process of this run that already writes there (its files are named ``<kind>_<pid>.db``).
    """
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db") and name[:-3].rpartition("_")[2] != str(keep_pid):
            os.remove(os.path.join(directory, name))
