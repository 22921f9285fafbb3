"""The SDK against a live ctfhost: launch and wait, read, list, renew, restart, open, stop, flags, typed errors."""

import datetime
import time
import warnings

import pytest

from ctfhost_client import (
    AccessLink, Conflict, CtfhostVersionWarning, Forbidden, Instance, InstanceFailed, InstanceTimeout, Invalid, Meta,
    NotFound, Renewal, Unauthorized, Verdict,
)
from sdk_support import TEAM, create_challenge, mint_token, random_uuid

pytestmark = pytest.mark.usefixtures("redis_server")


def test_start_waits_until_running_then_get_list_renew_open_and_stop(scenario, drive):
    client = scenario.team_client()
    seen = []
    instance = drive(scenario.worker_id, client.instances.start, scenario.challenge_id, timeout=30,
                     on_progress=seen.append, use_events=False)
    assert isinstance(instance, Instance)
    assert instance.status == "running"
    assert str(instance.team_id) == TEAM and instance.challenge_id == scenario.challenge_id
    assert instance.endpoint.startswith("http://") and instance.endpoint.endswith(".sdk-web.localhost")
    assert [e.name for e in instance.endpoints] == ["main"]
    assert isinstance(instance.expires_at, datetime.datetime) and instance.expires_at.tzinfo is not None
    assert instance.flag is None  # a team token never sees flags
    # polling: each snapshot seen (the launch's own answer first: running already when ?wait= covered it all)
    assert seen and all(isinstance(item, Instance) for item in seen) and seen[-1].status == "running"

    assert client.instances.get(instance.id) == instance
    listed = client.instances.list()
    assert [i.id for i in listed] == [instance.id] and listed.total == 1
    assert client.instances.find(scenario.challenge_id).id == instance.id

    time.sleep(1.1)  # a renew must extend the expiry: now + TTL must pass the launch's own by a second
    renewal = client.instances.renew(instance.id)
    assert isinstance(renewal, Renewal) and renewal.expires_at > instance.expires_at and renewal.seconds_added >= 1

    link = client.instances.access_link(instance.id)
    assert isinstance(link, AccessLink)
    assert link.url.startswith(instance.endpoint + "/.ctfhost/access?") and link.expires_in > 0

    client.instances.stop(instance.id)
    assert client.instances.get(instance.id).status == "destroyed"
    client.instances.stop(instance.id)  # stopping an ended instance is no error
    assert client.instances.find(scenario.challenge_id) is None


def test_start_without_wait_then_wait_and_restart(scenario, drive):
    client = scenario.team_client()
    pending = client.instances.start(scenario.challenge_id, wait=False)
    assert pending.status == "pending"
    running = drive(scenario.worker_id, client.instances.wait, pending.id, timeout=30)
    assert running.id == pending.id and running.status == "running"

    fresh = client.instances.restart(running.id)
    assert fresh.id != running.id and fresh.status == "pending" and fresh.endpoint != running.endpoint
    assert client.instances.get(running.id).status == "destroyed"
    assert drive(scenario.worker_id, client.instances.wait, fresh.id, timeout=30).status == "running"


def test_start_times_out_with_the_pending_instance(scenario):
    client = scenario.team_client()
    started = time.monotonic()
    with pytest.raises(InstanceTimeout) as caught:
        client.instances.start(scenario.challenge_id, timeout=1.5)  # no worker runs its job
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.instance.status == "pending"
    assert time.monotonic() - started < 10


def test_a_failed_launch_raises_instance_failed_with_its_error(scenario, api, drive):
    create_challenge(api, "sdk-broken", extra_config={"fail": "the image is broken"})
    client = scenario.key_client()
    with pytest.raises(InstanceFailed) as caught:
        drive(scenario.worker_id, client.instances.start, "sdk-broken", 42, timeout=30)
    failed = caught.value
    assert failed.instance.status == "error"
    assert "the image is broken" in failed.error
    assert failed.instance.challenge_id == "sdk-broken"


def test_submit_and_verify_a_per_instance_flag(scenario, drive):
    team = scenario.team_client()
    operator = scenario.key_client()
    instance = drive(scenario.worker_id, team.instances.start, scenario.challenge_id, timeout=30)
    flag = operator.instances.get(instance.id).flag
    assert flag.startswith("flag{")

    wrong = team.submissions.verify(scenario.challenge_id, "flag{nope}")
    assert isinstance(wrong, Verdict) and wrong.correct is False and not wrong
    right = team.submissions.verify(scenario.challenge_id, flag)
    assert right.correct is True and right.instance_id == instance.id
    submitted = team.submissions.submit(scenario.challenge_id, flag)
    assert submitted.correct is True
    # the API key names the team
    assert operator.submissions.verify(scenario.challenge_id, flag, team_id=TEAM).correct is True


def test_typed_errors(scenario, admin):
    client = scenario.team_client()
    with pytest.raises(NotFound) as caught:
        client.instances.get(random_uuid())
    assert caught.value.status == 404 and "not found" in caught.value.message
    with pytest.raises(NotFound):
        client.challenges.get("no-such-challenge")

    client.instances.start(scenario.challenge_id, wait=False)
    with pytest.raises(Conflict) as caught:  # a first try answered 409 is a real conflict, not a lost launch
        client.instances.start(scenario.challenge_id, wait=False)
    assert "already has an active instance" in caught.value.message

    read_only = type(client)(scenario.url, mint_token(admin, scopes=["instances:read"]))
    with pytest.raises(Forbidden) as caught:
        read_only.instances.start(scenario.challenge_id, wait=False)
    assert caught.value.status == 403 and caught.value.scope == "instances:write"
    assert read_only.instances.list().total == 1

    operator = scenario.admin_client()
    with pytest.raises(Invalid) as caught:
        operator.challenges.create(id="bad-port", name="x", runtime="fake", image="x", port=70000)
    assert caught.value.status == 422 and "port" in caught.value.field_errors

    with pytest.raises(Unauthorized) as caught:
        type(client)(scenario.url, "cth_not-a-real-token").challenges.list()
    assert caught.value.status == 401


def test_meta_names_the_team_and_its_scopes(scenario):
    meta = scenario.team_client().meta()
    assert isinstance(meta, Meta)
    assert meta.api_version.split(".")[0] == "1"
    assert "fake" in meta.runtimes
    assert meta.caller.kind == "team" and meta.caller.team_id == TEAM and meta.caller.token_id
    assert set(meta.caller.scopes) == {"instances:read", "instances:write", "submissions", "events"}


def test_no_version_warning_against_this_server(scenario):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CtfhostVersionWarning)
        scenario.team_client().challenges.list()


def test_challenges_list_and_get(scenario):
    challenges = scenario.team_client().challenges.list()
    assert [c.id for c in challenges] == [scenario.challenge_id]
    public = challenges[0]
    assert public.image is None and public.flag_template is None  # what a team token is not shown
    full = scenario.key_client().challenges.get(scenario.challenge_id)
    assert full.image == "fake/web" and full.flag_template and full.ttl_seconds == 900
