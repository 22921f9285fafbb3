"""ctfhost.serving.LaneWorker: launches queue in their own lane, so the rest of the API answers during a launch rush."""

import concurrent.futures
import contextlib
import os
import sqlite3
import time
import uuid

import psycopg2
import pytest

from ctfhost.serving import in_launch_lane
from ctfhost.services import events
from ctfhost.testing import API_KEY, EventStream, app_server, free_port, http

pytestmark = pytest.mark.usefixtures("redis_server")


@pytest.mark.parametrize("head", [
    b"POST /api/v1/instances HTTP/1.1\r\nHost: x\r\n",
    b"POST /api/v1/instances?wait=5 HTTP/1.1\r\n",
    b"DELETE /api/v1/instances/6f1c0d52-2d0a-4a43-9a64-3f3c1b1f4d11 HTTP/1.1\r\n",
    b"POST /api/v1/instances/6f1c0d52-2d0a-4a43-9a64-3f3c1b1f4d11/renew HTTP/1.1\r\n",
    b"PATCH /api/v1/instances/x HTTP/1.1\r\n",
    b"POST /api/v1/instances",  # a request line cut short by the peek still counts
])
def test_instance_changes_take_the_launch_lane(head):
    assert in_launch_lane(head)


@pytest.mark.parametrize("head", [
    b"GET /api/v1/instances HTTP/1.1\r\n",
    b"GET /api/v1/health HTTP/1.1\r\n",
    b"GET /api/v1/auth/forward HTTP/1.1\r\n",
    b"POST /api/v1/challenges HTTP/1.1\r\n",
    b"POST /api/v1/instancesX HTTP/1.1\r\n",
    b"POST /api/v1/submissions HTTP/1.1\r\n",
    b"HEAD /api/v1/instances HTTP/1.1\r\n",
    b"",
    b"\x16\x03\x01\x02\x00",  # a TLS hello
])
def test_everything_else_keeps_the_main_pool(head):
    assert not in_launch_lane(head)


@contextlib.contextmanager
def launches_blocked():
    """Hold the lock a launch needs (SQLite: the write lock; PostgreSQL: the instance table against writes), so launches wait; reads go on."""
    url = os.environ["CTFHOST_DATABASE_URL"]
    if url.startswith("sqlite:"):
        connection = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None, timeout=30)
        connection.execute("BEGIN IMMEDIATE")
    else:
        connection = psycopg2.connect(url)
        connection.cursor().execute("LOCK TABLE instance IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        connection.rollback()
        connection.close()


def served(worker_class, tmp_path, threads=1, lane_threads=1):
    env = dict(os.environ, CTFHOST_LAUNCH_LANE_THREADS=str(lane_threads))
    port = free_port()
    server = app_server(env, port, str(tmp_path / f"{worker_class}.log"), workers=1, threads=threads,
                        worker_class=worker_class).start()
    url = f"http://127.0.0.1:{port}/api/v1"
    server.wait_for(lambda: http("GET", f"{url}/health", timeout=2)[0] == 200, 60, "the API")
    return server, url


def launch_while_blocked(url, challenge, teams, probe):
    """Send launches while they cannot finish, then `probe()`; returns (probe's result, launch statuses)."""
    pool = concurrent.futures.ThreadPoolExecutor(len(teams))
    with launches_blocked():
        futures = [pool.submit(http, "POST", f"{url}/instances", {"team_id": team, "challenge_id": challenge},
                               {"x-api-key": API_KEY}, 60) for team in teams]
        time.sleep(1)  # every launch reached the server and waits for the lock
        result = probe()
    statuses = [future.result()[0] for future in futures]
    pool.shutdown()
    return result, statuses


@pytest.fixture
def challenge(api, worker_id):
    body = {"id": "lane", "name": "Lane", "image": "lane:1", "port": 80, "runtime": "fake"}
    assert api.post("/api/v1/challenges", json=body).status_code == 201
    return "lane"


def test_health_reads_and_forward_auth_answer_while_launches_wait(challenge, tmp_path):
    server, url = served("ctfhost.serving.LaneWorker", tmp_path)
    try:
        def probe():
            started = time.monotonic()
            answers = [
                http("GET", f"{url}/health", timeout=5)[0],
                http("GET", f"{url}/instances", headers={"x-api-key": API_KEY}, timeout=5)[0],
                http("GET", f"{url}/auth/forward", headers={"X-Forwarded-Host": "nothing.lane.localhost"}, timeout=5)[0],
            ]
            return answers, time.monotonic() - started

        (answers, took), statuses = launch_while_blocked(url, challenge, [1, 2, 3], probe)
        # one gunicorn thread and one lane thread: the three launches hold the lane, the main thread answers
        assert answers[:2] == [200, 200] and answers[2] in (401, 403, 404), answers
        assert took < 5
        # and the launches were not lost: each answered once the lock was free
        assert statuses == [201, 201, 201]
        listed = http("GET", f"{url}/instances?challenge_id={challenge}", headers={"x-api-key": API_KEY})[1]
        assert sorted(item["team_id"] for item in listed) == [1, 2, 3]
    finally:
        server.stop()


def test_without_the_lane_health_waits_behind_launches(challenge, tmp_path):
    """The control for the test above: gunicorn's own threaded worker queues health behind the waiting launches."""
    server, url = served("gthread", tmp_path)
    try:
        (status, _), statuses = launch_while_blocked(
            url, challenge, [1], lambda: http("GET", f"{url}/health", timeout=2))
        assert status is None  # timed out
        assert statuses == [201]
    finally:
        server.stop()


def test_the_lane_can_be_turned_off(challenge, tmp_path):
    server, url = served("ctfhost.serving.LaneWorker", tmp_path, lane_threads=0)
    try:
        (status, _), statuses = launch_while_blocked(
            url, challenge, [1], lambda: http("GET", f"{url}/health", timeout=2))
        assert status is None  # one thread, busy with the launch
        assert statuses == [201]
    finally:
        server.stop()


def open_streams(url, count, headers):
    """`count` event streams held open on the server at `url` (ending in /api/v1): their readers."""
    base = url.rsplit("/api/v1", 1)[0]
    return [EventStream(base, headers) for _ in range(count)]


def test_event_streams_hold_no_thread_of_the_api(challenge, tmp_path):
    """With ONE --threads thread, 500 open event streams (the figure docs/automation.md promises) and a waiting read
    leave the API answering at once."""
    server, url = served("ctfhost.serving.LaneWorker", tmp_path, threads=1)
    key = {"x-api-key": API_KEY}
    streams = []
    try:
        streams = open_streams(url, 500, key)
        assert [stream.status for stream in streams] == [200] * 500
        pending = http("POST", f"{url}/instances", {"team_id": "streams", "challenge_id": challenge}, key)[1]
        assert pending["status"] == "pending"  # no agent runs its job: it stays pending
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(http, "GET", f"{url}/instances/{pending['id']}?wait=30", None, key, 40)
            time.sleep(0.5)
            started = time.monotonic()
            assert http("GET", f"{url}/health", timeout=5)[0] == 200
            assert http("GET", f"{url}/instances", headers=key, timeout=5)[0] == 200
            assert time.monotonic() - started < 3
            assert not waiting.done()  # still waiting for the instance to change
            assert http("DELETE", f"{url}/instances/{pending['id']}", None, key)[0] == 204
            assert waiting.result()[1]["status"] == "destroyed"  # the wait answered the change
        # each stream is live: an event published now reaches all of them
        events.publish("submission.correct", team_id="streams", challenge_id="lane")
        for stream in streams:
            assert stream.until(lambda event: event["event"] == "submission.correct")
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def test_without_the_stream_lane_one_stream_takes_the_only_thread(tmp_path):
    """The control for the test above: in gunicorn's own threaded worker an open stream holds a pool thread."""
    server, url = served("gthread", tmp_path, threads=1)
    streams = []
    try:
        streams = open_streams(url, 1, {"x-api-key": API_KEY})
        assert streams[0].status == 200
        assert http("GET", f"{url}/health", timeout=2)[0] is None  # timed out behind the stream
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def test_the_stream_cap_answers_503_before_gunicorn_stops_accepting(tmp_path):
    """gunicorn stops accepting connections at --worker-connections; the LaneWorker raises it above the stream cap,
    so streams beyond CTFHOST_EVENTS_MAX_STREAMS are refused (503) and the rest of the API still gets in."""
    env = dict(os.environ, CTFHOST_EVENTS_MAX_STREAMS="10")
    port = free_port()
    server = app_server(env, port, str(tmp_path / "cap.log"), workers=1, threads=2,
                        extra=["--worker-connections", "10"]).start()
    url = f"http://127.0.0.1:{port}/api/v1"
    streams = []
    try:
        server.wait_for(lambda: http("GET", f"{url}/health", timeout=2)[0] == 200, 60, "the API")
        streams = open_streams(url, 10, {"x-api-key": API_KEY})
        assert [stream.status for stream in streams] == [200] * 10
        beyond = open_streams(url, 1, {"x-api-key": API_KEY})
        streams += beyond
        assert beyond[0].status == 503
        assert http("GET", f"{url}/health", timeout=5)[0] == 200
    finally:
        for stream in streams:
            stream.close()
        server.stop()
