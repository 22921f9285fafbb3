"""The access check inside Traefik (middleware/access.go), through a real Traefik and the test API.

Every test counts the requests that reach ctfhost's forward-auth endpoint:
the point of the middleware is that a player's request with a valid cookie
never does, while everything else is answered by ctfhost as before.
"""

import datetime
import http.client
import os
import subprocess
import time

import pytest

from ctfhost.plugin_api import keys_file_text
from ctfhost.testing import FLASK_CTFHOST, Instance, access_cookie, cookie_keyring, instance_cookie, utcnow, wait_until
from ctfhost.testing import http as call
from ctfhost_plugin_traefik import config_cache, dynamic, static
from ctfhost_plugin_traefik.settings import DEFAULT_KEYS_FILE
from ctfhost_plugin_traefik.testing import write_access_files

from test_traefik_plugin import launch_fake  # noqa: E402  (the tests' shared helper)


@pytest.fixture(autouse=True)
def current_keys(app, traefik_proxy):
    """The session's Traefik holds the keys the database holds now (a test elsewhere may have rebuilt the schema)."""
    directory = os.path.dirname(traefik_proxy.service.log_path)
    path = os.path.join(directory, DEFAULT_KEYS_FILE)
    with open(path) as handle:
        before = handle.read()
    with app.app_context():
        text = keys_file_text()
    if text != before:
        static.write_access_files(directory, text, DEFAULT_KEYS_FILE)
        time.sleep(1.1)  # the middleware looks at the file at most once a second


@pytest.fixture
def asked(app, monkeypatch):
    """The forward-auth requests ctfhost answered during the test (the X-Forwarded-Uri of each)."""
    endpoint = next(rule.endpoint for rule in app.url_map.iter_rules() if rule.rule == "/api/v1/auth/forward")
    view = app.view_functions[endpoint]
    calls = []

    def counting(*args, **kwargs):
        from flask import request

        calls.append(request.headers.get("X-Forwarded-Uri"))
        return view(*args, **kwargs)

    monkeypatch.setitem(app.view_functions, endpoint, counting)
    return calls


@pytest.fixture(params=["traefik", "forward-auth"])
def check(request, app, monkeypatch):
    """Each behaviour twice: the check in Traefik, and forward-auth on every request (the fallback setting)."""
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_ACCESS_CHECK", request.param)
    return request.param


def decided(check, asked, before, requests):
    """With the check in Traefik none of `requests` reached ctfhost; with forward-auth each did."""
    assert len(asked) == before + (0 if check == "traefik" else requests), (check, asked[before:])


def loaded(traefik_proxy, instance, expires=None):
    """Wait until Traefik serves the instance's router (with its access middleware at expiry `expires`, if given)."""
    name = dynamic.access_middleware_name(instance["id"])

    def ready():
        if f"ctfhost-{instance['id']}@http" not in traefik_proxy.routers():
            return False
        if expires is None:
            return True
        status, body = call("GET", f"{traefik_proxy.api_url}/api/http/middlewares/{name}@http")
        config = (body or {}).get("plugin", {}).get(dynamic.ACCESS_PLUGIN, {}) if status == 200 else {}
        return str(config.get("expires")) == str(expires)  # Traefik shows plugin settings as text

    wait_until(ready, 15, what="Traefik to load the instance's router")


def echoed(body):
    """{header: [values]} the echoing fake instance received."""
    headers = {}
    for line in body.splitlines()[1:]:
        name, _, value = line.partition(": ")
        headers.setdefault(name, []).append(value)
    return headers


def unix(moment):
    return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp())


def test_the_team_cookie_is_checked_in_traefik_without_asking_ctfhost(api, app, traefik_proxy, redis_server, asked, check):
    instance = launch_fake(api, app, "mw-pass", {"echo_headers": True})
    loaded(traefik_proxy, instance)
    host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    cookie, _ = access_cookie(traefik_proxy.web_port, link)
    assert len(asked) == 1  # redeeming the link is ctfhost's
    for _ in range(5):
        status, body = traefik_proxy.fetch(
            host, headers={"Cookie": cookie, "X-Ctfhost-Team": "evil", "X_Ctfhost_Instance": "evil"},
        )
        assert status == 200, body
    decided(check, asked, 1, 5)
    received = echoed(body)
    assert received["X-Ctfhost-Team"] == ["3"]
    assert received["X-Ctfhost-Instance"] == [instance["id"]]
    assert not [name for name in received if name.lower().replace("_", "-") == "x-ctfhost-instance" and name != "X-Ctfhost-Instance"]


def test_without_a_valid_cookie_ctfhost_answers(api, app, traefik_proxy, redis_server, asked, check):
    mine = launch_fake(api, app, "mw-mine")
    loaded(traefik_proxy, mine)
    host = mine["endpoint"].split("://")[1]
    with app.app_context():
        foreign_team = instance_cookie(mine["id"], 4)
        foreign_instance = instance_cookie("6f1c0d52-2d0a-4a43-9a64-3f3c1b1f4d11", 3)
        good = instance_cookie(mine["id"], 3)
    version, kid, instance_id, team, mac = good.split(".")
    forged = ".".join([version, kid, instance_id, team, ("A" if mac[0] != "A" else "B") + mac[1:]])
    unknown_key = ".".join([version, "deadbeef", instance_id, team, mac])
    cases = {"none": None, "another team's": foreign_team, "another instance's": foreign_instance,
             "forged": forged, "unknown key": unknown_key, "garbage": "c2.x"}
    for what, value in cases.items():
        before = len(asked)
        status, body = traefik_proxy.fetch(host, headers={"Cookie": f"ctfhost_access={value}"} if value else None)
        assert status == 401, (what, status, body)
        assert "This instance is private" in body, what  # ctfhost's own page
        assert len(asked) == before + 1, what
    # the real cookie passes (without asking, in Traefik)
    before = len(asked)
    assert traefik_proxy.fetch(host, headers={"Cookie": f"ctfhost_access={good}"})[0] == 200
    decided(check, asked, before, 1)


def test_without_a_cookie_a_browser_is_sent_to_sign_in(api, app, traefik_proxy, redis_server, asked, check, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_AUTH_SIGNIN_URL", "https://ctf.example.org/ctfhost?instance={instance_id}&next={next}")
    instance = launch_fake(api, app, "mw-signin")
    loaded(traefik_proxy, instance)
    host = instance["endpoint"].split("://")[1]
    # a browser would follow the redirect; here it is only read (http.client follows none)
    connection = http.client.HTTPConnection("127.0.0.1", traefik_proxy.web_port, timeout=10)
    connection.request("GET", "/page?x=1", headers={"Host": host})
    answer = connection.getresponse()
    assert answer.status == 302
    location = answer.getheader("Location")
    assert location.startswith(f"https://ctf.example.org/ctfhost?instance={instance['id']}&next=")
    assert "page%3Fx%3D1" in location


def test_renewal_moves_the_expiry_traefik_checks(api, app, traefik_proxy, redis_server, asked, check, no_live_agents):
    # no worker agent of another test may sweep the instance away meanwhile (it expires in seconds)
    instance = launch_fake(api, app, "mw-renew")
    host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    cookie, _ = access_cookie(traefik_proxy.web_port, link)
    # the instance is about to expire (as if its TTL were short): Traefik learns the expiry from the config
    soon = utcnow().replace(microsecond=0) + datetime.timedelta(seconds=4)
    with app.app_context():
        Instance.update(expires_at=soon).where(Instance.id == instance["id"]).execute()
        config_cache.invalidate(instance["id"])
    loaded(traefik_proxy, instance, expires=unix(soon) if check == "traefik" else None)
    assert traefik_proxy.fetch(host, headers={"Cookie": cookie})[0] == 200
    renewed = api.post(f"/api/v1/instances/{instance['id']}/renew").json
    new_expiry = datetime.datetime.fromisoformat(renewed["expires_at"].replace("Z", "+00:00")).replace(tzinfo=None)
    loaded(traefik_proxy, instance, expires=unix(new_expiry) if check == "traefik" else None)
    time.sleep(max(0.0, (soon - utcnow()).total_seconds()) + 1)  # past the first expiry
    before = len(asked)
    assert traefik_proxy.fetch(host, headers={"Cookie": cookie})[0] == 200
    decided(check, asked, before, 1)


def test_past_its_expiry_the_cookie_no_longer_opens_the_instance(api, app, traefik_proxy, redis_server, asked, check,
                                                                no_live_agents):
    # no worker agent of another test may sweep the expired instance away before Traefik sees its expiry
    instance = launch_fake(api, app, "mw-expired")
    host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    cookie, _ = access_cookie(traefik_proxy.web_port, link)
    past = utcnow().replace(microsecond=0) - datetime.timedelta(seconds=1)
    with app.app_context():
        # expired but not yet swept: still routed, so only the expiry refuses it
        Instance.update(expires_at=past).where(Instance.id == instance["id"]).execute()
        config_cache.invalidate(instance["id"])
    loaded(traefik_proxy, instance, expires=unix(past) if check == "traefik" else None)
    before = len(asked)
    status, body = traefik_proxy.fetch(host, headers={"Cookie": cookie})
    assert status == 404 and "Nothing runs at this address" in body
    assert len(asked) == before + 1  # Traefik refused to decide; ctfhost said why


def test_restart_and_delete_leave_the_old_cookie_nothing(api, app, traefik_proxy, redis_server, asked, check):
    from ctfhost.testing import run_jobs

    instance = launch_fake(api, app, "mw-restart")
    old_host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    cookie, _ = access_cookie(traefik_proxy.web_port, link)
    new = api.post(f"/api/v1/instances/{instance['id']}/restart").json
    run_jobs(app, new["worker_id"])
    new = api.get(f"/api/v1/instances/{new['id']}").json
    assert new["status"] == "running", new["error"]
    loaded(traefik_proxy, new)
    wait_until(lambda: f"ctfhost-{instance['id']}@http" not in traefik_proxy.routers(), 10, what="the old route to go")
    assert traefik_proxy.fetch(old_host, headers={"Cookie": cookie})[0] == 404
    new_host = new["endpoint"].split("://")[1]
    assert traefik_proxy.fetch(new_host, headers={"Cookie": cookie})[0] == 401
    # the new instance's own cookie works, until it is deleted
    link = api.post(f"/api/v1/instances/{new['id']}/access", json={}).json["url"]
    fresh, _ = access_cookie(traefik_proxy.web_port, link)
    assert traefik_proxy.fetch(new_host, headers={"Cookie": fresh})[0] == 200
    assert api.delete(f"/api/v1/instances/{new['id']}").status_code == 204
    wait_until(lambda: f"ctfhost-{new['id']}@http" not in traefik_proxy.routers(), 10, what="the route to go")
    assert traefik_proxy.fetch(new_host, headers={"Cookie": fresh})[0] == 404


def fetch_with_cookies(traefik_proxy, host, cookie):
    """(status, the ctfhost_access cookie the answer sets or None) of a GET through Traefik."""
    connection = http.client.HTTPConnection("127.0.0.1", traefik_proxy.web_port, timeout=10)
    connection.request("GET", "/", headers={"Host": host, "Cookie": cookie})
    answer = connection.getresponse()
    answer.read()
    set_cookie = [value.split(";", 1)[0] for name, value in answer.getheaders()
                  if name.lower() == "set-cookie" and value.startswith("ctfhost_access=")]
    return answer.status, (set_cookie[0] if set_cookie else None)


def test_key_rotation_renews_old_cookies_and_ends_them_when_it_finishes(api, app, traefik_proxy, redis_server, asked):
    instance = launch_fake(api, app, "mw-rotate")
    loaded(traefik_proxy, instance)
    host = instance["endpoint"].split("://")[1]
    directory = os.path.dirname(traefik_proxy.service.log_path)
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    old, _ = access_cookie(traefik_proxy.web_port, link)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["ctfhost", "access", "rotate-key"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        ring = cookie_keyring()
    assert len(ring["keys"]) == 2
    assert ring["keys"][0]["key"] not in result.output and ring["keys"][1]["key"] not in result.output
    write_access_files(directory, dict(os.environ))  # what `traefik run` does within seconds
    time.sleep(1.2)  # the middleware reads the file once a second
    # a cookie under the old key still opens the instance; ctfhost checks it and hands out a fresh one
    before = len(asked)
    status, fresh = fetch_with_cookies(traefik_proxy, host, old)
    assert status == 200 and len(asked) == before + 1
    assert fresh is not None and fresh.split("=", 1)[1].split(".")[1] == ring["mint"] != old.split("=", 1)[1].split(".")[1]
    # which Traefik then decides alone
    assert fetch_with_cookies(traefik_proxy, host, fresh) == (200, None)
    assert len(asked) == before + 1
    result = runner.invoke(args=["ctfhost", "access", "rotate-key", "--finish"])
    assert result.exit_code == 0, result.output
    write_access_files(directory, dict(os.environ))
    time.sleep(1.2)
    with app.app_context():
        cookie_keyring()  # this process forgets its copy of the old keys
    assert traefik_proxy.fetch(host, headers={"Cookie": old})[0] == 401  # neither Traefik nor ctfhost takes it
    assert len(asked) == before + 2
    assert traefik_proxy.fetch(host, headers={"Cookie": fresh})[0] == 200
    assert len(asked) == before + 2


def test_an_access_link_is_redeemed_by_ctfhost_even_with_a_valid_cookie(api, app, traefik_proxy, redis_server, asked, check):
    """Opening the instance again from the scoreboard (the team already holds its cookie) lands on `next`."""
    instance = launch_fake(api, app, "mw-reopen")
    loaded(traefik_proxy, instance)
    host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={"next": "/first"}).json["url"]
    cookie, landing = access_cookie(traefik_proxy.web_port, link)
    assert landing == "/first"
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={"next": "/again"}).json["url"]
    path = link.split(host, 1)[1]
    connection = http.client.HTTPConnection("127.0.0.1", traefik_proxy.web_port, timeout=10)
    connection.request("GET", path, headers={"Host": host, "Cookie": cookie})
    answer = connection.getresponse()
    assert answer.status == 302, answer.read()[:200]
    assert answer.getheader("Location").endswith("/again")


def test_forward_auth_mode_asks_ctfhost_every_time(api, app, traefik_proxy, redis_server, asked, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_ACCESS_CHECK", "forward-auth")
    instance = launch_fake(api, app, "mw-fallback", {"echo_headers": True})
    loaded(traefik_proxy, instance)
    config = api.get("/api/v1/traefik/config").json
    assert config["http"]["routers"][f"ctfhost-{instance['id']}"]["middlewares"] == [dynamic.AUTH_MIDDLEWARE]
    host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    cookie, _ = access_cookie(traefik_proxy.web_port, link)
    before = len(asked)
    status, body = traefik_proxy.fetch(host, headers={"Cookie": cookie, "X_Ctfhost_Team": "evil"})
    assert status == 200
    assert echoed(body)["X-Ctfhost-Team"] == ["3"] and "X_Ctfhost_Team" not in echoed(body)
    assert len(asked) == before + 1
    assert traefik_proxy.fetch(host)[0] == 401


def refused_setting(name, value):
    """What `flask ctfhost plugins` prints when the app is built with CTFHOST_<name>=value; it must fail."""
    result = subprocess.run([*FLASK_CTFHOST, "plugins"], env={**os.environ, f"CTFHOST_{name}": value},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    return result.stderr


def test_a_wrong_access_check_setting_stops_the_app():
    assert "CTFHOST_TRAEFIK_ACCESS_CHECK='proxy' is not one of: traefik, forward-auth" in refused_setting(
        "TRAEFIK_ACCESS_CHECK", "proxy")


def test_requests_handed_to_forward_auth_are_limited_per_host(api, app, traefik_proxy, redis_server, asked, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_AUTH_RATE", "1")
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_AUTH_BURST", "3")
    instance = launch_fake(api, app, "mw-limit")
    loaded(traefik_proxy, instance)
    config = api.get("/api/v1/traefik/config").json
    check = config["http"]["middlewares"][dynamic.access_middleware_name(instance["id"])]["plugin"][dynamic.ACCESS_PLUGIN]
    assert (check["authRate"], check["authBurst"]) == (1, 3)
    host = instance["endpoint"].split("://")[1]
    link = api.post(f"/api/v1/instances/{instance['id']}/access", json={}).json["url"]
    cookie, _ = access_cookie(traefik_proxy.web_port, link)  # one forward-auth call of the burst
    before = len(asked)
    statuses = [traefik_proxy.fetch(host)[0] for _ in range(10)]
    assert statuses[:2] == [401, 401] and statuses.count(429) >= 7, statuses
    assert len(asked) - before <= 3  # the rest never reached ctfhost
    # the team's own requests are decided in Traefik and never limited
    assert [traefik_proxy.fetch(host, headers={"Cookie": cookie})[0] for _ in range(20)] == [200] * 20
    # hosts no instance claims: Traefik's rateLimit in front of forwardAuth
    ended = config["http"]["routers"][dynamic.ENDED_ROUTER]
    assert ended["middlewares"] == [dynamic.AUTH_CLIENT_LIMIT_MIDDLEWARE, dynamic.AUTH_LIMIT_MIDDLEWARE,
                                    dynamic.AUTH_MIDDLEWARE]
    assert config["http"]["middlewares"][dynamic.AUTH_LIMIT_MIDDLEWARE]["rateLimit"]["sourceCriterion"] == {"requestHost": True}
    gone = [traefik_proxy.fetch("aaaaaaaaaaaa.nothing.localhost")[0] for _ in range(10)]
    assert gone[0] == 404 and 429 in gone, gone
    # random names under the wildcard: each host has its own count, the client has one for them all
    time.sleep(3.5)  # the client's tokens come back (1/s, burst 3)
    names = [traefik_proxy.fetch(f"{n:012x}.random.localhost")[0] for n in range(10)]
    assert names[0] == 404 and names.count(429) >= 5, names


def test_a_wrong_rate_setting_stops_the_app():
    assert "CTFHOST_TRAEFIK_AUTH_RATE='fast' is not a whole number" in refused_setting("TRAEFIK_AUTH_RATE", "fast")


def test_alias_headers_are_the_entry_points_to_delete_or_the_middlewares_when_told(api, app, live_server, tmp_path,
                                                                                   redis_server, asked, monkeypatch):
    """X_Ctfhost_Instance reaches a backend only if neither the entry point nor the middleware drops it.

    ctfhost's static configuration deletes every header with "_" or "." at the entry points
    (aliasHeadersStrategy: delete), so the middleware does not look for aliases on each request (that costs
    it more than the check itself); behind entry points that keep them, CTFHOST_TRAEFIK_STRIP_ALIASES=on
    makes it look. Shown here with a Traefik whose entry point keeps them.
    """
    from ctfhost.testing import API_KEY, free_port
    from ctfhost_plugin_traefik.testing import TraefikProxy, traefik

    web_port, api_port = free_port(), free_port()
    service = traefik(f"{live_server.url}/api/v1/traefik/config", API_KEY, web_port, api_port,
                      str(tmp_path / "traefik.log"), poll_interval="50ms",
                      extra={"entryPoints": {"web": {"http": {"aliasHeadersStrategy": "keep"}}}}).start()
    try:
        proxy = TraefikProxy(service, web_port, api_port)
        wait_until(lambda: call("GET", f"{proxy.api_url}/ping")[0] == 200, 20, what="traefik")
        instance = launch_fake(api, app, "mw-alias", {"echo_headers": True})
        loaded(proxy, instance)
        host = instance["endpoint"].split("://")[1]
        with app.app_context():
            cookie = "ctfhost_access=" + instance_cookie(instance["id"], 3)
        sent = {"Cookie": cookie, "X-Ctfhost-Team": "evil", "X_Ctfhost_Instance": "evil", "X.Ctfhost.Team": "evil"}

        status, body = proxy.fetch(host, headers=sent)
        assert status == 200, body
        received = echoed(body)
        assert received["X-Ctfhost-Team"] == ["3"]  # the client's copy replaced
        assert received.get("X_ctfhost_instance") == ["evil"], received  # kept by the entry point, not looked for

        monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_STRIP_ALIASES", True)
        config_cache.invalidate()
        name = dynamic.access_middleware_name(instance["id"])
        wait_until(lambda: "stripAliases" in str(call("GET", f"{proxy.api_url}/api/http/middlewares/{name}@http")[1]),
                   15, what="Traefik to load stripAliases")
        status, body = proxy.fetch(host, headers=sent)
        assert status == 200, body
        received = echoed(body)
        assert received["X-Ctfhost-Team"] == ["3"] and received["X-Ctfhost-Instance"] == [instance["id"]]
        assert not [name for name in received if name.lower().replace("_", "-").replace(".", "-").startswith("x-ctfhost-")
                    and name not in ("X-Ctfhost-Team", "X-Ctfhost-Instance")], received
        assert asked == []  # both decided in Traefik
    finally:
        service.stop()
