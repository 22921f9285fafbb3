"""What worker jobs do: launch an instance, destroy it, reconcile a worker."""

import datetime
import logging
import socket
import time

from ctfhost import metrics
from ctfhost.worker import queue
from ctfhost.hooktypes import LaunchError, TransientError
from ctfhost.db import database
from ctfhost.timeutil import to_iso, to_iso_ms
from ctfhost.models import ACTIVE, Challenge, Instance, InstanceEndpoint, Worker, utcnow
from ctfhost.plugins import get_plugins
from ctfhost.services import events, pulls, workers
from ctfhost.services.instances import end_instance, lost_worker_reason, readiness_timeout, renewal_terms

log = logging.getLogger(__name__)

PROBE_INTERVAL = 0.02
INSPECT_INTERVAL = 0.25


def probe(backend, timeout=1.0):
    """True when the backend answers: it sends bytes, or holds the connection open.

    A published Docker port can accept a connection and close it at once
    while the process inside is not listening yet, so an accepted connection
    alone proves nothing. HTTP backends get a HEAD request and must answer;
    others must keep the connection open for a moment.
    """
    host, _, port = backend.address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            if backend.scheme == "http":
                conn.sendall(b"HEAD / HTTP/1.0\r\nHost: ctfhost-readiness\r\n\r\n")
                conn.settimeout(timeout)
                return bool(conn.recv(1))
            conn.settimeout(0.1)
            try:
                return bool(conn.recv(1))  # closed at once (b""): nothing listens behind the port
            except socket.timeout:
                return True
    except OSError:
        return False


def wait_ready(instance, worker, backend, timeout, endpoint=None, deadline=None):
    """Block until `backend` answers; fail early when the runtime says it died.

    `endpoint`: the name of the endpoint beside main that `backend` serves
    (it is named in the failure); `deadline` (time.monotonic()): the one the
    whole readiness shares, else now + `timeout`.
    """
    plugins = get_plugins()
    deadline = time.monotonic() + timeout if deadline is None else deadline
    next_inspect = time.monotonic() + INSPECT_INTERVAL
    while True:
        if probe(backend):
            return
        now = time.monotonic()
        if now >= next_inspect:
            state = plugins.inspect(instance, worker)
            if state is not None and not state.alive:
                raise LaunchError(state.reason or "the instance stopped while starting")
            next_inspect = now + INSPECT_INTERVAL
        if now >= deadline:
            state = plugins.inspect(instance, worker)
            if state is not None and not state.alive:
                raise LaunchError(state.reason or "the instance stopped while starting")
            where = f" on endpoint {endpoint!r}" if endpoint else ""
            raise LaunchError(f"the instance did not accept connections{where} within {timeout:g} s")
        time.sleep(PROBE_INTERVAL)


def _endpoint_backends(instance, started):
    """[(InstanceEndpoint, Backend)] of the instance's endpoints beside main, from what its runtime returned."""
    endpoints = list(InstanceEndpoint.select().where(InstanceEndpoint.instance_id == instance.id)
                     .order_by(InstanceEndpoint.position))
    missing = [endpoint.name for endpoint in endpoints if endpoint.name not in started.endpoints]
    if missing:
        raise LaunchError(f"the {instance.runtime} runtime gave no address for endpoint(s) "
                          f"{', '.join(map(repr, missing))}")
    return [(endpoint, started.endpoints[endpoint.name]) for endpoint in endpoints]


def _record_backend(instance, backend, endpoints=()):
    """Record where the instance and each of its `endpoints` ([(InstanceEndpoint, Backend)]) listen, at once."""
    with database.atomic():
        changed = (
            Instance.update(backend=backend.url)
            .where(Instance.id == instance.id, Instance.status == "pending")
            .execute()
        )
        for endpoint, endpoint_backend in endpoints:
            InstanceEndpoint.update(backend=endpoint_backend.url).where(InstanceEndpoint.id == endpoint.id).execute()
    instance.backend = backend.url
    return bool(changed)


def _still_pending(instance_id):
    return Instance.select().where(Instance.id == instance_id, Instance.status == "pending").exists()


def remove_resources(instance, worker):
    """Destroy whatever the runtime made for `instance`; never raises."""
    try:
        get_plugins().destroy(instance, worker)
    except Exception:
        log.exception("could not remove resources of instance %s", instance.id)


def fail_launch(instance, worker, reason):
    """End a pending instance `error` and remove what its launch made; True when this call failed it.

    Only a pending instance fails: a sweep that read the instance as pending
    (recover_interrupted_launches) may get here after its launch job marked
    it running, and a running instance is left alone. An instance already
    ended (deleted while it started) still has its resources removed: its
    destroy job may have run before its container existed.
    """
    failed = end_instance(instance, "error", reason, only_from=("pending",))
    if failed:
        log.warning("launch of instance %s failed: %s", instance.id, reason)
        metrics.record_launch("error")
    elif Instance.select().where(Instance.id == instance.id, Instance.status == "running").exists():
        log.info("instance %s is running: its launch completed meanwhile; not failing it (%s)", instance.id, reason)
        return False
    if worker is not None:
        remove_resources(instance, worker)
    return failed


def launch(instance_id, final_attempt=True):
    """Start a pending instance: backend, route, readiness, then `running`.

    Safe to run twice: an instance that is no longer pending is left alone,
    and runtimes replace what an earlier attempt left behind.
    """
    instance = Instance.get_or_none(Instance.id == instance_id)
    if instance is None or instance.status != "pending":
        return instance and instance.status
    worker = Worker.get_or_none(Worker.id == instance.worker_id)
    challenge = Challenge.get_or_none(Challenge.id == instance.challenge_id)
    if challenge is None:
        fail_launch(instance, worker, f"challenge {instance.challenge_id!r} was deleted")
        return "error"
    if worker is None:
        fail_launch(instance, None, f"worker {instance.worker_id!r} is not registered")
        return "error"
    plugins = get_plugins()
    queued = (utcnow() - instance.created_at).total_seconds()
    marks = [("begin", time.monotonic())]
    eta = _Eta(instance)
    events.phase(instance, "placed", eta())
    try:
        timeout = readiness_timeout(challenge)
        _pull_missing(plugins, challenge, instance, worker, eta)
        marks.append(("pulled", time.monotonic()))
        events.phase(instance, "starting", eta())
        started = plugins.launch(challenge, instance, worker, timeout)
        deadline = time.monotonic() + timeout
        endpoints = _endpoint_backends(instance, started)
        _record_backend(instance, started, endpoints)
        # Publish only now: a connection forwarded to a Docker port before the
        # container's network is up stalls for a second (SYN retransmit), and
        # the proxy would forward players' early requests there.
        plugins.route(instance, "publish")
        marks.append(("launch", time.monotonic()))
        if not _still_pending(instance.id):
            raise LaunchError("the instance ended while it was starting")
        events.phase(instance, "probing", eta())
        if started.probe:
            wait_ready(instance, worker, started, timeout, deadline=deadline)
        for endpoint, endpoint_backend in endpoints:
            if endpoint_backend.probe:
                wait_ready(instance, worker, endpoint_backend, timeout, endpoint.name, deadline)
        if challenge.is_multi_service:
            # main answers; every other service must still be up (one that crashed at start fails the launch)
            state = plugins.inspect(instance, worker)
            if state is not None and not state.alive:
                raise LaunchError(state.reason or "a service of the instance stopped while starting")
        marks.append(("ready", time.monotonic()))
        events.phase(instance, "routing", eta())
        plugins.wait_routed(instance, timeout)
        marks.append(("routed", time.monotonic()))
        log.info(
            "instance %s up: %s",
            instance.id,
            " ".join(f"{name}={(t - marks[i][1]) * 1000:.0f}ms" for i, (name, t) in enumerate(marks[1:])),
        )
        now = utcnow()
        running = (
            Instance.update(status="running", started_at=now, phase=None)
            .where(Instance.id == instance.id, Instance.status == "pending")
            .execute()
        )
        if not running:
            # deleted or expired meanwhile: its destroy job may have run before
            # our container existed, so clean up here too
            remove_resources(instance, worker)
            return Instance.get_by_id(instance.id).status
        metrics.record_launch("running", launch_phases(queued, marks))
        _announce_running(instance, now)
        return "running"
    except TransientError as exc:
        if not final_attempt:
            remove_resources(instance, worker)
            raise
        fail_launch(instance, worker, f"gave up after retries: {exc}")
        return "error"
    except Exception as exc:
        fail_launch(instance, worker, _reason(exc))
        return "error"


class _Eta:
    """A launch's ETA (seconds until running) from its challenge's recent launches: read once, counted down."""

    def __init__(self, instance):
        self.remaining = events.launch_eta(instance)
        self.at = time.monotonic()

    def __call__(self):
        if self.remaining is None:
            return None
        return round(max(0.0, self.remaining - (time.monotonic() - self.at)), 2)


def _announce_running(instance, started_at):
    instance.status, instance.started_at = "running", started_at
    renewal_terms([instance])
    events.publish("instance.running", instance, {
        "endpoint": instance.endpoint, "endpoints": instance.endpoint_list, "expires_at": to_iso(instance.expires_at),
        "started_at": to_iso_ms(started_at)})
    events.record_launch_seconds(instance.challenge_id, (started_at - instance.created_at).total_seconds())


# the launch's marks, and the phase of ctfhost_launch_duration_seconds each one ends
PHASE_ENDED_BY = {"pulled": "pulling", "launch": "starting", "ready": "probing", "routed": "routing"}


def launch_phases(queued, marks):
    """[(phase, seconds)] of a launch: `queued` (seconds from created_at to the job's start), then one per mark."""
    return [("queued", queued)] + [
        (PHASE_ENDED_BY[name], at - marks[i][1]) for i, (name, at) in enumerate(marks[1:])
    ]


def _pull_missing(plugins, challenge, instance, worker, eta):
    """Pull the images of `challenge` the worker lacks (the instance says `pulling` meanwhile); a failed pull fails
    the launch with the engine's reason."""
    missing = [image for image in pulls.images_of(challenge)
               if plugins.image_state(challenge.runtime, image, worker) == "unpulled"]
    if not missing:
        return
    Instance.update(phase="pulling").where(Instance.id == instance.id, Instance.status == "pending").execute()
    events.phase(instance, "pulling", eta())
    for image in missing:
        pulls.record(worker.id, challenge.runtime, image, "pulling")
        try:
            done = plugins.prepare_image(challenge.runtime, image, worker)
        except Exception as exc:
            pulls.record(worker.id, challenge.runtime, image, "failed", _reason(exc))
            raise
        pulls.record(worker.id, challenge.runtime, image, "pulled" if done else "unpulled")
    Instance.update(phase="starting").where(Instance.id == instance.id, Instance.status == "pending").execute()


def pull_image(worker_id, runtime, image):
    """A pull job: make `image` available on the worker; records pulling, then pulled or failed (with the reason)."""
    worker = Worker.get_or_none(Worker.id == worker_id)
    if worker is None:
        return "gone"
    pulls.record(worker_id, runtime, image, "pulling")
    try:
        done = get_plugins().prepare_image(runtime, image, worker)
    except Exception as exc:
        log.warning("pull of %s on %s failed: %s", image, worker_id, _reason(exc))
        pulls.record(worker_id, runtime, image, "failed", _reason(exc))
        return "failed"
    if done is None:
        pulls.record(worker_id, runtime, image, "failed", f"the {runtime} runtime does not pull images ahead")
        return "failed"
    pulls.record(worker_id, runtime, image, "pulled")
    return "pulled"


def _reason(exc):
    if isinstance(exc, LaunchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def destroy(instance_id):
    """Remove an ended instance's resources (idempotent)."""
    instance = Instance.get_or_none(Instance.id == instance_id)
    if instance is None:
        return False
    if instance.is_active:
        log.warning("not destroying instance %s: it is still %s", instance.id, instance.status)
        return False
    worker = Worker.get_or_none(Worker.id == instance.worker_id)
    if worker is None:
        worker = Worker(id=instance.worker_id, address="127.0.0.1", runtime=instance.runtime)
    try:
        removed = get_plugins().destroy(instance, worker)
    except Exception:
        metrics.record_destroy("error")
        raise
    metrics.record_destroy("ok")
    return removed


WAITING = (queue.JobStatus.QUEUED, queue.JobStatus.SCHEDULED, queue.JobStatus.DEFERRED)


def recover_interrupted_launches(worker, at_startup=True, grace_seconds=30):
    """Fail pending instances of `worker` whose launch job is gone.

    At agent startup a job marked started belonged to the previous, dead
    agent. Later, only a job that is missing or failed counts, and only for
    instances older than `grace_seconds` (a job is enqueued just after its
    row is committed). A job still scheduled `grace_seconds` after its time
    counts as lost too: no scheduler is moving it to the queue.
    """
    failed = []
    cutoff = utcnow() - datetime.timedelta(seconds=grace_seconds)
    for instance in list(Instance.select().where(Instance.worker_id == worker.id, Instance.status == "pending")):
        job_id = queue.launch_job_id(instance.id)
        status = queue.job_status(job_id)
        if status == queue.JobStatus.SCHEDULED:
            due = queue.scheduled_for(job_id, worker.id)
            if due is not None and due < cutoff:
                status = None
        if status in WAITING or (not at_startup and (status == queue.JobStatus.STARTED or instance.created_at > cutoff)):
            continue
        reason = (
            "the launch was interrupted: the worker stopped while starting it"
            if at_startup
            else "the launch job was lost; launch again"
        )
        # the list was read before the jobs' states: a job that finished in between made its instance running
        if fail_launch(instance, worker, reason):
            failed.append(instance.id)
    return failed


def fail_instances_of_lost_workers():
    """Fail the active instances of workers silent for CTFHOST_WORKER_LOST_SECONDS; returns their ids.

    Any live agent may call this: each instance ends once (a conditional
    update), its route goes at once, and its team can launch again. The
    lost worker removes the leftovers when it comes back (reconcile).
    """
    failed = []
    # the lost workers first (almost always none): as a subquery, SQLite
    # walked every active instance to match them
    lost_ids = [worker.id for worker in workers.lost_workers()]
    if not lost_ids:
        return failed
    # read them all first: an update while the SELECT is still open would
    # need SQLite to upgrade a stale read snapshot (busy at once, no waiting)
    lost = list(Instance.select().where(Instance.worker_id.in_(lost_ids), Instance.status.in_(list(ACTIVE))))
    for instance in lost:
        reason = lost_worker_reason(instance.worker_id)
        if end_instance(instance, "error", reason):
            log.warning("instance %s failed: %s", instance.id, reason)
            failed.append(instance.id)
    return failed


def reconcile(worker_id):
    """Make this worker's resources match the database; returns ids marked error."""
    worker = Worker.get_or_none(Worker.id == worker_id)
    if worker is None:
        return []
    plugins = get_plugins()
    marked = []
    for runtime in worker.runtimes:
        try:
            marked.extend(_reconcile_runtime(plugins, worker, runtime))
        except Exception:
            # one runtime failing (its cluster unreachable) must not stop the others
            log.exception("reconcile of runtime %r on worker %s failed; trying again later", runtime, worker.id)
    return marked


def _reconcile_runtime(plugins, worker, runtime):
    marked = []
    active = list(
        Instance.select().where(
            Instance.worker_id == worker.id,
            Instance.runtime == runtime,
            Instance.status.in_(list(ACTIVE)),
        )
    )
    missing = plugins.reconcile(worker, runtime, active)
    for instance in active:
        if instance.id in missing and instance.status == "running":
            if end_instance(instance, "error", "the instance's resources disappeared (found by reconcile)"):
                marked.append(instance.id)
                remove_resources(instance, worker)
    return marked
