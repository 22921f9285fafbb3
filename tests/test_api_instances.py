"""/api/v1/instances on the fake runtime: launch, placement, lifecycle, lookup, renew, restart, destroy, expiry."""

import datetime
import re
import uuid

import pytest

from ctfhost.models import Instance, Worker, utcnow
from ctfhost.worker.queue import destroy_job_id, job_status, launch_job_id, worker_queue
from ctfhost.testing import run_jobs
from ctfhost.timeutil import parse_iso

pytestmark = pytest.mark.usefixtures("redis_server")

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ENDPOINT = re.compile(r"^http://([0-9a-f]{12})\.web-chal\.localhost$")
TTL = 900


@pytest.fixture
def worker_id(api):
    """A fake-runtime worker, unique per test so no job leaks between tests."""
    return register_worker(api)


def register_worker(api, max_instances=10):
    worker = f"inst-{uuid.uuid4().hex[:8]}"
    response = api.post(
        "/api/v1/workers",
        json={"id": worker, "address": "127.0.0.1", "runtime": "fake", "max_instances": max_instances},
    )
    assert response.status_code == 201, response.get_json()
    return worker


def create_challenge(api, slug="web-chal", **changes):
    body = {"id": slug, "name": slug, "runtime": "fake", "image": "fake/web", "port": 80, "ttl_seconds": TTL}
    body.update(changes)
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def challenge(api):
    return create_challenge(api)


def launch(api, team_id=1, challenge_id="web-chal", status=201):
    response = api.post("/api/v1/instances", json={"team_id": team_id, "challenge_id": challenge_id})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def fetch(api, instance_id):
    response = api.get(f"/api/v1/instances/{instance_id}")
    assert response.status_code == 200
    return response.get_json()


def routed(api, instance_id):
    response = api.get("/api/v1/traefik/config")
    assert response.status_code == 200
    return f"ctfhost-{instance_id}" in response.get_data(as_text=True)


def queued_job_ids(worker_id):
    return set(worker_queue(worker_id).job_ids)


def seconds_between(later, earlier):
    return (parse_iso(later) - parse_iso(earlier)).total_seconds()


# -- launching --------------------------------------------------------------------


def test_launch_returns_a_pending_instance_with_its_final_endpoint(api, challenge, worker_id):
    before = utcnow().replace(microsecond=0)
    response = api.post("/api/v1/instances", json={"team_id": 7, "challenge_id": "web-chal"})
    assert response.status_code == 201
    body = response.get_json()
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert body["team_id"] == 7
    assert body["challenge_id"] == "web-chal"
    assert body["runtime"] == "fake"
    assert body["status"] == "pending"
    assert ENDPOINT.match(body["endpoint"]), body["endpoint"]
    assert body["started_at"] is None
    assert body["error"] is None
    assert body["worker_id"] == worker_id
    for key in ("created_at", "expires_at"):
        assert ISO_Z.match(body[key]), body[key]
    assert parse_iso(body["created_at"]) >= before
    assert seconds_between(body["expires_at"], body["created_at"]) in (TTL, TTL + 1)
    assert launch_job_id(body["id"]) in queued_job_ids(worker_id)


@pytest.mark.parametrize("team_id", [0, 7, 2**63 - 1, "7", "team-a", "Team.B_1@ctf:x"])
def test_team_id_keeps_the_type_the_caller_used(api, challenge, worker_id, team_id):
    body = launch(api, team_id)
    assert body["team_id"] == team_id
    assert type(body["team_id"]) is type(team_id)
    assert fetch(api, body["id"])["team_id"] == team_id
    listed = api.get("/api/v1/instances", query_string={"team_id": str(team_id)}).get_json()
    assert [i["team_id"] for i in listed] == [team_id]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"challenge_id": "web-chal"}, "team_id"),
        ({"team_id": 1}, "challenge_id"),
        ({"team_id": -1, "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": 2**63, "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": True, "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": 1.5, "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": None, "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": "", "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": "a b", "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": "x" * 65, "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": ["1"], "challenge_id": "web-chal"}, "team_id"),
        ({"team_id": 1, "challenge_id": ""}, "challenge_id"),
        ({"team_id": 1, "challenge_id": 5}, "challenge_id"),
        ({"team_id": 1, "challenge_id": "web-chal", "ttl": 5}, "ttl"),
    ],
)
def test_launch_rejects_bad_fields(api, challenge, worker_id, body, field):
    response = api.post("/api/v1/instances", json=body)
    assert response.status_code == 422
    payload = response.get_json()
    assert list(payload["errors"]["json"]) == [field]
    assert field in payload["message"]
    assert Instance.select().count() == 0


def test_launch_unknown_challenge_is_404(api, worker_id):
    response = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "nope"})
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == 404 and "nope" in body["message"]
    assert Instance.select().count() == 0


def test_second_active_instance_of_a_team_is_409(app, api, challenge, worker_id):
    first = launch(api, 1)
    response = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-chal"})
    assert response.status_code == 409
    assert "already has an active instance" in response.get_json()["message"]
    # the same team id given as a string is the same team
    assert api.post("/api/v1/instances", json={"team_id": "1", "challenge_id": "web-chal"}).status_code == 409
    run_jobs(app, worker_id)
    assert fetch(api, first["id"])["status"] == "running"
    assert api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-chal"}).status_code == 409
    # other teams and other challenges are independent
    launch(api, 2)
    create_challenge(api, "pwn-chal")
    launch(api, 1, "pwn-chal")
    assert Instance.select().count() == 3


def test_a_team_can_launch_again_once_its_instance_ended(api, challenge, worker_id):
    first = launch(api, 1)
    assert api.delete(f"/api/v1/instances/{first['id']}").status_code == 204
    second = launch(api, 1)
    assert second["id"] != first["id"]
    assert second["endpoint"] != first["endpoint"]


def test_one_active_instance_is_held_by_the_database(api, challenge, worker_id):
    import peewee

    launch(api, 1)
    row = Instance.get()
    with pytest.raises(peewee.IntegrityError):
        Instance.create(
            id=str(uuid.uuid4()), team_id="1", challenge_id="web-chal", runtime="fake", status="running",
            hostname="abc.web-chal.localhost", endpoint="http://abc.web-chal.localhost",
            worker_id=row.worker_id, expires_at=row.expires_at,
        )


def test_endpoint_prefixes_are_random(api, challenge, worker_id):
    endpoints = {launch(api, team)["endpoint"] for team in range(5)}
    assert len(endpoints) == 5
    assert all(ENDPOINT.match(e) for e in endpoints)


@pytest.mark.parametrize(
    "base_domain, port, pattern",
    [
        ("localhost", 8080, r"^http://[0-9a-f]{12}\.web-chal\.localhost:8080$"),
        ("ctf.example.org", None, r"^https://[0-9a-f]{12}\.web-chal\.ctf\.example\.org$"),
        ("ctf.example.org", 8443, r"^https://[0-9a-f]{12}\.web-chal\.ctf\.example\.org:8443$"),
    ],
)
def test_endpoint_follows_base_domain_and_public_port(app, api, challenge, worker_id, base_domain, port, pattern):
    saved = app.config["CTFHOST_BASE_DOMAIN"], app.config["CTFHOST_PUBLIC_PORT"]
    app.config["CTFHOST_BASE_DOMAIN"], app.config["CTFHOST_PUBLIC_PORT"] = base_domain, port
    try:
        body = launch(api)
    finally:
        app.config["CTFHOST_BASE_DOMAIN"], app.config["CTFHOST_PUBLIC_PORT"] = saved
    assert re.match(pattern, body["endpoint"]), body["endpoint"]
    assert Instance.get_by_id(body["id"]).hostname == body["endpoint"].split("://")[1].split(":")[0]


# -- placement ----------------------------------------------------------------------


def assert_nothing_created(response, worker_ids=()):
    assert response.status_code == 503, response.get_json()
    body = response.get_json()
    assert body["code"] == 503 and body["message"]
    for worker in worker_ids:
        assert not any(j.startswith("launch-") for j in queued_job_ids(worker))
    return body


def test_no_worker_is_503_and_creates_nothing(api, challenge):
    response = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-chal"})
    body = assert_nothing_created(response)
    assert "no active worker" in body["message"] and "'fake'" in body["message"]
    assert Instance.select().count() == 0


def test_worker_of_another_runtime_does_not_count(api, challenge):
    api.post("/api/v1/workers", json={"id": f"d-{uuid.uuid4().hex[:6]}", "address": "127.0.0.1", "runtime": "docker"})
    assert_nothing_created(api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-chal"}))
    assert Instance.select().count() == 0


def test_full_workers_are_503_and_create_nothing(api, challenge):
    worker = register_worker(api, max_instances=1)
    kept = launch(api, 1)
    response = api.post("/api/v1/instances", json={"team_id": 2, "challenge_id": "web-chal"})
    body = assert_nothing_created(response)
    assert "capacity" in body["message"]
    assert [i.id for i in Instance.select()] == [kept["id"]]
    # (beside the pulls its registration queued)
    assert {job for job in queued_job_ids(worker) if not job.startswith("pull-")} == {launch_job_id(kept["id"])}
    # ending an instance frees its place
    api.delete(f"/api/v1/instances/{kept['id']}")
    launch(api, 2)


def test_worker_with_no_room_at_all_is_503(api, challenge):
    register_worker(api, max_instances=0)
    assert "capacity" in assert_nothing_created(
        api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-chal"})
    )["message"]
    assert Instance.select().count() == 0


def test_inactive_worker_is_503_and_creates_nothing(api, challenge, worker_id):
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(seconds=61)).where(Worker.id == worker_id).execute()
    body = assert_nothing_created(api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-chal"}), [worker_id])
    assert "no active worker" in body["message"]
    assert Instance.select().count() == 0
    # a heartbeat makes it usable again
    assert api.post(f"/api/v1/workers/{worker_id}/heartbeat").status_code == 200
    assert launch(api, 1)["worker_id"] == worker_id


def test_launches_spread_over_workers_by_load(api, challenge):
    small = register_worker(api, max_instances=2)
    big = register_worker(api, max_instances=4)
    placed = [launch(api, team)["worker_id"] for team in range(6)]
    assert placed.count(small) == 2 and placed.count(big) == 4
    assert api.post("/api/v1/instances", json={"team_id": 99, "challenge_id": "web-chal"}).status_code == 503


def test_queue_down_is_503_and_creates_nothing(app, api, challenge, worker_id):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    saved = app.extensions["ctfhost.redis"]
    app.extensions["ctfhost.redis"] = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    try:
        response = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-chal"})
    finally:
        app.extensions["ctfhost.redis"] = saved
    assert response.status_code == 503
    assert "queue" in response.get_json()["message"]
    assert Instance.select().count() == 0


# -- lifecycle on the fake runtime ------------------------------------------------------


def test_launch_job_moves_pending_to_running(app, api, challenge, worker_id):
    body = launch(api)
    assert not routed(api, body["id"])
    run_jobs(app, worker_id)
    running = fetch(api, body["id"])
    assert running["status"] == "running"
    assert ISO_Z.match(running["started_at"])
    assert parse_iso(running["started_at"]) >= parse_iso(body["created_at"])
    assert running["error"] is None
    assert running["endpoint"] == body["endpoint"] and running["expires_at"] == body["expires_at"]
    assert routed(api, body["id"])
    hostname = body["endpoint"].split("://")[1]
    assert f"Host(`{hostname}`)" in api.get("/api/v1/traefik/config").get_data(as_text=True)
    # the backend really answers, and running the queue again changes nothing
    assert body["id"] in app.fake_runtime.servers
    run_jobs(app, worker_id)
    assert fetch(api, body["id"]) == running


def test_launch_failure_is_error_with_the_reason(app, api, worker_id):
    create_challenge(api, extra_config='{"fail": "boom: image not found"}')
    body = launch(api)
    run_jobs(app, worker_id)
    failed = fetch(api, body["id"])
    assert failed["status"] == "error"
    assert failed["error"] == "boom: image not found"
    assert failed["started_at"] is None
    assert ISO_Z.match(failed["ended_at"])
    assert not routed(api, body["id"])
    assert body["id"] in app.fake_runtime.destroyed
    # an instance in error is not active: the team may launch again
    assert api.get("/api/v1/instances/team/1/web-chal").status_code == 404
    launch(api)


def test_server_that_dies_while_starting_is_error(app, api, worker_id):
    create_challenge(api, extra_config='{"die": true, "readiness_timeout": 3}')
    body = launch(api)
    run_jobs(app, worker_id)
    failed = fetch(api, body["id"])
    assert failed["status"] == "error"
    assert failed["error"] == "the fake server is gone"
    assert not routed(api, body["id"])
    assert body["id"] in app.fake_runtime.destroyed
    assert body["id"] not in app.fake_runtime.servers


def test_launch_of_a_deleted_challenge_is_error(app, api, challenge, worker_id):
    body = launch(api)
    Instance.update(challenge_id="gone-chal").where(Instance.id == body["id"]).execute()
    run_jobs(app, worker_id)
    failed = fetch(api, body["id"])
    assert failed["status"] == "error" and "gone-chal" in failed["error"]


# -- reading ----------------------------------------------------------------------------


def test_get_unknown_is_404(api):
    missing = uuid.uuid4()
    response = api.get(f"/api/v1/instances/{missing}")
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == 404 and str(missing) in body["message"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
@pytest.mark.parametrize("method, suffix", [("GET", ""), ("DELETE", ""), ("POST", "/renew"), ("POST", "/restart")])
def test_malformed_id_is_404(client, bad, method, suffix):
    from ctfhost.testing import API_KEY

    response = client.open(f"/api/v1/instances/{bad}{suffix}", method=method, headers={"x-api-key": API_KEY})
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == 404 and body["message"]


def test_team_lookup_finds_the_active_instance(app, api, challenge, worker_id):
    assert api.get("/api/v1/instances/team/1/web-chal").status_code == 404
    body = launch(api, 1)
    found = api.get("/api/v1/instances/team/1/web-chal")
    assert found.status_code == 200 and found.get_json()["id"] == body["id"]
    run_jobs(app, worker_id)
    assert api.get("/api/v1/instances/team/1/web-chal").get_json()["status"] == "running"
    assert api.get("/api/v1/instances/team/2/web-chal").status_code == 404
    assert api.get("/api/v1/instances/team/1/other-chal").status_code == 404
    api.delete(f"/api/v1/instances/{body['id']}")
    response = api.get("/api/v1/instances/team/1/web-chal")
    assert response.status_code == 404
    assert "no active instance" in response.get_json()["message"]


def test_team_lookup_with_string_team(api, challenge, worker_id):
    body = launch(api, "team-a")
    found = api.get("/api/v1/instances/team/team-a/web-chal").get_json()
    assert found["id"] == body["id"] and found["team_id"] == "team-a"


@pytest.fixture
def fleet(app, api, worker_id):
    """Instances in several states, created oldest first."""
    create_challenge(api, "web-chal")
    create_challenge(api, "pwn-chal")
    ids = {}
    ids["a-web"] = launch(api, 1, "web-chal")["id"]
    ids["b-web"] = launch(api, 2, "web-chal")["id"]
    run_jobs(app, worker_id)
    ids["a-pwn"] = launch(api, 1, "pwn-chal")["id"]
    ids["c-web"] = launch(api, "team-c", "web-chal")["id"]
    api.delete(f"/api/v1/instances/{ids['b-web']}")
    # distinct creation times make the newest-first order certain
    start = utcnow() - datetime.timedelta(minutes=10)
    for n, key in enumerate(["a-web", "b-web", "a-pwn", "c-web"]):
        Instance.update(created_at=start + datetime.timedelta(seconds=n)).where(Instance.id == ids[key]).execute()
    return ids


def listing(api, **query):
    response = api.get("/api/v1/instances", query_string=query)
    assert response.status_code == 200, response.get_json()
    return [i["id"] for i in response.get_json()], int(response.headers["X-Total-Count"])


def test_list_everything_newest_first(api, fleet):
    assert listing(api) == ([fleet["c-web"], fleet["a-pwn"], fleet["b-web"], fleet["a-web"]], 4)


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"team_id": "1"}, ["a-pwn", "a-web"]),
        ({"team_id": "team-c"}, ["c-web"]),
        ({"team_id": "404"}, []),
        ({"challenge_id": "web-chal"}, ["c-web", "b-web", "a-web"]),
        ({"challenge_id": "pwn-chal"}, ["a-pwn"]),
        ({"status": "running"}, ["a-web"]),
        ({"status": "pending"}, ["c-web", "a-pwn"]),
        ({"status": "destroyed"}, ["b-web"]),
        ({"status": "expired"}, []),
        ({"team_id": "1", "challenge_id": "web-chal", "status": "running"}, ["a-web"]),
        ({"team_id": "1", "status": "destroyed"}, []),
    ],
)
def test_list_filters(api, fleet, query, expected):
    assert listing(api, **query) == ([fleet[key] for key in expected], len(expected))


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"limit": 2}, ["c-web", "a-pwn"]),
        ({"limit": 2, "offset": 2}, ["b-web", "a-web"]),
        ({"limit": 3, "offset": 3}, ["a-web"]),
        ({"offset": 10}, []),
        ({"limit": 1, "challenge_id": "web-chal", "offset": 1}, ["b-web"]),
    ],
)
def test_list_paginates_and_counts_everything(api, fleet, query, expected):
    ids, total = listing(api, **query)
    assert ids == [fleet[key] for key in expected]
    filtered = {k: v for k, v in query.items() if k not in ("limit", "offset")}
    assert total == len(listing(api, **filtered)[0])


@pytest.mark.parametrize(
    "query, field",
    [
        ({"status": "sleeping"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"team_id": ""}, "team_id"),
    ],
)
def test_list_rejects_bad_query(api, query, field):
    response = api.get("/api/v1/instances", query_string=query)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]["query"]


# -- destroying -------------------------------------------------------------------------


def test_delete_ends_the_instance_and_withdraws_its_route_at_once(app, api, challenge, worker_id):
    body = launch(api)
    run_jobs(app, worker_id)
    assert routed(api, body["id"])
    response = api.delete(f"/api/v1/instances/{body['id']}")
    assert response.status_code == 204 and response.data == b""
    # before any job ran: the row says destroyed and the proxy config lost the route
    destroyed = fetch(api, body["id"])
    assert destroyed["status"] == "destroyed"
    assert ISO_Z.match(destroyed["ended_at"])
    assert not routed(api, body["id"])
    assert body["id"] in app.fake_runtime.servers
    assert destroy_job_id(body["id"]) in queued_job_ids(worker_id)
    # the job removes the runtime's resources
    run_jobs(app, worker_id)
    assert body["id"] in app.fake_runtime.destroyed
    assert body["id"] not in app.fake_runtime.servers
    assert fetch(api, body["id"])["status"] == "destroyed"


def test_delete_a_pending_instance_then_its_launch_does_nothing(app, api, challenge, worker_id):
    body = launch(api)
    assert api.delete(f"/api/v1/instances/{body['id']}").status_code == 204
    run_jobs(app, worker_id)
    assert fetch(api, body["id"])["status"] == "destroyed"
    assert body["id"] not in app.fake_runtime.launched
    assert not routed(api, body["id"])


def test_delete_twice_is_harmless(app, api, challenge, worker_id):
    body = launch(api)
    assert api.delete(f"/api/v1/instances/{body['id']}").status_code == 204
    ended_at = fetch(api, body["id"])["ended_at"]
    assert api.delete(f"/api/v1/instances/{body['id']}").status_code == 204
    assert fetch(api, body["id"])["status"] == "destroyed"
    assert fetch(api, body["id"])["ended_at"] == ended_at
    run_jobs(app, worker_id)


def test_delete_unknown_is_404(api):
    assert api.delete(f"/api/v1/instances/{uuid.uuid4()}").status_code == 404


# -- restart ---------------------------------------------------------------------------


def test_restart_replaces_the_instance(app, api, challenge, worker_id):
    old = launch(api, 5)
    run_jobs(app, worker_id)
    # half the lifetime is used up
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=TTL // 2)).where(Instance.id == old["id"]).execute()
    response = api.post(f"/api/v1/instances/{old['id']}/restart")
    assert response.status_code == 200
    new = response.get_json()
    assert new["id"] != old["id"] and str(uuid.UUID(new["id"])) == new["id"]
    assert (new["team_id"], new["challenge_id"], new["runtime"]) == (5, "web-chal", "fake")
    assert new["status"] == "pending" and new["started_at"] is None
    old_prefix, new_prefix = ENDPOINT.match(old["endpoint"]).group(1), ENDPOINT.match(new["endpoint"]).group(1)
    assert old_prefix != new_prefix
    assert seconds_between(new["expires_at"], new["created_at"]) in (TTL, TTL + 1)

    ended = fetch(api, old["id"])
    assert ended["status"] == "destroyed"
    assert not routed(api, old["id"])
    assert api.get("/api/v1/instances/team/5/web-chal").get_json()["id"] == new["id"]
    assert {destroy_job_id(old["id"]), launch_job_id(new["id"])} <= queued_job_ids(worker_id)

    run_jobs(app, worker_id)
    assert fetch(api, new["id"])["status"] == "running"
    assert routed(api, new["id"]) and not routed(api, old["id"])
    assert old["id"] in app.fake_runtime.destroyed and old["id"] not in app.fake_runtime.servers


def test_restart_a_pending_instance(app, api, challenge, worker_id):
    old = launch(api)
    new = api.post(f"/api/v1/instances/{old['id']}/restart").get_json()
    run_jobs(app, worker_id)
    assert fetch(api, old["id"])["status"] == "destroyed"
    assert fetch(api, new["id"])["status"] == "running"


@pytest.mark.parametrize("end", ["delete", "error", "expired"])
def test_restart_an_ended_instance_is_409(app, api, challenge, worker_id, end):
    old = launch(api)
    if end == "delete":
        api.delete(f"/api/v1/instances/{old['id']}")
        status = "destroyed"
    else:
        Instance.update(status=end).where(Instance.id == old["id"]).execute()
        status = end
    response = api.post(f"/api/v1/instances/{old['id']}/restart")
    assert response.status_code == 409
    assert status in response.get_json()["message"]
    assert Instance.select().count() == 1


def test_restart_unknown_is_404(api):
    assert api.post(f"/api/v1/instances/{uuid.uuid4()}/restart").status_code == 404


def test_restart_without_a_worker_keeps_the_old_instance(app, api, challenge, worker_id):
    old = launch(api)
    run_jobs(app, worker_id)
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(seconds=120)).where(Worker.id == worker_id).execute()
    response = api.post(f"/api/v1/instances/{old['id']}/restart")
    assert response.status_code == 503
    assert fetch(api, old["id"])["status"] == "running"
    assert routed(api, old["id"])
    assert Instance.select().count() == 1


def test_restart_with_the_queue_down_keeps_the_old_instance(app, api, challenge, worker_id):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    old = api.post("/api/v1/instances", json={"team_id": 5, "challenge_id": "web-chal"}).get_json()
    run_jobs(app, worker_id)
    before = api.get(f"/api/v1/instances/{old['id']}").get_json()
    assert before["status"] == "running"
    saved = app.extensions["ctfhost.redis"]
    app.extensions["ctfhost.redis"] = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    try:
        response = api.post(f"/api/v1/instances/{old['id']}/restart")
    finally:
        app.extensions["ctfhost.redis"] = saved
    assert response.status_code == 503
    assert "not restarted" in response.get_json()["message"]
    assert api.get(f"/api/v1/instances/{old['id']}").get_json() == before
    assert Instance.select().count() == 1
    assert routed(api, old["id"])


def test_restart_on_a_full_worker_reuses_the_old_place(app, api, challenge):
    worker = register_worker(api, max_instances=1)
    old = launch(api)
    new = api.post(f"/api/v1/instances/{old['id']}/restart")
    assert new.status_code == 200
    assert new.get_json()["worker_id"] == worker


def test_restart_of_a_deleted_challenge_is_404(api, challenge, worker_id):
    old = launch(api)
    Instance.update(challenge_id="gone-chal").where(Instance.id == old["id"]).execute()
    response = api.post(f"/api/v1/instances/{old['id']}/restart")
    assert response.status_code == 404 and "gone-chal" in response.get_json()["message"]


# -- renew -------------------------------------------------------------------------------


def test_renew_right_after_launch_is_409(api, challenge, worker_id, monkeypatch):
    from ctfhost.services import instances

    frozen = utcnow()
    monkeypatch.setattr(instances, "utcnow", lambda: frozen)
    body = launch(api)
    response = api.post(f"/api/v1/instances/{body['id']}/renew")
    assert response.status_code == 409
    assert "would not extend" in response.get_json()["message"]
    assert fetch(api, body["id"])["expires_at"] == body["expires_at"]


def test_renew_within_the_same_second_is_409(api, challenge, worker_id, monkeypatch):
    from ctfhost.services import instances

    frozen = utcnow()
    monkeypatch.setattr(instances, "utcnow", lambda: frozen)
    body = launch(api)
    # half a second later the renewal would add only milliseconds
    monkeypatch.setattr(instances, "utcnow", lambda: frozen + datetime.timedelta(milliseconds=500))
    assert api.post(f"/api/v1/instances/{body['id']}/renew").status_code == 409


def test_renew_extends_to_a_full_ttl(app, api, challenge, worker_id):
    body = launch(api)
    run_jobs(app, worker_id)
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=100)).where(Instance.id == body["id"]).execute()
    before = utcnow().replace(microsecond=0)
    response = api.post(f"/api/v1/instances/{body['id']}/renew")
    assert response.status_code == 200
    renewed = response.get_json()
    assert set(renewed) == {"expires_at", "seconds_added"}
    assert ISO_Z.match(renewed["expires_at"])
    assert isinstance(renewed["seconds_added"], int)
    assert TTL - 100 - 2 <= renewed["seconds_added"] <= TTL - 100 + 2
    assert (parse_iso(renewed["expires_at"]) - before).total_seconds() >= TTL
    assert fetch(api, body["id"])["expires_at"] == renewed["expires_at"]
    assert fetch(api, body["id"])["status"] == "running"


def test_renew_uses_the_global_default_for_challenges_without_ttl(api, worker_id):
    create_challenge(api, ttl_seconds=None)
    assert api.patch("/api/v1/settings", json={"default_ttl_seconds": 5000}).status_code == 200
    body = launch(api)
    assert seconds_between(body["expires_at"], body["created_at"]) in (5000, 5001)
    Instance.update(expires_at=utcnow()).where(Instance.id == body["id"]).execute()
    renewed = api.post(f"/api/v1/instances/{body['id']}/renew").get_json()
    assert 4998 <= renewed["seconds_added"] <= 5001


@pytest.mark.parametrize("status", ["destroyed", "expired", "error"])
def test_renew_an_ended_instance_is_409(api, challenge, worker_id, status):
    body = launch(api)
    Instance.update(status=status, expires_at=utcnow()).where(Instance.id == body["id"]).execute()
    response = api.post(f"/api/v1/instances/{body['id']}/renew")
    assert response.status_code == 409
    assert status in response.get_json()["message"]


def test_renew_unknown_is_404(api):
    assert api.post(f"/api/v1/instances/{uuid.uuid4()}/renew").status_code == 404


# -- expiry --------------------------------------------------------------------------------


def test_expiry_ends_due_instances_and_queues_their_removal(app, api, worker_id):
    from ctfhost.services.instances import expire_due

    create_challenge(api)
    due = launch(api, 1)
    kept = launch(api, 2)
    run_jobs(app, worker_id)
    assert routed(api, due["id"])
    Instance.update(expires_at=utcnow() - datetime.timedelta(seconds=1)).where(Instance.id == due["id"]).execute()

    assert expire_due() == [due["id"]]
    expired = fetch(api, due["id"])
    assert expired["status"] == "expired"
    assert ISO_Z.match(expired["ended_at"])
    assert not routed(api, due["id"])
    assert routed(api, kept["id"])
    assert job_status(destroy_job_id(due["id"])) is not None
    assert destroy_job_id(due["id"]) in queued_job_ids(worker_id)
    assert fetch(api, kept["id"])["status"] == "running"
    # a second sweep finds nothing more
    assert expire_due() == []

    run_jobs(app, worker_id)
    assert due["id"] in app.fake_runtime.destroyed and due["id"] not in app.fake_runtime.servers
    assert kept["id"] in app.fake_runtime.servers


def test_expiry_of_a_pending_instance(app, api, challenge, worker_id):
    from ctfhost.services.instances import expire_due

    body = launch(api)
    Instance.update(expires_at=utcnow() - datetime.timedelta(seconds=5)).where(Instance.id == body["id"]).execute()
    assert expire_due() == [body["id"]]
    run_jobs(app, worker_id)
    assert fetch(api, body["id"])["status"] == "expired"
    assert body["id"] not in app.fake_runtime.servers


def test_expired_instances_can_neither_renew_nor_restart(api, challenge, worker_id):
    from ctfhost.services.instances import expire_due

    body = launch(api)
    Instance.update(expires_at=utcnow()).where(Instance.id == body["id"]).execute()
    expire_due()
    assert api.post(f"/api/v1/instances/{body['id']}/renew").status_code == 409
    assert api.post(f"/api/v1/instances/{body['id']}/restart").status_code == 409
    assert api.get("/api/v1/instances/team/1/web-chal").status_code == 404


# -- what a player's client needs: failure reasons fit for players, renewal terms, why a launch is refused

ENGINE_DOWN = "cannot reach the Docker engine: ConnectionRefusedError(111, 'Connection refused')"


def test_a_team_token_reads_a_short_failure_reason_the_api_key_the_detail(api, team_api, worker_id, app):
    create_challenge(api, "web-fail", extra_config=f'{{"fail": "{ENGINE_DOWN}"}}')
    team = team_api(5)
    instance_id = launch(team, 5, "web-fail")["id"]
    run_jobs(app, worker_id)

    operator = api.get(f"/api/v1/instances/{instance_id}").get_json()
    assert operator["status"] == "error" and operator["error"] == ENGINE_DOWN  # unchanged for the API key
    assert operator["public_error"] == "it could not be started"
    player = team.get(f"/api/v1/instances/{instance_id}").get_json()
    assert player["status"] == "error" and player["error"] == "it could not be started"
    assert "Docker" not in str(player) and "ConnectionRefused" not in str(player)
    listed = team.get("/api/v1/instances?status=error").get_json()
    assert [(i["id"], i["error"]) for i in listed] == [(instance_id, "it could not be started")]


def test_reasons_the_core_writes_stay_readable_for_players(api, team_api, worker_id, app):
    create_challenge(api)
    team = team_api(6)
    instance_id = launch(team, 6)["id"]
    Instance.update(status="error", error="the instance did not accept connections within 30 s").where(
        Instance.id == instance_id
    ).execute()
    assert team.get(f"/api/v1/instances/{instance_id}").get_json()["error"] == "it did not become ready in time"
    assert api.get(f"/api/v1/instances/{instance_id}").get_json()["public_error"] == "it did not become ready in time"
    running = api.get("/api/v1/instances").get_json()
    assert running[0]["public_error"] == "it did not become ready in time"


def test_instances_carry_their_renewal_terms(api, team_api, worker_id):
    create_challenge(api, "web-twice", max_renewals=2)
    create_challenge(api, "web-free", ttl_seconds=None)
    assert api.patch("/api/v1/settings", json={"default_ttl_seconds": 1200}).status_code == 200
    twice = launch(api, 7, "web-twice")
    assert (twice["renewals"], twice["renewals_left"], twice["ttl_seconds"]) == (0, 2, TTL)
    free = launch(team_api(7), 7, "web-free")
    assert (free["renewals_left"], free["ttl_seconds"]) == (None, 1200)

    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=60)).where(Instance.id == twice["id"]).execute()
    assert api.post(f"/api/v1/instances/{twice['id']}/renew").status_code == 200
    listed = {i["id"]: i for i in api.get("/api/v1/instances?team_id=7").get_json()}
    assert (listed[twice["id"]]["renewals"], listed[twice["id"]]["renewals_left"]) == (1, 1)
    assert listed[free["id"]]["ttl_seconds"] == 1200


def test_a_restart_keeps_the_renewal_count_and_waits_for_the_cooldown(api, worker_id, app):
    create_challenge(api, "web-once", max_renewals=1)
    old = launch(api, 8, "web-once")
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=60)).where(Instance.id == old["id"]).execute()
    assert api.post(f"/api/v1/instances/{old['id']}/renew").status_code == 200

    restarted = api.post(f"/api/v1/instances/{old['id']}/restart")
    assert restarted.status_code == 200, restarted.get_json()
    new = restarted.get_json()
    assert new["id"] != old["id"] and (new["renewals"], new["renewals_left"]) == (1, 0)
    Instance.update(expires_at=utcnow() + datetime.timedelta(seconds=60)).where(Instance.id == new["id"]).execute()
    refused = api.post(f"/api/v1/instances/{new['id']}/renew")
    assert refused.status_code == 409 and "max_renewals" in refused.get_json()["message"]

    # the scoreboard's restart is bound by the launch cooldown like a launch
    assert api.patch("/api/v1/settings", json={"launch_cooldown_seconds": 60}).status_code == 200
    again = api.post(f"/api/v1/instances/{new['id']}/restart")
    assert again.status_code == 429 and 1 <= int(again.headers["Retry-After"]) <= 60
    assert api.get(f"/api/v1/instances/{new['id']}").get_json()["status"] == "pending"  # kept


def test_a_refused_launch_says_whether_no_worker_serves_the_runtime_or_all_are_full(api, worker_id):
    create_challenge(api, "web-full")
    create_challenge(api, "web-nobody")
    Worker.update(max_instances=1).where(Worker.id == worker_id).execute()
    launch(api, 9, "web-full")
    full = launch(api, 10, "web-full", status=503)
    assert full["reason"] == "capacity" and "at capacity" in full["message"]

    Worker.update(runtime="other").where(Worker.id == worker_id).execute()
    nobody = launch(api, 11, "web-nobody", status=503)
    assert nobody["reason"] == "no_worker" and "no active worker serves runtime 'fake'" in nobody["message"]
    assert (nobody["code"], nobody["status"]) == (503, "Service Unavailable")


def test_endpoints_list_the_main_one_first_as_endpoint_and_connection_say(api, challenge, worker_id, team_api):
    created = launch(api)
    assert created["endpoints"] == [{"name": "main", "service": "main", "port": 80, "protocol": "http",
                                     "url": created["endpoint"], "connection": None}]
    for shown in (fetch(api, created["id"]), api.get("/api/v1/instances").get_json()[0],
                  team_api(1).get(f"/api/v1/instances/{created['id']}").get_json()):
        assert shown["endpoints"] == created["endpoints"]
    create_challenge(api, "pwn-chal", port=1337, protocol="tcp")
    tcp = launch(api, challenge_id="pwn-chal")
    (main,) = tcp["endpoints"]
    assert (main["protocol"], main["port"], main["url"]) == ("tcp", 1337, tcp["endpoint"])
    assert main["connection"] == tcp["connection"] and "openssl" in main["connection"]
