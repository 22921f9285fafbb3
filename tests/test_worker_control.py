"""Nodes and capacity: cordon, uncordon, drain and delete workers; the cluster's capacity; 503 with Retry-After."""

import datetime

import pytest

from ctfhost.models import Instance, Worker, utcnow
from ctfhost.testing import register_fake_worker, run_jobs

pytestmark = pytest.mark.usefixtures("redis_server")


def challenge(api, challenge_id="web-cap"):
    body = {"id": challenge_id, "name": "c", "runtime": "fake", "image": "i", "port": 80}
    assert api.post("/api/v1/challenges", json=body).status_code == 201


def launch(api, team, challenge_id="web-cap"):
    return api.post("/api/v1/instances", json={"team_id": team, "challenge_id": challenge_id})


def worker_json(api, worker_id):
    return next(w for w in api.get("/api/v1/workers").get_json() if w["id"] == worker_id)


@pytest.fixture
def only_worker(api):
    """One fresh fake worker with room for 2, and no other live worker."""
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(hours=1)).execute()
    return register_fake_worker(api, max_instances=2, prefix="control")


def test_a_cordoned_worker_gets_no_new_instance_and_its_own_go_on(api, app, only_worker):
    challenge(api)
    first = launch(api, "t1").get_json()
    run_jobs(app, only_worker)
    cordoned = api.post(f"/api/v1/workers/{only_worker}/cordon")
    assert cordoned.status_code == 200
    assert (cordoned.get_json()["state"], cordoned.get_json()["active_instances"]) == ("cordoned", 1)
    assert worker_json(api, only_worker)["state"] == "cordoned"
    refused = launch(api, "t2")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
    assert "cordoned or draining" in refused.get_json()["message"]
    assert api.get(f"/api/v1/instances/{first['id']}").get_json()["status"] == "running"
    # registering again (an agent restart) keeps the state
    register_fake_worker_again = api.post("/api/v1/workers", json={
        "id": only_worker, "address": "127.0.0.1", "runtime": "fake", "max_instances": 2})
    assert register_fake_worker_again.get_json()["state"] == "cordoned"
    assert api.post(f"/api/v1/workers/{only_worker}/uncordon").get_json()["state"] == "ready"
    assert launch(api, "t2").status_code == 201


def test_a_full_fleet_is_503_with_retry_after(api, only_worker):
    challenge(api)
    assert launch(api, "t1").status_code == 201 and launch(api, "t2").status_code == 201
    full = launch(api, "t3")
    assert full.status_code == 503 and full.headers["Retry-After"] == "30"
    assert full.get_json()["reason"] == "capacity" and "at capacity" in full.get_json()["message"]


def test_drain_lets_instances_run_out_or_destroys_them(api, app, only_worker):
    challenge(api)
    first, second = (launch(api, team).get_json() for team in ("t1", "t2"))
    run_jobs(app, only_worker)
    drained = api.post(f"/api/v1/workers/{only_worker}/drain")
    assert drained.status_code == 200 and drained.get_json()["state"] == "draining"
    assert {api.get(f"/api/v1/instances/{i['id']}").get_json()["status"] for i in (first, second)} == {"running"}
    assert launch(api, "t3").status_code == 503
    emptied = api.post(f"/api/v1/workers/{only_worker}/drain?destroy=true")
    assert emptied.status_code == 200
    assert (emptied.get_json()["state"], emptied.get_json()["active_instances"]) == ("draining", 0)
    assert {api.get(f"/api/v1/instances/{i['id']}").get_json()["status"] for i in (first, second)} == {"destroyed"}
    assert api.post(f"/api/v1/workers/{only_worker}/drain?destroy=perhaps").status_code == 422


def test_a_worker_is_deleted_only_without_active_instances(api, app, only_worker, team_api):
    challenge(api)
    created = launch(api, "t1").get_json()
    refused = api.delete(f"/api/v1/workers/{only_worker}")
    assert refused.status_code == 409 and "1 active instance" in refused.get_json()["message"]
    assert api.delete(f"/api/v1/instances/{created['id']}").status_code == 204
    assert team_api("t1").delete(f"/api/v1/workers/{only_worker}").status_code == 403
    assert api.delete(f"/api/v1/workers/{only_worker}").status_code == 204
    assert all(w["id"] != only_worker for w in api.get("/api/v1/workers").get_json())
    assert api.delete(f"/api/v1/workers/{only_worker}").status_code == 404
    for action in ("cordon", "uncordon", "drain"):
        assert api.post(f"/api/v1/workers/nope/{action}").status_code == 404


def test_the_cluster_counts_capacity_per_runtime_and_in_total(api, app, only_worker):
    other = register_fake_worker(api, max_instances=5, prefix="control-b")
    challenge(api)
    launch(api, "t1")
    launch(api, "t2")
    placed = {row.worker_id for row in Instance.select()}
    run_jobs(app, only_worker)
    run_jobs(app, other)
    launch(api, "t3")  # pending
    response = api.get("/api/v1/cluster")
    assert response.status_code == 200
    body = response.get_json()
    fake = body["runtimes"]["fake"]
    assert fake == body["total"]
    assert (fake["active_workers"], fake["schedulable_workers"], fake["capacity"]) == (2, 2, 7)
    assert (fake["active_instances"], fake["pending_launches"], fake["free_slots"]) == (3, 1, 4)
    assert placed  # the instances went to these two workers
    api.post(f"/api/v1/workers/{other}/cordon")
    cordoned = api.get("/api/v1/cluster").get_json()["total"]
    assert (cordoned["active_workers"], cordoned["schedulable_workers"], cordoned["capacity"]) == (2, 1, 2)
    # a stale worker is not active
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(hours=1)).where(Worker.id == other).execute()
    assert api.get("/api/v1/cluster").get_json()["total"]["active_workers"] == 1


def test_cluster_and_worker_control_need_the_api_key(client, team_api):
    assert client.get("/api/v1/cluster").status_code == 401
    assert team_api("t1").get("/api/v1/cluster").status_code == 403


def test_instances_can_be_listed_by_worker(api, only_worker):
    other = register_fake_worker(api, max_instances=5, prefix="control-c")
    challenge(api)
    for team in ("t1", "t2", "t3"):
        launch(api, team)
    placed = {row.id: row.worker_id for row in Instance.select()}
    for worker_id in (only_worker, other):
        listed = api.get(f"/api/v1/instances?worker_id={worker_id}")
        assert listed.status_code == 200
        assert {i["id"] for i in listed.get_json()} == {i for i, w in placed.items() if w == worker_id}
        assert listed.headers["X-Total-Count"] == str(sum(w == worker_id for w in placed.values()))
