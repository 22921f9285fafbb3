"""Fair use: per-team instance cap, launch cooldown, renewal limit; the admin is exempt."""

import datetime

import pytest

from ctfhost.models import Instance
from ctfhost.testing import run_jobs

pytestmark = pytest.mark.usefixtures("redis_server")


@pytest.fixture
def challenges(api):
    for slug in ("web-a", "web-b", "web-c", "web-d"):
        body = {"id": slug, "name": slug, "runtime": "fake", "image": "i", "port": 80, "ttl_seconds": 600}
        assert api.post("/api/v1/challenges", json=body).status_code == 201


def shift(field, seconds):
    """Move a time column of every instance by `seconds` (the past: negative)."""
    for instance in Instance.select():
        setattr(instance, field, getattr(instance, field) + datetime.timedelta(seconds=seconds))
        instance.save()


def limits(api, **values):
    assert api.patch("/api/v1/settings", json=values).status_code == 200


def launch(caller, team, challenge):
    return caller.post("/api/v1/instances", json={"team_id": team, "challenge_id": challenge})


def test_max_instances_per_team_is_429(api, worker_id, challenges):
    limits(api, max_instances_per_team=3)
    for slug in ("web-a", "web-b", "web-c"):
        assert launch(api, 1, slug).status_code == 201
    response = launch(api, 1, "web-d")
    assert response.status_code == 429
    assert "max_instances_per_team" in response.get_json()["message"]
    assert Instance.select().count() == 3
    assert launch(api, 2, "web-d").status_code == 201  # other teams are not affected
    # stopping one makes room
    first = Instance.get(Instance.team_id == "1", Instance.challenge_id == "web-a")
    assert api.delete(f"/api/v1/instances/{first.id}").status_code == 204
    assert launch(api, 1, "web-d").status_code == 201


def test_cooldown_is_429_with_retry_after(api, worker_id, challenges):
    limits(api, launch_cooldown_seconds=10)
    created = launch(api, 1, "web-a").get_json()
    api.delete(f"/api/v1/instances/{created['id']}")
    response = launch(api, 1, "web-a")
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 10
    assert "launch_cooldown_seconds" in response.get_json()["message"]
    assert launch(api, 1, "web-b").status_code == 201  # per challenge
    assert launch(api, 2, "web-a").status_code == 201  # per team


def test_cooldown_applies_to_restart(api, app, worker_id, challenges):
    limits(api, launch_cooldown_seconds=10)
    created = launch(api, 1, "web-a").get_json()
    run_jobs(app, worker_id)
    response = api.post(f"/api/v1/instances/{created['id']}/restart")
    assert response.status_code == 429
    assert response.headers["Retry-After"]
    assert api.get(f"/api/v1/instances/{created['id']}").get_json()["status"] == "running"


def test_cooldown_counts_from_the_last_launch(api, worker_id, challenges):
    limits(api, launch_cooldown_seconds=10)
    created = launch(api, 1, "web-a").get_json()
    api.delete(f"/api/v1/instances/{created['id']}")
    # pretend the launch was 11 s ago
    shift("created_at", -11)
    assert launch(api, 1, "web-a").status_code == 201


def test_restart_does_not_count_against_the_team_cap(api, app, worker_id, challenges):
    limits(api, max_instances_per_team=1)
    created = launch(api, 1, "web-a").get_json()
    run_jobs(app, worker_id)
    assert api.post(f"/api/v1/instances/{created['id']}/restart").status_code == 200


def test_max_renewals_is_409_once_used_up(api, worker_id, challenges):
    api.patch("/api/v1/challenges/web-a", json={"max_renewals": 1})
    created = launch(api, 1, "web-a").get_json()
    # make room to renew: pretend it has been running for a minute
    shift("expires_at", -60)
    first = api.post(f"/api/v1/instances/{created['id']}/renew")
    assert first.status_code == 200
    assert api.get(f"/api/v1/instances/{created['id']}").get_json()["renewals"] == 1
    shift("expires_at", -60)
    second = api.post(f"/api/v1/instances/{created['id']}/renew")
    assert second.status_code == 409
    assert "max_renewals" in second.get_json()["message"]


def test_team_tokens_are_limited_too(api, team_api, worker_id, challenges):
    limits(api, max_instances_per_team=1)
    team = team_api(4)
    assert launch(team, 4, "web-a").status_code == 201
    assert launch(team, 4, "web-b").status_code == 429


def test_the_admin_is_exempt(api, admin, app, worker_id, challenges):
    limits(api, max_instances_per_team=1, launch_cooldown_seconds=60)
    api.patch("/api/v1/challenges/web-a", json={"max_renewals": 0})
    created = launch(admin, 1, "web-a").get_json()
    assert launch(admin, 1, "web-b").status_code == 201
    run_jobs(app, worker_id)
    shift("expires_at", -60)
    assert admin.post(f"/api/v1/instances/{created['id']}/renew").status_code == 200
    assert admin.post(f"/api/v1/instances/{created['id']}/restart").status_code == 200
