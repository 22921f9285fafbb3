"""The audit trail: every state-changing request, who made it, and how it ended."""

import re
import uuid

import pytest

pytestmark = pytest.mark.usefixtures("redis_server")

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def setup(api):
    worker = f"audit-{uuid.uuid4().hex[:8]}"
    api.post("/api/v1/workers", json={"id": worker, "address": "127.0.0.1", "runtime": "fake"})
    api.post("/api/v1/challenges", json={"id": "web-audit", "name": "a", "runtime": "fake", "image": "i", "port": 80})
    return worker


def events(admin, query=""):
    response = admin.get(f"/api/v1/audit{query}")
    assert response.status_code == 200
    return response.get_json(), int(response.headers["X-Total-Count"])


def test_state_changing_requests_are_recorded(admin, api, team_api, client, setup):
    team = team_api("red")
    launched = team.post("/api/v1/instances", json={"team_id": "red", "challenge_id": "web-audit"}).get_json()
    assert team.post("/api/v1/instances", json={"team_id": "blue", "challenge_id": "web-audit"}).status_code == 403
    assert client.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-audit"}).status_code == 401
    api.get("/api/v1/instances")  # reads are not recorded

    rows, total = events(admin)
    assert total == len(rows) == 6  # worker, challenge, token, launch, refused launch, anonymous
    assert all(ISO_Z.match(row["at"]) for row in rows)
    assert all(row["method"] != "GET" for row in rows)

    launch = next(r for r in rows if r["actor"] == "team" and r["status"] == 201)
    assert launch["team_id"] == "red"
    assert launch["token_id"] == team.token["id"]
    assert launch["action"] == "POST /api/v1/instances"
    assert launch["target"] == launched["id"]
    assert launch["client_ip"] == "127.0.0.1"
    assert launch["result"] == "ok"

    refused = next(r for r in rows if r["actor"] == "team" and r["status"] == 403)
    assert refused["result"] == "refused" and "own team" in refused["message"]
    anonymous = next(r for r in rows if r["actor"] == "anonymous")
    assert anonymous["status"] == 401 and anonymous["token_id"] is None
    issued = next(r for r in rows if r["action"] == "POST /api/v1/tokens")
    assert issued["actor"] == "admin" and issued["target"] == team.token["id"]
    assert team.token["token"] not in str(rows)  # the secret is never recorded
    created = next(r for r in rows if r["action"] == "POST /api/v1/challenges")
    assert created["actor"] == "api_key" and created["target"] == "web-audit"


def test_targets_come_from_the_path(admin, api, setup):
    api.patch("/api/v1/challenges/web-audit", json={"name": "renamed"})
    api.delete("/api/v1/challenges/web-audit")
    rows, _ = events(admin, "?target=web-audit")
    assert [r["action"] for r in rows] == [
        "DELETE /api/v1/challenges/<string:challenge_id>",
        "PATCH /api/v1/challenges/<string:challenge_id>",
        "POST /api/v1/challenges",
    ]


def test_filters_and_pagination(admin, api, team_api, setup):
    team = team_api(5)
    for _ in range(3):
        team.post("/api/v1/instances", json={"team_id": 6, "challenge_id": "web-audit"})
    rows, total = events(admin, "?actor=team&result=refused")
    assert total == 3 and all(r["status"] == 403 for r in rows)
    rows, total = events(admin, "?team_id=5&limit=2")
    assert total == 4 and len(rows) == 2  # the three launches and the token issued for team 5
    rows, _ = events(admin, "?team_id=5&limit=2&offset=2")
    assert len(rows) == 2
    rows, _ = events(admin, "?team_id=5&limit=2&offset=3")
    assert [r["action"] for r in rows] == ["POST /api/v1/tokens"]
    rows, total = events(admin, "?actor=admin")
    assert total == 1 and rows[0]["action"] == "POST /api/v1/tokens"
    assert admin.get("/api/v1/audit?actor=robot").status_code == 422
    assert admin.get("/api/v1/audit?since=yesterday").status_code == 422
    rows, total = events(admin, "?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z")
    assert total == 0


def test_only_the_admin_reads_the_audit_trail(api, team_api):
    assert api.get("/api/v1/audit").status_code == 403
    assert team_api(1).get("/api/v1/audit").status_code == 403
