"""Forward-auth's dead ends are short pages that lead back to the scoreboard."""

import html.parser

import pytest

from ctfhost.testing import ask_forward_auth as forward
from ctfhost.testing import run_jobs

pytestmark = pytest.mark.usefixtures("redis_server")

SCOREBOARD = "https://ctf.example.org/"


class Links(html.parser.HTMLParser):
    """The link targets of a page."""

    def __init__(self, text):
        super().__init__()
        self.links = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append(dict(attrs).get("href"))


@pytest.fixture
def client(proxy_client):
    return proxy_client


@pytest.fixture
def running(api, app, worker_id):
    api.post("/api/v1/challenges", json={"id": "web-pages", "name": "p", "runtime": "fake", "image": "i", "port": 80})
    instance = api.post("/api/v1/instances", json={"team_id": "red", "challenge_id": "web-pages"}).get_json()
    run_jobs(app, worker_id)
    return instance


@pytest.fixture
def settings(app):
    saved = {k: app.config.get(k) for k in ("CTFHOST_PUBLIC_SCOREBOARD_URL", "CTFHOST_AUTH_SIGNIN_URL")}
    yield app.config
    app.config.update(saved)


def dead_ends(client, instance):
    host = instance["endpoint"].split("://", 1)[1]
    return {
        "ended host": forward(client, "gone.web-pages.localhost"),
        "bad access link": forward(client, host, "/.ctfhost/access?ticket=forged&next=/"),
        "private instance": forward(client, host),
    }


def test_each_dead_end_links_back_to_the_configured_scoreboard(client, running, settings):
    settings["CTFHOST_PUBLIC_SCOREBOARD_URL"] = SCOREBOARD
    for name, response in dead_ends(client, running).items():
        assert response.status_code in (401, 404), name
        assert response.headers["Content-Type"].startswith("text/html") and response.headers["Cache-Control"] == "no-store"
        page = response.get_data(as_text=True)
        assert SCOREBOARD in Links(page).links, (name, page)
        assert "Back to the scoreboard" in page and "<title>" in page and "<h1>" in page


def test_without_a_scoreboard_url_the_sign_in_site_is_the_way_back(client, running, settings):
    settings["CTFHOST_PUBLIC_SCOREBOARD_URL"] = None
    settings["CTFHOST_AUTH_SIGNIN_URL"] = "https://ctf.example.org:8443/plugins/ctfhost/access?instance={instance_id}&next={next}"
    gone = forward(client, "gone.web-pages.localhost")
    assert gone.status_code == 404 and Links(gone.get_data(as_text=True)).links == ["https://ctf.example.org:8443/"]


def test_with_neither_the_page_has_no_dead_link(client, running, settings):
    settings["CTFHOST_PUBLIC_SCOREBOARD_URL"] = None
    settings["CTFHOST_AUTH_SIGNIN_URL"] = None
    for name, response in dead_ends(client, running).items():
        page = response.get_data(as_text=True)
        assert Links(page).links == [] and "<h1>" in page, name


def test_page_text_is_escaped(app, settings):
    from ctfhost.builtin.forward_auth import page

    settings["CTFHOST_PUBLIC_SCOREBOARD_URL"] = SCOREBOARD
    with app.test_request_context("/"):
        shown = page("<b>t</b>", "a & <script>x</script>")
    assert "<script>x" not in shown and "&lt;script&gt;" in shown and "&lt;b&gt;" in shown
