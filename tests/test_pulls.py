"""Images on workers (fake runtime): pulls per worker and image, their states, placement, and fleet operations."""

import datetime

import pytest

from ctfhost.models import ImagePull, Instance, Worker, utcnow
from ctfhost.testing import FakeOptions, register_fake_worker, run_jobs
from ctfhost.worker.queue import worker_queue

pytestmark = pytest.mark.usefixtures("redis_server")


@pytest.fixture
def workers(api):
    """Two fresh fake workers (room for 5 each), and no other live worker."""
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(hours=1)).execute()
    return [register_fake_worker(api, max_instances=5, prefix="pull") for _ in range(2)]


def create(api, challenge_id="web-pull", image="ctf/web:1", **changes):
    body = {"id": challenge_id, "name": "p", "runtime": "fake", "image": image, "port": 80, **changes}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()


def states(api, challenge_id="web-pull"):
    body = api.get(f"/api/v1/challenges/{challenge_id}/status").get_json()
    return {(row["worker_id"], row["image"]): row["state"] for row in body["workers"]}


def run_all(app, worker_ids):
    for worker_id in worker_ids:
        run_jobs(app, worker_id)


def test_a_new_active_challenge_is_pulled_on_every_worker_of_its_runtime(api, app, workers, monkeypatch):
    monkeypatch.setattr(FakeOptions, "supports_services", True)  # validation only: nothing is launched here
    create(api, services={"db": {"image": "ctf/db:1"}})
    status = api.get("/api/v1/challenges/web-pull/status")
    assert status.status_code == 200
    body = status.get_json()
    assert (body["slug"], body["operation"], body["status"], body["active_instances"]) == (
        "web-pull", "status", "unpulled", 0)
    assert set(states(api).values()) == {"unpulled"} and len(states(api)) == 4  # 2 workers x 2 images
    run_all(app, workers)
    assert set(states(api).values()) == {"pulled"}
    assert api.get("/api/v1/challenges/web-pull/status").get_json()["status"] == "pulled"
    listed = {w["id"]: w for w in api.get("/api/v1/workers").get_json()}
    assert {(i["image"], i["state"]) for i in listed[workers[0]]["images"]} == {("ctf/web:1", "pulled"),
                                                                               ("ctf/db:1", "pulled")}
    assert {(w, i) for w, i in app.fake_runtime.pulled if w in workers} == {
        (w, i) for w in workers for i in ("ctf/web:1", "ctf/db:1")}


def test_pull_answers_an_operation_record_and_states_move(api, app, workers):
    create(api, status="draft")  # a draft is not pulled ahead
    assert set(states(api).values()) == {"unpulled"}
    response = api.post("/api/v1/challenges/web-pull/pull")
    assert response.status_code == 202
    assert response.get_json() == {"slug": "web-pull", "operation": "pull", "status": "accepted",
                                   "detail": "pulling 1 image(s) on 2 worker(s)"}
    run_jobs(app, workers[0])
    assert states(api) == {(workers[0], "ctf/web:1"): "pulled", (workers[1], "ctf/web:1"): "unpulled"}
    assert api.get("/api/v1/challenges/web-pull/status").get_json()["status"] == "unpulled"


def test_a_failed_pull_says_why(api, app, workers):
    create(api, image="ctf/missing:1")
    run_all(app, workers)
    body = api.get("/api/v1/challenges/web-pull/status").get_json()
    assert body["status"] == "failed"
    assert {row["state"] for row in body["workers"]} == {"failed"}
    assert "pull access denied for ctf/missing:1" in body["workers"][0]["error"]


def test_activating_and_changing_the_image_pull_again(api, app, workers):
    create(api, status="inactive")
    api.post("/api/v1/challenges/web-pull/activate")
    run_all(app, workers)
    assert set(states(api).values()) == {"pulled"}
    api.patch("/api/v1/challenges/web-pull", json={"image": "ctf/web:2"})
    assert set(states(api).values()) == {"unpulled"}  # the new image
    run_all(app, workers)
    assert set(states(api).values()) == {"pulled"}


def test_a_registering_worker_pulls_every_active_challenge_of_its_runtimes(api, app, workers):
    create(api)
    create(api, challenge_id="web-off", status="inactive")
    late = register_fake_worker(api, max_instances=5, prefix="late")
    run_jobs(app, late)
    assert (late, "ctf/web:1") in app.fake_runtime.images
    rows = {(row.image, row.state) for row in ImagePull.select().where(ImagePull.worker_id == late)}
    assert rows == {("ctf/web:1", "pulled")}


def test_placement_prefers_a_worker_holding_the_image(api, app, workers):
    create(api, status="draft")
    api.post("/api/v1/challenges/web-pull/pull")
    run_jobs(app, workers[1])  # only the second holds it
    api.post("/api/v1/challenges/web-pull/activate")
    for team in ("t1", "t2", "t3"):
        created = api.post("/api/v1/instances", json={"team_id": team, "challenge_id": "web-pull"}).get_json()
        assert created["worker_id"] == workers[1], created  # though it is the more loaded one


def test_a_launch_on_a_worker_without_the_image_pulls_it_first(api, app, workers):
    create(api, status="draft", image="ctf/web:9")
    api.post("/api/v1/challenges/web-pull/activate")
    # the activation's pull jobs are dropped: the launch finds the image missing
    for worker_id in workers:
        worker_queue(worker_id).empty()
    created = api.post("/api/v1/instances", json={"team_id": "t1", "challenge_id": "web-pull"}).get_json()
    assert created["phase"] is None
    worker = Worker.get_by_id(created["worker_id"])
    run_jobs(app, worker.id)
    done = api.get(f"/api/v1/instances/{created['id']}").get_json()
    assert done["status"] == "running" and done["phase"] is None
    assert (worker.id, "ctf/web:9") in app.fake_runtime.pulled
    # while the worker pulled, the instance said so
    assert app.fake_runtime.phases_during_pull[-1] == {created["id"]: "pulling"}
    assert ImagePull.get(ImagePull.worker_id == worker.id, ImagePull.image == "ctf/web:9").state == "pulled"


def test_a_launch_whose_pull_fails_fails_with_the_reason(api, app, workers):
    create(api, image="ctf/missing:2")
    for worker_id in workers:
        worker_queue(worker_id).empty()
    created = api.post("/api/v1/instances", json={"team_id": "t1", "challenge_id": "web-pull"}).get_json()
    run_jobs(app, created["worker_id"])
    failed = api.get(f"/api/v1/instances/{created['id']}").get_json()
    assert failed["status"] == "error"
    assert "pull access denied for ctf/missing:2" in failed["error"]


def test_restart_replaces_every_active_instance(api, app, workers):
    create(api)
    made = [api.post("/api/v1/instances", json={"team_id": t, "challenge_id": "web-pull"}).get_json()
            for t in ("t1", "t2")]
    run_all(app, workers)
    response = api.post("/api/v1/challenges/web-pull/restart")
    assert response.status_code == 202
    body = response.get_json()
    assert (body["slug"], body["operation"], body["status"], body["restarted"], body["failed"]) == (
        "web-pull", "restart", "accepted", 2, 0)
    assert {api.get(f"/api/v1/instances/{i['id']}").get_json()["status"] for i in made} == {"destroyed"}
    active = list(Instance.select().where(Instance.challenge_id == "web-pull", Instance.status == "pending"))
    assert len(active) == 2 and not {i.id for i in active} & {i["id"] for i in made}
    assert api.post("/api/v1/challenges/web-pull/restart").get_json()["restarted"] == 2


def test_fleet_operations_need_the_key_and_an_existing_challenge(api, team_api, workers):
    create(api, challenge_id="web-op")
    for method, path in (("post", "pull"), ("get", "status"), ("post", "restart")):
        assert getattr(api, method)(f"/api/v1/challenges/nope/{path}").status_code == 404
        assert getattr(team_api("t1"), method)(f"/api/v1/challenges/web-op/{path}").status_code == 403


def test_pull_without_an_active_worker_is_skipped(api, workers):
    create(api)
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(hours=1)).execute()
    body = api.post("/api/v1/challenges/web-pull/pull").get_json()
    assert body["status"] == "skipped" and "no active worker serves runtime 'fake'" in body["detail"]
