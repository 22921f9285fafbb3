"""Concurrent requests through a real HTTP server: the database, not Python, keeps the rules."""

import collections
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctfhost.models import ACTIVE, Instance
from ctfhost.worker.queue import worker_queue

pytestmark = pytest.mark.usefixtures("redis_server")

REQUESTS = 50


def register_worker(live_server, max_instances=100):
    worker = f"conc-{uuid.uuid4().hex[:8]}"
    status, body = live_server.call(
        "POST", "/api/v1/workers",
        {"id": worker, "address": "127.0.0.1", "runtime": "fake", "max_instances": max_instances},
    )
    assert status == 201, body
    return worker


def create_challenge(live_server, slug="race-chal"):
    status, body = live_server.call(
        "POST", "/api/v1/challenges", {"id": slug, "name": slug, "runtime": "fake", "image": "fake/web", "port": 80}
    )
    assert status == 201, body
    return slug


def all_at_once(live_server, calls):
    """Send every (method, path, body) at the same moment; [(status, body)] in order."""
    barrier = threading.Barrier(len(calls))

    def send(call):
        barrier.wait()
        return live_server.call(*call)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(send, calls))


def statuses(results):
    return collections.Counter(status for status, _ in results)


def active_instances(challenge_id):
    return list(Instance.select().where(Instance.challenge_id == challenge_id, Instance.status.in_(list(ACTIVE))))


def launch_jobs(worker):
    return [job_id for job_id in worker_queue(worker).job_ids if job_id.startswith("launch-")]


def test_identical_launches_create_exactly_one_instance(live_server):
    worker = register_worker(live_server)
    slug = create_challenge(live_server)
    results = all_at_once(live_server, [("POST", "/api/v1/instances", {"team_id": 1, "challenge_id": slug})] * REQUESTS)

    assert statuses(results) == {201: 1, 409: REQUESTS - 1}, statuses(results)
    created = next(body for status, body in results if status == 201)
    for status, body in results:
        if status == 409:
            assert body["code"] == 409 and "already has an active instance" in body["message"]
    assert [i.id for i in Instance.select()] == [created["id"]]
    assert launch_jobs(worker) == [f"launch-{created['id']}"]


def test_identical_launches_with_int_and_string_team_ids(live_server):
    register_worker(live_server)
    slug = create_challenge(live_server)
    calls = [("POST", "/api/v1/instances", {"team_id": 7 if n % 2 else "7", "challenge_id": slug}) for n in range(REQUESTS)]
    results = all_at_once(live_server, calls)
    assert statuses(results) == {201: 1, 409: REQUESTS - 1}, statuses(results)
    assert Instance.select().count() == 1


def test_concurrent_launches_of_different_teams_all_succeed(live_server):
    register_worker(live_server)
    slug = create_challenge(live_server)
    calls = [("POST", "/api/v1/instances", {"team_id": team, "challenge_id": slug}) for team in range(REQUESTS)]
    results = all_at_once(live_server, calls)
    assert statuses(results) == {201: REQUESTS}, statuses(results)
    assert len({body["endpoint"] for _, body in results}) == REQUESTS
    assert len(active_instances(slug)) == REQUESTS


def test_concurrent_launches_never_overfill_a_worker(live_server):
    capacity = 10
    worker = register_worker(live_server, max_instances=capacity)
    slug = create_challenge(live_server)
    calls = [("POST", "/api/v1/instances", {"team_id": team, "challenge_id": slug}) for team in range(REQUESTS)]
    results = all_at_once(live_server, calls)
    assert statuses(results) == {201: capacity, 503: REQUESTS - capacity}, statuses(results)
    assert len(active_instances(slug)) == capacity
    assert Instance.select().count() == capacity
    assert len(launch_jobs(worker)) == capacity
    status, workers = live_server.call("GET", "/api/v1/workers")
    assert next(w for w in workers if w["id"] == worker)["active_instances"] == capacity


def test_concurrent_restarts_replace_the_instance_once(app, live_server):
    from ctfhost.testing import run_jobs

    worker = register_worker(live_server)
    slug = create_challenge(live_server)
    status, old = live_server.call("POST", "/api/v1/instances", {"team_id": 3, "challenge_id": slug})
    assert status == 201
    run_jobs(app, worker)

    results = all_at_once(live_server, [("POST", f"/api/v1/instances/{old['id']}/restart", None)] * REQUESTS)
    assert statuses(results) == {200: 1, 409: REQUESTS - 1}, statuses(results)
    new = next(body for status, body in results if status == 200)
    active = active_instances(slug)
    assert [i.id for i in active] == [new["id"]]
    assert Instance.get_by_id(old["id"]).status == "destroyed"
    assert Instance.select().count() == 2

    run_jobs(app, worker)
    assert Instance.get_by_id(new["id"]).status == "running"
    assert old["id"] not in app.fake_runtime.servers


def test_concurrent_restart_and_launch_leave_one_active_instance(live_server):
    register_worker(live_server)
    slug = create_challenge(live_server)
    status, old = live_server.call("POST", "/api/v1/instances", {"team_id": 4, "challenge_id": slug})
    assert status == 201
    calls = [("POST", f"/api/v1/instances/{old['id']}/restart", None)] * (REQUESTS // 2)
    calls += [("POST", "/api/v1/instances", {"team_id": 4, "challenge_id": slug})] * (REQUESTS // 2)
    results = all_at_once(live_server, calls)
    # there is always exactly one active instance, so no launch gets through
    assert statuses(results) == {200: 1, 409: REQUESTS - 1}, statuses(results)
    new = next(body for status, body in results if status == 200)
    assert [i.id for i in active_instances(slug)] == [new["id"]]


def test_concurrent_deletes_end_the_instance_once(live_server):
    worker = register_worker(live_server)
    slug = create_challenge(live_server)
    status, instance = live_server.call("POST", "/api/v1/instances", {"team_id": 5, "challenge_id": slug})
    results = all_at_once(live_server, [("DELETE", f"/api/v1/instances/{instance['id']}", None)] * REQUESTS)
    assert statuses(results) == {204: REQUESTS}, statuses(results)
    row = Instance.get_by_id(instance["id"])
    assert row.status == "destroyed" and row.ended_at is not None
    assert f"destroy-{instance['id']}" in worker_queue(worker).job_ids
