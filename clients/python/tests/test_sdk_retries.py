"""Retries: 503 and 429 honour Retry-After, attempts and time are bounded, and a lost launch answer never makes a second instance."""

import time
import warnings

import pytest

from ctfhost_client import (
    AnswerLost, Client, ConnectionFailed, CtfhostVersionWarning, RateLimited, RetryPolicy, Unavailable,
)
from ctfhost.testing import free_port
from sdk_stubs import DROP, META, LosingProxy, StubServer
from sdk_support import FAST, TEAM

CHALLENGES = [{"id": "web", "name": "Web", "runtime": "fake", "port": 80, "protocol": "http"}]
UNAVAILABLE = {"code": 503, "status": "Service Unavailable", "message": "no worker has room"}
LIMITED = {"code": 429, "status": "Too Many Requests", "message": "launch_cooldown_seconds not over"}
VERDICT = {"correct": True, "message": "Correct", "instance_id": None, "shared": False}


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


def test_503_with_retry_after_then_200(stub):
    stub.on("GET", "/api/v1/challenges", (503, UNAVAILABLE, {"Retry-After": "1"}), (200, CHALLENGES, {}))
    client = Client(stub.url, "cth_x", retry=RetryPolicy(attempts=3, backoff=0.01))
    challenges = client.challenges.list()
    assert [c.id for c in challenges] == ["web"]
    times = [t for m, p, t in stub.requests if p == "/api/v1/challenges"]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95  # it waited as Retry-After said, not its own 10 ms


def test_429_then_200_retries_even_a_submission(stub):
    # 429 means nothing was done: safe to send again, whatever the method
    stub.on("POST", "/api/v1/submissions", (429, LIMITED, {"Retry-After": "0"}), (200, VERDICT, {}))
    verdict = Client(stub.url, "cth_x", retry=FAST).submissions.submit("web", "flag{x}")
    assert verdict.correct is True
    assert stub.count("POST", "/api/v1/submissions") == 2


def test_attempts_are_bounded_and_the_last_error_is_typed(stub):
    stub.on("GET", "/api/v1/challenges", (503, UNAVAILABLE, {"Retry-After": "0"}))
    with pytest.raises(Unavailable) as caught:
        Client(stub.url, "cth_x", retry=RetryPolicy(attempts=3, backoff=0.01)).challenges.list()
    assert caught.value.status == 503 and caught.value.retry_after == 0
    assert stub.count("GET", "/api/v1/challenges") == 3


def test_a_retry_after_beyond_the_time_allowed_is_not_waited(stub):
    stub.on("POST", "/api/v1/instances", (429, LIMITED, {"Retry-After": "600"}))
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        Client(stub.url, "cth_x", retry=RetryPolicy(total_seconds=5)).instances.start("web", wait=False)
    assert caught.value.retry_after == 600
    assert time.monotonic() - started < 2
    assert stub.count("POST", "/api/v1/instances") == 1


def test_502_is_not_retried_for_a_submission_but_is_for_a_read(stub):
    stub.on("POST", "/api/v1/submissions", (502, {"message": "bad gateway"}, {}), (200, VERDICT, {}))
    with pytest.raises(Unavailable):
        Client(stub.url, "cth_x", retry=FAST).submissions.submit("web", "flag{x}")
    assert stub.count("POST", "/api/v1/submissions") == 1
    stub.on("GET", "/api/v1/challenges", (502, {"message": "bad gateway"}, {}), (200, CHALLENGES, {}))
    assert Client(stub.url, "cth_x", retry=FAST).challenges.list()[0].id == "web"


def test_a_lost_answer_is_retried_for_reads_and_never_for_a_submission(stub):
    stub.on("GET", "/api/v1/challenges", DROP, (200, CHALLENGES, {}))
    assert Client(stub.url, "cth_x", retry=FAST).challenges.list()[0].id == "web"
    stub.on("POST", "/api/v1/submissions", DROP, (200, VERDICT, {}))
    with pytest.raises(AnswerLost):
        Client(stub.url, "cth_x", retry=FAST).submissions.submit("web", "flag{x}")
    assert stub.count("POST", "/api/v1/submissions") == 1


def test_no_server_is_a_connection_error_after_the_retries():
    client = Client(f"http://127.0.0.1:{free_port()}", "cth_x", retry=RetryPolicy(attempts=3, backoff=0.01))
    with pytest.raises(ConnectionFailed) as caught:
        client.challenges.list()
    assert "after 3 tries" in caught.value.message


@pytest.mark.parametrize("api_version, server_version, warns", [
    ("1.1", "0.1.0", False), ("1.7", "0.9.2", False), ("2.0", "0.1.0", True), ("1.1", "1.0.0", True),
])
def test_version_warning_on_first_use_only(api_version, server_version, warns):
    server = StubServer(meta={**META, "api_version": api_version, "server_version": server_version})
    server.on("GET", "/api/v1/challenges", (200, CHALLENGES, {}))
    try:
        client = Client(server.url, "cth_x")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client.challenges.list()
            client.challenges.list()
        versions = [w for w in caught if issubclass(w.category, CtfhostVersionWarning)]
        assert len(versions) == (1 if warns else 0)
        if warns:
            assert "update ctfhost-client" in str(versions[0].message)
    finally:
        server.close()


# -- a launch whose answer is lost, against the live server -------------------


@pytest.fixture
def proxy(live_server):
    server = LosingProxy(live_server.url)
    yield server
    server.close()


def active_instances(api, challenge_id):
    response = api.get("/api/v1/instances", query_string={"team_id": TEAM, "challenge_id": challenge_id})
    return [i for i in response.get_json() if i["status"] in ("pending", "running")]


def test_a_launch_whose_answer_is_lost_ends_with_exactly_one_instance(scenario, proxy, api):
    proxy.drops[("POST", "/api/v1/instances")] = 1
    client = Client(proxy.url, scenario.token, retry=FAST)
    instance = client.instances.start(scenario.challenge_id, wait=False)
    assert instance.status == "pending" and instance.challenge_id == scenario.challenge_id
    # the server created it, the answer was lost, the client found it instead of launching again
    assert proxy.requests.count(("POST", "/api/v1/instances")) == 1
    assert [i["id"] for i in active_instances(api, scenario.challenge_id)] == [instance.id]


def test_a_lost_launch_answer_then_409_on_the_retry_resolves_to_the_instance(scenario, proxy, api):
    lookup = ("GET", f"/api/v1/instances/team/{TEAM}/{scenario.challenge_id}")
    proxy.drops[("POST", "/api/v1/instances")] = 1
    # the first lookup misses it (as if it were not committed yet): the client sends the launch again, which is 409
    proxy.fake[lookup] = [(404, {"code": 404, "status": "Not Found", "message": "no active instance"})]
    client = Client(proxy.url, scenario.token, retry=FAST)
    instance = client.instances.start(scenario.challenge_id, wait=False)
    assert proxy.requests.count(("POST", "/api/v1/instances")) == 2
    assert proxy.requests.count(lookup) == 2
    assert [i["id"] for i in active_instances(api, scenario.challenge_id)] == [instance.id]


def test_the_api_key_launch_recovers_with_the_team_it_named(scenario, proxy, api):
    proxy.drops[("POST", "/api/v1/instances")] = 1
    client = Client(proxy.url, api_key="test-api-key", retry=FAST)
    instance = client.instances.start(scenario.challenge_id, TEAM, wait=False)
    assert [i["id"] for i in active_instances(api, scenario.challenge_id)] == [instance.id]
    assert instance.flag  # the API key reads flags
