"""What a player's client needs from /api/v1/instances: failure reasons fit for players, renewal terms, why a launch is refused."""

import datetime

import pytest

from ctfhost.models import Instance, Worker, utcnow
from ctfhost.testing import run_jobs

pytestmark = pytest.mark.usefixtures("redis_server")

TTL = 900
ENGINE_DOWN = "cannot reach the Docker engine: ConnectionRefusedError(111, 'Connection refused')"


def create_challenge(api, slug="web-chal", **changes):
    body = {"id": slug, "name": slug, "runtime": "fake", "image": "fake/web", "port": 80, "ttl_seconds": TTL}
    body.update(changes)
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def launch(caller, team_id, challenge_id="web-chal", status=201):
    response = caller.post("/api/v1/instances", json={"team_id": team_id, "challenge_id": challenge_id})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_a_team_token_reads_a_short_failure_reason_the_api_key_the_detail(api, team_api, worker_id, app):
    create_challenge(api, "web-fail", extra_config=f'{{"fail": "{ENGINE_DOWN}"}}')
    team = team_api(5)
    instance_id = launch(team, 5, "web-fail")["id"]
    run_jobs(app, worker_id)

    operator = api.get(f"/api/v1/instances/{instance_id}").get_json()
    assert operator["status"] == "error" and operator["error"] == ENGINE_DOWN  # unchanged for the API key
    assert operator["public_error"] == "it could not be started"
    player = team.get(f"/api/v1/instances/{instance_id}").get_json()
    assert player["status"] == "error" and player["error"] == "it could not be started"
    assert "Docker" not in str(player) and "ConnectionRefused" not in str(player)
    listed = team.get("/api/v1/instances?status=error").get_json()
    assert [(i["id"], i["error"]) for i in listed] == [(instance_id, "it could not be started")]


def test_reasons_the_core_writes_stay_readable_for_players(api, team_api, worker_id, app):
    create_challenge(api)
    team = team_api(6)
    instance_id = launch(team, 6)["id"]
    Instance.update(status="error", error="the instance did not accept connections within 30 s").where(
        Instance.id == instance_id
    ).execute()
    assert team.get(f"/api/v1/instances/{instance_id}").get_json()["error"] == "it did not become ready in time"
    assert api.get(f"/api/v1/instances/{instance_id}").get_json()["public_error"] == "it did not become ready in time"
    running = api.get("/api/v1/instances").get_json()
    assert running[0]["public_error"] == "it did not become ready in time"


def test_instances_carry_their_renewal_terms(api, team_api, worker_id):
    create_challenge(api, "web-twice", max_renewals=2)
    create_challenge(api, "web-free", ttl_seconds=None)
    assert api.patch("/api/v1/settings", json={"default_ttl_seconds": 1200}).status_code == 200
    twice = launch(api, 7, "web-twice")
    assert (twice["renewals"], twice["renewals_left"], twice["ttl_seconds"]) == (0, 2, TTL)
    free = launch(team_api(7), 7, "web-free")
    assert (free["renewals_left"], free["ttl_seconds"]) == (None, 1200)

    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=60)).where(Instance.id == twice["id"]).execute()
    assert api.post(f"/api/v1/instances/{twice['id']}/renew").status_code == 200
    listed = {i["id"]: i for i in api.get("/api/v1/instances?team_id=7").get_json()}
    assert (listed[twice["id"]]["renewals"], listed[twice["id"]]["renewals_left"]) == (1, 1)
    assert listed[free["id"]]["ttl_seconds"] == 1200


def test_a_restart_keeps_the_renewal_count_and_waits_for_the_cooldown(api, worker_id, app):
    create_challenge(api, "web-once", max_renewals=1)
    old = launch(api, 8, "web-once")
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=60)).where(Instance.id == old["id"]).execute()
    assert api.post(f"/api/v1/instances/{old['id']}/renew").status_code == 200

    restarted = api.post(f"/api/v1/instances/{old['id']}/restart")
    assert restarted.status_code == 200, restarted.get_json()
    new = restarted.get_json()
    assert new["id"] != old["id"] and (new["renewals"], new["renewals_left"]) == (1, 0)
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=60)).where(Instance.id == new["id"]).execute()
    refused = api.post(f"/api/v1/instances/{new['id']}/renew")
    assert refused.status_code == 409 and "max_renewals" in refused.get_json()["message"]

    # the scoreboard's restart is bound by the launch cooldown like a launch
    assert api.patch("/api/v1/settings", json={"launch_cooldown_seconds": 60}).status_code == 200
    again = api.post(f"/api/v1/instances/{new['id']}/restart")
    assert again.status_code == 429 and 1 <= int(again.headers["Retry-After"]) <= 60
    assert api.get(f"/api/v1/instances/{new['id']}").get_json()["status"] == "pending"  # kept


def test_a_refused_launch_says_whether_no_worker_serves_the_runtime_or_all_are_full(api, worker_id):
    create_challenge(api, "web-full")
    create_challenge(api, "web-nobody")
    Worker.update(max_instances=1).where(Worker.id == worker_id).execute()
    launch(api, 9, "web-full")
    full = launch(api, 10, "web-full", status=503)
    assert full["reason"] == "capacity" and "at capacity" in full["message"]

    Worker.update(runtime="other").where(Worker.id == worker_id).execute()
    nobody = launch(api, 11, "web-nobody", status=503)
    assert nobody["reason"] == "no_worker" and "no active worker serves runtime 'fake'" in nobody["message"]
    assert (nobody["code"], nobody["status"]) == (503, "Service Unavailable")
