"""The expiry sweep across a fleet of agents: one sweep at a time, each due instance ended once, no stall without Redis."""

import datetime
import logging
import threading
import time

import pytest

from ctfhost.app import create_app
from ctfhost.models import Instance, utcnow
from ctfhost.redis_client import redis_connection
from ctfhost.services import instances
from ctfhost.testing import free_port, register_fake_worker, run_jobs, wait_until
from ctfhost.worker import agent as agent_module
from ctfhost.worker.agent import SWEEP_LOCK, SWEEP_LOCK_SECONDS, Agent
from ctfhost.worker.queue import destroy_job_id, job_status

# no agent started by another test may sweep (or hold the sweep lock) meanwhile
pytestmark = pytest.mark.usefixtures("redis_server", "no_live_agents")


def launch_many(api, app, worker, count, challenge_id="sweep-web"):
    response = api.post("/api/v1/challenges", json={"id": challenge_id, "name": "s", "runtime": "fake", "image": "i",
                                                    "port": 80})
    assert response.status_code == 201, response.get_json()
    made = []
    for team in range(count):
        response = api.post("/api/v1/instances", json={"team_id": f"team-{team}", "challenge_id": challenge_id})
        assert response.status_code == 201, response.get_json()
        made.append(response.get_json()["id"])
    run_jobs(app, worker)
    return made


def make_due(instance_ids, seconds_ago=5):
    Instance.update(expires_at=utcnow() - datetime.timedelta(seconds=seconds_ago)).where(
        Instance.id.in_(instance_ids)
    ).execute()


def statuses(api, instance_ids):
    return {instance_id: api.get(f"/api/v1/instances/{instance_id}").get_json()["status"] for instance_id in instance_ids}


def test_two_agents_sweeping_at_once_run_one_sweep_and_expire_each_instance_once(app, api, monkeypatch):
    worker = register_fake_worker(api)
    made = launch_many(api, app, worker, 14)
    due, kept = made[:10], made[10:]
    make_due(due)
    sweeps, running, most_at_once = [], [0], [0]
    real_expire_due = agent_module.expire_due

    def watched_expire_due(**kwargs):
        running[0] += 1
        most_at_once[0] = max(most_at_once[0], running[0])
        try:
            time.sleep(0.3)  # long enough for the other agent to try meanwhile
            ended = real_expire_due(**kwargs)
            sweeps.append(ended)
            return ended
        finally:
            running[0] -= 1

    monkeypatch.setattr(agent_module, "expire_due", watched_expire_due)
    agents = [Agent(app, worker_id=f"sweeper-{n}-{time.monotonic_ns()}") for n in range(2)]
    barrier = threading.Barrier(2)
    results = [None, None]

    def sweep(n):
        barrier.wait()
        results[n] = agents[n].sweep()

    threads = [threading.Thread(target=sweep, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(results) == [False, True]  # one swept, the other skipped
    assert most_at_once[0] == 1 and len(sweeps) == 1
    assert sorted(sweeps[0]) == sorted(due)  # each due instance ended by that one sweep
    assert set(statuses(api, due).values()) == {"expired"}
    assert set(statuses(api, kept).values()) == {"running"}
    assert all(job_status(destroy_job_id(instance_id)) is not None for instance_id in due)
    run_jobs(app, worker)
    assert not set(due) & set(app.fake_runtime.servers)
    assert set(kept) <= set(app.fake_runtime.servers)
    # the lock was released: the next sweep runs, and finds nothing left
    assert agents[1].sweep() is True and sweeps[-1] == []


def test_an_agent_takes_over_the_sweep_when_the_lock_of_a_dead_holder_lapses(app, api):
    worker = register_fake_worker(api)
    [instance_id] = launch_many(api, app, worker, 1)
    make_due([instance_id])
    holder, other = (Agent(app, worker_id=f"sweeper-{n}-{time.monotonic_ns()}") for n in range(2))
    assert holder._take_sweep_lock()  # ... and the holder dies without releasing it
    connection = redis_connection(app)
    assert 0 < connection.pttl(SWEEP_LOCK) <= SWEEP_LOCK_SECONDS * 1000  # a dead holder's lock lapses
    connection.pexpire(SWEEP_LOCK, 1500)  # as if the holder died SWEEP_LOCK_SECONDS - 1.5 s ago

    assert other.sweep() is False
    assert statuses(api, [instance_id])[instance_id] == "running"
    started = time.monotonic()
    wait_until(other.sweep, timeout=10, interval=0.2, what="a sweep after the dead holder's lock lapsed")
    assert time.monotonic() - started >= 1.0
    assert statuses(api, [instance_id])[instance_id] == "expired"
    assert job_status(destroy_job_id(instance_id)) is not None


def test_expiry_goes_on_without_the_lock_when_redis_is_down(app, api, caplog):
    worker = register_fake_worker(api)
    [instance_id] = launch_many(api, app, worker, 1)
    make_due([instance_id])
    config = {key: value for key, value in app.config.items() if key.startswith("CTFHOST_")}
    config.update(CTFHOST_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    agent = Agent(create_app(config), worker_id=f"no-redis-{time.monotonic_ns()}")

    with caplog.at_level(logging.WARNING, logger="ctfhost.agent"):
        assert agent.sweep() is True
    assert statuses(api, [instance_id])[instance_id] == "expired"
    assert "Redis is unreachable" in caplog.text and "sweeping without the fleet-wide lock" in caplog.text


def test_expiry_takes_due_instances_in_batches_until_none_is_left_or_the_deadline(app, api, worker_id):
    made = launch_many(api, app, worker_id, 12)
    due = made[:11]
    make_due(due)

    first = instances.expire_due(batch=4, deadline=time.monotonic())  # past its deadline: one batch only
    assert len(first) == 4
    rest = instances.expire_due(batch=4)
    assert sorted(first + rest) == sorted(due)
    assert set(statuses(api, due).values()) == {"expired"}
    assert statuses(api, made[11:]) == {made[11]: "running"}
    assert instances.expire_due(batch=4) == []
