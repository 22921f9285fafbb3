"""Forward-auth as Traefik calls it: access links, cookies, sign-in, refusals."""

import datetime
import re
import time
import urllib.parse
import uuid

import pytest

from ctfhost.models import Instance, Setting, utcnow
from ctfhost.services import access
from ctfhost.testing import ask_forward_auth as forward
from ctfhost.testing import host_of, run_jobs

pytestmark = pytest.mark.usefixtures("redis_server")


@pytest.fixture
def client(proxy_client):
    return proxy_client


@pytest.fixture
def running(api, app, worker_id):
    """Two running instances: team red's and team blue's."""
    api.post("/api/v1/challenges", json={"id": "web-fa", "name": "fa", "runtime": "fake", "image": "i", "port": 80})
    made = {}
    for team in ("red", "blue"):
        made[team] = api.post("/api/v1/instances", json={"team_id": team, "challenge_id": "web-fa"}).get_json()
    run_jobs(app, worker_id)
    return made


def link_for(caller, instance, **body):
    response = caller.post(f"/api/v1/instances/{instance['id']}/access", json=body or None)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def redeem(client, instance, link, proto="http"):
    parsed = urllib.parse.urlsplit(link["url"])
    assert f"{parsed.scheme}://{parsed.netloc}" == instance["endpoint"]
    return forward(client, instance, f"{parsed.path}?{parsed.query}", proto=proto)


def cookie_value(response):
    header = response.headers["Set-Cookie"]
    return re.match(rf"{access.COOKIE_NAME}=([^;]+)", header).group(1)


def test_access_link_shape(api, running):
    link = link_for(api, running["red"])
    assert link["expires_in"] == 60
    parsed = urllib.parse.urlsplit(link["url"])
    assert parsed.path == "/.ctfhost/access"
    query = urllib.parse.parse_qs(parsed.query)
    assert query["next"] == ["/"] and query["ticket"][0]


def test_following_the_link_sets_an_instance_bound_cookie(api, client, running):
    red = running["red"]
    response = redeem(client, red, link_for(api, red, next="/admin?x=1"))
    assert response.status_code == 302
    assert response.headers["Location"] == f"http://{host_of(red)}/admin?x=1"
    header = response.headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "SameSite=Lax" in header and "Path=/" in header
    assert "domain" not in attributes  # host-only
    assert "secure" not in attributes  # plain http here
    max_age = int(re.search(r"Max-Age=(\d+)", header).group(1))
    # the browser keeps it past the instance's current expiry (renewals); the instance bounds access
    assert max_age >= 7 * 86400

    allowed = forward(client, red, "/anything", cookie=cookie_value(response))
    assert allowed.status_code == 200
    assert allowed.headers["X-Ctfhost-Team"] == "red"
    assert allowed.headers["X-Ctfhost-Instance"] == red["id"]


def test_cookie_is_secure_on_https(api, client, running):
    response = redeem(client, running["red"], link_for(api, running["red"]), proto="https")
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_ticket_works_once(api, client, running):
    link = link_for(api, running["red"])
    assert redeem(client, running["red"], link).status_code == 302
    again = redeem(client, running["red"], link)
    assert again.status_code == 401
    assert "already used" in again.get_data(as_text=True)


def test_expired_forged_and_foreign_tickets_are_401(api, client, running, monkeypatch):
    red, blue = running["red"], running["blue"]
    link = link_for(api, red)
    monkeypatch.setattr(access, "TICKET_SECONDS", -1)
    expired = redeem(client, red, link)
    monkeypatch.undo()
    assert expired.status_code == 401 and "expired" in expired.get_data(as_text=True)

    parsed = urllib.parse.urlsplit(link_for(api, red)["url"])
    query = urllib.parse.parse_qs(parsed.query)
    forged_ticket = query["ticket"][0][:-3] + ("aaa" if not query["ticket"][0].endswith("aaa") else "bbb")
    forged = forward(client, red, f"/.ctfhost/access?ticket={forged_ticket}&next=/")
    assert forged.status_code == 401 and "not valid" in forged.get_data(as_text=True)

    # blue's link presented at red's host
    blue_link = urllib.parse.urlsplit(link_for(api, blue)["url"])
    foreign = forward(client, red, f"{blue_link.path}?{blue_link.query}")
    assert foreign.status_code == 401 and "another instance" in foreign.get_data(as_text=True)
    assert "Set-Cookie" not in foreign.headers


def test_cookies_are_bound_to_their_instance(api, client, running):
    red, blue = running["red"], running["blue"]
    blue_cookie = cookie_value(redeem(client, blue, link_for(api, blue)))
    assert forward(client, blue, cookie=blue_cookie).status_code == 200
    refused = forward(client, red, cookie=blue_cookie)  # team blue's valid cookie at red's host
    assert refused.status_code == 401
    assert forward(client, red, cookie="garbage").status_code == 401


def test_no_cookie_redirects_to_sign_in_when_configured(api, app, client, running):
    red = running["red"]
    app.config["CTFHOST_AUTH_SIGNIN_URL"] = "https://ctf.example.org/plugins/ctfhost/access?instance={instance_id}&next={next}"
    try:
        response = forward(client, red, "/page?q=1")
    finally:
        app.config.pop("CTFHOST_AUTH_SIGNIN_URL")
    assert response.status_code == 302
    location = urllib.parse.urlsplit(response.headers["Location"])
    assert location.netloc == "ctf.example.org"
    query = urllib.parse.parse_qs(location.query)
    assert query["instance"] == [red["id"]]
    assert query["next"] == [f"http://{host_of(red)}/page?q=1"]


def test_no_cookie_without_sign_in_url_is_a_401_page(client, running):
    response = forward(client, running["red"])
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/html")
    assert "private" in response.get_data(as_text=True)


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "evil", "javascript:alert(1)"])
def test_next_never_leaves_the_instance_host(api, client, running, target):
    response = redeem(client, running["red"], link_for(api, running["red"], next=target))
    assert response.status_code == 302
    assert response.headers["Location"] == f"http://{host_of(running['red'])}/"


def test_unknown_host_is_404(client, running):
    assert forward(client, "nothing.web-fa.localhost").status_code == 404
    assert client.get("/api/v1/auth/forward").status_code == 404


def test_restart_and_delete_end_access(api, app, client, running, worker_id):
    red = running["red"]
    cookie = cookie_value(redeem(client, red, link_for(api, red)))
    new = api.post(f"/api/v1/instances/{red['id']}/restart").get_json()
    run_jobs(app, worker_id)
    assert forward(client, red, cookie=cookie).status_code == 404  # the old host is gone
    assert forward(client, new, cookie=cookie).status_code == 401  # the old cookie does not open the new one
    new_cookie = cookie_value(redeem(client, new, link_for(api, new)))
    assert forward(client, new, cookie=new_cookie).status_code == 200
    assert api.delete(f"/api/v1/instances/{new['id']}").status_code == 204
    assert forward(client, new, cookie=new_cookie).status_code == 404


def test_access_links_follow_the_token_rules(api, team_api, running):
    red_team = team_api("red")
    assert red_team.post(f"/api/v1/instances/{running['red']['id']}/access").status_code == 200
    assert red_team.post(f"/api/v1/instances/{running['blue']['id']}/access").status_code == 404
    assert api.post(f"/api/v1/instances/{uuid.uuid4()}/access").status_code == 404
    api.delete(f"/api/v1/instances/{running['blue']['id']}")
    assert api.post(f"/api/v1/instances/{running['blue']['id']}/access").status_code == 409
    assert red_team.post(f"/api/v1/instances/{running['red']['id']}/access", json={"next": 5}).status_code == 422


def test_a_renewed_instance_stays_reachable_with_the_cookie_it_issued(api, client, running):
    red = running["red"]
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=2)).where(Instance.id == red["id"]).execute()
    cookie = cookie_value(redeem(client, red, link_for(api, red)))  # issued with 2 s left
    assert api.post(f"/api/v1/instances/{red['id']}/renew").status_code == 200
    time.sleep(2.5)
    allowed = forward(client, red, "/", cookie=cookie)
    assert allowed.status_code == 200, allowed.get_data(as_text=True)


def test_the_cookie_ends_with_the_instance_not_later(api, client, running):
    red = running["red"]
    cookie = cookie_value(redeem(client, red, link_for(api, red)))
    Instance.update(expires_at=utcnow() - datetime.timedelta(seconds=1)).where(Instance.id == red["id"]).execute()
    assert forward(client, red, "/", cookie=cookie).status_code == 404  # past its expiry, before the sweep ends it


@pytest.mark.parametrize(
    "forwarded_host", ["{host}:80@evil.example", "{HOST}", "{host}:8000/evil", "{host}:1"]
)
def test_redirect_after_redeeming_goes_to_the_instance_own_host(api, client, running, forwarded_host):
    red = running["red"]
    link = urllib.parse.urlsplit(link_for(api, red, next="/page")["url"])
    host = forwarded_host.format(host=host_of(red), HOST=host_of(red).upper())
    response = forward(client, host, f"{link.path}?{link.query}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{red['endpoint']}/page"


def test_redirect_keeps_the_public_port_of_the_endpoint(api, client, running):
    red = running["red"]
    Instance.update(endpoint=f"http://{host_of(red)}:8000").where(Instance.id == red["id"]).execute()
    link = urllib.parse.urlsplit(link_for(api, red)["url"])
    response = forward(client, f"{host_of(red)}:9999", f"{link.path}?{link.query}")
    assert response.headers["Location"] == f"http://{host_of(red)}:8000/"


def test_a_cookie_under_an_older_key_is_let_in_and_renewed(api, app, client, running):
    red = running["red"]
    # the keyring of an installation upgraded from legacy cookies (another test may have ended a rotation already)
    Setting.delete().where(Setting.key == access.COOKIE_KEYS_SETTING).execute()
    access._keyrings.clear()
    current = cookie_value(redeem(client, red, link_for(api, red)))
    assert "Set-Cookie" not in forward(client, red, cookie=current).headers  # under the newest key: nothing to renew
    # a cookie of the release before (signed with the app's key), then a key rotation
    legacy = access._serializer("ctfhost-cookie").dumps({"i": red["id"], "t": "red"})
    for old in (legacy, current):
        if old is current:
            app.test_cli_runner().invoke(args=["ctfhost", "access", "rotate-key"])
        answer = forward(client, red, cookie=old)
        assert answer.status_code == 200
        renewed = cookie_value(answer)
        assert renewed.startswith(f"c2.{access.keyring(fresh=True)['mint']}.") and renewed != old
        assert "Set-Cookie" not in forward(client, red, cookie=renewed).headers
    # the rotation ends: neither older cookie opens anything any more
    app.test_cli_runner().invoke(args=["ctfhost", "access", "rotate-key", "--finish"])
    access.keyring(fresh=True)
    for old in (legacy, current):
        assert forward(client, red, cookie=old).status_code == 401
