"""AdminClient against the live server: challenges, workers, settings, tokens, audit, cluster, any team's instances."""

import pytest

from ctfhost_client import (
    AuditEvent, Challenge, ChallengeStatus, Client, Cluster, Conflict, Forbidden, NewToken, NotFound, Operation, Settings,
    Token, Unauthorized, Worker,
)
from sdk_support import mint_token

pytestmark = pytest.mark.usefixtures("redis_server")


def test_challenge_lifecycle(scenario):
    admin = scenario.admin_client()
    created = admin.challenges.create({"id": "sdk-admin", "name": "Admin", "runtime": "fake", "image": "fake/a",
                                       "port": 80}, status="draft", metadata={"author": "sdk"})
    assert isinstance(created, Challenge) and created.status == "draft" and created.metadata == {"author": "sdk"}
    assert admin.challenges.update("sdk-admin", name="Renamed").name == "Renamed"
    assert admin.challenges.activate("sdk-admin").status == "active"
    assert admin.challenges.deactivate("sdk-admin").status == "inactive"
    assert {c.id for c in admin.challenges.list(status="inactive")} == {"sdk-admin"}
    assert isinstance(admin.challenges.pull("sdk-admin"), Operation)
    status = admin.challenges.status("sdk-admin")
    assert isinstance(status, ChallengeStatus) and status.active_instances == 0
    assert admin.challenges.restart("sdk-admin").restarted == 0
    admin.challenges.delete("sdk-admin")
    with pytest.raises(NotFound):
        admin.challenges.get("sdk-admin")


def test_workers_cordon_drain_delete(scenario, api):
    admin = scenario.admin_client()
    workers = admin.workers.list()
    assert scenario.worker_id in {w.id for w in workers} and all(isinstance(w, Worker) for w in workers)
    assert admin.workers.get(scenario.worker_id).state == "ready"
    assert admin.workers.cordon(scenario.worker_id).state == "cordoned"
    assert admin.workers.uncordon(scenario.worker_id).state == "ready"
    instance = admin.instances.start(scenario.challenge_id, "11", wait=False)
    with pytest.raises(Conflict):
        admin.workers.delete(scenario.worker_id)  # it runs an active instance
    assert admin.workers.drain(scenario.worker_id, destroy=True).state == "draining"
    assert admin.instances.get(instance.id).status == "destroyed"
    admin.workers.delete(scenario.worker_id)
    with pytest.raises(NotFound):
        admin.workers.get(scenario.worker_id)


def test_settings_cluster_audit_and_instances_of_any_team(scenario):
    admin = scenario.admin_client()
    settings = admin.settings.get()
    assert isinstance(settings, Settings)
    assert admin.settings.update(default_ttl_seconds=1234).default_ttl_seconds == 1234
    cluster = admin.cluster.get()
    assert isinstance(cluster, Cluster) and cluster.total.schedulable_workers >= 1
    assert cluster.runtimes["fake"].capacity >= 1
    for team in ("1", "2"):
        admin.instances.start(scenario.challenge_id, team, wait=False)
    listed = admin.instances.list(challenge_id=scenario.challenge_id)
    assert {str(i.team_id) for i in listed} == {"1", "2"} and listed.total == 2
    assert all(i.flag for i in listed)
    audit = admin.audit.list(method="PATCH")
    assert audit and isinstance(audit[0], AuditEvent) and audit[0].action.startswith("PATCH /api/v1/settings")
    assert audit.total >= 1


def test_tokens_mint_list_revoke(scenario):
    admin = scenario.admin_client()
    minted = admin.tokens.create("harness", "21", scopes=["instances:read", "events"])
    assert isinstance(minted, NewToken) and minted.token.startswith("cth_")
    assert sorted(minted.scopes) == ["events", "instances:read"]
    listed = admin.tokens.list(team_id="21")
    assert [t.id for t in listed] == [minted.id] and isinstance(listed[0], Token)
    team = Client(scenario.url, minted.token)
    assert set(team.meta().caller.scopes) == {"instances:read", "events"}
    with pytest.raises(Forbidden) as caught:
        team.submissions.verify(scenario.challenge_id, "flag{x}")
    assert caught.value.scope == "submissions"
    admin.tokens.revoke(minted.id)
    with pytest.raises(Unauthorized):
        team.instances.list()


def test_a_team_token_with_the_tokens_scope_mints_for_its_own_team(scenario, admin):
    parent = Client(scenario.url, mint_token(admin, scopes=["tokens", "instances:read"]))
    child = parent.tokens.create("child", scopes=["instances:read"])
    assert str(child.team_id) == scenario.team_id and child.scopes == ["instances:read"]
    with pytest.raises(Forbidden) as caught:
        parent.tokens.create("greedy", scopes=["instances:write"])
    assert caught.value.scope == "instances:write"
    assert child.id in {t.id for t in parent.tokens.list()}
