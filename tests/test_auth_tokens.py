"""Who may call what: admin token, API key, team tokens."""

import datetime
import hashlib
import logging
import uuid

import pytest

from ctfhost.models import Token, utcnow
from ctfhost.testing import ADMIN_TOKEN, Api, run_jobs

pytestmark = pytest.mark.usefixtures("redis_server")


@pytest.fixture
def challenge(api):
    body = {"id": "web-auth", "name": "Auth", "runtime": "fake", "image": "secret/image:1", "port": 80,
            "extra_config": '{"readiness_timeout": 5}'}
    assert api.post("/api/v1/challenges", json=body).status_code == 201
    return body


# -- admin ---------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{"X-Admin-Token": ADMIN_TOKEN}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}])
def test_admin_token_may_do_everything(client, headers):
    admin = Api(client, credentials=headers)
    assert admin.get("/api/v1/tokens").status_code == 200
    assert admin.get("/api/v1/audit").status_code == 200
    assert admin.get("/api/v1/workers").status_code == 200
    assert admin.get("/api/v1/settings").status_code == 200
    assert admin.get("/api/v1/traefik/config").status_code == 200
    assert admin.post("/api/v1/challenges", json={"id": "web-adm", "name": "a", "runtime": "fake", "image": "i", "port": 1}).status_code == 201


@pytest.mark.parametrize("headers", [{"X-Admin-Token": "nope"}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"X-Admin-Token": ADMIN_TOKEN + "x"}])
def test_wrong_admin_credentials_are_401(client, headers):
    response = Api(client, credentials=headers).get("/api/v1/tokens")
    assert response.status_code == 401
    assert response.get_json()["code"] == 401


def test_admin_token_from_a_file(app, client, tmp_path):
    path = tmp_path / "admin-token"
    path.write_text("from-a-file\n")
    saved = app.config.get("CTFHOST_ADMIN_TOKEN")
    app.config["CTFHOST_ADMIN_TOKEN"] = None
    app.config["CTFHOST_ADMIN_TOKEN_FILE"] = str(path)
    try:
        assert Api(client, credentials={"X-Admin-Token": "from-a-file"}).get("/api/v1/tokens").status_code == 200
        assert Api(client, credentials={"X-Admin-Token": ADMIN_TOKEN}).get("/api/v1/tokens").status_code == 401
    finally:
        app.config["CTFHOST_ADMIN_TOKEN"] = saved
        app.config.pop("CTFHOST_ADMIN_TOKEN_FILE")


# -- API key -------------------------------------------------------------------


def test_api_key_mints_tokens_for_teams_but_cannot_read_audit(api):
    # the scoreboard mints a player's token for the player's team (the CTFd plugin's API tokens page)
    minted = api.post("/api/v1/tokens", json={"team_id": 1, "name": "x"})
    assert minted.status_code == 201
    assert [token["id"] for token in api.get("/api/v1/tokens?team_id=1").get_json()] == [minted.get_json()["id"]]
    assert api.delete(f"/api/v1/tokens/{minted.get_json()['id']}").status_code == 204
    response = api.get("/api/v1/audit")
    assert response.status_code == 403
    assert "API key" in response.get_json()["message"]


def test_api_key_acts_for_any_team(api, challenge, worker_id):
    for team in (1, "blue"):
        assert api.post("/api/v1/instances", json={"team_id": team, "challenge_id": "web-auth"}).status_code == 201


# -- team tokens -----------------------------------------------------------------


def test_issue_list_and_revoke_a_token(admin, client):
    response = admin.post("/api/v1/tokens", json={"team_id": 42, "name": "scoreboard bot"})
    assert response.status_code == 201
    created = response.get_json()
    assert created["token"].startswith("cth_") and len(created["token"]) > 30
    assert created["team_id"] == 42 and created["name"] == "scoreboard bot" and created["expires_at"] is None
    # only a hash is stored
    row = Token.get_by_id(created["id"])
    assert row.secret_hash == hashlib.sha256(created["token"].encode()).hexdigest()
    assert created["token"] not in str(row.__data__)

    listing = admin.get("/api/v1/tokens").get_json()
    assert [t["id"] for t in listing] == [created["id"]]
    assert "token" not in listing[0] and listing[0]["last_used_at"] is None

    team = Api(client, credentials={"Authorization": f"Bearer {created['token']}"})
    assert team.get("/api/v1/instances").status_code == 200
    assert admin.get("/api/v1/tokens").get_json()[0]["last_used_at"] is not None

    assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    response = team.get("/api/v1/instances")
    assert response.status_code == 401
    assert "revoked" in response.get_json()["message"]
    assert admin.get("/api/v1/tokens").get_json() == []
    assert admin.get("/api/v1/tokens?include_revoked=true").get_json()[0]["revoked_at"] is not None
    assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 404


def test_expired_token_is_401(admin, team_api):
    team = team_api(7)
    assert team.get("/api/v1/instances").status_code == 200
    Token.update(expires_at=utcnow() - datetime.timedelta(seconds=1)).where(Token.id == team.token["id"]).execute()
    response = team.get("/api/v1/instances")
    assert response.status_code == 401
    assert "expired" in response.get_json()["message"]


def test_token_with_expiry(admin):
    soon = (utcnow() + datetime.timedelta(hours=2)).replace(microsecond=0).isoformat() + "Z"
    response = admin.post("/api/v1/tokens", json={"team_id": "red", "name": "n", "expires_at": soon})
    assert response.status_code == 201
    assert response.get_json()["expires_at"] == soon


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x"}, "team_id"),
        ({"team_id": 1}, "name"),
        ({"team_id": -1, "name": "x"}, "team_id"),
        ({"team_id": 1, "name": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"team_id": 1, "name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_bad_token_requests_are_422(admin, body, field):
    response = admin.post("/api/v1/tokens", json=body)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]["json"]


def test_unknown_or_malformed_bearer_is_401(client):
    for header in ("Bearer cth_unknown", "Bearer", "Token abc"):
        response = Api(client, credentials={"Authorization": header}).get("/api/v1/instances")
        assert response.status_code == 401


def test_team_token_acts_for_its_own_team_only(api, team_api, challenge, worker_id, app):
    red, blue = team_api("red"), team_api("blue")
    mine = red.post("/api/v1/instances", json={"team_id": "red", "challenge_id": "web-auth"})
    assert mine.status_code == 201
    mine = mine.get_json()
    theirs = api.post("/api/v1/instances", json={"team_id": "blue", "challenge_id": "web-auth"}).get_json()
    run_jobs(app, worker_id)

    # a body naming another team is 403
    response = red.post("/api/v1/instances", json={"team_id": "blue", "challenge_id": "web-auth"})
    assert response.status_code == 403
    assert red.get("/api/v1/instances?team_id=blue").status_code == 403
    # another team's instance is 404, whatever the action
    for method, suffix in (("get", ""), ("delete", ""), ("post", "/renew"), ("post", "/restart")):
        response = getattr(red, method)(f"/api/v1/instances/{theirs['id']}{suffix}")
        assert response.status_code == 404, (method, suffix)
    assert red.get("/api/v1/instances/team/blue/web-auth").status_code == 404
    # its own: read, list, look up, renew, restart, stop
    assert red.get(f"/api/v1/instances/{mine['id']}").status_code == 200
    assert [i["id"] for i in red.get("/api/v1/instances").get_json()] == [mine["id"]]
    assert red.get("/api/v1/instances/team/red/web-auth").get_json()["id"] == mine["id"]
    assert red.post(f"/api/v1/instances/{mine['id']}/renew").status_code in (200, 409)
    restarted = red.post(f"/api/v1/instances/{mine['id']}/restart")
    assert restarted.status_code == 200, restarted.get_json()
    assert red.delete(f"/api/v1/instances/{restarted.get_json()['id']}").status_code == 204
    # and blue still sees its own
    assert [i["id"] for i in blue.get("/api/v1/instances").get_json()] == [theirs["id"]]


def test_team_token_cannot_read_images_configs_workers_settings_tokens_or_traefik(team_api, challenge):
    team = team_api(3)
    listing = team.get("/api/v1/challenges")
    assert listing.status_code == 200
    (public,) = listing.get_json()
    assert public["id"] == "web-auth"
    assert "image" not in public and "extra_config" not in public
    one = team.get("/api/v1/challenges/web-auth").get_json()
    assert "image" not in one and "extra_config" not in one
    assert "secret/image" not in team.get("/api/v1/challenges").get_data(as_text=True)
    for path in ("/api/v1/workers", "/api/v1/settings", "/api/v1/tokens", "/api/v1/traefik/config", "/api/v1/audit",
                 "/api/v1/challenges/web-auth/weights"):
        response = team.get(path)
        assert response.status_code == 403, path
        assert response.get_json()["code"] == 403
    assert team.post("/api/v1/challenges", json={"id": "web-x", "name": "x", "runtime": "fake", "image": "i", "port": 1}).status_code == 403
    assert team.patch("/api/v1/challenges/web-auth", json={"name": "y"}).status_code == 403
    assert team.delete("/api/v1/challenges/web-auth").status_code == 403
    assert team.patch("/api/v1/settings", json={"default_ttl_seconds": 5}).status_code == 403
    assert team.post("/api/v1/workers", json={"id": "w", "address": "a", "runtime": "fake"}).status_code == 403
    assert team.post("/api/v1/tokens", json={"team_id": 3, "name": "more"}).status_code == 403


def test_secrets_never_reach_the_logs(admin, client, caplog):
    caplog.set_level(logging.DEBUG)
    secret = admin.post("/api/v1/tokens", json={"team_id": 9, "name": "n"}).get_json()["token"]
    Api(client, credentials={"Authorization": f"Bearer {secret}"}).get("/api/v1/instances")
    Api(client, credentials={"Authorization": "Bearer cth_wrong-secret"}).get("/api/v1/instances")
    Api(client, credentials={"X-Admin-Token": "wrong-admin"}).get("/api/v1/tokens")
    text = caplog.text
    for value in (secret, "cth_wrong-secret", "wrong-admin", ADMIN_TOKEN):
        assert value not in text
