"""The admin pages: sign-in, the session cookie, CSRF, sign-in limits, every page and action, and a real browser.

The browser test drives Debian's chromium with Python Playwright (never a
browser Playwright downloads) and saves a screenshot of each page under
$CTFHOST_STATE_DIR/screenshots/admin/.
"""

import os
import random
import re
import tempfile

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ctfhost.admin import session as admin_session
from ctfhost.models import AuditEvent, Challenge, FlagSharingEvent, Worker
from ctfhost.testing import ADMIN_TOKEN, need, register_fake_worker, run_jobs

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the test extras bring it; the browser test says so when it is missing
    sync_playwright = None

pytestmark = pytest.mark.usefixtures("redis_server")

# read at import: the session's test_env fixture takes CTFHOST_* variables out of the environment
STATE_DIR = os.environ.get("CTFHOST_STATE_DIR") or os.path.join(tempfile.gettempdir(), "ctfhost-system")
SCREENSHOTS = os.path.join(STATE_DIR, "screenshots", "admin")
CHROMIUM = "/usr/bin/chromium"
PAGES = ["/admin", "/admin/challenges", "/admin/challenges/_new", "/admin/challenges/web-admin",
         "/admin/challenges/web-admin/edit", "/admin/instances", "/admin/workers", "/admin/audit", "/admin/flag-sharing"]
CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def client_at(app, address=None):
    """A test client with a client address of its own: sign-in failures are counted per address."""
    client = app.test_client()
    client.address = address or "10.{}.{}.{}".format(*(random.randrange(1, 255) for _ in range(3)))
    client.environ_base["REMOTE_ADDR"] = client.address
    return client


@pytest.fixture
def browser_client(app):
    return client_at(app)


def sign_in(client, token=ADMIN_TOKEN, **kwargs):
    return client.post("/admin/sign-in", data={"token": token, "next": "/admin"}, **kwargs)


@pytest.fixture
def signed_in(browser_client):
    assert sign_in(browser_client).status_code == 302
    return browser_client


def csrf_of(client, path="/admin"):
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return CSRF.search(response.get_data(as_text=True)).group(1)


def make_challenge(api, challenge_id="web-admin", status="draft", **extra):
    body = {"id": challenge_id, "name": "Web admin", "runtime": "fake", "image": "ctf/web-admin:1", "port": 80,
            "status": status, **extra}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def audit_rows(action):
    return list(AuditEvent.select().where(AuditEvent.action == action).order_by(AuditEvent.id))


# -- who sees a page ------------------------------------------------------------------


def test_a_stranger_is_sent_to_the_sign_in_page_from_every_page(api, client):
    make_challenge(api)
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/admin/sign-in?next=" + path), path
    assert client.get("/admin/sign-in").status_code == 200


def test_the_challenge_list_filters_by_status(api, signed_in):
    make_challenge(api)
    make_challenge(api, "web-live", status="active")
    for status, shown, hidden in (("draft", "web-admin", "web-live"), ("active", "web-live", "web-admin")):
        response = signed_in.get(f"/admin/challenges?status={status}")
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        assert f'data-challenge="{shown}"' in html and f'data-challenge="{hidden}"' not in html


def test_the_pages_are_not_part_of_the_rest_api(client):
    spec = client.get("/openapi.json").get_json()
    assert not [path for path in spec["paths"] if path.startswith("/admin")]


def test_other_credentials_get_no_page(api, client, team_api):
    make_challenge(api)
    team = team_api("team-1")
    for headers in ({"x-api-key": api.credentials["x-api-key"]}, team.credentials, {"Cookie": "ctfhost_admin=forged"}):
        for path in PAGES:
            assert client.get(path, headers=headers).status_code == 302, (path, headers)
    wrong = client.get("/admin", headers={"X-Admin-Token": "not-the-token"})
    assert wrong.status_code == 401 and "Wrong admin token" in wrong.get_data(as_text=True)
    # nor may they change anything
    refused = client.post("/admin/challenges/web-admin/activate", headers={"x-api-key": api.credentials["x-api-key"]})
    assert refused.status_code == 401
    assert Challenge.get_by_id("web-admin").status == "draft"


def test_the_admin_token_header_opens_every_page_and_needs_no_csrf_token(api, client):
    make_challenge(api)
    for path in PAGES:
        response = client.get(path, headers={"X-Admin-Token": ADMIN_TOKEN})
        assert response.status_code == 200, path
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
    changed = client.post("/admin/challenges/web-admin/activate", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert changed.status_code == 302
    assert Challenge.get_by_id("web-admin").status == "active"


def test_a_wrong_token_shows_the_form_again_and_the_right_one_signs_in(browser_client):
    wrong = sign_in(browser_client, "not-the-token")
    assert wrong.status_code == 401
    assert "Wrong admin token." in wrong.get_data(as_text=True)
    assert 'name="token"' in wrong.get_data(as_text=True)
    assert "Set-Cookie" not in wrong.headers
    right = browser_client.post("/admin/sign-in", data={"token": ADMIN_TOKEN, "next": "/admin/workers"})
    assert right.status_code == 302 and right.headers["Location"] == "/admin/workers"
    cookie = right.headers["Set-Cookie"]
    assert cookie.startswith("ctfhost_admin=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/admin", f"Max-Age={12 * 3600}"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain http here
    assert browser_client.get("/admin/workers").status_code == 200
    # signed in, the sign-in page goes straight on
    assert browser_client.get("/admin/sign-in?next=/admin/audit").headers["Location"] == "/admin/audit"


def test_the_next_page_after_sign_in_stays_on_the_admin_pages(browser_client):
    for target in ("https://evil.example/admin", "//evil.example/admin", "/api/v1/instances", "/admin\\@evil"):
        response = browser_client.post("/admin/sign-in", data={"token": ADMIN_TOKEN, "next": target})
        assert response.headers["Location"] == "/admin", target


def test_the_cookie_is_secure_over_https(app):
    client = client_at(app, "10.9.9.9")
    response = sign_in(client, base_url="https://localhost")
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def test_signing_out_ends_the_session_wherever_the_cookie_was_copied(app, signed_in):
    value = signed_in.get_cookie(admin_session.COOKIE_NAME, path="/admin").value
    out = signed_in.post("/admin/sign-out", data={"csrf_token": csrf_of(signed_in)})
    assert out.status_code == 302 and out.headers["Location"] == "/admin/sign-in"
    assert "ctfhost_admin=;" in out.headers["Set-Cookie"]
    copy = app.test_client()
    copy.set_cookie(admin_session.COOKIE_NAME, value, path="/admin")
    assert copy.get("/admin").status_code == 302
    assert audit_rows("admin.sign_out")[-1].actor == "admin"


def test_a_session_expires_and_ends_when_the_admin_token_changes(app, signed_in, monkeypatch):
    assert signed_in.get("/admin").status_code == 200
    monkeypatch.setitem(app.config, "CTFHOST_ADMIN_TOKEN", "a-new-admin-token")
    assert signed_in.get("/admin").status_code == 302
    monkeypatch.setitem(app.config, "CTFHOST_ADMIN_TOKEN", ADMIN_TOKEN)
    assert signed_in.get("/admin").status_code == 200
    monkeypatch.setattr(admin_session, "SESSION_SECONDS", -1)
    assert signed_in.get("/admin").status_code == 302


def test_without_an_admin_token_the_pages_are_off(app, browser_client, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_ADMIN_TOKEN", None)
    page = browser_client.get("/admin/sign-in")
    assert page.status_code == 503 and "the admin pages are off" in page.get_data(as_text=True)
    assert sign_in(browser_client, "").status_code == 503
    assert browser_client.get("/admin", headers={"X-Admin-Token": ""}).status_code == 401


def test_without_redis_the_pages_answer_503(app, signed_in):
    saved = app.extensions.get("ctfhost.redis")
    # port 1 on loopback: nothing listens there
    app.extensions["ctfhost.redis"] = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1,
                                                  retry=Retry(NoBackoff(), 0))
    try:
        page = signed_in.get("/admin")
        form = sign_in(client_at(app))
    finally:
        app.extensions["ctfhost.redis"] = saved
    assert page.status_code == 503 and "Redis is unavailable" in page.get_data(as_text=True)
    assert form.status_code == 503


def test_sign_in_failures_are_limited_per_client_address(app, browser_client):
    for _ in range(admin_session.FAILURE_LIMIT):
        assert sign_in(browser_client, "guess").status_code == 401
    blocked = sign_in(browser_client)  # even the right token, until the window ends
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= admin_session.FAILURE_WINDOW
    assert "Too many wrong tokens" in blocked.get_data(as_text=True)
    assert browser_client.get("/admin", headers={"X-Admin-Token": ADMIN_TOKEN}).status_code == 429
    other = client_at(app, browser_client.address + "1")
    assert sign_in(other).status_code == 302
    # wrong X-Admin-Token headers count too
    header_guesser = client_at(app, "10.200.0.1" + str(random.randrange(10, 99)))
    for _ in range(admin_session.FAILURE_LIMIT):
        assert header_guesser.get("/admin", headers={"X-Admin-Token": "guess"}).status_code == 401
    assert header_guesser.get("/admin", headers={"X-Admin-Token": ADMIN_TOKEN}).status_code == 429
    failures = audit_rows("admin.sign_in")
    assert {row.actor for row in failures} >= {"anonymous", "admin"}


# -- CSRF and the audit trail ---------------------------------------------------------


def test_a_post_without_the_sessions_csrf_token_is_refused(app, api, signed_in):
    make_challenge(api)
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "0" * 64}):
        refused = signed_in.post("/admin/challenges/web-admin/activate", data=data)
        assert refused.status_code == 403, data
        assert "CSRF token" in refused.get_data(as_text=True)
    # another session's token does not do either
    other = client_at(app, "10.77.0.1")
    assert sign_in(other).status_code == 302
    assert signed_in.post("/admin/challenges/web-admin/activate", data={"csrf_token": csrf_of(other)}).status_code == 403
    assert Challenge.get_by_id("web-admin").status == "draft"
    done = signed_in.post("/admin/challenges/web-admin/activate",
                          data={"csrf_token": csrf_of(signed_in), "next": "/admin/challenges/web-admin"})
    assert done.status_code == 302 and done.headers["Location"] == "/admin/challenges/web-admin"
    assert Challenge.get_by_id("web-admin").status == "active"
    page = signed_in.get("/admin/challenges/web-admin").get_data(as_text=True)
    assert "Challenge web-admin is active" in page
    rows = audit_rows("admin.challenges.activate")
    assert [(row.actor, row.result, row.status) for row in rows] == [("anonymous", "refused", 403)] * 4 + [("admin", "ok", 200)]
    assert rows[-1].target == "web-admin" and rows[-1].method == "POST" and rows[-1].client_ip == signed_in.address


def test_refusals_of_a_service_are_shown_and_recorded(api, signed_in):
    worker = register_fake_worker(api, prefix="busy")
    make_challenge(api, status="active")
    assert api.post("/api/v1/instances", json={"team_id": "t1", "challenge_id": "web-admin"}).status_code == 201
    token = csrf_of(signed_in, "/admin/workers")
    response = signed_in.post(f"/admin/workers/{worker}/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "still runs 1 active instance" in response.get_data(as_text=True)
    row = audit_rows("admin.workers.delete")[-1]
    assert (row.actor, row.status, row.result, row.target) == ("admin", 409, "refused", worker)
    missing = signed_in.post("/admin/challenges/nope/activate", data={"csrf_token": token}, follow_redirects=True)
    assert "challenge &#39;nope&#39; not found" in missing.get_data(as_text=True)
    assert signed_in.get("/admin/challenges/nope").status_code == 404


# -- the challenge form -----------------------------------------------------------


def form(**values):
    base = {"id": "web-form", "name": "Web form", "status": "draft", "runtime": "fake", "image": "ctf/web-form:1",
            "port": "8080", "protocol": "http", "cpu_count": "1", "memory_mb": "512", "ttl_seconds": "",
            "max_renewals": "", "flag_template": "", "version": "", "description": "", "extra_config": "",
            "expose": "", "services": "", "metadata": ""}
    base.update(values)
    return base


def field_errors(html, name):
    match = re.search(rf'id="field-{name}".*?(?:<ul class="errors">(.*?)</ul>|</div>)', html, re.S)
    return re.findall(r"<li>(.*?)</li>", match.group(1) or "") if match else []


def test_the_form_shows_the_apis_own_errors_beside_each_field(api, signed_in):
    token = csrf_of(signed_in, "/admin/challenges/_new")
    bad = {"id": "Not A Slug", "port": "eighty", "cpu_count": "3", "extra_config": '{"nope": 1}'}
    response = signed_in.post("/admin/challenges/_new", data={**form(**bad), "csrf_token": token})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    api_errors = api.post("/api/v1/challenges", json={
        "id": "Not A Slug", "name": "Web form", "runtime": "fake", "image": "i", "port": "eighty", "cpu_count": 3,
    }).get_json()["errors"]["json"]
    for name in ("id", "port", "cpu_count"):
        assert field_errors(html, name) == api_errors[name], name
    assert field_errors(html, "name") == []
    assert 'value="eighty"' in html  # what was typed stays
    # past the schema, the service's own checks (the runtime's options) are shown the same way
    response = signed_in.post("/admin/challenges/_new", data={**form(extra_config='{"nope": 1}'), "csrf_token": token})
    assert response.status_code == 422
    service_errors = api.post("/api/v1/challenges", json={
        "id": "web-form", "name": "x", "runtime": "fake", "image": "i", "port": 80, "extra_config": '{"nope": 1}',
    }).get_json()["errors"]["json"]["extra_config"]
    assert field_errors(response.get_data(as_text=True), "extra_config") == [e.replace('"', "&#34;").replace("'", "&#39;") for e in service_errors]
    # text areas that are not JSON, and missing required fields
    response = signed_in.post("/admin/challenges/_new", data={**form(services="{oops", name=""), "csrf_token": token})
    html = response.get_data(as_text=True)
    assert field_errors(html, "services")[0].startswith("Not valid JSON")
    assert field_errors(html, "name") == ["Missing data for required field."]
    assert not Challenge.select().where(Challenge.id == "web-form").exists()
    created = signed_in.post("/admin/challenges/_new", data={
        **form(metadata='{"author": "alice"}', ttl_seconds="600", version="1.0"), "csrf_token": token})
    assert created.status_code == 302 and created.headers["Location"] == "/admin/challenges/web-form"
    saved = api.get("/api/v1/challenges/web-form").get_json()
    assert (saved["status"], saved["port"], saved["ttl_seconds"], saved["version"], saved["metadata"]) == (
        "draft", 8080, 600, "1.0", {"author": "alice"})
    assert audit_rows("admin.challenges.create")[-1].target == "web-form"
    assert [row.result for row in audit_rows("admin.challenges.create")] == ["refused"] * 3 + ["ok"]
    again = signed_in.post("/admin/challenges/_new", data={**form(), "csrf_token": token})
    assert field_errors(again.get_data(as_text=True), "id") == ["challenge &#39;web-form&#39; already exists"]


def test_the_edit_form_changes_a_challenge_through_the_same_checks(api, signed_in):
    make_challenge(api, version="1.0", ttl_seconds=900)
    page = signed_in.get("/admin/challenges/web-admin/edit").get_data(as_text=True)
    assert 'value="1.0"' in page and 'value="900"' in page
    token = csrf_of(signed_in, "/admin/challenges/web-admin/edit")
    values = form(id="web-admin", name="Web admin", image="ctf/web-admin:2", port="80", ttl_seconds="0",
                  version="1.1")
    refused = signed_in.post("/admin/challenges/web-admin/edit", data={**values, "csrf_token": token})
    assert refused.status_code == 422
    assert field_errors(refused.get_data(as_text=True), "ttl_seconds")[0].startswith("Must be greater than or equal to 1")
    values["ttl_seconds"] = ""
    saved = signed_in.post("/admin/challenges/web-admin/edit", data={**values, "csrf_token": token})
    assert saved.status_code == 302
    challenge = api.get("/api/v1/challenges/web-admin").get_json()
    assert (challenge["image"], challenge["version"], challenge["ttl_seconds"]) == ("ctf/web-admin:2", "1.1", None)
    assert audit_rows("admin.challenges.update")[-1].result == "ok"


def test_images_are_pulled_and_instances_restarted_from_the_pages(app, api, signed_in):
    worker = register_fake_worker(api, prefix="pulls")
    make_challenge(api, status="active")
    first = [api.post("/api/v1/instances", json={"team_id": f"t{n}", "challenge_id": "web-admin"}).get_json()
             for n in range(2)]
    run_jobs(app, worker)
    token = csrf_of(signed_in, "/admin/challenges")
    pulled = signed_in.post("/admin/challenges/web-admin/pull", data={"csrf_token": token}, follow_redirects=True)
    assert "Pulling 1 image(s) on 1 worker(s)." in pulled.get_data(as_text=True)
    run_jobs(app, worker)
    listed = signed_in.get("/admin/challenges").get_data(as_text=True)
    assert re.search(rf'class="pull pull-pulled" data-worker="{worker}"', listed)
    detail = signed_in.get("/admin/challenges/web-admin").get_data(as_text=True)
    assert re.search(rf'data-worker="{worker}">.*?badge-pulled', detail, re.S)
    restarted = signed_in.post("/admin/challenges/web-admin/restart", data={"csrf_token": token},
                               follow_redirects=True)
    assert "2 of 2 active instance(s) restarted." in restarted.get_data(as_text=True)
    assert {api.get(f"/api/v1/instances/{i['id']}").get_json()["status"] for i in first} == {"destroyed"}
    assert [(row.status, row.result) for row in audit_rows("admin.challenges.pull")] == [(202, "ok")]
    assert [(row.status, row.target) for row in audit_rows("admin.challenges.restart")] == [(202, "web-admin")]
    workers_page = signed_in.get("/admin/workers").get_data(as_text=True)
    assert "ctf/web-admin:1 <b>pulled</b>" in workers_page


# -- lists ------------------------------------------------------------------------


def test_instances_are_filtered_and_paginated(app, api, signed_in):
    register_fake_worker(api, prefix="page-a")
    make_challenge(api, status="active")
    launched = [api.post("/api/v1/instances", json={"team_id": f"team-{n}", "challenge_id": "web-admin"}).get_json()
                for n in range(3)]
    page = signed_in.get("/admin/instances?limit=2").get_data(as_text=True)
    assert "rows 1–2 of" in page and "offset=2" in page
    by_worker = {instance["worker_id"] for instance in launched}
    for worker in by_worker:
        html = signed_in.get(f"/admin/instances?worker_id={worker}").get_data(as_text=True)
        assert html.count("data-instance=") == sum(1 for i in launched if i["worker_id"] == worker)
    html = signed_in.get("/admin/instances?team_id=team-1&challenge_id=web-admin&status=pending").get_data(as_text=True)
    assert html.count("data-instance=") == 1 and launched[1]["id"] in html
    bad = signed_in.get("/admin/instances?status=sleeping").get_data(as_text=True)
    assert "Ignored filters" in bad and bad.count("data-instance=") == 3
    token = csrf_of(signed_in, "/admin/instances")
    gone = signed_in.post(f"/admin/instances/{launched[0]['id']}/destroy", data={"csrf_token": token})
    assert gone.status_code == 302
    assert api.get(f"/api/v1/instances/{launched[0]['id']}").get_json()["status"] == "destroyed"
    assert audit_rows("admin.instances.destroy")[-1].target == launched[0]["id"]


def test_workers_are_cordoned_drained_and_deleted_from_the_page(app, api, signed_in):
    worker = register_fake_worker(api, prefix="page-w")
    token = csrf_of(signed_in, "/admin/workers")

    def state():
        return next(w for w in api.get("/api/v1/workers").get_json() if w["id"] == worker)["state"]

    for path, expected in (("cordon", "cordoned"), ("uncordon", "ready"), ("drain", "draining")):
        assert signed_in.post(f"/admin/workers/{worker}/{path}", data={"csrf_token": token}).status_code == 302
        assert state() == expected
    assert signed_in.post(f"/admin/workers/{worker}/delete", data={"csrf_token": token}).status_code == 302
    assert worker not in {w["id"] for w in api.get("/api/v1/workers").get_json()}
    actions = [row.action for row in AuditEvent.select().where(AuditEvent.target == worker).order_by(AuditEvent.id)]
    assert actions[-4:] == ["admin.workers.cordon", "admin.workers.uncordon", "admin.workers.drain",
                            "admin.workers.delete"]


def test_the_audit_trail_and_flag_sharing_pages_filter_and_paginate(api, signed_in):
    make_challenge(api)
    for _ in range(3):
        api.patch("/api/v1/challenges/web-admin", json={"version": "2"})
    page = signed_in.get("/admin/audit?actor=api_key&limit=2").get_data(as_text=True)
    assert "PATCH /api/v1/challenges/&lt;string:challenge_id&gt;" in page and "rows 1–2 of 4" in page
    assert "admin.sign_in" not in page
    assert "admin.sign_in" in signed_in.get("/admin/audit?actor=admin").get_data(as_text=True)
    assert "Ignored filters" in signed_in.get("/admin/audit?status=abc").get_data(as_text=True)
    FlagSharingEvent.create(challenge_id="web-admin", submitting_team_id="team-a", owning_team_id="team-b",
                            instance_id="0" * 36)
    FlagSharingEvent.create(challenge_id="web-admin", submitting_team_id="team-c", owning_team_id="team-d",
                            instance_id="1" * 36)
    page = signed_in.get("/admin/flag-sharing?team_id=team-b").get_data(as_text=True)
    assert "team-a" in page and "team-c" not in page


def test_the_overview_counts_launches_errors_and_workers(app, api, signed_in):
    worker = register_fake_worker(api, prefix="overview")
    make_challenge(api, status="active", extra_config='{"fail": "no such image"}')
    api.post("/api/v1/instances", json={"team_id": "t1", "challenge_id": "web-admin"})
    run_jobs(app, worker)
    html = signed_in.get("/admin").get_data(as_text=True)
    assert re.search(r'id="launches-last-hour">1<', html) and re.search(r'id="errors-last-hour">1<', html)
    assert worker in html
    detail = signed_in.get("/admin/challenges/web-admin").get_data(as_text=True)
    assert "no such image" in detail


# -- in a real browser --------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    need(sync_playwright is not None, "Python Playwright is not installed (the test extras: pip install -e '.[test]')")
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (apt-get install chromium; scripts/system.sh deps)")
    with sync_playwright() as playwright:
        # Debian's chromium: Playwright cannot download a browser of its own here
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        yield launched
        launched.close()


def screenshot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def submit(page, selector):
    with page.expect_navigation():
        page.click(selector)


def test_the_console_in_a_browser(app, api, live_server, browser):
    base = live_server.url
    worker = register_fake_worker(api, prefix="console")
    # something to show beside what the test does: a failed launch, a flag shared
    make_challenge(api, "pwn-broken", status="active", extra_config='{"fail": "pull access denied for ctf/pwn-broken"}',
                   version="0.9", name="Broken pwn", image="ctf/pwn-broken:0.9")
    api.post("/api/v1/instances", json={"team_id": "team-3", "challenge_id": "pwn-broken"})
    run_jobs(app, worker)
    FlagSharingEvent.create(challenge_id="pwn-broken", submitting_team_id="team-4", owning_team_id="team-3",
                            instance_id="5f0e7a52-1111-4222-8333-944455556666")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    # a stranger lands on the sign-in page; a wrong token is refused, the right one lets in
    page.goto(base + "/admin/instances")
    assert page.url.startswith(base + "/admin/sign-in?next=")
    page.fill("#token", "not-the-token")
    submit(page, "button[type=submit]")
    assert page.inner_text("#sign-in-error") == "Wrong admin token."
    screenshot(page, "sign-in")
    page.fill("#token", ADMIN_TOKEN)
    submit(page, "button[type=submit]")
    assert page.url == base + "/admin/instances"
    cookie = next(c for c in context.cookies() if c["name"] == "ctfhost_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # a draft through the form: an error beside its field, then success
    page.goto(base + "/admin/challenges")
    submit(page, "text=New challenge")
    page.fill("#id", "web-console")
    page.fill("#name", "Web console")
    page.select_option("#runtime", "fake")
    page.fill("#image", "ctf/web-console:1.0")
    page.fill("#port", "eighty")
    page.fill("#version", "1.0")
    page.fill("#metadata", '{"author": "alice", "category": "web"}')
    submit(page, "button:has-text('Create challenge')")
    assert page.inner_text("#field-port .errors") == "Not a valid integer."
    assert page.locator(".field.invalid").count() == 1
    screenshot(page, "challenge-form-error")
    page.fill("#port", "8080")
    submit(page, "button:has-text('Create challenge')")
    assert page.url == base + "/admin/challenges/web-console"
    assert "draft" in page.inner_text("h1")

    # activate it from the list
    page.goto(base + "/admin/challenges")
    submit(page, 'tr[data-challenge="web-console"] button:has-text("Activate")')
    assert page.inner_text('tr[data-challenge="web-console"] .status') == "active"
    assert "Challenge web-console is active" in page.inner_text(".flash.ok")
    screenshot(page, "challenges")

    # pull it: the worker's state turns pulled once its queue has run
    page.goto(base + "/admin/challenges/web-console")
    submit(page, "button:has-text('Pull images')")
    assert "Pulling 1 image(s) on 1 worker(s)." in page.inner_text(".flash.ok")
    run_jobs(app, worker)
    page.reload()
    assert page.inner_text(f'#pulls tr[data-worker="{worker}"] .state') == "pulled"

    # an instance launched through the API shows on the instances page, and is destroyed from it
    launched = api.post("/api/v1/instances", json={"team_id": "team-7", "challenge_id": "web-console"}).get_json()
    run_jobs(app, worker)
    page.goto(base + "/admin/instances?challenge_id=web-console")
    row = f'tr[data-instance="{launched["id"]}"]'
    assert page.inner_text(f"{row} .status") == "running"
    page.goto(base + "/admin/instances")
    screenshot(page, "instances")
    submit(page, f"{row} button:has-text('Destroy')")
    assert page.inner_text(f"{row} .status") == "destroyed"
    assert api.get(f"/api/v1/instances/{launched['id']}").get_json()["status"] == "destroyed"

    page.goto(base + "/admin/challenges/pwn-broken")
    assert "pull access denied" in page.inner_text("body")
    screenshot(page, "challenge")
    page.goto(base + "/admin/challenges/web-console/edit")
    screenshot(page, "challenge-edit")

    # cordon a worker
    page.goto(base + "/admin/workers")
    submit(page, f'tr[data-worker="{worker}"] button:has-text("Cordon")')
    assert page.inner_text(f'tr[data-worker="{worker}"] .state') == "cordoned"
    assert next(w for w in api.get("/api/v1/workers").get_json() if w["id"] == worker)["state"] == "cordoned"
    screenshot(page, "workers")

    # the browser's session cookie without the form's CSRF token changes nothing
    forged = page.request.post(base + f"/admin/workers/{worker}/uncordon", form={"next": "/admin/workers"},
                               max_redirects=0)
    assert forged.status == 403
    assert Worker.get_by_id(worker).state == "cordoned"

    page.goto(base + "/admin/audit?actor=admin")
    actions = page.inner_text("#audit")
    for name in ("admin.challenges.create", "admin.challenges.activate", "admin.instances.destroy", "admin.workers.cordon"):
        assert name in actions
    page.goto(base + "/admin/audit")
    screenshot(page, "audit")
    page.goto(base + "/admin/flag-sharing")
    assert "team-4" in page.inner_text("#flag-sharing")
    screenshot(page, "flag-sharing")
    page.goto(base + "/admin")
    assert page.inner_text("#errors-last-hour") == "1"
    screenshot(page, "overview")

    # signing out ends it; another browser without a session gets no page
    submit(page, "button:has-text('Sign out')")
    assert page.url == base + "/admin/sign-in" and "Signed out." in page.inner_text(".flash.ok")
    page.goto(base + "/admin/workers")
    assert page.url.startswith(base + "/admin/sign-in")
    stranger = browser.new_context().new_page()
    stranger.goto(base + "/admin/workers")
    assert stranger.url.startswith(base + "/admin/sign-in") and worker not in stranger.content()
    context.close()
