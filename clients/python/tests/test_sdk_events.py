"""Live events through the SDK: a launch's phases, Last-Event-ID replay, team isolation, reconnects; and ?wait=."""

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from ctfhost.testing import run_jobs
from ctfhost_client import Client, Event, Forbidden, cli
from sdk_stubs import LosingProxy, _Server
from sdk_support import FAST, TEAM, mint_token

pytestmark = pytest.mark.usefixtures("redis_server")

PHASES = ["queued", "placed", "pulling", "starting", "probing", "routing"]


def test_start_passes_the_launch_phases_in_order_to_on_progress(scenario, drive):
    client = scenario.team_client()
    seen = []
    instance = drive(scenario.worker_id, client.instances.start, scenario.challenge_id, timeout=30,
                     on_progress=seen.append, use_events=True)
    assert instance.status == "running"
    assert all(isinstance(event, Event) for event in seen)
    assert all(event.instance_id == instance.id for event in seen)
    types = [event.type for event in seen]
    assert types[0] == "instance.created" and types[-1] == "instance.running"
    phases = [event.phase for event in seen if event.type == "instance.phase"]
    assert phases and phases == sorted(phases, key=PHASES.index) and phases[0] == "queued"


def test_reconnecting_with_last_event_id_replays_what_was_missed_and_only_the_teams(scenario, drive):
    team = scenario.team_client()
    other = scenario.key_client()
    since = f"{int(time.time() * 1000) - 1000}-0"
    mine = drive(scenario.worker_id, team.instances.start, scenario.challenge_id, timeout=30)
    drive(scenario.worker_id, other.instances.start, scenario.challenge_id, "99", timeout=30)

    with team.events(last_event_id=since, max_duration=3) as stream:
        first = next(stream)
        cut = stream.last_event_id
    assert first.id == cut
    with team.events(last_event_id=cut, max_duration=3) as stream:
        rest = list(stream)
    assert rest and all(event.team_id == TEAM for event in [first, *rest])  # never team 99's
    ids = [event.id for event in [first, *rest]]
    assert len(set(ids)) == len(ids) and first.id not in [e.id for e in rest]
    assert [e.type for e in [first, *rest] if e.instance_id == mine.id][-1] == "instance.running"
    # the API key sees every team's, filtered as asked
    with other.events(team_id="99", last_event_id=since, max_duration=3) as stream:
        assert {event.team_id for event in stream} == {"99"}


def test_the_event_model_has_the_fields_the_server_sends(scenario, drive):
    since = f"{int(time.time() * 1000) - 1000}-0"
    drive(scenario.worker_id, scenario.team_client().instances.start, scenario.challenge_id)
    headers = {"Authorization": f"Bearer {scenario.token}", "Last-Event-ID": since}
    with httpx.stream("GET", f"{scenario.url}/api/v1/events", headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        line = next(line for line in response.iter_lines() if line.startswith("data: "))
    sent = json.loads(line[len("data: "):])
    assert set(sent) == set(Event.field_names())


def test_the_events_scope_is_needed(scenario, admin):
    client = Client(scenario.url, mint_token(admin, scopes=["instances:read"]), retry=FAST)
    with pytest.raises(Forbidden) as caught:
        next(client.events(max_duration=2))
    assert caught.value.scope == "events"


def test_get_with_wait_answers_when_the_status_changes(scenario, drive):
    client = scenario.team_client()
    pending = client.instances.start(scenario.challenge_id, wait=False)
    started = time.monotonic()
    changed = drive(scenario.worker_id, client.instances.get, pending.id, wait=20, timeout=30)
    assert changed.status == "running" and time.monotonic() - started < 15


def test_launch_with_wait_answers_once_running(scenario, live_server, drive):
    proxy = LosingProxy(live_server.url)  # drops nothing: it counts the requests
    try:
        client = Client(proxy.url, scenario.token, retry=FAST)
        instance = drive(scenario.worker_id, client.instances.start, scenario.challenge_id, use_events=False)
    finally:
        proxy.close()
    assert instance.status == "running"
    # one POST ?wait= answered it: no polling afterwards
    assert [r for r in proxy.requests if r[1].startswith("/api/v1/instances")] == [("POST", "/api/v1/instances")]


# -- reconnects, against a stub that ends each stream ------------------------


class SSEStub:
    """GET /api/v1/events: the first connection gets events 1 and 2 (with heartbeats) and ends; later ones get event 3."""

    def __init__(self):
        self.last_event_ids = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server API
                if self.path.startswith("/api/v1/meta"):
                    body = b'{"server_version": "0.1.0", "api_version": "1.1"}'
                    content_type = "application/json"
                else:
                    stub.last_event_ids.append(self.headers.get("Last-Event-ID"))
                    if len(stub.last_event_ids) == 1:
                        body = (": connected\n\nretry: 10\n\n"
                                'id: 1-0\nevent: instance.phase\ndata: {"type":"instance.phase","data":{"phase":"queued"}}\n\n'
                                ": keepalive\n\n"
                                'id: 2-0\nevent: instance.phase\ndata: {"type":"instance.phase",\ndata: "data":{"phase":"placed"}}\n\n').encode()
                    else:
                        body = b'id: 3-0\nevent: instance.running\ndata: {"type":"instance.running","data":{}}\n\n'
                    content_type = "text/event-stream"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_iterator_reconnects_with_last_event_id_and_skips_heartbeats():
    stub = SSEStub()
    try:
        with Client(stub.url, "cth_x").events(max_duration=10) as stream:
            events = [next(stream) for _ in range(3)]
        assert [e.id for e in events] == ["1-0", "2-0", "3-0"]
        assert [e.phase for e in events[:2]] == ["queued", "placed"]  # data over two lines joins
        assert events[2].type == "instance.running"
        assert stub.last_event_ids[:2] == [None, "2-0"]
        assert stream.connections >= 2
    finally:
        stub.server.shutdown()
        stub.server.server_close()


def test_the_events_command(scenario, drive):
    since = f"{int(time.time() * 1000) - 1000}-0"
    instance = drive(scenario.worker_id, scenario.team_client().instances.start, scenario.challenge_id)
    env = {"CTFHOST_URL": scenario.url, "CTFHOST_TOKEN": scenario.token}
    out = io.StringIO()
    code = cli.main(["events", "--json", "--instance", instance.id, "--last-event-id", since, "--duration", "2"],
                    stdout=out, stderr=io.StringIO(), environ=env)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and lines[0]["type"] == "instance.created" and lines[-1]["type"] == "instance.running"
    out = io.StringIO()
    cli.main(["events", "--challenge", scenario.challenge_id, "--type", "instance.running", "--last-event-id", since,
              "--duration", "2"], stdout=out, stderr=io.StringIO(), environ=env)
    assert "instance.running" in out.getvalue() and instance.id in out.getvalue()
    assert "instance.phase" not in out.getvalue()


def test_start_follows_the_replacement_when_someone_restarts_the_instance(scenario, app, api):
    """A teammate (here the scoreboard's key) restarts the instance while start follows its events: start
    passes on instance.restarted and returns the replacement once it runs, rather than waiting for the old one."""
    client = scenario.team_client()
    seen = []
    pool = ThreadPoolExecutor(1)
    try:
        future = pool.submit(client.instances.start, scenario.challenge_id, timeout=20, on_progress=seen.append,
                             use_events=True)
        deadline = time.monotonic() + 15
        while not any(event.type == "instance.created" for event in list(seen)):
            assert time.monotonic() < deadline and not future.done(), "start followed no event"
            time.sleep(0.05)
        old_id = seen[0].instance_id
        answer = api.post(f"/api/v1/instances/{old_id}/restart")  # no job ran: the old one is still pending
        assert answer.status_code in (200, 201, 202), answer.get_json()
        new_id = answer.get_json()["id"]
        while not future.done():
            assert time.monotonic() < deadline + 20, "start did not return"
            run_jobs(app, scenario.worker_id)
            time.sleep(0.05)
        instance = future.result()
    finally:
        pool.shutdown(wait=False)  # a start that never returns fails the test rather than holding it
    assert (instance.id, instance.status) == (new_id, "running")
    restarted = [event for event in seen if event.type == "instance.restarted"]
    assert [(e.instance_id, e.data["replaced_by"]) for e in restarted] == [(old_id, new_id)]
    after = seen[seen.index(restarted[0]) + 1:]
    assert after and all(event.instance_id == new_id for event in after)
    assert after[-1].type == "instance.running"


class KeepaliveStub:
    """GET /api/v1/events that never sends an event: a keepalive comment every 0.1 s, for as long as it is read."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server API
                if self.path.startswith("/api/v1/meta"):
                    body = b'{"server_version": "0.1.0", "api_version": "1.1"}'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for _ in range(600):  # at most a minute
                        self.wfile.write(b": keepalive\n\n")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_stream_of_only_keepalives_still_ends_at_its_time_limit():
    """Keepalives keep the connection's read timeout from firing: the iterator's own limit must end it."""
    stub = KeepaliveStub()
    try:
        started = time.monotonic()
        with Client(stub.url, "cth_x").events(max_duration=1) as stream:
            assert list(stream) == []
        assert time.monotonic() - started < 5
    finally:
        stub.server.shutdown()
        stub.server.server_close()
