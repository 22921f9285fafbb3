"""Worker registration, heartbeats and liveness."""

import datetime
import ipaddress
import re

import peewee
from flask import current_app

from ctfhost.db import database
from ctfhost.limits import MAX_WORKER_INSTANCES
from ctfhost.models import ACTIVE, Instance, Worker, utcnow
from ctfhost.plugins import UnknownRuntime, get_plugins
from ctfhost.services.errors import Conflict, Invalid, NotFound


def stale_after():
    return datetime.timedelta(seconds=current_app.config["CTFHOST_WORKER_STALE_SECONDS"])


def is_active(worker, now=None):
    return (now or utcnow()) - worker.last_heartbeat_at < stale_after()


def parse_runtimes(value):
    if isinstance(value, str):
        value = value.split(",")
    return [name.strip() for name in value if name and name.strip()]


# a worker's address goes into proxy routes: a bare host name or IP, nothing else
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def address_problem(address):
    """Why `address` is not a host name or IP address, or None when it is one."""
    if not isinstance(address, str):
        return "must be a string"
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if HOSTNAME.fullmatch(address):
        return None
    return "must be a host name or an IP address: no scheme, port, path, spaces or other characters"


def _check(address, max_instances):
    errors = {}
    problem = address_problem(address)
    if problem:
        errors["address"] = [problem]
    if not isinstance(max_instances, int) or not 0 <= max_instances <= MAX_WORKER_INSTANCES:
        errors["max_instances"] = [f"must be between 0 and {MAX_WORKER_INSTANCES}"]
    if errors:
        raise Invalid({"json": errors})


def _held_by(agent_instance):
    """The condition "this row belongs to the agent run `agent_instance`" (None: registered without one)."""
    return Worker.agent_instance.is_null() if agent_instance is None else Worker.agent_instance == agent_instance


def register_worker(worker_id, address, runtime, agent_port=0, max_instances=50, agent_instance=None, force=False):
    """Create or update a worker; registering again updates it and counts as a heartbeat.

    A worker whose heartbeat is fresh and that an agent run holds cannot be
    taken over by another one (Conflict) unless `force` (the admin's call).
    """
    runtimes = parse_runtimes(runtime)
    if not runtimes:
        raise Invalid({"json": {"runtime": ["name at least one runtime"]}})
    _check(address, max_instances)
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
        Worker.agent_instance: agent_instance,
    }
    # one conditional upsert, so two agents racing for the id cannot both win.
    # A live worker is changed only by the agent run that holds it; one that
    # no agent run holds (registered over HTTP without agent_instance) keeps
    # its address: re-registering it elsewhere would point routes away.
    may_take = (Worker.last_heartbeat_at < now - stale_after()) | (
        Worker.agent_instance.is_null() & (Worker.address == address)
    )
    if agent_instance is not None:
        may_take |= Worker.agent_instance == agent_instance
    with database.atomic():
        Worker.insert(
            id=worker_id,
            address=address,
            agent_port=agent_port,
            runtime=",".join(runtimes),
            max_instances=max_instances,
            last_heartbeat_at=now,
            registered_at=now,
            agent_instance=agent_instance,
        ).on_conflict(conflict_target=[Worker.id], update=values, where=None if force else may_take).execute()
    worker = Worker.get_by_id(worker_id)
    if (worker.agent_instance, worker.address) != (agent_instance, address):
        holder = f"held by another agent ({worker.agent_instance})" if worker.agent_instance else f"at {worker.address}"
        raise Conflict(
            f"worker {worker_id!r} is live and {holder}; stop that agent or wait until its heartbeat is stale"
            + (", or (admin only) register with force=true" if not force else "")
        )
    return worker


def heartbeat(worker_id, agent_instance=None, address=None):
    """Record that the agent run holding `worker_id` is alive; it may re-assert its address.

    The returned worker has `silent_for`: seconds since the heartbeat before
    this one (an agent that was silent long enough to be declared lost
    reconciles at once).
    """
    if address is not None:
        _check(address, 0)
    previous = get_worker(worker_id)
    now = utcnow()
    values = {Worker.last_heartbeat_at: now}
    if address is not None:
        values[Worker.address] = address
    updated = Worker.update(values).where(Worker.id == worker_id, _held_by(agent_instance)).execute()
    if not updated:
        get_worker(worker_id)  # unregistered meanwhile: 404
        raise Conflict(
            f"worker {worker_id!r} is held by another agent; register it again (a live agent's worker "
            "cannot be taken over)"
        )
    worker = Worker.get_by_id(worker_id)
    worker.silent_for = (now - previous.last_heartbeat_at).total_seconds()
    return worker


def lost_after():
    return datetime.timedelta(seconds=current_app.config["CTFHOST_WORKER_LOST_SECONDS"])


def lost_workers(now=None):
    """Workers whose heartbeat stopped longer than CTFHOST_WORKER_LOST_SECONDS ago (a query)."""
    return Worker.select(Worker.id).where(Worker.last_heartbeat_at < (now or utcnow()) - lost_after())


def get_worker(worker_id):
    worker = Worker.get_or_none(Worker.id == worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id!r} is not registered")
    return worker


def active_counts(worker_ids=None):
    """worker id -> its count of active instances (read from the (worker_id, status) index alone)."""
    query = (
        Instance.select(Instance.worker_id, peewee.fn.COUNT(peewee.SQL("*")).alias("n"))
        .where(Instance.status.in_(list(ACTIVE)))
        .group_by(Instance.worker_id)
    )
    if worker_ids is not None:
        query = query.where(Instance.worker_id.in_(list(worker_ids)))
    return {row.worker_id: row.n for row in query}


def is_registered(worker_id):
    return Worker.select().where(Worker.id == worker_id).exists()


def set_state(worker_id, state):
    """Set a worker's placement state (ready, cordoned, draining); returns it described."""
    worker = get_worker(worker_id)
    Worker.update(state=state).where(Worker.id == worker.id).execute()
    worker.state = state
    return describe(worker)


def active_instances_of(worker_id):
    return list(Instance.select().where(Instance.worker_id == worker_id, Instance.status.in_(list(ACTIVE))))


def delete_worker(worker_id):
    """Forget a worker that runs no active instance (Conflict otherwise)."""
    worker = get_worker(worker_id)
    with database.atomic():
        held = Instance.select().where(Instance.worker_id == worker.id, Instance.status.in_(list(ACTIVE))).count()
        if held:
            raise Conflict(f"worker {worker.id!r} still runs {held} active instance(s): drain it first "
                           "(POST /api/v1/workers/{id}/drain?destroy=true ends them)")
        Worker.delete().where(Worker.id == worker.id).execute()


def cluster(now=None):
    """Capacity per runtime and in total: {"runtimes": {name: figures}, "total": figures}.

    figures: active_workers (heartbeat fresh), schedulable_workers (active and ready), capacity (their
    max_instances), active_instances, free_slots (room left on schedulable workers), pending_launches. A worker
    serving several runtimes counts under each; the total counts it once.
    """
    now = now or utcnow()
    live = [w for w in Worker.select() if is_active(w, now)]
    counts = active_counts()
    by_runtime = {}
    for runtime, status, number in (Instance.select(Instance.runtime, Instance.status,
                                                    peewee.fn.COUNT(peewee.SQL("*")))
                                    .where(Instance.status.in_(list(ACTIVE)))
                                    .group_by(Instance.runtime, Instance.status).tuples()):
        by_runtime.setdefault(runtime, {})[status] = number

    def figures(workers, instances):
        schedulable = [w for w in workers if w.state == "ready"]
        return {
            "active_workers": len(workers),
            "schedulable_workers": len(schedulable),
            "capacity": sum(w.max_instances for w in schedulable),
            "active_instances": sum(instances.values()),
            "free_slots": sum(max(0, w.max_instances - counts.get(w.id, 0)) for w in schedulable),
            "pending_launches": instances.get("pending", 0),
        }

    names = sorted({name for w in live for name in w.runtimes} | set(by_runtime))
    totals = {}
    for statuses in by_runtime.values():
        for status, number in statuses.items():
            totals[status] = totals.get(status, 0) + number
    return {
        "runtimes": {name: figures([w for w in live if name in w.runtimes], by_runtime.get(name, {})) for name in names},
        "total": figures(live, totals),
    }


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
