"""The worker agent behind `flask ctfhost worker`: registers, heartbeats, sweeps expiry, runs RQ workers."""

import ctypes
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time

import redis
from prometheus_client import start_http_server
from redis.exceptions import LockError
from rq import Queue
from rq.scheduler import RQScheduler

from ctfhost import metrics
from ctfhost.db import database
from ctfhost.models import Worker
from ctfhost.plugins import UnknownRuntime, get_plugins
from ctfhost.redis_client import connect, redis_connection
from ctfhost.services.errors import Conflict, NotFound
from ctfhost.services.instances import expire_due, warn_expiring
from ctfhost.services import workers as worker_service
from ctfhost.worker import lifecycle
from ctfhost.worker.jobs import JobWorker
from ctfhost.worker.queue import queue_name as worker_queue_name

log = logging.getLogger("ctfhost.agent")

SWEEP_LOCK = "ctfhost:lock:expiry-sweep"
# a sweep takes no new batch of due instances after this; the lock lives a
# little longer, so it never lapses under a live sweep but does soon after
# its holder died
SWEEP_BUDGET_SECONDS = 10.0
SWEEP_LOCK_SECONDS = SWEEP_BUDGET_SECONDS + 5.0

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Ask Linux to SIGKILL this process when the agent dies.

    No orphan RQ worker runs on, and a job it was running is plainly dead:
    with SIGTERM, RQ would finish the job while the next agent already
    failed it as interrupted.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip().replace("-", "")[:12]
    except OSError:
        return "noboot"


def agent_identity():
    """This agent run's identity: host/boot/pid/random (sent at register and heartbeat)."""
    return f"{socket.gethostname()}/{_boot_id()}/{os.getpid()}/{secrets.token_hex(4)}"


def predecessor_is_gone(held_by):
    """True when `held_by` names an agent run on this very host and boot whose process is gone.

    A restarted agent then takes its worker over at once instead of waiting
    for the old heartbeat to go stale.
    """
    parts = (held_by or "").split("/")
    if len(parts) != 4 or parts[0] != socket.gethostname() or parts[1] != _boot_id() or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def rq_worker_main(app_factory, queue_name, config, index):
    """Entry point of one RQ worker process (spawned, so it starts clean): builds its app, runs jobs."""
    _die_with_parent()
    app = app_factory(config)
    connection = redis_connection(app)
    queue = Queue(queue_name, connection=connection)
    name = f"{queue_name.rsplit(':', 1)[-1]}.{index}.{socket.gethostname()}.{multiprocessing.current_process().pid}"
    worker = JobWorker([queue], app, connection=connection, name=name)
    # No scheduler here: RQ restarts a worker's dead scheduler only every 10
    # minutes (after a Redis restart, retries ran that late); the agent runs
    # and supervises its own (rq_scheduler_main).
    worker.work(with_scheduler=False, logging_level=config.get("CTFHOST_LOG_LEVEL", "INFO"))


def rq_scheduler_main(queue_name, config, name):
    """Entry point of the agent's scheduler process: moves due scheduled jobs (retries) to the queue.

    It outlives Redis outages (it retries every second), and its name is
    fixed per worker, so a restarted scheduler refreshes the lock its
    predecessor held instead of waiting for it to expire.
    """
    _die_with_parent()
    logging.basicConfig(level=config.get("CTFHOST_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    scheduler = RQScheduler([queue_name], connection=connect(config["CTFHOST_REDIS_URL"]), interval=1, name=name)
    failing = False
    while not stopping:
        try:
            if scheduler.acquired_locks != {queue_name}:
                scheduler.acquire_locks()
                if scheduler.acquired_locks:
                    scheduler.register_birth()
            if scheduler.acquired_locks:
                scheduler.heartbeat()
                scheduler.enqueue_scheduled_jobs()
            if failing:
                log.info("scheduler of %s: Redis is back", queue_name)
            failing = False
        except redis.exceptions.RedisError as exc:
            if not failing:
                log.warning("scheduler of %s: Redis failed (%s); retrying every second", queue_name, exc)
            failing = True
        time.sleep(scheduler.interval)
    try:
        scheduler.release_locks()
        scheduler.register_death()
    except redis.exceptions.RedisError:
        pass


class Agent:
    """One worker host's agent. `app_factory` builds the app of each RQ worker process it spawns
    (default: the factory that built `app`, which create_app records)."""

    def __init__(self, app, worker_id=None, address=None, agent_port=None, runtimes=None, max_instances=None,
                 concurrency=None, app_factory=None):
        cfg = app.config
        self.app = app
        self.app_factory = app_factory or app.extensions["ctfhost.app_factory"]
        self.worker_id = worker_id or cfg.get("CTFHOST_WORKER_ID") or socket.gethostname()
        self.address = address or cfg["CTFHOST_WORKER_ADDRESS"]
        self.agent_port = agent_port if agent_port is not None else cfg["CTFHOST_WORKER_AGENT_PORT"]
        self.runtimes = runtimes or [r for r in (cfg.get("CTFHOST_WORKER_RUNTIMES") or "").split(",") if r]
        self.max_instances = max_instances if max_instances is not None else cfg["CTFHOST_WORKER_MAX_INSTANCES"]
        self.concurrency = concurrency or cfg["CTFHOST_WORKER_CONCURRENCY"]
        self.processes = []
        self.scheduler = None
        self.stopping = False
        self.agent_instance = agent_identity()
        self.sweeping_without_lock = False
        self.metrics_server = None
        self.private_metrics_directory = None

    # -- steps, each in its own app context and database connection ---------

    def _in_context(self, func, *args):
        with self.app.app_context():
            with database.connection_context():
                return func(*args)

    def usable_runtimes(self):
        """The runtimes to serve: those asked for (each must work here), or every installed one that works."""

        plugins = get_plugins(self.app)
        candidate = Worker(id=self.worker_id, address=self.address, runtime=",".join(self.runtimes))
        if self.runtimes:
            for runtime in self.runtimes:
                try:
                    reason = plugins.check_runtime(runtime, candidate)
                except UnknownRuntime as exc:
                    raise RuntimeError(str(exc)) from None
                if reason:
                    raise RuntimeError(f"runtime {runtime!r} cannot run on this host: {reason}")
            return list(self.runtimes)
        usable = []
        for runtime in plugins.runtimes():
            reason = plugins.check_runtime(runtime, candidate)
            if reason:
                log.warning("not serving runtime %r: %s", runtime, reason)
            else:
                usable.append(runtime)
        if not usable:
            installed = ", ".join(plugins.runtimes()) or "none"
            raise RuntimeError(
                f"no installed runtime can run on this host (installed: {installed}); "
                "install one, e.g. ctfhost-plugin-docker, or fix what the warnings above say"
            )
        return usable

    def register(self):
        def _register(force=False):
            runtimes = self.usable_runtimes()
            return worker_service.register_worker(
                self.worker_id, self.address, runtimes, self.agent_port, self.max_instances,
                agent_instance=self.agent_instance, force=force,
            )

        waiting = False
        while True:
            try:
                worker = self._in_context(_register)
                break
            except Conflict as exc:
                held_by = self._in_context(lambda: Worker.get_by_id(self.worker_id).agent_instance)
                if predecessor_is_gone(held_by):
                    log.info("the previous agent of worker %s (%s) is gone; taking over", self.worker_id, held_by)
                    worker = self._in_context(_register, True)
                    break
                if self.stopping:
                    raise RuntimeError(str(exc)) from None
                if not waiting:
                    log.warning("%s; waiting until its heartbeat is stale", exc)
                    waiting = True
                time.sleep(min(5.0, float(self.app.config["CTFHOST_WORKER_HEARTBEAT_SECONDS"])))
        self.runtimes = worker.runtimes
        log.info(
            "registered worker %s at %s serving %s (max %d instances)",
            worker.id, worker.address, ",".join(worker.runtimes), worker.max_instances,
        )
        return worker

    def recover(self):
        def _recover():

            failed = lifecycle.recover_interrupted_launches(Worker.get_by_id(self.worker_id))
            marked = lifecycle.reconcile(self.worker_id)
            return failed, marked

        failed, marked = self._in_context(_recover)
        if failed or marked:
            log.warning("reconcile: %d interrupted launch(es) failed, %d lost instance(s) marked error", len(failed), len(marked))

    def heartbeat(self):
        try:
            worker = self._in_context(worker_service.heartbeat, self.worker_id, self.agent_instance, self.address)
        except NotFound:
            log.warning("worker %s was unregistered; registering again", self.worker_id)
            self.register()
            return
        except Conflict as exc:
            # another agent run took this worker over (it was stale, or the
            # admin forced it): two agents must not serve one queue
            log.error("%s; this agent stops", exc)
            self.stopping = True
            return
        if worker.silent_for > float(self.app.config["CTFHOST_WORKER_LOST_SECONDS"]):
            log.warning("worker %s was silent for %.0f s; its instances were failed; reconciling now",
                        self.worker_id, worker.silent_for)
            self.reconcile()

    def _take_sweep_lock(self):
        """The fleet-wide sweep lock when this agent got it; False when another agent holds it; None when Redis is down."""
        lock = redis_connection(self.app).lock(SWEEP_LOCK, timeout=SWEEP_LOCK_SECONDS, blocking=False)
        try:
            taken = lock.acquire()
        except redis.exceptions.RedisError as exc:
            if not self.sweeping_without_lock:
                log.warning("expiry sweep: Redis is unreachable (%s); sweeping without the fleet-wide lock until it "
                            "is back (each instance still ends once)", exc)
            self.sweeping_without_lock = True
            return None
        if self.sweeping_without_lock:
            log.info("expiry sweep: Redis is back; sweeping under the fleet-wide lock again")
        self.sweeping_without_lock = False
        return lock if taken else False

    def sweep(self):
        """End due instances and those of lost workers, unless another agent is sweeping; True when this one swept.

        One sweep runs at a time across the fleet: a Redis lock, released by
        its token, whose TTL outlives a sweep's budget, so a dead holder's lock
        lapses. Without Redis every agent sweeps: a late instance costs more
        than a repeated, indexed sweep, and each instance still ends once.
        """
        lock = self._take_sweep_lock()
        if lock is False:
            log.debug("expiry sweep: another agent is sweeping")
            return False

        def _sweep():
            deadline = time.monotonic() + SWEEP_BUDGET_SECONDS
            expired = expire_due(deadline=deadline)
            warn_expiring(self.app.config["CTFHOST_EVENTS_EXPIRING_SECONDS"], deadline=deadline)
            return expired, lifecycle.fail_instances_of_lost_workers()

        try:
            expired, lost = self._in_context(_sweep)
        finally:
            if lock:
                try:
                    lock.release()
                except (LockError, redis.exceptions.RedisError):
                    pass  # it lapsed, or Redis went away: it expires on its own
        if expired:
            log.info("expired %d instance(s): %s", len(expired), ", ".join(expired))
        if lost:
            log.warning("failed %d instance(s) of lost workers: %s", len(lost), ", ".join(lost))
        return True

    def reconcile(self):
        def _reconcile():

            lost = lifecycle.recover_interrupted_launches(Worker.get_by_id(self.worker_id), at_startup=False)
            return lost + lifecycle.reconcile(self.worker_id)

        marked = self._in_context(_reconcile)
        if marked:
            log.warning("reconcile marked %d instance(s) error: %s", len(marked), ", ".join(marked))

    # -- metrics ---------------------------------------------------------

    def serve_metrics(self):
        """Serve this agent's metrics on CTFHOST_WORKER_METRICS_PORT (0: not at all); returns the port, or None.

        Launches and destroys are recorded in the RQ processes, expiries in
        this one: the RQ processes write their values to a multiprocess
        directory, PROMETHEUS_MULTIPROC_DIR when the agent was started with
        one (files an earlier run left there are removed), else a private one
        made here; this process's own values come from memory unless it
        writes to that directory too. Call it before the RQ processes start.
        """
        port = self.app.config["CTFHOST_WORKER_METRICS_PORT"]
        if not port:
            return None
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            metrics.clear_directory(directory, keep_pid=os.getpid() if metrics.MULTIPROCESS else None)
        else:
            directory = self.private_metrics_directory = tempfile.mkdtemp(prefix="ctfhost-agent-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # the RQ processes, spawned next, inherit it
        address = self.app.config["CTFHOST_WORKER_METRICS_ADDRESS"]
        self.metrics_server, _ = start_http_server(port, addr=address, registry=metrics.Exposition(*metrics.recorded(directory)))
        log.info("worker %s serves its metrics at http://%s:%d/metrics", self.worker_id, address, port)
        return port

    def stop_metrics(self):
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        if self.private_metrics_directory:
            shutil.rmtree(self.private_metrics_directory, ignore_errors=True)
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == self.private_metrics_directory:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]

    # -- processes -------------------------------------------------------

    def _child_config(self):
        return {k: v for k, v in self.app.config.items() if k.startswith("CTFHOST_")}

    def _spawn(self, index):
        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(
            target=rq_worker_main,
            args=(self.app_factory, worker_queue_name(self.worker_id), self._child_config(), index),
            name=f"ctfhost-rq-{index}",
            daemon=False,
        )
        process.start()
        return process

    def _spawn_scheduler(self):
        process = multiprocessing.get_context("spawn").Process(
            target=rq_scheduler_main,
            args=(worker_queue_name(self.worker_id), self._child_config(), f"ctfhost.{self.worker_id}"),
            name="ctfhost-rq-scheduler",
            daemon=False,
        )
        process.start()
        return process

    def start_workers(self):
        self.scheduler = self._spawn_scheduler()
        self.processes = [self._spawn(i) for i in range(self.concurrency)]

    def check_workers(self):
        """Start again any RQ worker or the scheduler that exited."""
        if self.stopping:
            return
        for i, process in enumerate(self.processes):
            if not process.is_alive():
                log.warning("RQ worker %d exited with %s; starting a new one", i, process.exitcode)
                self.processes[i] = self._spawn(i)
        if self.scheduler is not None and not self.scheduler.is_alive():
            log.warning("the RQ scheduler exited with %s; starting a new one", self.scheduler.exitcode)
            self.scheduler = self._spawn_scheduler()

    def stop(self, *_):
        self.stopping = True

    def shutdown(self):
        children = self.processes + ([self.scheduler] if self.scheduler is not None else [])
        for process in children:
            if process.is_alive():
                process.terminate()  # SIGTERM: RQ finishes the current job first
        deadline = time.monotonic() + 30
        for process in children:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        try:
            self._in_context(self.release)
        except Exception:
            log.exception("could not release worker %s; the next agent waits for its heartbeat to go stale", self.worker_id)
        self.stop_metrics()

    def release(self):
        """Let the next agent run take this worker over at once (a clean stop, e.g. a redeployed pod)."""

        Worker.update(agent_instance=None).where(
            Worker.id == self.worker_id, Worker.agent_instance == self.agent_instance
        ).execute()

    def run(self, max_seconds=None):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.register()
        self.recover()
        self.serve_metrics()
        self.start_workers()
        cfg = self.app.config
        every = {
            "heartbeat": float(cfg["CTFHOST_WORKER_HEARTBEAT_SECONDS"]),
            "sweep": float(cfg["CTFHOST_EXPIRY_INTERVAL_SECONDS"]),
            "reconcile": float(cfg["CTFHOST_RECONCILE_INTERVAL_SECONDS"]),
        }
        steps = {"heartbeat": self.heartbeat, "sweep": self.sweep, "reconcile": self.reconcile}
        started = time.monotonic()
        due = {name: started + (0 if name == "sweep" else interval) for name, interval in every.items()}
        try:
            while not self.stopping:
                now = time.monotonic()
                if max_seconds is not None and now - started > max_seconds:
                    break
                for name, when in due.items():
                    if now >= when:
                        try:
                            steps[name]()
                        except Exception:
                            log.exception("%s failed; trying again later", name)
                        due[name] = time.monotonic() + every[name]
                self.check_workers()
                time.sleep(min(0.5, max(0.05, min(due.values()) - time.monotonic())))
        finally:
            self.shutdown()
        log.info("worker %s stopped", self.worker_id)
