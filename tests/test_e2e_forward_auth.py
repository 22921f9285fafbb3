"""Only the owning team gets through the real Traefik: forward-auth end to end on Docker."""


import pytest
import requests

from ctfhost.testing import wait_until
from ctfhost.services import access
from ctfhost_plugin_docker.testing import TEST_CONTENT

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.traefik]


@pytest.fixture
def guarded(app, live_server, traefik_proxy, localhost_dns):
    """Traefik routes every instance through ctfhost's forward-auth (on by default, at the address Traefik
    polls the config from); endpoints carry Traefik's port."""
    assert not app.config.get("CTFHOST_TRAEFIK_FORWARD_AUTH_URL")
    saved = {key: app.config.get(key) for key in ("CTFHOST_PUBLIC_PORT",)}
    app.config["CTFHOST_PUBLIC_PORT"] = traefik_proxy.web_port
    from ctfhost_plugin_traefik import config_cache

    config_cache.invalidate()
    yield traefik_proxy
    app.config.update(saved)
    config_cache.invalidate()


def wait_running(live_server, instance_id, key=None):
    def status():
        return live_server.call("GET", f"/api/v1/instances/{instance_id}")[1]

    wait_until(lambda: status()["status"] != "pending", 60, what="the launch")
    instance = status()
    assert instance["status"] == "running", instance["error"]
    return instance


def token_for(live_server, team):
    status, body = live_server.call("POST", "/api/v1/tokens", {"team_id": team, "name": "e2e"}, key=None,
                                    headers={"X-Admin-Token": "test-admin-token"})
    assert status == 201, body
    return {"Authorization": f"Bearer {body['token']}"}


def as_team(live_server, headers, method, path, body=None):
    return live_server.call(method, path, body, key=None, headers=headers)


def browser_open(session, live_server, headers, instance):
    """What the Open button does: get an access link with the team's token and follow it."""
    status, link = as_team(live_server, headers, "POST", f"/api/v1/instances/{instance['id']}/access")
    assert status == 200, link
    return session.get(link["url"], timeout=10)


def test_only_the_owning_team_reaches_its_instance(app, live_server, guarded, worker_agent, test_image, docker_client):
    body = {"id": "web-private", "name": "Private", "runtime": "docker", "image": test_image, "port": 8080}
    assert live_server.call("POST", "/api/v1/challenges", body)[0] == 201
    team_a, team_b = token_for(live_server, "team-a"), token_for(live_server, "team-b")
    status, a = as_team(live_server, team_a, "POST", "/api/v1/instances", {"team_id": "team-a", "challenge_id": "web-private"})
    assert status == 201, a
    status, b = as_team(live_server, team_b, "POST", "/api/v1/instances", {"team_id": "team-b", "challenge_id": "web-private"})
    assert status == 201, b
    a, b = wait_running(live_server, a["id"]), wait_running(live_server, b["id"])
    assert a["endpoint"].endswith(f".localhost:{guarded.web_port}")

    # no cookie: Traefik asks ctfhost, which answers with its 401 page
    anonymous = requests.get(a["endpoint"] + "/", timeout=10)
    assert anonymous.status_code == 401
    assert "private" in anonymous.text

    # with a sign-in URL, the browser is sent there instead
    app.config["CTFHOST_AUTH_SIGNIN_URL"] = "http://ctfd.localhost/plugins/ctfhost/access?instance={instance_id}&next={next}"
    try:
        redirected = requests.get(a["endpoint"] + "/x", timeout=10, allow_redirects=False)
    finally:
        app.config.pop("CTFHOST_AUTH_SIGNIN_URL")
    assert redirected.status_code == 302
    assert redirected.headers["Location"].startswith(f"http://ctfd.localhost/plugins/ctfhost/access?instance={a['id']}&next=")

    # team A follows its access link with a cookie jar and lands on the challenge
    browser_a = requests.Session()
    landed = browser_open(browser_a, live_server, team_a, a)
    assert landed.status_code == 200, (landed.url, [(r.status_code, r.headers) for r in landed.history], landed.text[:300])
    assert landed.text == TEST_CONTENT
    assert [r.status_code for r in landed.history] == [302]
    assert browser_a.get(a["endpoint"] + "/", timeout=10).text == TEST_CONTENT
    a_cookie = browser_a.cookies.get(access.COOKIE_NAME)

    # team B, with its own valid cookie, is refused at A's host
    browser_b = requests.Session()
    assert browser_open(browser_b, live_server, team_b, b).status_code == 200
    b_cookie = browser_b.cookies.get(access.COOKIE_NAME)
    refused = requests.get(a["endpoint"] + "/", cookies={access.COOKIE_NAME: b_cookie}, timeout=10)
    assert refused.status_code == 401
    # and B's token cannot get a link to A's instance
    assert as_team(live_server, team_b, "POST", f"/api/v1/instances/{a['id']}/access")[0] == 404

    # after a restart the old host and the old cookie no longer work
    status, fresh = as_team(live_server, team_a, "POST", f"/api/v1/instances/{a['id']}/restart")
    assert status == 200, fresh
    fresh = wait_running(live_server, fresh["id"])
    assert requests.get(a["endpoint"] + "/", cookies={access.COOKIE_NAME: a_cookie}, timeout=10).status_code == 404
    assert requests.get(fresh["endpoint"] + "/", cookies={access.COOKIE_NAME: a_cookie}, timeout=10).status_code == 401
    assert browser_open(browser_a, live_server, team_a, fresh).text == TEST_CONTENT

    # after delete nothing answers
    assert as_team(live_server, team_a, "DELETE", f"/api/v1/instances/{fresh['id']}")[0] == 204
    wait_until(lambda: browser_a.get(fresh["endpoint"] + "/", timeout=10).status_code == 404, 10,
                        what="the deleted instance to stop answering")
