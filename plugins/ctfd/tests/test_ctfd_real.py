"""The CTFd plugin inside a real CTFd 3.8, with ctfhost, a Docker worker and Traefik's forward-auth.

CTFd is not installable from the package registries, so this runs only when
CTFHOST_CTFD_SRC points at a CTFd 3.8 checkout whose requirements are
installed in a separate virtualenv (CTFHOST_CTFD_PYTHON, default
$CTFHOST_CTFD_SRC/.venv/bin/python); otherwise, in CI too, it is skipped.
See plugins/ctfd/README.md. The checkout is copied to a temporary directory
and the plugin installed there with `flask ctfhost ctfd-install`; CTFd runs
on SQLite at 127.0.0.1.
"""

import contextlib
import json
import os
import re
import shutil
import urllib.parse

import pytest
import requests

try:  # optional: the panel's JavaScript in Debian's chromium (never a downloaded browser)
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

from ctfhost.testing import Service, free_port, wait_until
from ctfhost.testing import ACCESS_COOKIE
from ctfhost.testing import API_KEY
from ctfhost_plugin_docker.testing import TEST_CONTENT, build_image

# read now: the test_env fixture later removes CTFHOST_* variables it does not know
CTFD_SRC = os.environ.get("CTFHOST_CTFD_SRC", "").strip()
CTFD_PYTHON = os.environ.get("CTFHOST_CTFD_PYTHON", "").strip() or (
    os.path.join(CTFD_SRC, ".venv", "bin", "python") if CTFD_SRC else ""
)

pytestmark = [
    pytest.mark.skipif(
        not CTFD_SRC,
        reason="CTFHOST_CTFD_SRC is not set: this test needs a CTFd 3.8 checkout with its requirements in its own "
        "virtualenv, and CTFd is not installable from the package registries, so CI skips it as well "
        "(plugins/ctfd/README.md says how to run it)",
    ),
    pytest.mark.docker,
    pytest.mark.redis,
    pytest.mark.traefik,
]

CHROMIUM = os.environ.get("CTFHOST_CHROMIUM", "/usr/bin/chromium")
# the browser checks run when Playwright and chromium are installed; screenshots go to CTFHOST_SCREENSHOT_DIR if set
BROWSER = sync_playwright is not None and os.access(CHROMIUM, os.X_OK)
SCREENSHOTS = os.environ.get("CTFHOST_SCREENSHOT_DIR", "").strip()

ADMIN_IMAGE = "ctfhost-test/ctfd-admin:latest"
ADMIN_CONTENT = "the admin page of a ctfhost test instance\n"
NONCE = re.compile(r"""['"]csrfNonce['"]\s*:\s*["']([^"']+)["']""")
WAIT = 90  # seconds any single step may take at most


class Ctfd:
    """A CTFd process serving a copy of the checkout with the plugin installed."""

    RUN = (
        "import sys\n"
        "from CTFd import create_app\n"
        "create_app().run(host='127.0.0.1', port=int(sys.argv[1]), threaded=True, use_reloader=False)\n"
    )

    def __init__(self, root, python, log_path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = os.path.join(root, ".test-data")
        os.makedirs(data, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": data,
            "LANG": "C.UTF-8",
            "PYTHONPATH": root,
            "DATABASE_URL": f"sqlite:///{data}/ctfd.db",
            "SECRET_KEY": "ctfhost-test-ctfd-secret",
            "LOG_FOLDER": os.path.join(data, "logs"),
            "UPLOAD_FOLDER": os.path.join(data, "uploads"),
        }
        self.service = Service("ctfd", [python, "-c", self.RUN, str(self.port)], env, log_path)

    def start(self):
        self.service.start()
        try:
            wait_until(self.answers, 60, interval=0.2, what="CTFd to start")
        except TimeoutError:
            self.service.stop()
            pytest.fail(f"CTFd did not start:\n{self.service.tail(60)}")
        return self

    def answers(self):
        if not self.service.alive():
            pytest.fail(f"CTFd exited:\n{self.service.tail(60)}")
        try:
            return requests.get(f"{self.url}/setup", timeout=2, allow_redirects=False).status_code in (200, 302)
        except requests.RequestException:
            return False


def copy_checkout(source, target):
    """Copy CTFd's sources, leaving out virtualenvs, runtime data and an installed ctfhost plugin."""
    skip_names = {".venv", "venv", ".git", "node_modules", "__pycache__", ".data", ".ctfd_secret_key"}
    skip_paths = {os.path.join(source, "CTFd", name) for name in ("uploads", "logs", "plugins/ctfhost")}

    def ignore(directory, names):
        return {n for n in names if n in skip_names or n.endswith(".db") or os.path.join(directory, n) in skip_paths}

    shutil.copytree(source, target, ignore=ignore, symlinks=True)


@pytest.fixture(scope="module")
def ctfd(app, tmp_path_factory):
    if not os.path.isfile(os.path.join(CTFD_SRC, "CTFd", "__init__.py")):
        pytest.fail(f"CTFHOST_CTFD_SRC={CTFD_SRC} is not a CTFd checkout")
    if not os.access(CTFD_PYTHON, os.X_OK):
        pytest.fail(f"no python for CTFd at {CTFD_PYTHON}: create a virtualenv with CTFd's requirements "
                    "there, or set CTFHOST_CTFD_PYTHON")
    base = tmp_path_factory.mktemp("ctfd")
    root = str(base / "CTFd-checkout")
    copy_checkout(CTFD_SRC, root)
    result = app.test_cli_runner().invoke(args=["ctfhost", "ctfd-install", root])
    assert result.exit_code == 0, result.output
    server = Ctfd(root, CTFD_PYTHON, str(base / "ctfd.log")).start()
    yield server
    server.service.stop()


class Browser:
    """A requests session acting as one person's browser on CTFd (cookies, CSRF nonce)."""

    def __init__(self, ctfd):
        self.ctfd = ctfd
        self.session = requests.Session()
        self.nonce = None

    def page(self, path, **kwargs):
        response = self.session.get(self.ctfd.url + path, timeout=20, **kwargs)
        found = NONCE.search(response.text)
        if found:
            self.nonce = found.group(1)
        return response

    def form(self, path, data, **kwargs):
        self.page(path)
        return self.session.post(self.ctfd.url + path, data=dict(data, nonce=self.nonce), timeout=20, **kwargs)

    def api(self, method, path, body=None, csrf=True):
        if self.nonce is None:
            self.page("/challenges")
        # as CTFd's JavaScript sends them: JSON, with the session's nonce in CSRF-Token
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if csrf:
            headers["CSRF-Token"] = self.nonce
        data = None if body is None else json.dumps(body)
        return self.session.request(method, self.ctfd.url + path, data=data, headers=headers, timeout=30)

    def register(self, name):
        response = self.form("/register", {"name": name, "email": f"{name}@example.org", "password": f"{name}-password"})
        assert response.status_code == 200 and "/challenges" in response.url, (response.url, response.text[:300])
        self.page("/challenges")
        return self


@contextlib.contextmanager
def chromium_page(person, ctfd):
    """A headless chromium tab carrying `person`'s CTFd session."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--headless", "--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": c.name, "value": c.value, "url": ctfd.url} for c in person.session.cookies])
            yield context.new_page()
        finally:
            browser.close()


def screenshot(page, name):
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, f"ctfd-{name}.png"), full_page=True)


def browser_panel(person, ctfd, challenge_id, name="panel", click=None):
    """What the instance panel (ctfhost.js) shows for a challenge: status badge, buttons, Renew's state, message.

    `click`: a button of the panel to press first (e.g. ".ctfhost-launch").
    """
    with chromium_page(person, ctfd) as page:
        page.goto(f"{ctfd.url}/plugins/ctfhost/instances")
        page.wait_for_function("() => window.CtfhostPanel !== undefined")
        page.evaluate(
            """(id) => {
                const el = document.createElement("div");
                el.id = "probe";
                el.className = "ctfhost-panel container my-3";
                el.dataset.ctfhostChallenge = String(id);
                document.querySelector(".jumbotron").after(el);
                window.CtfhostPanel.mountAll(document);
            }""",
            challenge_id,
        )
        page.wait_for_selector("#probe .badge")
        if click:
            page.click(f"#probe {click}")
            page.wait_for_selector("#probe .ctfhost-message")
        page.wait_for_timeout(1200)  # a tick of the panel's clock
        screenshot(page, name)
        renew = page.query_selector("#probe .ctfhost-renew")
        return {
            "status": page.inner_text("#probe .badge"),
            "buttons": [b.inner_text() for b in page.query_selector_all("#probe .ctfhost-buttons button, #probe .ctfhost-buttons a")],
            "renew": renew.inner_text() if renew else None,
            "renew_disabled": renew.is_disabled() if renew else None,
            "message": page.inner_text("#probe .ctfhost-message") if page.query_selector("#probe .ctfhost-message") else None,
        }


def browser_delete(admin, ctfd, challenge_id):
    """Press Delete on the challenge's admin page and confirm; the text of the alert that follows."""
    with chromium_page(admin, ctfd) as page:
        page.goto(f"{ctfd.url}/admin/challenges/{challenge_id}")
        page.click(".delete-challenge")
        page.click(".modal.show button.btn-primary:has-text('Yes')")
        alert = page.wait_for_selector(".modal.show .modal-body:has-text('Not deleted')", timeout=15000)
        screenshot(page, "delete-refused")
        return alert.inner_text()


def browser_endpoint(person, ctfd, challenge, name):
    """The challenge's instance in chromium (challenge window, then My instances), whose endpoint `name` is
    opened from My instances as a player does.

    What the challenge window lists besides main, the same on My instances, main's address there, and
    the page the Open button reached (through CTFd's sign-in, ctfhost's access link and Traefik):
    {"window", "listed": [names], "address", "url", "text"}.
    """
    with chromium_page(person, ctfd) as page:
        page.goto(f"{ctfd.url}/challenges#{urllib.parse.quote(challenge['name'])}-{challenge['id']}")
        window = page.wait_for_selector(".modal.show .ctfhost-panel .ctfhost-endpoints")
        page.wait_for_timeout(1200)
        screenshot(page, "endpoints-challenge")
        in_window = [row.get_attribute("data-endpoint") for row in window.query_selector_all(".ctfhost-other-endpoint")]
        page.goto(f"{ctfd.url}/plugins/ctfhost/instances")
        panel = page.wait_for_selector(f".ctfhost-card:has(.ctfhost-other-endpoint[data-endpoint='{name}'])")
        page.wait_for_timeout(1200)  # a tick of the panel's clock
        screenshot(page, "endpoints")
        listed = [row.get_attribute("data-endpoint") for row in panel.query_selector_all(".ctfhost-other-endpoint")]
        with page.context.expect_page() as opened:
            panel.query_selector(f".ctfhost-other-endpoint[data-endpoint='{name}'] .ctfhost-open-endpoint").click()
        tab = opened.value
        tab.wait_for_load_state()
        screenshot(tab, f"endpoint-{name}")
        return {"window": in_window, "listed": listed, "address": panel.query_selector(".ctfhost-endpoint").inner_text(),
                "url": tab.url, "text": tab.inner_text("body")}


def browser_tokens(person, ctfd, name):
    """Create a token on the API tokens page in chromium (7 days, instances:read only), after a refused try.

    {"refused": the name field's message for an empty name, "secret", "usage": the how-to-use text,
    "listed": the names in the team's list, "reloaded": the page's HTML after a reload}
    """
    with chromium_page(person, ctfd) as page:
        page.goto(f"{ctfd.url}/plugins/ctfhost/tokens")
        page.wait_for_selector("#ctfhost-tokens tbody td:not(:has-text('Loading'))")
        page.click("#ctfhost-token-create")
        refused = page.wait_for_selector("[data-ctfhost-field='name']:not(:empty)").inner_text()
        screenshot(page, "tokens-refused")
        page.fill("#ctfhost-token-name", name)
        page.select_option("#ctfhost-token-expires", "7")
        for box in page.query_selector_all("#ctfhost-token-form input[name='scopes']"):
            box.set_checked(box.get_attribute("value") == "instances:read")
        page.click("#ctfhost-token-create")
        page.wait_for_selector("#ctfhost-token-new:not(.d-none)")
        page.wait_for_selector(f"#ctfhost-tokens .ctfhost-token-name:has-text('{name}')")
        screenshot(page, "tokens-created")
        found = {
            "refused": refused,
            "secret": page.input_value("#ctfhost-token-secret"),
            "usage": page.inner_text("#ctfhost-token-usage"),
            "listed": [cell.inner_text() for cell in page.query_selector_all("#ctfhost-tokens .ctfhost-token-name")],
        }
        page.reload()
        page.wait_for_selector(".ctfhost-token")
        screenshot(page, "tokens-reloaded")
        found["reloaded"] = page.content()
        return found


@pytest.fixture
def guarded(app, live_server, traefik_proxy, localhost_dns, ctfd):
    """Traefik sends every instance request through ctfhost's forward-auth, which signs browsers in through CTFd."""
    values = {
        "CTFHOST_TRAEFIK_FORWARD_AUTH_URL": f"{live_server.url}/api/v1/auth/forward",
        "CTFHOST_PUBLIC_PORT": traefik_proxy.web_port,
        "CTFHOST_AUTH_SIGNIN_URL": f"{ctfd.url}/plugins/ctfhost/access?instance={{instance_id}}&next={{next}}",
    }
    saved = {key: app.config.get(key) for key in values}
    app.config.update(values)
    from ctfhost_plugin_traefik import config_cache

    config_cache.invalidate()
    yield traefik_proxy
    app.config.update(saved)
    config_cache.invalidate()


def wait_running(browser, challenge_id):
    path = f"/api/v1/plugins/ctfhost/challenges/{challenge_id}/instance"

    def state():
        return browser.api("GET", path).json()["data"]

    wait_until(lambda: state()["status"] != "pending", WAIT, interval=0.25, what="the instance to start")
    instance = state()
    assert instance["status"] == "running", instance
    return instance


def ctfhost_get(live_server, path):
    status, body = live_server.call("GET", path)
    assert status == 200, body
    return body


def test_ctfhost_challenges_in_a_real_ctfd(app, live_server, ctfd, guarded, worker_agent, test_image, docker_client):
    # -- CTFd's setup makes the admin, who configures the plugin on its settings page
    admin = Browser(ctfd)
    setup = admin.form("/setup", {
        "ctf_name": "ctfhost test CTF", "ctf_description": "", "user_mode": "users", "ctf_theme": "core",
        "name": "admin", "email": "admin@example.org", "password": "admin-password",
    })
    assert setup.status_code == 200, setup.text[:300]
    unconfigured = admin.page("/admin/ctfhost/settings")
    assert unconfigured.status_code == 200 and "Set the ctfhost URL and API key" in unconfigured.text
    saved = admin.form("/admin/ctfhost/settings", {"url": live_server.url, "api_key": API_KEY, "public_url": ctfd.url})
    assert saved.status_code == 200 and "accepts the API key" in saved.text, saved.text[:2000]
    assert f"CTFHOST_AUTH_SIGNIN_URL={ctfd.url}/plugins/ctfhost/access?instance={{instance_id}}&amp;next={{next}}" in saved.text

    # -- the admin creates a ctfhost challenge through CTFd's API; ctfhost's refusals come back as form errors
    body = {
        "name": "Web Private", "category": "web", "description": "Your own web server.", "value": "100",
        "state": "visible", "type": "ctfhost", "image": test_image, "port": "8080", "runtime": "docker",
        "ttl_seconds": "600", "flag_template": "flag{{{hex:16}}}", "extra_config": "",
    }
    refused = admin.api("POST", "/api/v1/challenges", dict(body, cpu_count="3")).json()
    assert refused["success"] is False and "cpu_count" in refused["errors"][""][0], refused
    created = admin.api("POST", "/api/v1/challenges", body).json()
    assert created["success"] is True, created
    challenge_id, slug = created["data"]["id"], created["data"]["slug"]
    assert slug == f"web-private-{challenge_id}"
    registered = ctfhost_get(live_server, f"/api/v1/challenges/{slug}")
    assert (registered["image"], registered["port"], registered["flag_template"]) == (test_image, 8080, "flag{{{hex:16}}}")
    assert [c["id"] for c in ctfhost_get(live_server, "/api/v1/challenges")] == [slug]  # the refused one left nothing
    # dynamic scoring stays available, as for standard challenges
    dynamic = admin.api("POST", "/api/v1/challenges", dict(body, name="Web Dynamic", function="linear", decay="10",
                                                           minimum="50")).json()
    assert dynamic["success"] is True, dynamic
    assert (dynamic["data"]["function"], dynamic["data"]["initial"], dynamic["data"]["value"]) == ("linear", 100, 100)
    assert admin.api("DELETE", f"/api/v1/challenges/{dynamic['data']['id']}").json()["success"] is True
    assert [c["id"] for c in ctfhost_get(live_server, "/api/v1/challenges")] == [slug]

    # -- a player launches from the challenge window's API (CTFd's CSRF rules apply)
    alice = Browser(ctfd).register("alice")
    launch_path = f"/api/v1/plugins/ctfhost/challenges/{challenge_id}/instance"
    assert alice.api("POST", launch_path, csrf=False).status_code == 403
    launched = alice.api("POST", launch_path)
    assert launched.status_code == 201, launched.text
    assert launched.json()["data"]["status"] == "pending" and "flag" not in launched.json()["data"]
    view = alice.api("GET", f"/api/v1/challenges/{challenge_id}").json()["data"]
    assert 'class="ctfhost-panel' in view["view"] and view["type_data"]["scripts"]["view"].endswith("/view.js")
    instance = wait_running(alice, challenge_id)
    assert instance["endpoint"].endswith(f".{slug}.localhost:{guarded.web_port}")

    # -- Open: the sign-in route hands out a fresh access link; through Traefik it lands on the instance
    opened = alice.session.get(f"{ctfd.url}/plugins/ctfhost/access", params={"instance": instance["id"], "next": "/"},
                               timeout=20)
    assert opened.status_code == 200 and opened.text == TEST_CONTENT, (opened.url, opened.text[:300])
    hops = [urllib.parse.urlsplit(r.url).netloc for r in opened.history]
    assert hops[0] == f"127.0.0.1:{ctfd.port}" and all(h.endswith(".localhost:" + str(guarded.web_port)) for h in hops[1:])
    # CTFd's session cookie stays with CTFd: the instance only saw its own access cookie
    sent = opened.request.headers.get("Cookie", "")
    assert ACCESS_COOKIE in sent and "session=" not in sent

    # -- straight to the instance's address: forward-auth signs the browser in through CTFd
    alice_again = Browser(ctfd)
    alice_again.form("/login", {"name": "alice", "password": "alice-password"})
    direct = alice_again.session.get(instance["endpoint"] + "/", timeout=20)
    assert direct.status_code == 200 and direct.text == TEST_CONTENT
    assert [r.status_code for r in direct.history] == [302, 302, 302]
    assert direct.history[1].url.startswith(f"{ctfd.url}/plugins/ctfhost/access?instance={instance['id']}")
    anonymous = requests.get(instance["endpoint"] + "/", timeout=20)
    assert urllib.parse.urlsplit(anonymous.url).path == "/login"  # sent to CTFd's login page

    # -- another player is refused at alice's instance, and gets one of her own
    bob = Browser(ctfd).register("bob")
    refused = bob.session.get(instance["endpoint"] + "/", timeout=20)
    assert refused.status_code == 403 and "another team" in refused.text
    assert bob.api("POST", f"/api/v1/plugins/ctfhost/instances/{instance['id']}/renew").status_code == 404
    assert bob.api("POST", launch_path).status_code == 201
    bob_instance = wait_running(bob, challenge_id)

    # -- flags: each instance has its own; bob submitting alice's is incorrect and recorded as flag sharing
    alice_flag = ctfhost_get(live_server, f"/api/v1/instances/{instance['id']}")["flag"]
    bob_flag = ctfhost_get(live_server, f"/api/v1/instances/{bob_instance['id']}")["flag"]
    assert alice_flag != bob_flag and alice_flag.startswith("flag{")
    attempt = "/api/v1/challenges/attempt"
    shared = bob.api("POST", attempt, {"challenge_id": challenge_id, "submission": alice_flag}).json()["data"]
    assert shared == {"status": "incorrect", "message": "Incorrect"}
    events = ctfhost_get(live_server, "/api/v1/flag-sharing")
    alice_id, bob_id = (b.api("GET", "/api/v1/users/me").json()["data"]["id"] for b in (alice, bob))
    # users are "user-<id>" in ctfhost, so a switch to teams mode hands nothing to team <id>
    assert [(e["submitting_team_id"], e["owning_team_id"], e["instance_id"]) for e in events] == [
        (f"user-{bob_id}", f"user-{alice_id}", instance["id"])
    ]
    assert ctfhost_get(live_server, f"/api/v1/instances/{instance['id']}")["team_id"] == f"user-{alice_id}"
    # a flag ctfhost refuses as given is an incorrect attempt with its reason, not "could not be checked"
    fails = bob.api("GET", "/api/v1/users/me/fails").json()["meta"]["count"]
    too_long = bob.api("POST", attempt, {"challenge_id": challenge_id, "submission": "flag{" + "a" * 3000 + "}"}).json()["data"]
    assert too_long["status"] == "incorrect" and too_long["message"].startswith("Incorrect: the flag was refused (")
    assert bob.api("GET", "/api/v1/users/me/fails").json()["meta"]["count"] == fails + 1
    # while ctfhost cannot be reached a flag is not graded, and the attempt is not held against the player
    fails = bob.api("GET", "/api/v1/users/me/fails").json()["meta"]["count"]
    down = f"http://127.0.0.1:{free_port()}"
    assert "unreachable" in admin.form("/admin/ctfhost/settings", {"url": down, "public_url": ctfd.url}).text
    state = alice.api("GET", launch_path)
    assert state.status_code == 503 and state.json()["code"] == "unavailable"  # not "no instance": the panel shows Unknown
    if BROWSER:
        panel = browser_panel(alice, ctfd, challenge_id, "unknown")
        assert panel["status"] == "Unknown" and "Launch" not in panel["buttons"] and "Try again" in panel["buttons"], panel
    signin_down = alice.session.get(f"{ctfd.url}/plugins/ctfhost/access", params={"instance": instance["id"], "next": "/"}, timeout=20)
    assert signin_down.status_code == 503 and 'id="ctfhost-retry"' in signin_down.text
    unchecked = bob.api("POST", attempt, {"challenge_id": challenge_id, "submission": bob_flag}).json()["data"]
    assert unchecked["status"] == "incorrect" and "could not be checked" in unchecked["message"]
    assert bob.api("GET", "/api/v1/users/me/fails").json()["meta"]["count"] == fails
    assert "accepts the API key" in admin.form("/admin/ctfhost/settings", {"url": live_server.url, "public_url": ctfd.url}).text

    solved = alice.api("POST", attempt, {"challenge_id": challenge_id, "submission": alice_flag}).json()["data"]
    assert solved == {"status": "correct", "message": "Correct"}
    assert [s["account_id"] for s in alice.api("GET", f"/api/v1/challenges/{challenge_id}/solves").json()["data"]] == [alice_id]

    # -- My instances and the admin page
    mine = alice.api("GET", "/api/v1/plugins/ctfhost/instances").json()["data"]
    assert [(i["id"], i["challenge_name"], i["ctfd_challenge_id"]) for i in mine] == [(instance["id"], "Web Private", challenge_id)]
    assert "My instances" in alice.page("/plugins/ctfhost/instances").text

    # -- API tokens: alice mints one for her own account on the page, sees it once, and uses it on ctfhost
    tokens_api = "/api/v1/plugins/ctfhost/tokens"
    visitor = requests.get(f"{ctfd.url}/plugins/ctfhost/tokens", timeout=20, allow_redirects=False)
    assert visitor.status_code == 302 and urllib.parse.urlsplit(visitor.headers["Location"]).path == "/login"
    assert requests.get(ctfd.url + tokens_api, timeout=20).status_code in (401, 403)
    tokens_page = alice.page("/plugins/ctfhost/tokens")
    assert tokens_page.status_code == 200 and 'id="ctfhost-token-form"' in tokens_page.text
    assert 'href="/plugins/ctfhost/tokens"' in alice.page("/challenges").text  # in the navigation bar
    # the browser names no team: one it sends anyway is ignored
    wanted = {"name": "alice laptop", "expires": "7", "scopes": ["instances:read"], "team_id": bob_id}
    assert alice.api("POST", tokens_api, wanted, csrf=False).status_code == 403  # CTFd's CSRF nonce is needed
    if BROWSER:
        made = browser_tokens(alice, ctfd, "alice laptop")
        assert made["refused"].startswith("Give the token a name") and made["listed"] == ["alice laptop"], made
        secret = made["secret"]
        assert f"export CTFHOST_URL={live_server.url}" in made["usage"] and f"export CTFHOST_TOKEN={secret}" in made["usage"]
        assert secret not in made["reloaded"] and "alice laptop" in made["reloaded"]
    else:
        secret = alice.api("POST", tokens_api, wanted).json()["data"]["token"]
    assert secret.startswith("cth_")
    bearer = {"Authorization": f"Bearer {secret}"}
    seen = requests.get(f"{live_server.url}/api/v1/instances", headers=bearer, timeout=20)
    assert seen.status_code == 200 and instance["id"] in [i["id"] for i in seen.json()], seen.text
    assert {i["team_id"] for i in seen.json()} == {f"user-{alice_id}"}  # bob's instance is not hers
    launch_with_token = requests.post(f"{live_server.url}/api/v1/instances", json={"challenge_id": slug}, headers=bearer, timeout=20)
    assert launch_with_token.status_code == 403 and launch_with_token.json()["errors"]["scope"] == "instances:write"
    listed = alice.api("GET", tokens_api).json()["data"]
    assert [(t["name"], t["scopes"]) for t in listed] == [("alice laptop", ["instances:read"])] and "token" not in listed[0]
    assert listed[0]["last_used_at"] and secret not in alice.page("/plugins/ctfhost/tokens").text
    in_ctfhost = ctfhost_get(live_server, f"/api/v1/tokens?team_id=user-{alice_id}")
    assert [t["id"] for t in in_ctfhost] == [listed[0]["id"]] and in_ctfhost[0]["team_id"] == f"user-{alice_id}"
    # bob sees none of them and cannot revoke hers
    assert bob.api("GET", tokens_api).json()["data"] == []
    assert bob.api("DELETE", f"{tokens_api}/{listed[0]['id']}").status_code == 404
    assert requests.get(f"{live_server.url}/api/v1/instances", headers=bearer, timeout=20).status_code == 200
    too_long = alice.api("POST", tokens_api, dict(wanted, expires="90"))
    assert too_long.status_code == 422 and "at most 30 days" in too_long.json()["errors"]["expires"], too_long.text
    # ctfhost down: a readable message, no traceback
    admin.form("/admin/ctfhost/settings", {"url": down, "public_url": ctfd.url})
    unavailable = alice.api("GET", tokens_api)
    assert unavailable.status_code == 503 and unavailable.json()["message"] == "API tokens are not available right now. Try again in a minute."
    admin.form("/admin/ctfhost/settings", {"url": live_server.url, "public_url": ctfd.url})
    assert alice.api("DELETE", f"{tokens_api}/{listed[0]['id']}").json()["success"] is True
    assert requests.get(f"{live_server.url}/api/v1/instances", headers=bearer, timeout=20).status_code == 401
    assert alice.api("GET", tokens_api).json()["data"] == []
    overview = admin.page("/admin/ctfhost").text
    assert instance["id"] in overview and bob_instance["id"] in overview and "bob (user)" in overview and "alice (user)" in overview
    # the flag-sharing table shows what ctfhost sends, and no column that stays empty
    sharing = overview.split('id="ctfhost-flag-sharing"', 1)[1].split("</table>", 1)[0]
    headers = re.findall(r"<th>(.*?)</th>", sharing)
    assert headers == ["When (UTC)", "Challenge", "Submitted by", "Flag of", "Instance"], headers
    row = re.findall(r"<td>(.*?)</td>", sharing.split("<tbody>", 1)[1], re.S)[: len(headers)]
    assert len(row) == len(headers) and all(re.sub(r"<[^>]+>", "", cell).strip() for cell in row), row
    assert "Web Private" in sharing and "bob (user)" in sharing and "alice (user)" in sharing
    # the challenge's admin page says whether players can launch it
    detail = admin.page(f"/admin/challenges/{challenge_id}").text
    assert 'id="ctfhost-launch-check"' in detail and "Players can launch it" in detail, detail[:3000]

    # -- a challenge with a second HTTP endpoint (a service's admin page, on a host of its own): the panel
    # lists it, its Open reaches it through Traefik, forward-auth on its host signs in through CTFd
    build_image(ADMIN_IMAGE, content=ADMIN_CONTENT, client=docker_client)
    doors = admin.api("POST", "/api/v1/challenges", dict(body, name="Web Two Doors", flag_template="")).json()
    assert doors["success"] is True, doors
    doors_id, doors_slug = doors["data"]["id"], doors["data"]["slug"]
    # the CTFd form has no services: the operator adds them in ctfhost, and later CTFd edits leave them alone
    backoffice = {"backoffice": {"image": ADMIN_IMAGE, "expose": [{"name": "admin", "port": 8080, "protocol": "http"}]}}
    status, patched = live_server.call("PATCH", f"/api/v1/challenges/{doors_slug}", {"services": backoffice})
    assert status == 200, patched
    assert alice.api("POST", f"/api/v1/plugins/ctfhost/challenges/{doors_id}/instance").status_code == 201
    doors_instance = wait_running(alice, doors_id)
    endpoints = {e["name"]: e for e in doors_instance["endpoints"]}
    assert list(endpoints) == ["main", "admin"] and endpoints["main"]["url"] == doors_instance["endpoint"]
    admin_url = endpoints["admin"]["url"]
    assert admin_url != doors_instance["endpoint"] and admin_url.endswith(f".{doors_slug}.localhost:{guarded.web_port}")
    # Open of admin: sign-in with next = its address asks for the admin host's link
    through = alice.session.get(f"{ctfd.url}/plugins/ctfhost/access",
                                params={"instance": doors_instance["id"], "next": admin_url + "/"}, timeout=20)
    assert through.status_code == 200 and through.text == ADMIN_CONTENT, (through.url, through.text[:300])
    assert urllib.parse.urlsplit(through.url).netloc == urllib.parse.urlsplit(admin_url).netloc
    # main's host is another host: its own sign-in, its own cookie
    assert alice.session.get(doors_instance["endpoint"] + "/", timeout=20).text == TEST_CONTENT
    opened_api = alice.api("POST", f"/api/v1/plugins/ctfhost/instances/{doors_instance['id']}/access",
                           {"next": "/", "endpoint": "admin"}).json()
    assert opened_api["success"] is True and opened_api["data"]["url"].startswith(admin_url + "/.ctfhost/access?"), opened_api
    bad_name = alice.api("POST", f"/api/v1/plugins/ctfhost/instances/{doors_instance['id']}/access", {"endpoint": "Admin!"})
    assert bad_name.status_code == 400 and bad_name.json()["code"] == "invalid", bad_name.text
    # straight to the admin host: forward-auth sends the browser to CTFd's sign-in, which brings it back there
    alice_direct = Browser(ctfd)
    alice_direct.form("/login", {"name": "alice", "password": "alice-password"})
    direct_admin = alice_direct.session.get(admin_url + "/index.html?from=bookmark", timeout=20)
    assert direct_admin.status_code == 200 and direct_admin.text == ADMIN_CONTENT, (direct_admin.url, direct_admin.text[:300])
    assert direct_admin.url == admin_url + "/index.html?from=bookmark"
    assert bob.session.get(admin_url + "/", timeout=20).status_code == 403  # another player, another host: still refused
    assert admin_url in admin.page("/admin/ctfhost").text
    if BROWSER:
        seen = browser_endpoint(alice, ctfd, doors["data"], "admin")
        assert seen["window"] == seen["listed"] == ["admin"] and seen["address"] == doors_instance["endpoint"], seen
        assert seen["text"].strip() == ADMIN_CONTENT.strip() and seen["url"].startswith(admin_url + "/"), seen
    assert alice.api("DELETE", f"/api/v1/plugins/ctfhost/instances/{doors_instance['id']}").json()["success"] is True

    # -- renew and stop from the player's API; the admin destroys bob's
    renew_path = f"/api/v1/plugins/ctfhost/instances/{instance['id']}/renew"
    # right after launch a renew would add seconds: refused, no renewal spent, Renew disabled in the panel
    early = alice.api("POST", renew_path)
    assert early.status_code == 409 and early.json()["code"] == "renew_not_needed" and early.json()["retry_after"] > 0
    assert alice.api("GET", launch_path).json()["data"]["renewable_in"] > 0
    assert ctfhost_get(live_server, f"/api/v1/instances/{instance['id']}")["renewals"] == 0
    if BROWSER:
        panel = browser_panel(alice, ctfd, challenge_id, "renew-later")
        assert panel["status"] == "Running" and panel["renew_disabled"] and panel["renew"].startswith("Renew (in "), panel
    settings_page = admin.form("/admin/ctfhost/settings", {"url": live_server.url, "public_url": ctfd.url, "renew_min_seconds": "0"})
    assert settings_page.status_code == 200 and "Saved." in settings_page.text
    renewed = alice.api("POST", renew_path).json()
    assert renewed["success"] is True and renewed["data"]["renewals"] == 1, renewed
    assert renewed["data"]["seconds_added"] >= 1 and 590 <= renewed["data"]["seconds_left"] <= 600
    assert alice.api("DELETE", f"/api/v1/plugins/ctfhost/instances/{instance['id']}").json()["success"] is True
    assert alice.api("GET", launch_path).json()["data"] is None
    assert admin.api("DELETE", f"/api/v1/plugins/ctfhost/admin/instances/{bob_instance['id']}").json()["success"] is True
    assert ctfhost_get(live_server, f"/api/v1/instances/{bob_instance['id']}")["status"] == "destroyed"

    # -- editing updates ctfhost; a refused edit changes neither side; deleting deletes it in ctfhost
    edited = admin.api("PATCH", f"/api/v1/challenges/{challenge_id}", {"ttl_seconds": "900", "name": "Web Private 2"}).json()
    assert edited["success"] is True and edited["data"]["slug"] == slug  # the slug never changes
    assert ctfhost_get(live_server, f"/api/v1/challenges/{slug}")["ttl_seconds"] == 900
    bad_edit = admin.api("PATCH", f"/api/v1/challenges/{challenge_id}", {"memory_mb": "3"}).json()
    assert bad_edit["success"] is False and "memory_mb" in bad_edit["errors"][""][0]
    assert admin.api("GET", f"/api/v1/challenges/{challenge_id}").json()["data"]["memory_mb"] == 512
    # deleting while ctfhost is down keeps the challenge on both sides and says why (no traceback in CTFd's log)
    admin.form("/admin/ctfhost/settings", {"url": down, "public_url": ctfd.url})
    kept = admin.api("DELETE", f"/api/v1/challenges/{challenge_id}")
    assert kept.status_code == 409 and kept.json()["success"] is False, kept.text
    assert "Not deleted" in kept.json()["errors"][""][0] and "unreachable" in kept.json()["errors"][""][0]
    assert admin.api("GET", f"/api/v1/challenges/{challenge_id}").status_code == 200
    assert "Traceback" not in ctfd.service.tail(200)
    if BROWSER:
        alert = browser_delete(admin, ctfd, challenge_id)
        assert "Not deleted" in alert and "unreachable" in alert, alert
        assert admin.api("GET", f"/api/v1/challenges/{challenge_id}").status_code == 200
    admin.form("/admin/ctfhost/settings", {"url": live_server.url, "public_url": ctfd.url})
    assert admin.api("DELETE", f"/api/v1/challenges/{challenge_id}").json()["success"] is True
    assert live_server.call("GET", f"/api/v1/challenges/{slug}")[0] == 404

    # -- a runtime no worker serves: players read that it cannot be launched; its admin page says why
    nobody = admin.api("POST", "/api/v1/challenges", dict(body, name="Web Nobody", runtime="fake")).json()
    assert nobody["success"] is True, nobody
    refused_launch = alice.api("POST", f"/api/v1/plugins/ctfhost/challenges/{nobody['data']['id']}/instance")
    assert refused_launch.status_code == 503 and refused_launch.json()["code"] == "not_launchable"
    assert "cannot be launched right now" in refused_launch.json()["message"] and "busy" not in refused_launch.json()["message"]
    nobody_page = admin.page(f"/admin/challenges/{nobody['data']['id']}").text
    assert "No active ctfhost worker serves runtime &#39;fake&#39;" in nobody_page, nobody_page[:3000]
    if BROWSER:
        panel = browser_panel(alice, ctfd, nobody["data"]["id"], "not-launchable", click=".ctfhost-launch")
        assert panel["status"] == "No instance" and "cannot be launched right now" in panel["message"], panel

    # -- users mode -> teams mode: no team is handed a user's instance; the admin preview checks flags
    teams_challenge = admin.api("POST", "/api/v1/challenges", dict(body, name="Web Teams")).json()["data"]["id"]
    teams_path = f"/api/v1/plugins/ctfhost/challenges/{teams_challenge}/instance"
    users_instance = alice.api("POST", teams_path).json()["data"]
    switched = admin.api("PATCH", "/api/v1/configs", {"user_mode": "teams"})
    assert switched.status_code == 200, switched.text
    assert alice.api("GET", teams_path).json()["code"] == "no_team"
    teamless = alice.page("/plugins/ctfhost/tokens")
    assert teamless.status_code == 403 and "join or create a team before you can create API tokens" in teamless.text
    assert alice.api("POST", "/api/v1/plugins/ctfhost/tokens", {"name": "x", "expires": "1", "scopes": ["events"]}).json()["code"] == "no_team"
    team_ids = {}
    for name, player in (("bob", bob), ("alice", alice)):  # CTFd numbers teams 1, 2: team 2 has alice's user id
        made = player.form("/teams/new", {"name": f"team-{name}", "password": "team-password"})
        assert made.status_code == 200, made.text[:300]
        team_ids[name] = player.api("GET", "/api/v1/teams/me").json()["data"]["id"]
    holder = bob if team_ids["bob"] == alice_id else alice
    assert alice_id in team_ids.values()
    assert holder.api("GET", teams_path).json()["data"] is None
    assert holder.api("GET", f"/api/v1/plugins/ctfhost/instances/{users_instance['id']}").status_code == 404
    assert holder.api("GET", "/api/v1/plugins/ctfhost/instances").json()["data"] == []
    opened_after = holder.session.get(f"{ctfd.url}/plugins/ctfhost/access", params={"instance": users_instance["id"], "next": "/"},
                                      timeout=20)
    assert opened_after.status_code == 403 and "another team" in opened_after.text
    team_instance = holder.api("POST", teams_path)
    assert team_instance.status_code == 201 and team_instance.json()["data"]["id"] != users_instance["id"]
    assert ctfhost_get(live_server, f"/api/v1/instances/{team_instance.json()['data']['id']}")["team_id"] == alice_id

    # the admin has no team: the preview acts as the admin's own user account
    preview = admin.api("POST", teams_path)
    assert preview.status_code == 201, preview.text
    admin_flag = ctfhost_get(live_server, f"/api/v1/instances/{preview.json()['data']['id']}")["flag"]
    checked = admin.api("POST", attempt + "?preview=true", {"challenge_id": teams_challenge, "submission": admin_flag}).json()
    assert checked["data"] == {"status": "correct", "message": "Correct"}, checked
    for launched in (users_instance, team_instance.json()["data"], preview.json()["data"]):
        live_server.call("DELETE", f"/api/v1/instances/{launched['id']}")
