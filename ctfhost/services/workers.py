"""Worker registration, heartbeats and liveness."""

import datetime

import peewee
from flask import current_app

from ctfhost.db import database
from ctfhost.models import ACTIVE, Instance, Worker, utcnow
from ctfhost.plugins import UnknownRuntime, get_plugins
from ctfhost.services.errors import Invalid, NotFound


def stale_after():
    return datetime.timedelta(seconds=current_app.config["CTFHOST_WORKER_STALE_SECONDS"])


def is_active(worker, now=None):
    return (now or utcnow()) - worker.last_heartbeat_at < stale_after()


def parse_runtimes(value):
    if isinstance(value, str):
        value = value.split(",")
    return [name.strip() for name in value if name and name.strip()]


def register_worker(worker_id, address, runtime, agent_port=0, max_instances=50):
    """Create or update a worker; registering again updates it and counts as a heartbeat."""
    runtimes = parse_runtimes(runtime)
    if not runtimes:
        raise Invalid({"json": {"runtime": ["name at least one runtime"]}})
    plugins = get_plugins()
    for name in runtimes:
        try:
            plugins.require_runtime(name)
        except UnknownRuntime as exc:
            raise Invalid({"json": {"runtime": [str(exc)]}}) from None
    now = utcnow()
    values = {
        Worker.address: address,
        Worker.agent_port: agent_port,
        Worker.runtime: ",".join(runtimes),
        Worker.max_instances: max_instances,
        Worker.last_heartbeat_at: now,
    }
    with database.atomic():
        Worker.insert(
            id=worker_id,
            address=address,
            agent_port=agent_port,
            runtime=",".join(runtimes),
            max_instances=max_instances,
            last_heartbeat_at=now,
            registered_at=now,
        ).on_conflict(conflict_target=[Worker.id], update=values).execute()
    return Worker.get_by_id(worker_id)


def heartbeat(worker_id):
    updated = Worker.update(last_heartbeat_at=utcnow()).where(Worker.id == worker_id).execute()
    if not updated:
        raise NotFound(f"worker {worker_id!r} is not registered")
    return Worker.get_by_id(worker_id)


def get_worker(worker_id):
    worker = Worker.get_or_none(Worker.id == worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id!r} is not registered")
    return worker


def active_counts(worker_ids=None):
    query = (
        Instance.select(Instance.worker_id, peewee.fn.COUNT(Instance.id).alias("n"))
        .where(Instance.status.in_(list(ACTIVE)))
        .group_by(Instance.worker_id)
    )
    if worker_ids is not None:
        query = query.where(Instance.worker_id.in_(list(worker_ids)))
    return {row.worker_id: row.n for row in query}


def is_registered(worker_id):
    return Worker.select().where(Worker.id == worker_id).exists()


def describe(worker, now=None, counts=None):
    """Annotate `worker` with its liveness `status` and its count of `active_instances`."""
    counts = active_counts([worker.id]) if counts is None else counts
    worker.status = "active" if is_active(worker, now) else "inactive"
    worker.active_instances = counts.get(worker.id, 0)
    return worker


def describe_workers():
    """Every worker with its liveness status and count of active instances."""
    now, counts = utcnow(), active_counts()
    return [describe(worker, now, counts) for worker in Worker.select().order_by(Worker.id)]
