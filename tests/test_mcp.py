"""The MCP endpoint for agent harnesses, driven over HTTP by the MCP SDK's own client.

The companion ASGI app serves on a free 127.0.0.1 port in a thread of this
process (the fake runtime's instances live here too); a client session runs
in another thread while this one runs the fake worker's jobs, as a worker
agent would, so start_instance sees its instance turn running.
"""

import asyncio
import contextlib
import json
import os
import sys
import threading
import time

import pytest

from ctfhost import mcp_server
from ctfhost.testing import (ADMIN_TOKEN, FLASK_CTFHOST, Service, free_port, http, need, port_open, run_jobs,
                             wait_until)

pytestmark = pytest.mark.usefixtures("redis_server")

try:
    import httpx2
    import uvicorn
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    SDK_MISSING = None
except ImportError as exc:  # the `mcp` extra is optional for the core; CI installs it
    SDK_MISSING = f"the MCP SDK is not installed ({exc}): {mcp_server.INSTALL_HINT}"

TOOLS = {"list_challenges", "start_instance", "instance_status", "renew_instance", "stop_instance", "submit_flag",
         "verify_flag"}
CHALLENGE = "mcp-flags"


@contextlib.contextmanager
def serving(app):
    """The URL of the MCP endpoint for `app`, served by uvicorn in a thread of this process."""
    need(SDK_MISSING is None, SDK_MISSING)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(mcp_server.build_asgi_app(app), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 15, what="the MCP server to start")
    try:
        yield f"http://127.0.0.1:{port}{mcp_server.MCP_PATH}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def mcp_url(app):
    with serving(app) as url:
        yield url


@pytest.fixture
def challenge(api):
    body = {"id": CHALLENGE, "name": "MCP flags", "runtime": "fake", "image": "i", "port": 80,
            "flag_template": "flag{{{hex:16}}}", "expose": [{"name": "shell", "port": 31337, "protocol": "tcp"}]}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def token(admin, team, **extra):
    response = admin.post("/api/v1/tokens", json={"team_id": team, "name": "agent", **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]


async def _in_session(url, secret, work):
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


def in_session(url, secret, work, app=None, worker_id=None, timeout=60):
    """What `work(session)` returns, run in an MCP client session (in a thread) while this thread runs the jobs."""
    outcome = {}

    def target():
        try:
            outcome["value"] = asyncio.run(_in_session(url, secret, work))
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        if worker_id is not None:
            run_jobs(app, worker_id)
        thread.join(0.05)
    assert not thread.is_alive(), f"the MCP session did not finish within {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def call(name, **arguments):
    """A `work` calling one tool: (is_error, structured result or error text)."""
    async def work(session):
        return unpack(await session.call_tool(name, arguments))

    return work


def unpack(result):
    if result.is_error:
        return True, result.content[0].text
    return False, result.structured_content if result.structured_content is not None else json.loads(result.content[0].text)


def test_lists_the_seven_tools_with_typed_arguments(mcp_url, admin):
    async def work(session):
        return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in in_session(mcp_url, token(admin, "red"), work)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description) > 80, tool.name  # agents read them
        assert tool.input_schema["type"] == "object"
    start = tools["start_instance"].input_schema
    assert start["required"] == ["challenge_id"]
    assert start["properties"]["challenge_id"]["type"] == "string" and start["properties"]["challenge_id"]["pattern"]
    assert start["properties"]["timeout_seconds"]["default"] == 120
    assert start["properties"]["timeout_seconds"]["maximum"] == mcp_server.MAX_START_TIMEOUT_SECONDS
    for name in ("instance_status", "renew_instance", "stop_instance"):
        assert tools[name].input_schema["properties"]["instance_id"]["format"] == "uuid"
    assert sorted(tools["submit_flag"].input_schema["required"]) == ["challenge_id", "flag"]
    assert tools["stop_instance"].annotations.destructive_hint is True
    assert tools["list_challenges"].annotations.read_only_hint is True


def test_start_an_instance_read_it_submit_its_flag_and_stop_it(mcp_url, app, api, admin, challenge, worker_id):
    secret = token(admin, "red")

    async def work(session):
        results = {"challenges": unpack(await session.call_tool("list_challenges", {}))}
        results["start"] = unpack(await session.call_tool("start_instance", {"challenge_id": CHALLENGE}))
        # start again: the team's running instance comes back
        results["again"] = unpack(await session.call_tool("start_instance", {"challenge_id": CHALLENGE}))
        return results

    results = in_session(mcp_url, secret, work, app=app, worker_id=worker_id)
    error, listed = results["challenges"]
    assert not error and [c["id"] for c in listed["challenges"]] == [CHALLENGE]
    error, started = results["start"]
    assert not error, started
    assert started["status"] == "running" and started["reused"] is False
    assert started["challenge_id"] == CHALLENGE and started["expires_at"].endswith("Z")
    main, shell = started["endpoints"]
    assert main["name"] == "main" and main["protocol"] == "http" and main["url"] == started["endpoint"]
    assert main["access_link"].startswith(main["url"] + "/.ctfhost/access?") and started["access_link_expires_in"] > 0
    assert shell["protocol"] == "tcp" and shell["url"].startswith("tls://") and "access_link" not in shell
    assert any("openssl" in command for command in shell["connect"].values())
    error, again = results["again"]
    assert not error and again["id"] == started["id"] and again["reused"] is True

    instance_id = started["id"]
    flag = api.get(f"/api/v1/instances/{instance_id}").get_json()["flag"]  # the API key sees flags; teams do not

    async def work(session):
        return {
            "status": unpack(await session.call_tool("instance_status", {"instance_id": instance_id})),
            "links": unpack(await session.call_tool("instance_status", {"instance_id": instance_id,
                                                                        "access_links": True})),
            "verify": unpack(await session.call_tool("verify_flag", {"challenge_id": CHALLENGE, "flag": flag})),
            "wrong": unpack(await session.call_tool("submit_flag", {"challenge_id": CHALLENGE,
                                                                    "flag": "flag{0000000000000000}"})),
            "right": unpack(await session.call_tool("submit_flag", {"challenge_id": CHALLENGE, "flag": flag})),
            "renew": unpack(await session.call_tool("renew_instance", {"instance_id": instance_id})),
            "stop": unpack(await session.call_tool("stop_instance", {"instance_id": instance_id})),
            "after": unpack(await session.call_tool("instance_status", {"instance_id": instance_id})),
        }

    results = in_session(mcp_url, secret, work)
    error, status = results["status"]
    assert not error and status["id"] == instance_id and status["status"] == "running"
    assert "flag" not in json.dumps(status).replace("mcp-flags", "")
    assert "access_link" not in status["endpoints"][0]
    error, links = results["links"]
    assert not error and links["endpoints"][0]["access_link"] != main["access_link"]
    assert results["verify"] == (False, {**results["verify"][1], "correct": True})
    error, wrong = results["wrong"]
    assert not error and wrong["correct"] is False  # a wrong flag is an answer, not a tool error
    error, right = results["right"]
    assert not error and right["correct"] is True and right["instance_id"] == instance_id
    error, renewed = results["renew"]
    assert renewed["expires_at"].endswith("Z") if not error else "409" in renewed
    assert results["stop"] == (False, {"id": instance_id, "stopped": True})
    error, after = results["after"]
    assert not error and after["status"] == "destroyed"


def test_a_failed_launch_is_a_tool_error_with_the_instances_error(mcp_url, app, api, admin, worker_id):
    body = {"id": "mcp-broken", "name": "broken", "runtime": "fake", "image": "i", "port": 80,
            "extra_config": {"fail": "the image has no entrypoint"}}
    assert api.post("/api/v1/challenges", json=body).status_code == 201
    error, text = in_session(mcp_url, token(admin, "red"), call("start_instance", challenge_id="mcp-broken"),
                             app=app, worker_id=worker_id)
    assert error and "failed to start" in text and "status error" in text, text


def test_a_pending_instance_past_the_timeout_is_a_tool_error_naming_it(mcp_url, admin, challenge, worker_id):
    # no jobs run: the instance stays pending
    error, text = in_session(mcp_url, token(admin, "red"), call("start_instance", challenge_id=CHALLENGE,
                                                                timeout_seconds=1))
    assert error and "still pending" in text and "instance_status(" in text, text


def test_tool_errors_carry_the_apis_answer(mcp_url, api, admin, challenge, worker_id):
    blue = api.post("/api/v1/instances", json={"team_id": "blue", "challenge_id": CHALLENGE}).get_json()

    async def work(session):
        return [unpack(await session.call_tool(name, arguments)) for name, arguments in (
            ("instance_status", {"instance_id": blue["id"]}),
            ("stop_instance", {"instance_id": blue["id"]}),
            ("renew_instance", {"instance_id": blue["id"]}),
            ("start_instance", {"challenge_id": "no-such-challenge"}),
            ("instance_status", {"instance_id": "not-a-uuid"}),
        )]

    *others, unknown, malformed = in_session(mcp_url, token(admin, "red"), work)
    # another team's instance does not exist for this team, whatever the tool
    for error, text in others:
        assert error and "404 Not Found: " in text and blue["id"] in text, text
    assert api.get(f"/api/v1/instances/{blue['id']}").get_json()["status"] == "pending"  # untouched
    error, text = unknown
    assert error and "404 Not Found: " in text and "no-such-challenge" in text, text
    error, text = malformed
    assert error and "instance_id" in text, text


def test_starting_a_closed_challenge_is_the_apis_409(mcp_url, api, admin, challenge, worker_id):
    assert api.post(f"/api/v1/challenges/{CHALLENGE}/deactivate").status_code == 200
    error, text = in_session(mcp_url, token(admin, "red"), call("start_instance", challenge_id=CHALLENGE))
    assert error and "409 Conflict: " in text, text


def test_a_token_without_the_scope_gets_a_tool_error_naming_it(mcp_url, admin, challenge):
    secret = token(admin, "red", scopes=["instances:read", "instances:write"])
    error, text = in_session(mcp_url, secret, call("submit_flag", challenge_id=CHALLENGE, flag="flag{x}"))
    assert error and "403 Forbidden: " in text and "'submissions'" in text, text
    error, listed = in_session(mcp_url, secret, call("list_challenges"))
    assert not error and listed["challenges"][0]["id"] == CHALLENGE


def test_a_write_only_token_gets_its_launched_instance_without_access_links(mcp_url, app, api, admin, challenge,
                                                                            worker_id):
    # instances:write is start_instance's scope (its REST route's); waiting and access links read
    secret = token(admin, "red", scopes=["instances:write"])
    error, started = in_session(mcp_url, secret, call("start_instance", challenge_id=CHALLENGE),
                                app=app, worker_id=worker_id)
    assert not error, started  # the launch succeeded: never a tool error
    instance = api.get(f"/api/v1/instances/{started['id']}").get_json()
    assert instance["team_id"] == "red" and instance["challenge_id"] == CHALLENGE
    assert started["status"] in ("pending", "running") and started["reused"] is False
    main, shell = started["endpoints"]
    assert main["url"] == instance["endpoint"] and shell["url"].startswith("tls://") and shell["connect"]
    assert "access_link" not in main and "access_link_expires_in" not in started
    assert "'instances:read'" in started["note"] and "access link" in started["note"]
    # a retry cannot look the running instance up: the API's 409 stands, saying why
    error, text = in_session(mcp_url, secret, call("start_instance", challenge_id=CHALLENGE))
    assert error and "409 Conflict: " in text and "'instances:read'" in text, text
    assert len(api.get("/api/v1/instances", query_string={"team_id": "red"}).get_json()) == 1


def test_waiting_starts_hold_no_thread_another_team_is_answered_at_once(app, api, admin, challenge, worker_id,
                                                                         monkeypatch):
    # two threads for REST calls: both would be held by the two waiting starts if a wait held one
    monkeypatch.setattr(mcp_server, "THREADS", 2)
    with serving(app) as url:
        starts = {}

        def start(team, secret):
            try:
                starts[team] = asyncio.run(_in_session(url, secret, call("start_instance", challenge_id=CHALLENGE,
                                                                         timeout_seconds=60)))
            except BaseException as exc:
                starts[team] = exc

        threads = [threading.Thread(target=start, args=(team, token(admin, team)), daemon=True)
                   for team in ("red", "blue")]
        green = token(admin, "green")
        for thread in threads:
            thread.start()
        try:
            # no job runs yet: both instances stay pending and both starts wait for them
            wait_until(lambda: len(api.get("/api/v1/instances", query_string={"status": "pending"}).get_json()) == 2,
                       15, what="both launches")
            time.sleep(1.5)
            began = time.monotonic()
            error, listed = in_session(url, green, call("list_challenges"), timeout=8)
            assert not error and [c["id"] for c in listed["challenges"]] == [CHALLENGE]
            assert time.monotonic() - began < 3
            assert not starts  # still waiting
        finally:
            deadline = time.monotonic() + 30
            while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
                run_jobs(app, worker_id)
                time.sleep(0.05)
    for team in ("red", "blue"):
        error, started = starts[team]
        assert not error and started["status"] == "running" and started["endpoints"][0]["access_link"], started


MCP_INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.mark.parametrize("headers, status, words", [
    ({}, 401, "missing credentials"),
    ({"Authorization": "Bearer cth_unknown"}, 401, "unknown, revoked or expired token"),
    ({"Authorization": "Basic abc"}, 401, "Bearer"),
    ({"x-api-key": "test-api-key"}, 401, "missing credentials"),
    ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 403, "team token"),
])
def test_a_request_without_a_team_token_is_refused_before_any_session(mcp_url, headers, status, words):
    answer, body = http("POST", mcp_url, MCP_INITIALIZE, {**MCP_HEADERS, **headers})
    assert answer == status, body
    assert body["code"] == status and words in body["message"]


def test_the_sdk_client_without_a_token_opens_no_session(mcp_url):
    with pytest.raises(Exception) as caught:
        in_session(mcp_url, None, call("list_challenges"))
    assert caught.group_contains(Exception, match="error response", depth=None) or "401" in str(caught.value)


def test_a_revoked_token_is_refused(mcp_url, admin):
    secret = token(admin, "red")
    assert http("POST", mcp_url, MCP_INITIALIZE, {**MCP_HEADERS, "Authorization": f"Bearer {secret}"})[0] == 200
    token_id = admin.get("/api/v1/tokens").get_json()[0]["id"]
    assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    assert http("POST", mcp_url, MCP_INITIALIZE, {**MCP_HEADERS, "Authorization": f"Bearer {secret}"})[0] == 401


def test_the_core_imports_without_the_sdk_and_says_what_to_install(monkeypatch):
    for name in [name for name in sys.modules if name == "mcp" or name.startswith("mcp.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(mcp_server.MissingDependency, match=r"pip install 'ctfhost\[mcp\]'"):
        mcp_server.require_sdk()


def test_flask_ctfhost_mcp_serves_the_endpoint(app, tmp_path):
    need(SDK_MISSING is None, SDK_MISSING)
    port = free_port()
    service = Service("mcp", [*FLASK_CTFHOST, "mcp", "--port", str(port)], dict(os.environ), tmp_path / "mcp.log")
    service.start()
    try:
        service.wait_for(lambda: port_open(port), 30, "flask ctfhost mcp to listen")
        assert http("GET", f"http://127.0.0.1:{port}/health") == (200, {"service": "ctfhost-mcp", "status": "ok"})
        status, body = http("POST", f"http://127.0.0.1:{port}{mcp_server.MCP_PATH}", MCP_INITIALIZE, MCP_HEADERS)
        assert status == 401 and "Bearer" in body["message"]
    finally:
        service.stop()


class CountingServer:
    """A gateway whose instance runs at its third read, recording when each read came and what it asked."""

    def __init__(self):
        self.reads = []

    def call(self, caller, method, path, body=None, query=None):
        self.reads.append((time.monotonic(), query))
        return 200, {"id": "i-1", "status": "running" if len(self.reads) >= 3 else "pending", "phase": None}


def test_waiting_reads_every_half_second_sleeping_on_the_event_loop_not_in_a_thread():
    gateway, threads, sleeps = CountingServer(), [], []

    async def in_thread(fn, *args):  # what holds a worker thread: one REST call at a time
        threads.append(fn)
        return fn(*args)

    async def sleep(seconds):
        sleeps.append(seconds)
        await asyncio.sleep(seconds)

    rest = mcp_server.Rest(gateway, None, in_thread, sleep)
    instance = asyncio.run(mcp_server.wait_while_pending(rest, {"id": "i-1", "status": "pending"},
                                                         time.monotonic() + 10))
    assert instance["status"] == "running" and len(gateway.reads) == 3 == len(threads)
    assert sleeps == [mcp_server.POLL_SECONDS] * 3
    assert all(query is None for _, query in gateway.reads)  # no server-side wait holding the thread
    (first, _), (second, _), _ = gateway.reads
    assert second - first >= mcp_server.POLL_SECONDS * 0.9


class WriteOnlyServer:
    """A gateway for a token with instances:write only, whose launch answers with the instance running."""

    INSTANCE = {"id": "i-1", "challenge_id": "web", "status": "running", "phase": None,
                "endpoint": "https://abc.web.example", "protocol": "http"}

    def call(self, caller, method, path, body=None, query=None):
        if method == "POST" and path == "/api/v1/instances":
            return 201, dict(self.INSTANCE)
        raise mcp_server.RestError(403, {"message": f"this token lacks the scope 'instances:read' that {method} "
                                                    f"{path} needs", "errors": {"scope": "instances:read"}})


def test_a_write_only_token_whose_launch_answers_running_gets_it_without_links():
    async def in_thread(fn, *args):
        return fn(*args)

    rest = mcp_server.Rest(WriteOnlyServer(), None, in_thread, asyncio.sleep)
    view = asyncio.run(mcp_server.start_and_wait(rest, "web", 5))
    assert view["id"] == "i-1" and view["status"] == "running" and view["reused"] is False
    assert view["endpoints"] == [{"name": "main", "protocol": "http", "url": "https://abc.web.example"}]
    assert "access_link_expires_in" not in view and "'instances:read'" in view["note"]
