"""Live instance events (GET /api/v1/events) on real Redis, and `?wait=` on launches and reads."""

import concurrent.futures
import contextlib
import datetime
import threading
import time

import pytest

from ctfhost.api.events import _stream
from ctfhost.models import Instance, Token, utcnow
from ctfhost.redis_client import redis_connection
from ctfhost.serving import in_stream_lane
from ctfhost.services import events
from ctfhost.services.instances import expire_due, warn_expiring
from ctfhost.testing import API_KEY, EventStream, http, run_jobs
from ctfhost.worker import queue as job_queue
from ctfhost.worker.agent import Agent

pytestmark = pytest.mark.usefixtures("redis_server")

CHALLENGE = {"id": "web-events", "name": "Events", "runtime": "fake", "image": "img:1", "port": 80,
             "flag_template": "flag{{{hex:16}}}"}


@pytest.fixture
def challenge(api):
    response = api.post("/api/v1/challenges", json=CHALLENGE)
    assert response.status_code == 201, response.get_json()
    return CHALLENGE


def broken_challenge(api, reason):
    body = {**CHALLENGE, "id": "web-broken", "extra_config": '{"fail": "%s"}' % reason}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return body["id"]


@pytest.fixture
def streams(live_server):
    opened = []

    def open_stream(credentials, query="", last_event_id=None):
        headers = dict(credentials)
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        stream = EventStream(live_server.url, headers, path="/api/v1/events" + query)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def bearer(team):
    return {"Authorization": f"Bearer {team.token['token']}"}


def of_instance(instance_id, kind):
    return lambda event: event["data"]["instance_id"] == instance_id and event["event"] == kind


def test_a_launch_streams_its_phases_in_order_then_running(app, api, team_api, challenge, worker_id, streams):
    team = team_api("red")
    stream = streams(bearer(team))
    assert stream.status == 200
    assert stream.response.getheader("Content-Type").startswith("text/event-stream")
    launched = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    run_jobs(app, worker_id)
    seen = stream.until(of_instance(launched["id"], "instance.running"))
    kinds = [(e["event"], e["data"]["data"].get("phase")) for e in seen]
    assert kinds == [("instance.created", None), ("instance.phase", "queued"), ("instance.phase", "placed"),
                     ("instance.phase", "starting"), ("instance.phase", "probing"), ("instance.phase", "routing"),
                     ("instance.running", None)]
    ids = [e["id"] for e in seen]
    assert all(e["data"]["id"] == e["id"] for e in seen) and len(set(ids)) == len(ids)
    assert [events.id_order(i) for i in ids] == sorted(events.id_order(i) for i in ids)
    running = seen[-1]["data"]
    assert running["team_id"] == "red" and running["challenge_id"] == "web-events"
    assert running["data"]["endpoint"] == launched["endpoint"]
    assert running["data"]["endpoints"][0]["name"] == "main"
    for phase in seen[1:-1]:
        assert phase["data"]["data"]["at"].endswith("Z")
    # the next launch of the challenge has an ETA from this one
    api.delete(f"/api/v1/instances/{launched['id']}")
    stream.until(of_instance(launched["id"], "instance.destroyed"))
    again = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    queued = stream.until(lambda e: e["data"]["instance_id"] == again["id"] and e["event"] == "instance.phase")[-1]
    assert isinstance(queued["data"]["data"]["eta_seconds"], float)


def test_a_team_never_sees_another_teams_events(app, api, team_api, challenge, worker_id, streams):
    red, blue = team_api("red"), team_api("blue")
    red_stream = streams(bearer(red))
    # a team token cannot widen its view
    assert streams(bearer(red), "?team_id=blue").status == 403
    blue_instance = blue.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    red_instance = red.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    run_jobs(app, worker_id)
    seen = red_stream.until(of_instance(red_instance["id"], "instance.running"))
    assert {e["data"]["team_id"] for e in seen} == {"red"}
    assert blue_instance["id"] not in {e["data"]["instance_id"] for e in seen}
    # the control: the API key sees both, and filters by team
    everyone = streams({"x-api-key": API_KEY}, last_event_id="0-0")
    both = everyone.until(of_instance(red_instance["id"], "instance.running"))
    assert {"red", "blue"} <= {e["data"]["team_id"] for e in both}
    only_blue = streams({"x-api-key": API_KEY}, "?team_id=blue", last_event_id="0-0")
    blues = only_blue.until(of_instance(blue_instance["id"], "instance.running"))
    assert {e["data"]["team_id"] for e in blues} == {"blue"}


def test_a_reconnect_with_last_event_id_replays_what_was_missed(app, team_api, challenge, worker_id, streams):
    team = team_api("red")
    first = streams(bearer(team))
    launched = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    created = first.until(of_instance(launched["id"], "instance.created"))[-1]
    first.close()  # the client drops; the launch goes on
    run_jobs(app, worker_id)
    again = streams(bearer(team), last_event_id=created["id"])
    replayed = again.until(of_instance(launched["id"], "instance.running"))
    assert [e["data"]["data"].get("phase") for e in replayed[:5]] == ["queued", "placed", "starting", "probing",
                                                                       "routing"]
    assert created["id"] not in [e["id"] for e in replayed]
    # the query parameter does the same for clients that cannot set headers
    by_query = streams(bearer(team), f"?last_event_id={created['id']}")
    assert by_query.until(of_instance(launched["id"], "instance.running"))[0]["id"] == replayed[0]["id"]
    # a bad id is named
    bad = streams(bearer(team), last_event_id="yesterday")
    assert bad.status == 422


def test_filters_by_instance_and_type(app, api, team_api, challenge, worker_id, streams):
    team = team_api("red")
    one = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    stream = streams({"x-api-key": API_KEY}, f"?instance_id={one['id']}&types=instance.running,instance.destroyed",
                     last_event_id="0-0")
    api.post("/api/v1/challenges", json={**CHALLENGE, "id": "web-other"})
    other = team.post("/api/v1/instances", json={"challenge_id": "web-other"}).get_json()
    run_jobs(app, worker_id)
    api.delete(f"/api/v1/instances/{one['id']}")
    seen = stream.until(lambda e: e["event"] == "instance.destroyed")
    assert [e["event"] for e in seen] == ["instance.running", "instance.destroyed"]
    assert other["id"] not in {e["data"]["instance_id"] for e in seen}
    assert streams({"x-api-key": API_KEY}, "?types=instance.exploded").status == 422


def test_errors_expiry_renewals_restarts_and_correct_flags_are_events(app, api, team_api, challenge, worker_id,
                                                                        streams):
    team = team_api("red")
    stream = streams(bearer(team))
    admin_stream = streams({"x-api-key": API_KEY}, "?team_id=red")
    launched = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    run_jobs(app, worker_id)
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=60)).where(Instance.id == launched["id"]).execute()
    renewed = team.post(f"/api/v1/instances/{launched['id']}/renew").get_json()
    restarted = team.post(f"/api/v1/instances/{launched['id']}/restart").get_json()
    run_jobs(app, worker_id)
    flag = api.get(f"/api/v1/instances/{restarted['id']}").get_json()["flag"]
    assert team.post("/api/v1/submissions", json={"challenge_id": "web-events", "flag": flag}).get_json()["correct"]
    assert not team.post("/api/v1/submissions", json={"challenge_id": "web-events", "flag": "flag{no}"}).get_json()[
        "correct"]
    Instance.update(expires_at=utcnow() - datetime.timedelta(seconds=1)).where(
        Instance.id == restarted["id"]).execute()
    assert expire_due() == [restarted["id"]]
    seen = stream.until(of_instance(restarted["id"], "instance.expired"))
    by_kind = {}
    for event in seen:
        by_kind.setdefault(event["event"], []).append(event["data"])
    assert by_kind["instance.renewed"][0]["data"]["expires_at"] == renewed["expires_at"]
    assert by_kind["instance.renewed"][0]["data"]["seconds_added"] == renewed["seconds_added"]
    assert by_kind["instance.restarted"][0]["instance_id"] == launched["id"]
    assert by_kind["instance.restarted"][0]["data"]["replaced_by"] == restarted["id"]
    assert [e["data"]["instance_id"] for e in by_kind["submission.correct"]] == [restarted["id"]]
    assert by_kind["instance.expired"][0]["instance_id"] == restarted["id"]
    # a failed launch: the team reads the short reason, the API key the detail
    broken = broken_challenge(api, "engine said: no such image secret/img:1")
    failing = team.post("/api/v1/instances", json={"challenge_id": broken}).get_json()
    run_jobs(app, worker_id)
    team_error = stream.until(of_instance(failing["id"], "instance.error"))[-1]["data"]["data"]
    assert team_error == {"message": "it could not be started"}
    admin_error = admin_stream.until(of_instance(failing["id"], "instance.error"))[-1]["data"]["data"]
    assert "no such image" in admin_error["detail"]


def test_the_expiring_warning_fires_once_per_expiry(app, api, team_api, challenge, worker_id, streams):
    team = team_api("red")
    stream = streams(bearer(team), "?types=instance.expiring,instance.renewed")
    launched = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    run_jobs(app, worker_id)
    soon = utcnow().replace(microsecond=0) + datetime.timedelta(seconds=120)
    Instance.update(expires_at=soon).where(Instance.id == launched["id"]).execute()
    assert warn_expiring(60) == []  # not yet within the window
    assert warn_expiring(300) == [launched["id"]]
    assert warn_expiring(300) == []  # once
    warning = stream.next()
    assert warning["event"] == "instance.expiring"
    assert warning["data"]["data"]["expires_at"] == soon.isoformat() + "Z"
    assert 100 <= warning["data"]["data"]["seconds_left"] <= 120
    # a renew makes a new expiry, which is warned about again when it nears
    team.post(f"/api/v1/instances/{launched['id']}/renew")
    assert stream.next()["event"] == "instance.renewed"
    soon = soon + datetime.timedelta(seconds=30)
    Instance.update(expires_at=soon).where(Instance.id == launched["id"]).execute()
    assert warn_expiring(300) == [launched["id"]]
    assert stream.next()["event"] == "instance.expiring"


def test_the_agents_sweep_sends_the_warning(app, api, team_api, challenge, worker_id, streams):
    """The worker agent's expiry sweep is what calls warn_expiring, with CTFHOST_EVENTS_EXPIRING_SECONDS."""
    team = team_api("red")
    stream = streams(bearer(team), "?types=instance.expiring")
    launched = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    run_jobs(app, worker_id)
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=200)).where(
        Instance.id == launched["id"]).execute()
    agent = Agent.__new__(Agent)
    agent.app, agent.sweeping_without_lock = app, False
    agent._in_context = lambda func: func()
    assert agent.sweep()
    assert stream.next()["data"]["instance_id"] == launched["id"]


def test_an_idle_stream_sends_heartbeats(app, team_api, streams, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_EVENTS_HEARTBEAT_SECONDS", 0.2)
    stream = streams(bearer(team_api("red")))
    with pytest.raises(TimeoutError):
        stream.next(timeout=1)
    assert stream.comments.count("keepalive") >= 3


def test_the_stream_needs_the_events_scope_and_credentials(team_api, streams):
    without = streams(bearer(team_api("red", scopes=["instances:read"])))
    assert without.status == 403
    assert streams({}).status == 401


def test_a_process_holds_at_most_its_streams(app, team_api, streams, monkeypatch):
    hub = events.hub(app)
    monkeypatch.setattr(hub, "max_listeners", hub.count() + 2)
    monkeypatch.setitem(app.config, "CTFHOST_EVENTS_HEARTBEAT_SECONDS", 0.1)
    team = team_api("red")
    first, second = streams(bearer(team)), streams(bearer(team))
    assert (first.status, second.status) == (200, 200)
    third = streams(bearer(team))
    assert third.status == 503
    assert third.response.getheader("Retry-After") == "5"
    first.close()
    # the server notices the closed stream at its next write (a heartbeat), and frees its place
    deadline = time.monotonic() + 10
    while hub.count() >= hub.max_listeners and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.count() == hub.max_listeners - 1
    assert streams(bearer(team)).status == 200


def test_the_stream_is_bounded_in_length(app, monkeypatch):
    conn = redis_connection(app)
    monkeypatch.setitem(app.config, "CTFHOST_EVENTS_MAX_LENGTH", 50)
    for _ in range(400):
        events.publish("submission.correct", team_id="t", challenge_id="c")
    assert conn.xlen(events.STREAM) < 400


def test_publishing_without_redis_never_fails_the_change(app, api, team_api, challenge, worker_id, monkeypatch):
    monkeypatch.setitem(app.extensions, "ctfhost.redis", __import__("ctfhost.redis_client").redis_client.connect(
        "redis://127.0.0.1:1/0"))
    assert events.publish("instance.renewed", team_id="t", challenge_id="c") is None


# -- ?wait= -----------------------------------------------------------------------------------------


def call_while_jobs_run(app, worker_id, method, url, body, headers, delay=0.5):
    """(status, body) of an HTTP call made in a thread while this (main) thread runs the worker's jobs after `delay`
    (RQ's worker handles signals, so it runs in the main thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(http, method, url, body, headers, timeout=40)
        time.sleep(delay)
        assert not answer.done(), answer.result()  # it waits
        run_jobs(app, worker_id)
        return answer.result()


def test_a_launch_with_wait_answers_once_running(app, live_server, team_api, challenge, worker_id):
    team = team_api("red")
    started = time.monotonic()
    status, body = call_while_jobs_run(app, worker_id, "POST", f"{live_server.url}/api/v1/instances?wait=30",
                                       {"challenge_id": "web-events"}, bearer(team))
    assert status == 201, body
    assert body["status"] == "running"
    assert time.monotonic() - started < 20


def test_a_launch_with_wait_is_202_pending_when_the_wait_runs_out(live_server, team_api, challenge, worker_id):
    team = team_api("red")
    started = time.monotonic()
    status, body = http("POST", f"{live_server.url}/api/v1/instances?wait=1", {"challenge_id": "web-events"},
                        bearer(team))
    assert status == 202 and body["status"] == "pending"
    assert 0.9 <= time.monotonic() - started < 5


def test_a_failed_launch_with_wait_answers_the_error(app, api, live_server, team_api, challenge, worker_id):
    broken = broken_challenge(api, "engine said: no")
    status, body = call_while_jobs_run(app, worker_id, "POST", f"{live_server.url}/api/v1/instances?wait=30",
                                       {"challenge_id": broken}, bearer(team_api("red")))
    assert status == 201 and body["status"] == "error"
    assert body["error"] == "it could not be started"


def test_a_read_with_wait_answers_when_the_status_changes(app, api, live_server, team_api, challenge, worker_id):
    team = team_api("red")
    launched = team.post("/api/v1/instances", json={"challenge_id": "web-events"}).get_json()
    started = time.monotonic()
    status, body = http("GET", f"{live_server.url}/api/v1/instances/{launched['id']}?wait=1", None, bearer(team))
    assert (status, body["status"]) == (200, "pending") and time.monotonic() - started >= 0.9
    status, body = call_while_jobs_run(app, worker_id, "GET", f"{live_server.url}/api/v1/instances/{launched['id']}"
                                       "?wait=30", None, bearer(team))
    assert (status, body["status"]) == (200, "running")
    threading.Timer(0.5, lambda: http("DELETE", f"{live_server.url}/api/v1/instances/{launched['id']}", None,
                                      {"x-api-key": API_KEY})).start()
    status, body = http("GET", f"{live_server.url}/api/v1/instances/{launched['id']}?wait=30", None, bearer(team),
                        timeout=40)
    assert (status, body["status"]) == (200, "destroyed")


@pytest.mark.parametrize("wait", ["121", "-1", "soon"])
def test_a_wait_out_of_range_is_named(api, challenge, worker_id, wait):
    response = api.post(f"/api/v1/instances?wait={wait}", json={"team_id": "red", "challenge_id": "web-events"})
    assert response.status_code == 422
    assert "wait" in response.get_json()["errors"]["query"]
    assert api.get("/api/v1/instances?limit=1").get_json() == []  # nothing was launched


@pytest.mark.parametrize("head, expected", [
    (b"GET /api/v1/events HTTP/1.1\r\n", True),
    (b"GET /api/v1/events?team_id=1 HTTP/1.1\r\n", True),
    (b"POST /api/v1/instances?wait=30 HTTP/1.1\r\n", True),
    (b"GET /api/v1/instances/6f1c0d52-2d0a-4a43-9a64-3f3c1b1f4d11?wait=5 HTTP/1.1\r\n", True),
    (b"POST /api/v1/instances?wait=0 HTTP/1.1\r\n", False),
    (b"POST /api/v1/instances HTTP/1.1\r\n", False),
    (b"GET /api/v1/challenges?wait=5 HTTP/1.1\r\n", False),
    (b"GET /api/v1/eventsX HTTP/1.1\r\n", False),
])
def test_waiting_requests_take_the_stream_lane(head, expected):
    assert in_stream_lane(head) is expected


def test_a_client_that_stops_reading_is_cut_off_not_buffered_forever(app, team_api, streams, monkeypatch):
    monkeypatch.setattr(events.Listener, "BACKLOG", 5)
    listener = events.Listener(events.Filter(team_id="red"))
    for _ in range(7):
        listener.offer(events.Event("1-0", {"type": "submission.correct", "team_id": "red"}))
    assert listener.overflowed and listener.events.qsize() == 5
    # a stream whose listener overflowed ends (its client reconnects with Last-Event-ID)
    hub = events.hub(app)
    stream = events.Listener(events.Filter())
    stream.overflowed = True
    hub.listeners.add(stream)
    body = list(_stream(hub, stream, [], private=False, heartbeat=0.1))
    assert body == [b"retry: 3000\n: connected\n\n"]
    assert stream not in hub.listeners


# -- what a review found ------------------------------------------------------------------------------


def test_a_head_request_leaves_no_listener_behind(app, live_server, team_api):
    hub = events.hub(app)
    before = hub.count()
    for _ in range(5):
        status, _ = http("HEAD", f"{live_server.url}/api/v1/events", None, bearer(team_api("red")))
        assert status == 200
    deadline = time.monotonic() + 5
    while hub.count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.count() == before


@pytest.mark.parametrize("value", ["1_0-0", "99999999999999999999999-0", "18446744073709551616-0", "-1", "1-2-3",
                                   "1764745200000"])
def test_a_bad_last_event_id_is_named_never_a_500(team_api, streams, value):
    stream = streams(bearer(team_api("red")), last_event_id=value)
    assert stream.status == 422


def test_the_replay_finds_a_teams_events_behind_any_number_of_others(team_api, streams, monkeypatch):
    monkeypatch.setattr(events, "REPLAY_PAGE", 5)
    start = events.publish("submission.correct", team_id="blue", challenge_id="c")
    for _ in range(12):
        events.publish("submission.correct", team_id="blue", challenge_id="c")
    mine = events.publish("instance.expired", team_id="red", challenge_id="c")
    stream = streams(bearer(team_api("red")), last_event_id=start)
    assert stream.next(timeout=5)["id"] == mine


def test_a_revoked_or_expired_tokens_stream_ends(app, admin, team_api, streams, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_EVENTS_HEARTBEAT_SECONDS", 0.2)
    revoked, expiring = team_api("red"), team_api("red")
    revoked_stream, expiring_stream = streams(bearer(revoked)), streams(bearer(expiring))
    # the control: both streams stay open while their tokens live, and get the team's events
    events.publish("submission.correct", team_id="red", challenge_id="c")
    assert revoked_stream.next(timeout=5)["event"] == expiring_stream.next(timeout=5)["event"] == "submission.correct"
    assert admin.delete(f"/api/v1/tokens/{revoked.token['id']}").status_code == 204
    Token.update(expires_at=utcnow() - datetime.timedelta(seconds=1)).where(
        Token.id == expiring.token["id"]).execute()
    for stream in (revoked_stream, expiring_stream):
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            while stream.next(timeout=3) is not None:  # events still in flight, then the end
                pass
        assert time.monotonic() - started < 3, "the stream did not end"


def test_a_stream_flooded_with_events_still_notices_a_revoke(app, admin, team_api, streams, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_EVENTS_HEARTBEAT_SECONDS", 0.3)
    team = team_api("red")
    stream = streams(bearer(team))
    admin.delete(f"/api/v1/tokens/{team.token['id']}")
    stop = time.monotonic() + 3
    ended = False
    while time.monotonic() < stop:
        events.publish("submission.correct", team_id="red", challenge_id="c")  # never idle: no keepalive
        try:
            if stream.next(timeout=0.2) is None:
                ended = True
                break
        except TimeoutError:
            pass
    assert ended


def test_one_team_holds_at_most_its_streams_and_waits(app, api, team_api, challenge, worker_id, streams,
                                                      live_server, monkeypatch):
    hub = events.hub(app)
    monkeypatch.setattr(hub, "max_per_owner", 2)
    red = team_api("crowded")
    assert [streams(bearer(red)).status for _ in range(2)] == [200, 200]
    third = streams(bearer(red))
    assert third.status == 429 and third.response.getheader("Retry-After") == "5"
    # another team is not held back, nor the API key
    assert streams(bearer(team_api("calm"))).status == 200
    assert streams({"x-api-key": API_KEY}).status == 200
    # a wait beyond the team's streams answers at once, with the instance as it is
    started = time.monotonic()
    status, body = http("POST", f"{live_server.url}/api/v1/instances?wait=30", {"challenge_id": "web-events"},
                        bearer(red))
    assert (status, body["status"]) == (202, "pending") and time.monotonic() - started < 5


def test_the_expiring_warning_reaches_every_instance_of_a_large_window(app, api, team_api, challenge, worker_id):
    team = team_api("red")
    ids = []
    for number in range(5):
        api.post("/api/v1/challenges", json={**CHALLENGE, "id": f"web-window-{number}"})
        ids.append(team.post("/api/v1/instances", json={"challenge_id": f"web-window-{number}"}).get_json()["id"])
    run_jobs(app, worker_id)
    soon = utcnow() + datetime.timedelta(seconds=60)
    Instance.update(expires_at=soon).where(Instance.id.in_(ids)).execute()
    assert sorted(warn_expiring(300, batch=2)) == sorted(ids)  # pages of 2: none hidden behind the warned
    assert warn_expiring(300, batch=2) == []


def test_queued_is_published_before_the_launch_job_exists(app, api, team_api, challenge, worker_id, monkeypatch):
    seen_at_enqueue = []
    real = job_queue.enqueue_launch

    def enqueue(instance, timeout):
        kept = events.read_after(redis_connection(app), "0-0", events.Filter(instance_id=instance.id))
        seen_at_enqueue.append([(e.type, e.data.get("phase")) for e in kept])
        return real(instance, timeout)

    monkeypatch.setattr(job_queue, "enqueue_launch", enqueue)
    team_api("red").post("/api/v1/instances", json={"challenge_id": "web-events"})
    assert seen_at_enqueue == [[("instance.created", None), ("instance.phase", "queued")]]


def test_team_id_keeps_its_type_in_the_spec(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name in ("Launch", "Submission", "TokenCreate"):
        team_id = schemas[name]["properties"]["team_id"]
        assert [kind["type"] for kind in team_id["oneOf"]] == ["integer", "string"], name
        assert "team token" in team_id["description"]


@pytest.mark.parametrize("head", [
    b"GET /api/v1/%65vents HTTP/1.1\r\n",
    b"GET http://h/api/v1/events HTTP/1.1\r\n",
    b"GET /api/v1/events/ HTTP/1.1\r\n",
    b"POST /api/v1/instances?w%61it=120 HTTP/1.1\r\n",
    b"GET /api/v1/instances/x?x=" + b"a" * 250 + b"&wait=120 HTTP/1.1\r\n",
    b"POST /api/v1/%69nstances?wait=9 HTTP/1.1\r\n",
])
def test_encoded_and_long_request_lines_still_take_the_stream_lane(head):
    assert in_stream_lane(head)
