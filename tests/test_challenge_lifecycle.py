"""A challenge's lifecycle (draft, active, inactive) and its metadata, through the API."""

import pytest

from ctfhost.models import AuditEvent, Instance
from ctfhost.testing import run_jobs

from test_api_challenges import challenge_body, field_errors

pytestmark = pytest.mark.usefixtures("redis_server")


def create(api, **changes):
    response = api.post("/api/v1/challenges", json=challenge_body(**changes))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def launch(caller, team="t1", challenge="web-babysql"):
    return caller.post("/api/v1/instances", json={"team_id": team, "challenge_id": challenge})


def test_a_new_challenge_is_active_unless_told_otherwise(api):
    assert create(api)["status"] == "active"
    assert create(api, id="web-draft", status="draft")["status"] == "draft"
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(id="web-x", status="archived")))
    assert errors["status"] == ["Must be one of: draft, active, inactive."]


def test_activate_and_deactivate_return_the_challenge_and_are_audited(api, team_api):
    create(api, status="draft")
    activated = api.post("/api/v1/challenges/web-babysql/activate")
    assert activated.status_code == 200 and activated.get_json()["status"] == "active"
    assert activated.get_json()["id"] == "web-babysql"
    deactivated = api.post("/api/v1/challenges/web-babysql/deactivate")
    assert deactivated.status_code == 200 and deactivated.get_json()["status"] == "inactive"
    assert api.get("/api/v1/challenges/web-babysql").get_json()["status"] == "inactive"
    assert api.post("/api/v1/challenges/nope/activate").status_code == 404
    assert team_api("t1").post("/api/v1/challenges/web-babysql/activate").status_code == 403
    actions = [event.action for event in AuditEvent.select().where(AuditEvent.target == "web-babysql")]
    assert any("activate" in action for action in actions) and any("deactivate" in action for action in actions)


@pytest.mark.parametrize("status", ["draft", "inactive"])
def test_only_the_admin_launches_a_challenge_that_is_not_active(api, admin, team_api, worker_id, status):
    create(api, status=status)
    refused = launch(api)
    assert refused.status_code == 409
    assert refused.get_json()["message"].startswith(f"challenge 'web-babysql' is not active (it is {status})")
    assert launch(team_api("t2"), team="t2").status_code == 409
    assert Instance.select().count() == 0
    tested = launch(admin, team="admin-test")
    assert tested.status_code == 201, tested.get_json()
    api.post("/api/v1/challenges/web-babysql/activate")
    assert launch(api, team="t3").status_code == 201


def test_deactivating_keeps_running_instances_unless_told_to_destroy_them(api, app, admin, worker_id):
    create(api)
    first = launch(api, team="t1").get_json()
    second = launch(api, team="t2").get_json()
    run_jobs(app, worker_id)
    assert api.post("/api/v1/challenges/web-babysql/deactivate").status_code == 200
    assert {api.get(f"/api/v1/instances/{i['id']}").get_json()["status"] for i in (first, second)} == {"running"}
    # a restart is a launch: refused while the challenge is inactive, kept for the admin
    refused = api.post(f"/api/v1/instances/{first['id']}/restart")
    assert refused.status_code == 409 and "is not active" in refused.get_json()["message"]
    assert api.get(f"/api/v1/instances/{first['id']}").get_json()["status"] == "running"
    assert admin.post(f"/api/v1/instances/{second['id']}/restart").status_code == 200
    ended = api.post("/api/v1/challenges/web-babysql/deactivate?destroy_instances=true")
    assert ended.status_code == 200
    assert Instance.select().where(Instance.challenge_id == "web-babysql",
                                   Instance.status.in_(["pending", "running"])).count() == 0
    assert api.get(f"/api/v1/instances/{first['id']}").get_json()["status"] == "destroyed"
    assert api.post("/api/v1/challenges/web-babysql/deactivate?destroy_instances=maybe").status_code == 422


def test_version_description_and_metadata_are_returned_and_patchable(api):
    created = create(api, version="1.0", description="SQLi in the login form",
                     metadata={"author": "alice", "tags": ["web", "sqli"], "points": 500})
    assert (created["version"], created["description"]) == ("1.0", "SQLi in the login form")
    assert created["metadata"] == {"author": "alice", "tags": ["web", "sqli"], "points": 500}
    patched = api.patch("/api/v1/challenges/web-babysql", json={"version": "1.1", "metadata": {"author": "bob"},
                                                                 "status": "inactive"})
    assert patched.status_code == 200, patched.get_json()
    body = patched.get_json()
    assert (body["version"], body["metadata"], body["status"]) == ("1.1", {"author": "bob"}, "inactive")
    assert body["description"] == "SQLi in the login form"
    cleared = api.patch("/api/v1/challenges/web-babysql", json={"version": None, "description": None}).get_json()
    assert (cleared["version"], cleared["description"]) == (None, None)


@pytest.mark.parametrize("changes, field, message", [
    ({"metadata": ["a"]}, "metadata", "Must be an object."),
    ({"metadata": "{}"}, "metadata", "Must be an object."),
    ({"metadata": {"big": "x" * 20000}}, "metadata", "Longer than 16384 characters as JSON."),
    ({"version": ""}, "version", "Length must be between 1 and 100."),
    ({"version": "v" * 101}, "version", "Length must be between 1 and 100."),
    ({"description": "d" * 20001}, "description", "Longer than maximum length 20000."),
    ({"status": "gone"}, "status", "Must be one of: draft, active, inactive."),
])
def test_bad_metadata_fields_are_named(api, changes, field, message):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(**changes)))
    assert errors[field] == [message]
    create(api)
    errors = field_errors(api.patch("/api/v1/challenges/web-babysql", json=changes))
    assert errors[field] == [message]


def test_teams_see_active_challenges_only(api, team_api):
    create(api, id="web-live")
    create(api, id="web-draft", status="draft", metadata={"author": "alice"})
    create(api, id="web-gone", status="inactive")
    team = team_api("t1")
    assert [c["id"] for c in team.get("/api/v1/challenges").get_json()] == ["web-live"]
    assert team.get("/api/v1/challenges?status=draft").get_json() == []
    assert team.get("/api/v1/challenges/web-draft").status_code == 404
    shown = team.get("/api/v1/challenges/web-live").get_json()
    assert shown["status"] == "active" and "metadata" not in shown and "description" not in shown
    # the API key sees everything, and filters by status
    assert [c["id"] for c in api.get("/api/v1/challenges").get_json()] == ["web-draft", "web-gone", "web-live"]
    assert [c["id"] for c in api.get("/api/v1/challenges?status=draft").get_json()] == ["web-draft"]
    assert api.get("/api/v1/challenges?status=nope").status_code == 422
