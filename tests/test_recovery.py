"""Recovery after faults: lost workers, lost scheduled retries, a Redis restart under the agent."""

import datetime
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from ctfhost.testing import free_port, port_open, wait_until
from ctfhost.redis_client import connect, redis_connection
from ctfhost.worker import queue
from ctfhost.worker.agent import Agent
from ctfhost.app import create_app
from ctfhost.db import database
from ctfhost.models import Instance, Worker, utcnow
from ctfhost.worker import lifecycle
from ctfhost.testing import register_fake_worker, run_jobs

# agents built here sweep and take workers over: no agent subprocess another test left running may act meanwhile
pytestmark = pytest.mark.usefixtures("redis_server", "no_live_agents")


def backdate(worker_id, seconds):
    Worker.update(last_heartbeat_at=utcnow() - datetime.timedelta(seconds=seconds)).where(
        Worker.id == worker_id
    ).execute()


def make_challenge(api, challenge_id="rec-web"):
    response = api.post("/api/v1/challenges", json={"id": challenge_id, "name": "r", "runtime": "fake", "image": "i",
                                                    "port": 80})
    assert response.status_code == 201, response.get_json()


def launch(api, team, challenge_id="rec-web"):
    response = api.post("/api/v1/instances", json={"team_id": team, "challenge_id": challenge_id})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def routed_hosts(api):
    routers = api.get("/api/v1/traefik/config").get_json().get("http", {}).get("routers", {})
    return " ".join(router["rule"] for router in routers.values())


def host_of(instance):
    return instance["endpoint"].split("://", 1)[1].split(":")[0]


# -- a worker that stops heartbeating -------------------------------------------------


def test_instances_of_a_lost_worker_are_failed_once_by_a_live_agent(app, api):
    make_challenge(api)
    lost = register_fake_worker(api, prefix="lost")
    running = launch(api, "team-run")
    run_jobs(app, lost)
    pending = launch(api, "team-pend")
    assert api.get(f"/api/v1/instances/{running['id']}").get_json()["status"] == "running"
    assert host_of(running) in routed_hosts(api)

    backdate(lost, app.config["CTFHOST_WORKER_LOST_SECONDS"] - 5)
    live = register_fake_worker(api, prefix="live")
    Agent(app, worker_id=live).sweep()
    assert api.get(f"/api/v1/instances/{running['id']}").get_json()["status"] == "running"  # not lost yet

    backdate(lost, app.config["CTFHOST_WORKER_LOST_SECONDS"] + 1)
    Agent(app, worker_id=live).sweep()
    for instance in (running, pending):
        shown = api.get(f"/api/v1/instances/{instance['id']}").get_json()
        assert shown["status"] == "error"
        assert f"the worker {lost!r}" in shown["error"] and "stopped responding" in shown["error"]
    assert host_of(running) not in routed_hosts(api)
    # exactly once: a second agent (or a second sweep) finds nothing left to fail
    assert lifecycle.fail_instances_of_lost_workers() == []
    # the team can launch again at once, on the live worker
    again = launch(api, "team-run")
    assert Instance.get_by_id(again["id"]).worker_id == live


def test_a_lost_worker_that_comes_back_removes_its_leftovers(app, api):
    make_challenge(api)
    agent = Agent(app, worker_id=f"back-{time.monotonic_ns()}", address="127.0.0.1", runtimes=["fake"])
    agent.register()
    instance = launch(api, "team-back")
    run_jobs(app, agent.worker_id)
    assert instance["id"] in app.fake_runtime.servers

    backdate(agent.worker_id, app.config["CTFHOST_WORKER_LOST_SECONDS"] + 1)
    assert lifecycle.fail_instances_of_lost_workers() == [instance["id"]]
    assert instance["id"] in app.fake_runtime.servers  # nobody could reach the lost worker's runtime

    before = utcnow()
    agent.heartbeat()  # the agent wakes up: it notices it was lost and reconciles at once
    assert not agent.stopping
    assert instance["id"] not in app.fake_runtime.servers
    assert Worker.get_by_id(agent.worker_id).last_heartbeat_at >= before


def test_an_agent_whose_worker_was_taken_over_stops(app, api, admin):
    agent = Agent(app, worker_id=f"taken-{time.monotonic_ns()}", address="127.0.0.1", runtimes=["fake"])
    agent.register()
    body = {"id": agent.worker_id, "address": "127.0.0.2", "runtime": "fake", "agent_instance": "other/boot/1/x"}
    assert api.post("/api/v1/workers", json=body).status_code == 409
    assert admin.post("/api/v1/workers?force=true", json=body).status_code == 200
    agent.heartbeat()
    assert agent.stopping
    assert Worker.get_by_id(agent.worker_id).address == "127.0.0.2"


def test_a_restarted_agent_takes_over_from_its_dead_predecessor_at_once(app):
    worker_id = f"restart-{time.monotonic_ns()}"
    first = Agent(app, worker_id=worker_id, address="127.0.0.1", runtimes=["fake"])
    first.register()
    dead = subprocess.Popen(["true"])
    dead.wait()
    host, boot, _, rand = first.agent_instance.split("/")
    Worker.update(agent_instance=f"{host}/{boot}/{dead.pid}/{rand}").where(Worker.id == worker_id).execute()
    second = Agent(app, worker_id=worker_id, address="127.0.0.1", runtimes=["fake"])
    started = time.monotonic()
    second.register()
    assert time.monotonic() - started < 2
    assert Worker.get_by_id(worker_id).agent_instance == second.agent_instance


# -- retries that no scheduler moves ---------------------------------------------------


def schedule_launch_job(instance_id, worker_id, when):
    connection = redis_connection()
    job = Job.fetch(queue.launch_job_id(instance_id), connection=connection)
    Queue(queue.queue_name(worker_id), connection=connection).remove(job)
    ScheduledJobRegistry(queue.queue_name(worker_id), connection=connection).schedule(job, when)
    job.set_status(JobStatus.SCHEDULED)


def test_a_launch_retry_scheduled_long_ago_counts_as_lost(app, api, worker_id):
    make_challenge(api)
    overdue, upcoming = launch(api, "team-overdue"), launch(api, "team-upcoming")
    now = datetime.datetime.now(datetime.timezone.utc)
    schedule_launch_job(overdue["id"], worker_id, now - datetime.timedelta(minutes=5))
    schedule_launch_job(upcoming["id"], worker_id, now + datetime.timedelta(seconds=5))
    Instance.update(created_at=utcnow() - datetime.timedelta(minutes=6)).execute()

    failed = lifecycle.recover_interrupted_launches(Worker.get_by_id(worker_id), at_startup=False)
    assert failed == [overdue["id"]]
    assert api.get(f"/api/v1/instances/{overdue['id']}").get_json()["status"] == "error"
    assert api.get(f"/api/v1/instances/{upcoming['id']}").get_json()["status"] == "pending"


def test_a_launch_that_completes_while_the_sweep_looks_is_not_failed(app, api, worker_id, monkeypatch):
    # 1,000 launches queued on one worker: the sweep read the pending list, and by the time it asked for a
    # job's state the job had finished (no longer waiting): it failed a running instance and removed it
    make_challenge(api)
    instance = launch(api, "team-raced")
    Instance.update(created_at=utcnow() - datetime.timedelta(minutes=5)).execute()
    real_status = queue.job_status
    removed = []
    monkeypatch.setattr(lifecycle, "remove_resources", lambda row, worker: removed.append(row.id))

    def finished_meanwhile(job_id, connection=None):
        run_jobs(app, worker_id)  # the launch job runs to the end between the list and this question
        return real_status(job_id, connection)

    monkeypatch.setattr(queue, "job_status", finished_meanwhile)
    assert lifecycle.recover_interrupted_launches(Worker.get_by_id(worker_id), at_startup=False) == []
    row = api.get(f"/api/v1/instances/{instance['id']}").get_json()
    assert row["status"] == "running" and row["error"] is None
    assert removed == []
    assert host_of(instance) in routed_hosts(api)


def test_a_failed_launch_of_an_instance_deleted_meanwhile_still_removes_its_resources(app, api, worker_id, monkeypatch):
    make_challenge(api)
    instance = launch(api, "team-gone")
    assert api.delete(f"/api/v1/instances/{instance['id']}").status_code == 204
    removed = []
    monkeypatch.setattr(lifecycle, "remove_resources", lambda row, worker: removed.append(row.id))
    row = Instance.get_by_id(instance["id"])
    # not failed by this call (it was deleted), but what its launch may have made is removed
    assert lifecycle.fail_launch(row, Worker.get_by_id(worker_id), "boom") is False
    assert removed == [instance["id"]]
    assert Instance.get_by_id(instance["id"]).status == "destroyed"


# -- the agent's scheduler across a Redis restart --------------------------------------


class OwnRedis:
    """A redis-server of this test only, on a free port, persisting to its directory."""

    def __init__(self, directory):
        self.directory, self.port = str(directory), free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.directory,
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 10, what="redis-server")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def test_agent_scheduler_runs_retries_on_time_after_redis_restarts(app, tmp_path):
    need_redis = subprocess.run(["which", "redis-server"], capture_output=True).returncode == 0
    if not need_redis:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    redis = OwnRedis(tmp_path)
    redis.start()
    config = {key: value for key, value in app.config.items() if key.startswith("CTFHOST_")}
    config.update(CTFHOST_REDIS_URL=redis.url, CTFHOST_LOG_LEVEL="WARNING")
    agent_app = create_app(config)
    agent = Agent(agent_app, worker_id=f"sched-{time.monotonic_ns()}", address="127.0.0.1", runtimes=["fake"],
                  concurrency=1)
    connection = connect(redis.url)
    jobs = Queue(queue.queue_name(agent.worker_id), connection=connection)

    def ran_on_time(delay=2, within=12):
        job = jobs.enqueue_in(datetime.timedelta(seconds=delay), "os.getpid")
        deadline = time.monotonic() + delay + within
        while time.monotonic() < deadline:
            agent.check_workers()  # what the agent's loop does every half second
            try:
                if job.get_status() == JobStatus.FINISHED:
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        return False

    try:
        agent.start_workers()
        assert ran_on_time(within=30)  # the first start imports everything
        redis.stop()
        time.sleep(2)  # the agent's processes see Redis go away
        redis.start()
        assert ran_on_time(), "a job scheduled after the Redis restart did not run on time"
    finally:
        agent.stop()
        agent.shutdown()
        redis.stop()


def test_a_cleanly_stopped_agent_lets_the_next_one_take_over_at_once(app, api):
    worker_id = f"clean-{time.monotonic_ns()}"
    first = Agent(app, worker_id=worker_id, address="127.0.0.1", runtimes=["fake"])
    first.register()
    Worker.update(agent_instance="another-host/boot/1/abcd").where(Worker.id == worker_id).execute()
    first.agent_instance = "another-host/boot/1/abcd"  # as if it ran on another host (a redeployed pod)
    first.shutdown()
    second = Agent(app, worker_id=worker_id, address="127.0.0.1", runtimes=["fake"])
    started = time.monotonic()
    second.register()
    assert time.monotonic() - started < 2
    assert Worker.get_by_id(worker_id).agent_instance == second.agent_instance


def test_the_api_fails_a_lost_worker_instance_when_its_team_launches_again(app, api):
    make_challenge(api)
    lost = register_fake_worker(api, prefix="lost")
    first = launch(api, "team-alone")
    run_jobs(app, lost)
    backdate(lost, app.config["CTFHOST_WORKER_LOST_SECONDS"] - 5)
    assert api.post("/api/v1/instances", json={"team_id": "team-alone", "challenge_id": "rec-web"}).status_code == 409

    backdate(lost, app.config["CTFHOST_WORKER_LOST_SECONDS"] + 1)
    live = register_fake_worker(api, prefix="live")  # no agent sweeps: the API notices on relaunch
    again = launch(api, "team-alone")
    shown = api.get(f"/api/v1/instances/{first['id']}").get_json()
    assert shown["status"] == "error" and "stopped responding" in shown["error"]
    assert host_of(first) not in routed_hosts(api)
    assert Instance.get_by_id(again["id"]).worker_id == live


def test_concurrent_agents_fail_each_lost_instance_exactly_once(app, api):
    make_challenge(api)
    lost = register_fake_worker(api, prefix="lost")
    made = [launch(api, f"team-{n}")["id"] for n in range(12)]
    backdate(lost, app.config["CTFHOST_WORKER_LOST_SECONDS"] + 1)
    barrier = threading.Barrier(4)

    def agent_sweep():
        with app.app_context(), database.connection_context():
            barrier.wait()
            return lifecycle.fail_instances_of_lost_workers()

    with ThreadPoolExecutor(4) as pool:
        results = [future.result() for future in [pool.submit(agent_sweep) for _ in range(4)]]
    failed = [instance_id for result in results for instance_id in result]
    assert sorted(failed) == sorted(made)  # each one by exactly one agent
    assert {i.status for i in Instance.select().where(Instance.id.in_(made))} == {"error"}
