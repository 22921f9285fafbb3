"""Per-instance flags, grading, and flag-sharing detection."""

import datetime
import re

import pytest

from ctfhost.models import FlagSharingEvent, Instance, utcnow
from ctfhost.services import flags
from ctfhost.testing import run_jobs

pytestmark = pytest.mark.usefixtures("redis_server")

FLAG = re.compile(r"^flag\{[0-9a-f]{16}\}$")


@pytest.fixture
def challenge(api):
    body = {"id": "web-flags", "name": "Flags", "runtime": "fake", "image": "i", "port": 80,
            "flag_template": "flag{{{hex:16}}}"}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def launch(caller, team):
    response = caller.post("/api/v1/instances", json={"team_id": team, "challenge_id": "web-flags"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def submit(caller, team, flag, path="/api/v1/submissions", challenge="web-flags"):
    return caller.post(path, json={"team_id": team, "challenge_id": challenge, "flag": flag})


def test_templates_draw_fresh_parts():
    drawn = {flags.draw("flag{{{hex:16}}}") for _ in range(50)}
    assert len(drawn) == 50 and all(FLAG.match(f) for f in drawn)
    assert re.match(r"^CTF\{[0-9a-f-]{36}\}-\d{4}[A-Z]{2}$", flags.draw("CTF{{{uuid}}}-{digits:4}{upper:2}"))


@pytest.mark.parametrize(
    "template, words",
    [("flag{static}", "unknown part"), ("flag{{{hex}}}", "needs a length"), ("flag{{x}}", "random part"),
     ("flag{hex:999}", "needs a length"), ("a{", "lone")],
)
def test_bad_templates_are_422(api, template, words):
    body = {"id": "web-bad", "name": "b", "runtime": "fake", "image": "i", "port": 80, "flag_template": template}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422
    (message,) = response.get_json()["errors"]["json"]["flag_template"]
    assert words in message


def test_each_instance_gets_its_own_flag(api, app, challenge, worker_id):
    assert challenge["flag_template"] == "flag{{{hex:16}}}"
    red, blue = launch(api, "red"), launch(api, "blue")
    assert FLAG.match(red["flag"]) and FLAG.match(blue["flag"]) and red["flag"] != blue["flag"]
    run_jobs(app, worker_id)
    restarted = api.post(f"/api/v1/instances/{red['id']}/restart").get_json()
    assert FLAG.match(restarted["flag"]) and restarted["flag"] != red["flag"]


def test_instances_without_template_have_no_flag(api, worker_id):
    api.post("/api/v1/challenges", json={"id": "web-static", "name": "s", "runtime": "fake", "image": "i", "port": 80})
    created = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-static"}).get_json()
    assert created["flag"] is None


def test_team_tokens_never_see_flags(api, team_api, app, challenge, worker_id):
    team = team_api("red")
    created = team.post("/api/v1/instances", json={"team_id": "red", "challenge_id": "web-flags"})
    assert created.status_code == 201
    assert "flag" not in created.get_json()
    run_jobs(app, worker_id)
    for path in (f"/api/v1/instances/{created.get_json()['id']}", "/api/v1/instances/team/red/web-flags"):
        body = team.get(path).get_json()
        assert "flag" not in body and body["id"] == created.get_json()["id"]
    assert all("flag" not in i for i in team.get("/api/v1/instances").get_json())
    restarted = team.post(f"/api/v1/instances/{created.get_json()['id']}/restart")
    assert restarted.status_code == 200 and "flag" not in restarted.get_json()
    # the scoreboard's key and the admin do see it
    assert FLAG.match(api.get(f"/api/v1/instances/{restarted.get_json()['id']}").get_json()["flag"])


def test_correct_flag_of_the_teams_own_instance(api, challenge, worker_id):
    red = launch(api, "red")
    response = submit(api, "red", red["flag"])
    assert response.status_code == 200
    assert response.get_json() == {"correct": True, "message": "correct", "instance_id": red["id"], "shared": False}
    assert submit(api, "red", f"  {red['flag']}\n").get_json()["correct"] is True


def test_wrong_flag_is_incorrect(api, challenge, worker_id):
    launch(api, "red")
    verdict = submit(api, "red", "flag{0000000000000000}").get_json()
    assert verdict == {"correct": False, "message": "incorrect", "instance_id": None, "shared": False}
    assert FlagSharingEvent.select().count() == 0


def test_another_teams_flag_is_incorrect_and_recorded(api, admin, challenge, worker_id):
    red, blue = launch(api, "red"), launch(api, "blue")
    verdict = submit(api, "blue", red["flag"]).get_json()
    assert verdict["correct"] is False and verdict["shared"] is True
    (event,) = FlagSharingEvent.select()
    assert (event.challenge_id, event.submitting_team_id, event.owning_team_id, event.instance_id) == (
        "web-flags", "blue", "red", red["id"])
    listing = admin.get("/api/v1/flag-sharing")
    assert listing.status_code == 200 and listing.headers["X-Total-Count"] == "1"
    (shown,) = listing.get_json()
    assert shown["submitting_team_id"] == "blue" and shown["owning_team_id"] == "red"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", shown["at"])
    assert api.get("/api/v1/flag-sharing?team_id=red").get_json()[0]["id"] == shown["id"]
    assert api.get("/api/v1/flag-sharing?challenge_id=other").get_json() == []
    assert blue  # blue's own flag stays correct
    assert submit(api, "blue", blue["flag"]).get_json()["correct"] is True


def test_verify_records_nothing(api, challenge, worker_id):
    red, _ = launch(api, "red"), launch(api, "blue")
    verdict = submit(api, "blue", red["flag"], path="/api/v1/submissions/verify").get_json()
    assert verdict["correct"] is False and verdict["shared"] is True
    assert FlagSharingEvent.select().count() == 0
    assert submit(api, "red", red["flag"], path="/api/v1/submissions/verify").get_json()["correct"] is True


def test_grace_period_after_the_instance_ends(api, app, challenge, worker_id):
    red = launch(api, "red")
    api.delete(f"/api/v1/instances/{red['id']}")
    assert submit(api, "red", red["flag"]).get_json()["correct"] is True  # just ended
    Instance.update(ended_at=utcnow() - datetime.timedelta(seconds=601)).where(Instance.id == red["id"]).execute()
    verdict = submit(api, "red", red["flag"]).get_json()
    assert verdict["correct"] is False and "ended too long ago" in verdict["message"]


def test_submission_errors(api, team_api, challenge, worker_id):
    api.post("/api/v1/challenges", json={"id": "web-static", "name": "s", "runtime": "fake", "image": "i", "port": 80})
    assert submit(api, 1, "x", challenge="web-nope").status_code == 404
    conflict = submit(api, 1, "x", challenge="web-static")
    assert conflict.status_code == 409 and "flag_template" in conflict.get_json()["message"]
    bad = api.post("/api/v1/submissions", json={"team_id": 1, "challenge_id": "web-flags"})
    assert bad.status_code == 422 and "flag" in bad.get_json()["errors"]["json"]
    team = team_api("red")
    assert submit(team, "blue", "x").status_code == 403
    assert submit(team, "red", "x").status_code == 200
    assert team.get("/api/v1/flag-sharing").status_code == 403
