"""Scoped team tokens: what each scope allows, self-service minting within a token's own limits, and /api/v1/meta."""

import datetime

import pytest

from ctfhost import __version__
from ctfhost.models import utcnow
from ctfhost.services import tokens
from ctfhost.testing import ADMIN_TOKEN, Api, run_jobs
from ctfhost.timeutil import to_iso

pytestmark = pytest.mark.usefixtures("redis_server")

ALL_BUT_TOKENS = ["instances:read", "instances:write", "submissions", "events"]


@pytest.fixture
def challenge(api):
    body = {"id": "web-scoped", "name": "Scoped", "runtime": "fake", "image": "img:1", "port": 80,
            "flag_template": "flag{{{hex:12}}}"}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return body


def in_days(days):
    return to_iso(utcnow() + datetime.timedelta(days=days))


def bearer(client, secret):
    return Api(client, credentials={"Authorization": f"Bearer {secret}"})


# -- what a scope allows -------------------------------------------------------------


def test_a_token_made_without_scopes_holds_all_but_tokens(team_api):
    team = team_api("t1")
    assert team.token["scopes"] == ALL_BUT_TOKENS
    response = team.get("/api/v1/tokens")
    assert response.status_code == 403
    assert response.get_json()["errors"] == {"scope": "tokens"}
    assert "'tokens'" in response.get_json()["message"]


@pytest.mark.parametrize("scope, method, path, body", [
    ("instances:read", "get", "/api/v1/instances", None),
    ("instances:read", "get", "/api/v1/challenges", None),
    ("instances:write", "post", "/api/v1/instances", {"challenge_id": "web-scoped"}),
    ("submissions", "post", "/api/v1/submissions", {"challenge_id": "web-scoped", "flag": "flag{x}"}),
    ("submissions", "post", "/api/v1/submissions/verify", {"challenge_id": "web-scoped", "flag": "flag{x}"}),
    ("tokens", "post", "/api/v1/tokens", {"name": "child"}),
])
def test_a_route_refuses_a_token_without_its_scope_naming_it(team_api, challenge, worker_id, scope, method, path, body):
    others = [s for s in ALL_BUT_TOKENS + ["tokens"] if s != scope]
    team = team_api("t1", scopes=others)
    response = getattr(team, method)(path, json=body)
    assert response.status_code == 403, response.get_json()
    assert response.get_json()["errors"] == {"scope": scope}
    assert repr(scope) in response.get_json()["message"]
    # the control: a token holding the scope gets past it
    allowed = team_api("t1", scopes=[scope])
    assert getattr(allowed, method)(path, json=body).status_code in (200, 201)


def test_instance_routes_split_read_and_write(team_api, api, challenge, worker_id):
    launched = api.post("/api/v1/instances", json={"team_id": "t1", "challenge_id": "web-scoped"}).get_json()
    reader = team_api("t1", scopes=["instances:read"])
    assert reader.get(f"/api/v1/instances/{launched['id']}").status_code == 200
    assert reader.get("/api/v1/instances/team/t1/web-scoped").status_code == 200
    assert reader.post(f"/api/v1/instances/{launched['id']}/access", json={}).status_code in (200, 409)
    for method, path in (("post", f"/api/v1/instances/{launched['id']}/renew"),
                         ("post", f"/api/v1/instances/{launched['id']}/restart"),
                         ("delete", f"/api/v1/instances/{launched['id']}")):
        response = getattr(reader, method)(path)
        assert response.status_code == 403 and response.get_json()["errors"] == {"scope": "instances:write"}, path
    writer = team_api("t1", scopes=["instances:write"])
    assert writer.get(f"/api/v1/instances/{launched['id']}").get_json()["errors"] == {"scope": "instances:read"}
    assert writer.delete(f"/api/v1/instances/{launched['id']}").status_code == 204


def test_the_api_key_and_the_admin_hold_every_scope(api, admin):
    for caller in (api, admin):
        assert caller.get("/api/v1/tokens").status_code == 200
        assert caller.get("/api/v1/instances").status_code == 200


def test_every_route_a_team_token_may_call_states_its_scope_in_the_spec(client):
    spec = client.get("/openapi.json").get_json()
    operations = {(method, path): operation for path, item in spec["paths"].items()
                  for method, operation in item.items() if isinstance(operation, dict)}
    team_routes = {route: operation for route, operation in operations.items()
                   if "a team token" in operation.get("description", "")}
    assert len(team_routes) >= 14
    for route, operation in team_routes.items():
        scope = operation.get("x-ctfhost-scope")
        assert scope in ALL_BUT_TOKENS + ["tokens"], route
        assert f"Token scope: `{scope}`" in operation["description"], route
    assert team_routes[("post", "/api/v1/instances")]["x-ctfhost-scope"] == "instances:write"
    assert team_routes[("get", "/api/v1/instances/{instance_id}")]["x-ctfhost-scope"] == "instances:read"
    assert team_routes[("post", "/api/v1/submissions")]["x-ctfhost-scope"] == "submissions"
    assert team_routes[("post", "/api/v1/tokens")]["x-ctfhost-scope"] == "tokens"


# -- a team token leaves its team out --------------------------------------------------------


def test_a_team_token_may_leave_its_team_out_of_launches_and_submissions(app, team_api, api, challenge, worker_id):
    team = team_api(7)
    launched = team.post("/api/v1/instances", json={"challenge_id": "web-scoped"})
    assert launched.status_code == 201, launched.get_json()
    assert launched.get_json()["team_id"] == 7  # the token's team, as its creator gave it (a number)
    run_jobs(app, worker_id)
    flag = api.get(f"/api/v1/instances/{launched.get_json()['id']}").get_json()["flag"]
    verdict = team.post("/api/v1/submissions", json={"challenge_id": "web-scoped", "flag": flag})
    assert verdict.status_code == 200 and verdict.get_json()["correct"] is True
    # another team's id is still refused
    assert team.post("/api/v1/instances", json={"team_id": 8, "challenge_id": "web-scoped"}).status_code == 403


def test_the_api_key_must_name_the_team(api, challenge, worker_id):
    for path, body in (("/api/v1/instances", {"challenge_id": "web-scoped"}),
                       ("/api/v1/submissions", {"challenge_id": "web-scoped", "flag": "x"}),
                       ("/api/v1/tokens", {"name": "n"})):
        response = api.post(path, json=body)
        assert response.status_code == 422, (path, response.get_json())
        assert "team_id" in response.get_json()["errors"]["json"]


# -- self-service minting ----------------------------------------------------------------------


def test_a_token_with_the_tokens_scope_mints_for_its_own_team(client, team_api):
    parent = team_api("t1", scopes=["tokens", "instances:read"], expires_at=in_days(7))
    child = parent.post("/api/v1/tokens", json={"name": "harness"})
    assert child.status_code == 201, child.get_json()
    body = child.get_json()
    assert body["team_id"] == "t1" and body["token"].startswith("cth_")
    assert body["scopes"] == ["instances:read", "tokens"]  # its own, by default
    assert body["expires_at"] == parent.token["expires_at"]  # never longer-lived: its own expiry by default
    assert bearer(client, body["token"]).get("/api/v1/instances").status_code == 200
    fewer = parent.post("/api/v1/tokens", json={"name": "reader", "scopes": ["instances:read"]}).get_json()
    assert fewer["scopes"] == ["instances:read"]
    assert bearer(client, fewer["token"]).get("/api/v1/tokens").status_code == 403


def test_a_mint_never_grants_more_than_the_minting_token(team_api):
    parent = team_api("t1", scopes=["tokens", "instances:read"], expires_at=in_days(1))
    more = parent.post("/api/v1/tokens", json={"name": "x", "scopes": ["instances:read", "submissions"]})
    assert more.status_code == 403
    assert more.get_json()["errors"] == {"scope": "submissions"}
    later = parent.post("/api/v1/tokens", json={"name": "x", "expires_at": in_days(2)})
    assert later.status_code == 422
    assert "expires_at" in later.get_json()["errors"]["json"]
    other_team = parent.post("/api/v1/tokens", json={"name": "x", "team_id": "t2"})
    assert other_team.status_code == 403
    unknown = parent.post("/api/v1/tokens", json={"name": "x", "scopes": ["root"]})
    assert unknown.status_code == 422 and "scopes" in unknown.get_json()["errors"]["json"]
    assert parent.post("/api/v1/tokens", json={"name": "x", "scopes": []}).status_code == 422


def test_a_never_expiring_minter_may_mint_tokens_that_expire(team_api):
    parent = team_api("t1", scopes=["tokens"])
    child = parent.post("/api/v1/tokens", json={"name": "x", "expires_at": in_days(1)}).get_json()
    assert child["expires_at"] is not None
    assert parent.post("/api/v1/tokens", json={"name": "y"}).get_json()["expires_at"] is None


def test_a_team_token_lists_and_revokes_only_its_teams_tokens(client, team_api, admin):
    mine = team_api("t1", scopes=["tokens", "instances:read"])
    theirs = team_api("t2", scopes=["tokens"])
    child = mine.post("/api/v1/tokens", json={"name": "child"}).get_json()
    listed = {token["id"] for token in mine.get("/api/v1/tokens").get_json()}
    assert listed == {mine.token["id"], child["id"]}
    assert all("token" not in token for token in mine.get("/api/v1/tokens").get_json())
    assert mine.get("/api/v1/tokens?team_id=t2").status_code == 403
    assert mine.delete(f"/api/v1/tokens/{theirs.token['id']}").status_code == 404
    assert theirs.get("/api/v1/tokens").status_code == 200  # still alive
    assert mine.delete(f"/api/v1/tokens/{child['id']}").status_code == 204
    assert bearer(client, child["token"]).get("/api/v1/instances").status_code == 401


# -- /api/v1/meta --------------------------------------------------------------------------------------


def test_meta_tells_the_server_and_the_caller(client, api, admin, team_api):
    anonymous = client.get("/api/v1/meta").get_json()
    assert anonymous["server_version"] == __version__
    assert anonymous["api_version"].split(".")[0] == "1"
    assert "fake" in anonymous["runtimes"] and "events" in anonymous["features"]
    assert anonymous["caller"] is None
    assert api.get("/api/v1/meta").get_json()["caller"] == {
        "kind": "api_key", "team_id": None, "token_id": None,
        "scopes": ["instances:read", "instances:write", "submissions", "events", "tokens"]}
    assert admin.get("/api/v1/meta").get_json()["caller"]["kind"] == "admin"
    team = team_api("t9", scopes=["events"])
    assert team.get("/api/v1/meta").get_json()["caller"] == {
        "kind": "team", "team_id": "t9", "token_id": team.token["id"], "scopes": ["events"]}
    wrong = client.get("/api/v1/meta", headers={"Authorization": "Bearer cth_nope"})
    assert wrong.status_code == 401


def test_revoking_a_token_revokes_every_token_minted_from_it(client, team_api, admin):
    parent = team_api("t1", scopes=["tokens", "instances:read"])
    child = parent.post("/api/v1/tokens", json={"name": "child"}).get_json()
    grandchild = bearer(client, child["token"]).post("/api/v1/tokens", json={"name": "grandchild"}).get_json()
    sibling = team_api("t1", scopes=["instances:read"])  # minted by the admin: not a descendant
    assert bearer(client, grandchild["token"]).get("/api/v1/instances").status_code == 200
    assert admin.delete(f"/api/v1/tokens/{parent.token['id']}").status_code == 204
    for secret in (child["token"], grandchild["token"]):
        assert bearer(client, secret).get("/api/v1/instances").status_code == 401
    assert sibling.get("/api/v1/instances").status_code == 200


def test_a_team_token_whose_row_is_gone_cannot_mint(team_api, monkeypatch):
    parent = team_api("t1", scopes=["tokens"])
    monkeypatch.setattr(tokens, "get_token", lambda token_id: None)
    response = parent.post("/api/v1/tokens", json={"name": "x", "team_id": "t2", "scopes": ["tokens"]})
    assert response.status_code == 403


def test_meta_gives_the_worker_token_no_scope(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_WORKER_TOKEN", "worker-secret")
    caller = client.get("/api/v1/meta", headers={"X-Worker-Token": "worker-secret"}).get_json()["caller"]
    assert caller == {"kind": "worker", "team_id": None, "token_id": None, "scopes": []}
