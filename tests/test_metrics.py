"""GET /metrics: who may read it, the counters a launch, a failed launch, forward-auth and expiry move, and multiprocess sums."""

import concurrent.futures
import datetime
import glob
import json
import multiprocessing
import os
import re
import urllib.request

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ctfhost import metrics
from ctfhost.models import Instance, utcnow
from ctfhost.services.instances import expire_due
from ctfhost.testing import (
    ADMIN_TOKEN, app_server, ask_forward_auth, free_port, http, instance_cookie, run_jobs,
)
from ctfhost.worker.agent import Agent

pytestmark = pytest.mark.usefixtures("redis_server")

METRICS_TOKEN = "test-metrics-token"
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def metrics_token(app, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_METRICS_TOKEN", METRICS_TOKEN)
    return METRICS_TOKEN


def parse(text):
    """{(sample name, ((label, value), ...)): value} of a Prometheus text answer."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client):
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def create_challenge(api, slug, **changes):
    body = {"id": slug, "name": slug, "runtime": "fake", "image": "fake/web", "port": 80, "ttl_seconds": 600, **changes}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()


def launch(api, challenge, team=1):
    response = api.post("/api/v1/instances", json={"team_id": team, "challenge_id": challenge})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# -- who may read it ------------------------------------------------------------


def test_metrics_are_off_without_any_token(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_METRICS_TOKEN", None)
    monkeypatch.setitem(app.config, "CTFHOST_ADMIN_TOKEN", None)
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 404
    assert "CTFHOST_METRICS_TOKEN" in response.get_json()["message"]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": METRICS_TOKEN},
    {"X-Admin-Token": METRICS_TOKEN},  # the metrics token is no admin token
    {"x-api-key": "test-api-key"},
])
def test_a_missing_or_wrong_token_is_401(client, metrics_token, headers):
    assert client.get("/metrics", headers=headers).status_code == 401


@pytest.mark.parametrize("headers", [
    BEARER,
    {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    {"X-Admin-Token": ADMIN_TOKEN},
])
def test_the_metrics_token_and_the_admin_token_may_read_it(client, metrics_token, headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert "ctfhost_instances" in response.get_data(as_text=True)


def test_the_admin_token_alone_turns_metrics_on(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_METRICS_TOKEN", None)
    assert client.get("/metrics", headers={"X-Admin-Token": ADMIN_TOKEN}).status_code == 200
    assert client.get("/metrics", headers=BEARER).status_code == 401


# -- what moves them ---------------------------------------------------------------


def test_a_launch_and_a_failed_launch(app, api, client, metrics_token, worker_id):
    create_challenge(api, "metrics-ok")
    create_challenge(api, "metrics-bad", extra_config='{"fail": "boom"}')
    before = scrape(client)
    good = launch(api, "metrics-ok")
    launch(api, "metrics-bad")
    queued = scrape(client)
    assert value(queued, "ctfhost_instances", status="pending", challenge="metrics-ok") == 1
    # the two launches (beside the pull the challenges' creation queued)
    assert value(queued, "ctfhost_queue_depth", worker=worker_id) - value(before, "ctfhost_queue_depth", worker=worker_id) == 2
    run_jobs(app, worker_id)
    after = scrape(client)

    assert moved(before, after, "ctfhost_launches_total", result="running") == 1
    assert moved(before, after, "ctfhost_launches_total", result="error") == 1
    for phase in metrics.LAUNCH_PHASES:
        assert moved(before, after, "ctfhost_launch_duration_seconds_count", phase=phase) == 1, phase
        assert value(after, "ctfhost_launch_duration_seconds_bucket", phase=phase, le="+Inf") >= 1
    # the fleet's gauges, read from the database and Redis at scrape time
    assert value(after, "ctfhost_instances", status="running", challenge="metrics-ok") == 1
    assert ("ctfhost_instances", (("challenge", "metrics-bad"), ("status", "error"))) not in after  # ended: not a gauge
    assert value(after, "ctfhost_queue_depth", worker=worker_id) == 0
    assert value(after, "ctfhost_workers", liveness="active", state="ready") >= 1
    assert 0 <= value(after, "ctfhost_worker_heartbeat_age_seconds", worker=worker_id, liveness="active", state="ready") < 60

    # HTTP requests by route, never by raw path
    assert api.get(f"/api/v1/instances/{good['id']}").status_code == 200
    later = scrape(client)
    route = dict(route="/api/v1/instances/<uuid:instance_id>", method="GET", status="200")
    assert moved(after, later, "ctfhost_http_requests_total", **route) == 1
    assert not any(good["id"] in dict(labels).get("route", "") for _, labels in later)
    # a worker's placement state (cordon, drain) is a label
    assert api.post(f"/api/v1/workers/{worker_id}/cordon").status_code == 200
    cordoned = scrape(client)
    assert value(cordoned, "ctfhost_workers", liveness="active", state="cordoned") == 1
    assert ("ctfhost_worker_heartbeat_age_seconds",
            (("liveness", "active"), ("state", "cordoned"), ("worker", worker_id))) in cordoned
    assert moved(before, later, "ctfhost_http_requests_total", route="/api/v1/instances", method="POST", status="201") == 2
    # the scrapes count too: queued, after (each is counted after it was answered)
    assert moved(before, later, "ctfhost_http_requests_total", route="/metrics", method="GET", status="200") == 3


def test_forward_auth_decisions_and_latency(app, api, client, proxy_client, metrics_token, worker_id):
    create_challenge(api, "metrics-fa")
    instance = launch(api, "metrics-fa", team="red")
    run_jobs(app, worker_id)
    before = scrape(client)
    assert ask_forward_auth(proxy_client, "nothing.metrics-fa.localhost").status_code == 404
    assert ask_forward_auth(proxy_client, instance).status_code == 401
    assert ask_forward_auth(proxy_client, instance, cookie=instance_cookie(instance["id"], "red")).status_code == 200
    app.config["CTFHOST_AUTH_SIGNIN_URL"] = "https://ctf.example.org/access?instance={instance_id}&next={next}"
    try:
        assert ask_forward_auth(proxy_client, instance).status_code == 302
    finally:
        app.config.pop("CTFHOST_AUTH_SIGNIN_URL")
    after = scrape(client)
    for result in ("not_found", "denied", "allowed", "redirect"):
        assert moved(before, after, "ctfhost_forward_auth_decisions_total", result=result) == 1, result
    assert moved(before, after, "ctfhost_forward_auth_duration_seconds_count") == 4
    assert 0 < moved(before, after, "ctfhost_forward_auth_duration_seconds_sum") < 4


def test_expiry_and_destroy(app, api, client, metrics_token, worker_id):
    create_challenge(api, "metrics-exp")
    late, stopped = launch(api, "metrics-exp", team=1), launch(api, "metrics-exp", team=2)
    run_jobs(app, worker_id)
    now = utcnow()
    Instance.update(expires_at=now - datetime.timedelta(seconds=7)).where(Instance.id == late["id"]).execute()
    before = scrape(client)
    assert expire_due(now=now) == [late["id"]]
    assert api.delete(f"/api/v1/instances/{stopped['id']}").status_code == 204
    run_jobs(app, worker_id)
    after = scrape(client)
    assert moved(before, after, "ctfhost_expiries_total") == 1
    assert moved(before, after, "ctfhost_expiry_lateness_seconds_count") == 1
    assert moved(before, after, "ctfhost_expiry_lateness_seconds_sum") == pytest.approx(7, abs=0.01)
    assert moved(before, after, "ctfhost_expiry_lateness_seconds_bucket", le="5.0") == 0
    assert moved(before, after, "ctfhost_expiry_lateness_seconds_bucket", le="10.0") == 1
    assert moved(before, after, "ctfhost_destroys_total", result="ok") == 2  # the expired one's and the deleted one's
    assert value(after, "ctfhost_instances", status="running", challenge="metrics-exp") == 0


# -- several processes -------------------------------------------------------------


def test_gunicorn_workers_add_up_and_start_from_an_empty_directory(app, tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by an earlier run")
    # a worker is replaced after 30 requests: however the kernel spreads the connections (one worker may accept
    # them all), at least two processes count some, and a gone worker's counts must still add up
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory), CTFHOST_METRICS_TOKEN=METRICS_TOKEN,
               GUNICORN_CMD_ARGS="--max-requests 30")
    port = free_port()
    server = app_server(env, port, str(tmp_path / "gunicorn.log"), workers=2, threads=4).start()
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_for(lambda: http("GET", f"{url}/health", timeout=2)[0] == 200, 60, "the API")
        assert not (directory / "counter_999999.db").exists()

        def total():
            text = http_text(f"{url}/metrics", BEARER)
            return value(parse(text), "ctfhost_http_requests_total", route="/health", method="GET", status="200")

        # the wait's checks: one that timed out on the client may still have been answered
        before, sent = total(), 0

        def per_process():
            """{pid: health requests it counted}, read from each process's own file."""
            counts = {}
            for path in glob.glob(str(directory / "counter_*.db")):
                for family in MultiProcessCollector.merge([path], accumulate=False):
                    for sample in family.samples:
                        if sample.name == "ctfhost_http_requests_total" and sample.labels.get("route") == "/health":
                            counts[path] = counts.get(path, 0) + sample.value
            return counts

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(10):  # until two processes answered some (each connection goes to whichever accepts it)
                codes = list(pool.map(lambda _: http("GET", f"{url}/health", timeout=5)[0], range(40)))
                assert codes == [200] * 40
                sent += 40
                if len(per_process()) >= 2:
                    break
        counts = per_process()
        assert len(counts) >= 2, counts
        after = total()
        assert after - before == sent
        assert after == sum(counts.values())
    finally:
        server.stop()


def http_text(url, headers):
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_a_worker_agent_serves_what_its_processes_recorded(app, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # so that it is restored (to unset) after the test
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    port = free_port()
    monkeypatch.setitem(app.config, "CTFHOST_WORKER_METRICS_PORT", port)
    agent = Agent(app, worker_id="metrics-agent", runtimes=["fake"])
    assert agent.serve_metrics() == port
    try:
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        assert directory == agent.private_metrics_directory
        url = f"http://127.0.0.1:{port}/metrics"
        before = parse(http_text(url, {}))
        # an RQ process of the agent (spawned as the agent spawns them) records a launch, the agent an expiry
        child = multiprocessing.get_context("spawn").Process(target=metrics.record_launch, args=("running", [("queued", 0.2)]))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        metrics.expiries.inc()
        after = parse(http_text(url, {}))
        assert moved(before, after, "ctfhost_launches_total", result="running") == 1
        assert moved(before, after, "ctfhost_launch_duration_seconds_count", phase="queued") == 1
        assert moved(before, after, "ctfhost_expiries_total") == 1
    finally:
        agent.stop_metrics()
    assert not os.path.exists(directory)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


# -- the docs and the dashboard name what /metrics shows -----------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exposed_names(client):
    text = client.get("/metrics", headers=BEARER).get_data(as_text=True)
    return {family.name for family in text_string_to_metric_families(text)
            if family.name.startswith("ctfhost_") and not family.name.endswith("_created")}


def test_every_metric_is_documented_and_the_dashboard_uses_only_real_ones(client, metrics_token, worker_id):
    exposed = exposed_names(client)
    with open(os.path.join(ROOT, "docs", "operations.md")) as handle:
        documented = set(re.findall(r"^\| `(ctfhost_\w+)` \|", handle.read(), re.MULTILINE))
    # the parser names counters without _total
    assert {name.removesuffix("_total") for name in documented} == exposed
    with open(os.path.join(ROOT, "deploy", "grafana", "ctfhost-dashboard.json")) as handle:
        dashboard = json.load(handle)
    used = {re.sub(r"_(total|bucket|count|sum)$", "", name)
            for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"ctfhost_\w+", target["expr"])}
    assert used and used <= exposed, used - exposed
    assert {"ctfhost_instances", "ctfhost_launches", "ctfhost_launch_duration_seconds", "ctfhost_expiry_lateness_seconds",
            "ctfhost_forward_auth_decisions", "ctfhost_forward_auth_duration_seconds", "ctfhost_http_requests",
            "ctfhost_queue_depth", "ctfhost_worker_heartbeat_age_seconds"} <= used


def test_image_pull_states_are_counted_by_runtime_and_state(app, api, client, metrics_token, worker_id):
    before = scrape(client)
    create_challenge(api, "metrics-pull")  # queues a pull of its image on the worker
    queued = scrape(client)
    run_jobs(app, worker_id)
    after = scrape(client)
    assert value(after, "ctfhost_image_pulls", runtime="fake", state="pulled") - value(
        before, "ctfhost_image_pulls", runtime="fake", state="pulled") == 1
    assert value(queued, "ctfhost_image_pulls", runtime="fake", state="unpulled") >= 1
    assert value(after, "ctfhost_image_pulls", runtime="fake", state="failed") == value(
        before, "ctfhost_image_pulls", runtime="fake", state="failed")
