"""RQ jobs: thin functions that take ids, load fresh rows and call the lifecycle; and the RQ worker that runs them.

Jobs are enqueued by dotted name (ctfhost.worker.queue), and run in a
JobWorker, which holds the worker process's app: each job finds an app
context pushed for it, and only opens and closes its database connection.
"""

import contextlib
import logging

from flask import has_app_context
from rq import SimpleWorker, get_current_job

from ctfhost.db import database
from ctfhost.models import Instance, Worker
from ctfhost.worker import lifecycle

log = logging.getLogger(__name__)


class JobWorker(SimpleWorker):
    """An RQ worker bound to one ctfhost app: jobs and RQ's callbacks run inside its app context.

    Jobs run in this process (no fork per job): launches start sooner, and a
    crash of this process is what reconcile on the next start recovers from.
    """

    def __init__(self, queues, app, **kwargs):
        super().__init__(queues, **kwargs)
        self.app = app

    def work(self, *args, **kwargs):
        with self.app.app_context():
            return super().work(*args, **kwargs)


@contextlib.contextmanager
def job_connection():
    """A database connection for the duration of one job, inside the worker's app context."""
    if not has_app_context():
        raise RuntimeError("ctfhost jobs run in a JobWorker (flask ctfhost worker), which provides the app context")
    database.connect(reuse_if_open=True)
    try:
        yield
    finally:
        if not database.in_transaction():
            database.close()


def _final_attempt():
    job = get_current_job()
    return job is None or not job.retries_left


def launch_instance(instance_id):
    with job_connection():
        return lifecycle.launch(instance_id, final_attempt=_final_attempt())


def destroy_instance(instance_id):
    with job_connection():
        return lifecycle.destroy(instance_id)


def pull_image(worker_id, runtime, image):
    with job_connection():
        return lifecycle.pull_image(worker_id, runtime, image)


def reconcile_worker(worker_id):
    with job_connection():
        return lifecycle.reconcile(worker_id)


def launch_failed(job, connection, exc_type, exc_value, traceback):
    """RQ failure callback: a launch job died (timeout, crash) before it could record why."""
    instance_id = job.args[0]
    with job_connection():
        instance = Instance.get_or_none(Instance.id == instance_id)
        if instance is None or instance.status != "pending":
            return
        if job.retries_left:
            return
        worker = Worker.get_or_none(Worker.id == instance.worker_id)
        lifecycle.fail_launch(instance, worker, f"the launch job failed: {exc_type.__name__}: {exc_value}")
