"""Who may register a worker: the worker token, no takeover of a live worker, validated addresses."""

import datetime
import uuid

import pytest

from ctfhost.models import Worker, utcnow
from ctfhost.testing import Api

WORKER_TOKEN = "test-worker-token"


def new_id():
    return f"w-{uuid.uuid4().hex[:8]}"


def body(**changes):
    values = {"id": new_id(), "address": "10.0.0.5", "runtime": "fake", "max_instances": 20}
    values.update(changes)
    return values


def backdate(worker_id, seconds):
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(seconds=seconds)).where(
        Worker.id == worker_id
    ).execute()


@pytest.fixture
def worker_token(app, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_WORKER_TOKEN", WORKER_TOKEN)
    return WORKER_TOKEN


@pytest.fixture
def worker_api(client):
    return Api(client, credentials={"X-Worker-Token": WORKER_TOKEN})


# -- the worker token ------------------------------------------------------------


def test_with_a_worker_token_the_api_key_may_not_register_or_heartbeat(api, worker_token):
    registered = body()
    response = api.post("/api/v1/workers", json=registered)
    assert response.status_code == 403, response.get_json()
    assert "CTFHOST_WORKER_TOKEN" in response.get_json()["message"]
    assert Worker.get_or_none(Worker.id == registered["id"]) is None


def test_with_a_worker_token_the_api_key_cannot_move_a_live_worker(api, worker_api, worker_token):
    registered = body()
    assert worker_api.post("/api/v1/workers", json=registered).status_code == 201
    response = api.post("/api/v1/workers", json={**registered, "address": "203.0.113.66"})
    assert response.status_code == 403
    assert api.post(f"/api/v1/workers/{registered['id']}/heartbeat").status_code == 403
    assert Worker.get_by_id(registered["id"]).address == "10.0.0.5"


def test_worker_token_and_admin_may_register_and_heartbeat(worker_api, admin, worker_token):
    for caller in (worker_api, admin):
        registered = body()
        assert caller.post("/api/v1/workers", json=registered).status_code == 201
        assert caller.post(f"/api/v1/workers/{registered['id']}/heartbeat").status_code == 200


def test_worker_token_may_only_register(worker_api, worker_token):
    assert worker_api.get("/api/v1/workers").status_code == 403
    assert worker_api.get("/api/v1/challenges").status_code == 403
    assert worker_api.post("/api/v1/instances", json={"team_id": "t", "challenge_id": "c"}).status_code == 403


def test_wrong_worker_token_is_401(client, worker_token):
    caller = Api(client, credentials={"X-Worker-Token": "not-it"})
    assert caller.post("/api/v1/workers", json=body()).status_code == 401


def test_worker_token_unset_refuses_any_worker_token_and_keeps_the_api_key(api, client):
    assert Api(client, credentials={"X-Worker-Token": ""}).post("/api/v1/workers", json=body()).status_code == 401
    assert api.post("/api/v1/workers", json=body()).status_code == 201


def test_listing_workers_stays_api_key_and_admin(api, admin, worker_token):
    assert api.get("/api/v1/workers").status_code == 200
    assert admin.get("/api/v1/workers").status_code == 200


def test_worker_token_is_a_security_scheme_of_register_and_heartbeat(client):
    spec = client.get("/openapi.json").get_json()
    scheme = spec["components"]["securitySchemes"]["WorkerToken"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Worker-Token")
    assert "CTFHOST_WORKER_TOKEN" in scheme["description"]
    for path in ("/api/v1/workers", "/api/v1/workers/{worker_id}/heartbeat"):
        assert {"WorkerToken": []} in spec["paths"][path]["post"]["security"]
    assert {"WorkerToken": []} not in spec["paths"]["/api/v1/workers"]["get"]["security"]


# -- no takeover of a live worker ---------------------------------------------------


def test_a_live_worker_of_another_agent_cannot_be_taken_over(api):
    registered = body(agent_instance="host-a/boot/11/aaaa")
    assert api.post("/api/v1/workers", json=registered).status_code == 201
    for intruder in ({"agent_instance": "host-b/boot/12/bbbb"}, {"agent_instance": None}):
        response = api.post("/api/v1/workers", json={**registered, **intruder, "address": "203.0.113.66",
                                                     "max_instances": 10000})
        assert response.status_code == 409, response.get_json()
        assert registered["id"] in response.get_json()["message"]
    worker = Worker.get_by_id(registered["id"])
    assert (worker.address, worker.max_instances, worker.agent_instance) == ("10.0.0.5", 20, "host-a/boot/11/aaaa")


def test_a_live_worker_registered_without_an_agent_keeps_its_address(api):
    # the single-key setup: a worker registered over HTTP with no agent_instance
    registered = body()
    assert api.post("/api/v1/workers", json=registered).status_code == 201
    assert api.post("/api/v1/workers", json=registered).status_code == 200  # idempotent
    moved = api.post("/api/v1/workers", json={**registered, "address": "203.0.113.66"})
    assert moved.status_code == 409 and "10.0.0.5" in moved.get_json()["message"]
    assert Worker.get_by_id(registered["id"]).address == "10.0.0.5"
    backdate(registered["id"], 61)  # once it is stale, it may move
    assert api.post("/api/v1/workers", json={**registered, "address": "10.0.0.7"}).status_code == 200


def test_the_same_agent_may_register_again(api):
    registered = body(agent_instance="host-a/boot/11/aaaa")
    assert api.post("/api/v1/workers", json=registered).status_code == 201
    again = api.post("/api/v1/workers", json={**registered, "address": "10.0.0.6"})
    assert again.status_code == 200
    assert again.get_json()["address"] == "10.0.0.6"


def test_a_stale_worker_may_be_taken_over(api):
    registered = body(agent_instance="host-a/boot/11/aaaa")
    api.post("/api/v1/workers", json=registered)
    backdate(registered["id"], 61)
    response = api.post("/api/v1/workers", json={**registered, "agent_instance": "host-b/boot/12/bbbb"})
    assert response.status_code == 200
    assert Worker.get_by_id(registered["id"]).agent_instance == "host-b/boot/12/bbbb"


def test_only_the_admin_may_force_a_takeover(api, admin):
    registered = body(agent_instance="host-a/boot/11/aaaa")
    api.post("/api/v1/workers", json=registered)
    moved = {**registered, "agent_instance": "host-b/boot/12/bbbb", "address": "10.0.0.9"}
    assert api.post("/api/v1/workers?force=true", json=moved).status_code == 403
    response = admin.post("/api/v1/workers?force=true", json=moved)
    assert response.status_code == 200, response.get_json()
    worker = Worker.get_by_id(registered["id"])
    assert (worker.address, worker.agent_instance) == ("10.0.0.9", "host-b/boot/12/bbbb")


def test_heartbeat_of_another_agent_is_409_and_the_agent_reasserts_its_address(api):
    registered = body(agent_instance="host-a/boot/11/aaaa")
    api.post("/api/v1/workers", json=registered)
    path = f"/api/v1/workers/{registered['id']}/heartbeat"
    backdate(registered["id"], 30)
    assert api.post(path).status_code == 409
    assert api.post(path, json={"agent_instance": "host-b/boot/12/bbbb"}).status_code == 409
    assert Worker.get_by_id(registered["id"]).last_heartbeat_at < utcnow() - datetime.timedelta(seconds=29)
    Worker.update(address="203.0.113.66").where(Worker.id == registered["id"]).execute()
    response = api.post(path, json={"agent_instance": "host-a/boot/11/aaaa", "address": "10.0.0.5"})
    assert response.status_code == 200
    assert response.get_json()["address"] == "10.0.0.5"


# -- what a registration may say ----------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["http://10.0.0.5", "10.0.0.5:8080", "host name", "host;rm -rf /", "$(id)", "a/b", "-lead.example", "x" * 254,
     "a..b", "host\n"],
)
def test_address_must_be_a_host_name_or_ip(api, address):
    registered = body(address=address)
    response = api.post("/api/v1/workers", json=registered)
    assert response.status_code == 422, response.get_json()
    assert list(response.get_json()["errors"]["json"]) == ["address"]
    assert Worker.get_or_none(Worker.id == registered["id"]) is None


@pytest.mark.parametrize("address", ["10.0.0.5", "worker-1", "worker-1.ctf.example.com", "::1", "fd00::5"])
def test_host_names_and_ips_are_accepted(api, address):
    assert api.post("/api/v1/workers", json=body(address=address)).status_code == 201


def test_heartbeat_address_is_validated(api):
    registered = body()
    api.post("/api/v1/workers", json=registered)
    response = api.post(f"/api/v1/workers/{registered['id']}/heartbeat", json={"address": "evil.example:80/x"})
    assert response.status_code == 422
    assert list(response.get_json()["errors"]["json"]) == ["address"]


def test_max_instances_is_bounded(api):
    assert api.post("/api/v1/workers", json=body(max_instances=10000)).status_code == 201
    response = api.post("/api/v1/workers", json=body(max_instances=10001))
    assert response.status_code == 422
    assert list(response.get_json()["errors"]["json"]) == ["max_instances"]
