"""/api/v1/workers (register, heartbeat, list) and /api/v1/settings."""

import datetime
import re
import uuid

import pytest

from ctfhost.models import Setting, Worker, utcnow
from ctfhost.timeutil import parse_iso

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def new_id(prefix="w"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def worker_body(**changes):
    body = {"id": new_id(), "address": "10.0.0.5", "agent_port": 7000, "runtime": "fake", "max_instances": 20}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


def backdate(worker_id, seconds):
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(seconds=seconds)).where(
        Worker.id == worker_id
    ).execute()


# -- registering -----------------------------------------------------------------


def test_register_new_worker_is_201(api):
    body = worker_body()
    response = api.post("/api/v1/workers", json=body)
    assert response.status_code == 201
    worker = response.get_json()
    assert ISO_Z.match(worker.pop("last_heartbeat_at")) and ISO_Z.match(worker.pop("registered_at"))
    assert worker == {
        "id": body["id"],
        "address": "10.0.0.5",
        "agent_port": 7000,
        "runtime": "fake",
        "runtimes": ["fake"],
        "max_instances": 20,
        "status": "active",
        "state": "ready",
        "images": [],
        "active_instances": 0,
    }


def test_register_defaults(api):
    body = worker_body(agent_port=..., max_instances=...)
    worker = api.post("/api/v1/workers", json=body).get_json()
    assert (worker["agent_port"], worker["max_instances"]) == (0, 50)


def test_register_again_is_200_and_updates(api):
    body = worker_body()
    first = api.post("/api/v1/workers", json=body).get_json()
    backdate(body["id"], 300)
    response = api.post(
        "/api/v1/workers", json=dict(body, address="10.0.0.6", agent_port=7001, max_instances=5, runtime="fake,docker")
    )
    assert response.status_code == 200
    worker = response.get_json()
    assert (worker["address"], worker["agent_port"], worker["max_instances"]) == ("10.0.0.6", 7001, 5)
    assert worker["runtimes"] == ["fake", "docker"] and worker["runtime"] == "fake,docker"
    # registering counts as a heartbeat, and keeps the first registration time
    assert worker["status"] == "active"
    assert worker["registered_at"] == first["registered_at"]
    assert Worker.select().where(Worker.id == body["id"]).count() == 1


def test_register_is_idempotent(api):
    body = worker_body()
    first = api.post("/api/v1/workers", json=body)
    second = api.post("/api/v1/workers", json=body)
    third = api.post("/api/v1/workers", json=body)
    assert (first.status_code, second.status_code, third.status_code) == (201, 200, 200)
    strip = lambda w: {k: v for k, v in w.get_json().items() if k != "last_heartbeat_at"}  # noqa: E731
    assert strip(first) == strip(second) == strip(third)
    listed = [w for w in api.get("/api/v1/workers").get_json() if w["id"] == body["id"]]
    assert len(listed) == 1


def test_register_several_runtimes(api):
    worker = api.post("/api/v1/workers", json=worker_body(runtime=" fake , docker ,")).get_json()
    assert worker["runtimes"] == ["fake", "docker"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("id", ...),
        ("id", ""),
        ("id", "has space"),
        ("id", "-leading"),
        ("id", "x" * 129),
        ("id", 5),
        ("address", ...),
        ("address", ""),
        ("address", None),
        ("runtime", ...),
        ("runtime", ""),
        ("runtime", ","),
        ("runtime", "kubevirt"),
        ("runtime", "fake,kubevirt"),
        ("agent_port", -1),
        ("agent_port", 65536),
        ("agent_port", "80"),
        ("max_instances", -1),
        ("max_instances", "5"),
        ("max_instances", True),
        ("max_instances", 1.5),
        ("colour", "blue"),
    ],
)
def test_register_rejects_bad_fields(api, field, value):
    body = worker_body(**{field: value})
    response = api.post("/api/v1/workers", json=body)
    assert response.status_code == 422, response.get_json()
    payload = response.get_json()
    assert list(payload["errors"]["json"]) == [field]
    assert field in payload["message"]
    if isinstance(body.get("id"), str):
        assert Worker.get_or_none(Worker.id == body["id"]) is None


def test_register_unknown_runtime_names_the_installed_ones(api):
    response = api.post("/api/v1/workers", json=worker_body(runtime="kubevirt"))
    message = response.get_json()["errors"]["json"]["runtime"][0]
    assert "kubevirt" in message and "docker" in message and "fake" in message


# -- heartbeats and listing ------------------------------------------------------------


def test_heartbeat_refreshes_an_inactive_worker(api):
    body = worker_body()
    api.post("/api/v1/workers", json=body)
    backdate(body["id"], 120)
    before = utcnow().replace(microsecond=0)
    response = api.post(f"/api/v1/workers/{body['id']}/heartbeat")
    assert response.status_code == 200
    worker = response.get_json()
    assert worker["id"] == body["id"] and worker["status"] == "active"
    assert parse_iso(worker["last_heartbeat_at"]) >= before


def test_heartbeat_of_unknown_worker_is_404(api):
    response = api.post("/api/v1/workers/nobody/heartbeat")
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == 404 and "nobody" in body["message"]
    assert Worker.get_or_none(Worker.id == "nobody") is None


def test_heartbeat_takes_no_body(api):
    body = worker_body()
    api.post("/api/v1/workers", json=body)
    assert api.post(f"/api/v1/workers/{body['id']}/heartbeat", json={"anything": 1}).status_code == 200


def test_list_shows_status_and_active_instances(app, api, redis_server):
    from ctfhost.testing import run_jobs

    busy, idle, stale = worker_body(id=new_id("a")), worker_body(id=new_id("b")), worker_body(id=new_id("c"))
    for body in (busy, idle, stale):
        assert api.post("/api/v1/workers", json=body).status_code == 201
    # only `busy` may take launches: the others have no room
    for body in (idle, stale):
        api.post("/api/v1/workers", json=dict(body, max_instances=0))
    api.post("/api/v1/challenges", json={"id": "web-chal", "name": "w", "runtime": "fake", "image": "i", "port": 80})
    instances = [
        api.post("/api/v1/instances", json={"team_id": team, "challenge_id": "web-chal"}).get_json() for team in range(3)
    ]
    assert {i["worker_id"] for i in instances} == {busy["id"]}
    run_jobs(app, busy["id"])
    api.delete(f"/api/v1/instances/{instances[0]['id']}")
    backdate(stale["id"], 61)

    response = api.get("/api/v1/workers")
    assert response.status_code == 200
    listed = {w["id"]: w for w in response.get_json() if w["id"] in (busy["id"], idle["id"], stale["id"])}
    assert [w for w in response.get_json() if w["id"] in listed] == sorted(listed.values(), key=lambda w: w["id"])
    assert (listed[busy["id"]]["status"], listed[busy["id"]]["active_instances"]) == ("active", 2)
    assert (listed[idle["id"]]["status"], listed[idle["id"]]["active_instances"]) == ("active", 0)
    assert (listed[stale["id"]]["status"], listed[stale["id"]]["active_instances"]) == ("inactive", 0)
    run_jobs(app, busy["id"])


def test_worker_turns_inactive_after_60_seconds(api):
    body = worker_body()
    api.post("/api/v1/workers", json=body)

    def status():
        return next(w["status"] for w in api.get("/api/v1/workers").get_json() if w["id"] == body["id"])

    backdate(body["id"], 50)
    assert status() == "active"
    backdate(body["id"], 61)
    assert status() == "inactive"
    api.post(f"/api/v1/workers/{body['id']}/heartbeat")
    assert status() == "active"


# -- settings ------------------------------------------------------------------------------


def test_settings_default_to_the_environment(api):
    response = api.get("/api/v1/settings")
    assert response.status_code == 200
    # the test environment turns the fair-use limits off (CTFHOST_MAX_INSTANCES_PER_TEAM, ..._COOLDOWN_SECONDS)
    assert response.get_json() == {
        "default_ttl_seconds": 1800, "max_instances_per_team": 1000, "launch_cooldown_seconds": 0, "tcp_port": 443,
        "max_services_per_challenge": 8, "max_endpoints_per_challenge": 8,
    }


def test_fair_use_settings_default_to_3_and_10(app, api):
    saved = {k: app.config[k] for k in ("CTFHOST_MAX_INSTANCES_PER_TEAM", "CTFHOST_LAUNCH_COOLDOWN_SECONDS")}
    from ctfhost.config import SETTINGS

    try:
        app.config["CTFHOST_MAX_INSTANCES_PER_TEAM"] = SETTINGS["MAX_INSTANCES_PER_TEAM"][1]
        app.config["CTFHOST_LAUNCH_COOLDOWN_SECONDS"] = SETTINGS["LAUNCH_COOLDOWN_SECONDS"][1]
        body = api.get("/api/v1/settings").get_json()
    finally:
        app.config.update(saved)
    assert (body["max_instances_per_team"], body["launch_cooldown_seconds"]) == (3, 10)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"max_instances_per_team": -1}, "max_instances_per_team"),
        ({"max_instances_per_team": "3"}, "max_instances_per_team"),
        ({"launch_cooldown_seconds": -1}, "launch_cooldown_seconds"),
        ({"launch_cooldown_seconds": 1.5}, "launch_cooldown_seconds"),
    ],
)
def test_patch_fair_use_settings_rejects_bad_values(api, body, field):
    response = api.patch("/api/v1/settings", json=body)
    assert response.status_code == 422
    assert list(response.get_json()["errors"]["json"]) == [field]


def test_settings_default_follows_config(app, api):
    saved = app.config["CTFHOST_DEFAULT_TTL_SECONDS"]
    app.config["CTFHOST_DEFAULT_TTL_SECONDS"] = 600
    try:
        assert api.get("/api/v1/settings").get_json()["default_ttl_seconds"] == 600
    finally:
        app.config["CTFHOST_DEFAULT_TTL_SECONDS"] = saved


def test_patch_settings_is_persisted(app, api):
    response = api.patch("/api/v1/settings", json={"default_ttl_seconds": 3600})
    assert response.status_code == 200
    assert response.get_json()["default_ttl_seconds"] == 3600
    assert api.get("/api/v1/settings").get_json()["default_ttl_seconds"] == 3600
    assert Setting.get_by_id("default_ttl_seconds").value == "3600"
    assert api.patch("/api/v1/settings", json={"max_instances_per_team": 5, "launch_cooldown_seconds": 30}).status_code == 200
    body = api.get("/api/v1/settings").get_json()
    assert (body["default_ttl_seconds"], body["max_instances_per_team"], body["launch_cooldown_seconds"]) == (3600, 5, 30)
    # the database wins over the environment from now on
    saved = app.config["CTFHOST_DEFAULT_TTL_SECONDS"]
    app.config["CTFHOST_DEFAULT_TTL_SECONDS"] = 60
    try:
        assert api.get("/api/v1/settings").get_json()["default_ttl_seconds"] == 3600
    finally:
        app.config["CTFHOST_DEFAULT_TTL_SECONDS"] = saved
    assert api.patch("/api/v1/settings", json={"default_ttl_seconds": 120}).get_json()["default_ttl_seconds"] == 120
    assert Setting.select().where(Setting.key.in_(["default_ttl_seconds", "max_instances_per_team", "launch_cooldown_seconds"])).count() == 3


def test_patch_settings_with_nothing_changes_nothing(api):
    api.patch("/api/v1/settings", json={"default_ttl_seconds": 42})
    response = api.patch("/api/v1/settings", json={})
    assert response.status_code == 422  # a PATCH must name a field (issue 8), never a silent 200
    assert api.get("/api/v1/settings").get_json()["default_ttl_seconds"] == 42


@pytest.mark.parametrize(
    "body, field",
    [
        ({"default_ttl_seconds": 0}, "default_ttl_seconds"),
        ({"default_ttl_seconds": -5}, "default_ttl_seconds"),
        ({"default_ttl_seconds": "60"}, "default_ttl_seconds"),
        ({"default_ttl_seconds": 60.5}, "default_ttl_seconds"),
        ({"default_ttl_seconds": True}, "default_ttl_seconds"),
        ({"default_ttl_seconds": None}, "default_ttl_seconds"),
        ({"max_ttl": 5}, "max_ttl"),
    ],
)
def test_patch_settings_rejects_bad_values(api, body, field):
    response = api.patch("/api/v1/settings", json=body)
    assert response.status_code == 422
    payload = response.get_json()
    assert list(payload["errors"]["json"]) == [field]
    assert field in payload["message"]
    assert api.get("/api/v1/settings").get_json()["default_ttl_seconds"] == 1800
    assert Setting.select().count() == 0


def test_default_ttl_applies_to_challenges_without_their_own(api, redis_server):
    worker = worker_body(id=new_id("ttl"))
    api.post("/api/v1/workers", json=worker)
    for slug, ttl in (("no-ttl", None), ("own-ttl", 300)):
        api.post("/api/v1/challenges", json={"id": slug, "name": slug, "runtime": "fake", "image": "i", "port": 80,
                                             "ttl_seconds": ttl})
    assert api.patch("/api/v1/settings", json={"default_ttl_seconds": 7200}).status_code == 200

    def lifetime(challenge_id, team):
        body = api.post("/api/v1/instances", json={"team_id": team, "challenge_id": challenge_id}).get_json()
        return (parse_iso(body["expires_at"]) - parse_iso(body["created_at"])).total_seconds()

    assert lifetime("no-ttl", 1) in (7200, 7201)
    assert lifetime("own-ttl", 1) in (300, 301)
    api.patch("/api/v1/settings", json={"default_ttl_seconds": 90})
    assert lifetime("no-ttl", 2) in (90, 91)


def test_settings_service_refuses_unknown_settings(app):
    from ctfhost.services.errors import Invalid
    from ctfhost.services.settings import update_settings

    with pytest.raises(Invalid) as refused:
        update_settings({"default_ttl_seconds": 60, "max_ttl": 5})
    assert "max_ttl" in refused.value.errors["json"]
    assert "default_ttl_seconds" in refused.value.errors["json"]["max_ttl"][0]
    assert Setting.select().count() == 0
