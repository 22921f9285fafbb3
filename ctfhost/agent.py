"""The worker agent behind `flask ctfhost worker`: registers, heartbeats, sweeps expiry, runs RQ workers."""

import ctypes
import logging
import multiprocessing
import signal
import socket
import time

from ctfhost.db import database

log = logging.getLogger("ctfhost.agent")

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Ask Linux to SIGTERM this process when the agent dies, so no orphan RQ worker runs on."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def rq_worker_main(queue_name, config, index):
    """Entry point of one RQ worker process (spawned, so it starts clean)."""
    _die_with_parent()
    from rq import Queue, SimpleWorker

    from ctfhost import jobs
    from ctfhost.app import create_app
    from ctfhost.queue import redis_connection

    app = create_app(config)
    jobs._app = app
    connection = redis_connection(app)
    queue = Queue(queue_name, connection=connection)
    worker = SimpleWorker([queue], connection=connection, name=f"{queue_name.rsplit(':', 1)[-1]}.{index}.{socket.gethostname()}.{multiprocessing.current_process().pid}")
    # a job runs in this process (no fork per job): launches start sooner, and
    # a crash of this process is what reconcile on the next start recovers from
    worker.work(with_scheduler=True, logging_level=config.get("CTFHOST_LOG_LEVEL", "INFO"))


class Agent:
    def __init__(self, app, worker_id=None, address=None, agent_port=None, runtimes=None, max_instances=None, concurrency=None):
        cfg = app.config
        self.app = app
        self.worker_id = worker_id or cfg.get("CTFHOST_WORKER_ID") or socket.gethostname()
        self.address = address or cfg["CTFHOST_WORKER_ADDRESS"]
        self.agent_port = agent_port if agent_port is not None else cfg["CTFHOST_WORKER_AGENT_PORT"]
        self.runtimes = runtimes or [r for r in (cfg.get("CTFHOST_WORKER_RUNTIMES") or "").split(",") if r]
        self.max_instances = max_instances if max_instances is not None else cfg["CTFHOST_WORKER_MAX_INSTANCES"]
        self.concurrency = concurrency or cfg["CTFHOST_WORKER_CONCURRENCY"]
        self.processes = []
        self.stopping = False

    # -- steps, each in its own app context and database connection ---------

    def _in_context(self, func, *args):
        with self.app.app_context():
            with database.connection_context():
                return func(*args)

    def usable_runtimes(self):
        """The runtimes to serve: those asked for (each must work here), or every installed one that works."""
        from ctfhost.models import Worker
        from ctfhost.plugins import UnknownRuntime, get_plugins

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
        from ctfhost.services.workers import register_worker

        def _register():
            runtimes = self.usable_runtimes()
            return register_worker(self.worker_id, self.address, runtimes, self.agent_port, self.max_instances)

        worker = self._in_context(_register)
        self.runtimes = worker.runtimes
        log.info(
            "registered worker %s at %s serving %s (max %d instances)",
            worker.id, worker.address, ",".join(worker.runtimes), worker.max_instances,
        )
        return worker

    def recover(self):
        from ctfhost.services import lifecycle

        def _recover():
            from ctfhost.models import Worker

            failed = lifecycle.recover_interrupted_launches(Worker.get_by_id(self.worker_id))
            marked = lifecycle.reconcile(self.worker_id)
            return failed, marked

        failed, marked = self._in_context(_recover)
        if failed or marked:
            log.warning("reconcile: %d interrupted launch(es) failed, %d lost instance(s) marked error", len(failed), len(marked))

    def heartbeat(self):
        from ctfhost.services.errors import NotFound
        from ctfhost.services.workers import heartbeat

        try:
            self._in_context(heartbeat, self.worker_id)
        except NotFound:
            log.warning("worker %s was unregistered; registering again", self.worker_id)
            self.register()

    def sweep(self):
        from ctfhost.services.instances import expire_due

        expired = self._in_context(expire_due)
        if expired:
            log.info("expired %d instance(s): %s", len(expired), ", ".join(expired))

    def reconcile(self):
        from ctfhost.services import lifecycle

        def _reconcile():
            from ctfhost.models import Worker

            lost = lifecycle.recover_interrupted_launches(Worker.get_by_id(self.worker_id), at_startup=False)
            return lost + lifecycle.reconcile(self.worker_id)

        marked = self._in_context(_reconcile)
        if marked:
            log.warning("reconcile marked %d instance(s) error: %s", len(marked), ", ".join(marked))

    # -- processes -------------------------------------------------------

    def _child_config(self):
        return {k: v for k, v in self.app.config.items() if k.startswith("CTFHOST_")}

    def _spawn(self, index):
        from ctfhost.queue import queue_name

        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(
            target=rq_worker_main,
            args=(queue_name(self.worker_id), self._child_config(), index),
            name=f"ctfhost-rq-{index}",
            daemon=False,
        )
        process.start()
        return process

    def start_workers(self):
        self.processes = [self._spawn(i) for i in range(self.concurrency)]

    def check_workers(self):
        for i, process in enumerate(self.processes):
            if not process.is_alive() and not self.stopping:
                log.warning("RQ worker %d exited with %s; starting a new one", i, process.exitcode)
                self.processes[i] = self._spawn(i)

    def stop(self, *_):
        self.stopping = True

    def shutdown(self):
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: RQ finishes the current job first
        deadline = time.monotonic() + 30
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()

    def run(self, max_seconds=None):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.register()
        self.recover()
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
