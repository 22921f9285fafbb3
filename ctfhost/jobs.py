"""RQ jobs: thin functions that take ids, open the database and call services."""

import contextlib
import logging

from flask import current_app, has_app_context
from rq import get_current_job

from ctfhost.db import database

log = logging.getLogger(__name__)

_app = None


@contextlib.contextmanager
def job_context():
    """An app context and a database connection for the duration of one job."""
    global _app
    if has_app_context():
        ctx = contextlib.nullcontext()
    else:
        if _app is None:
            from ctfhost.app import create_app

            _app = create_app()
        ctx = _app.app_context()
    with ctx:
        database.connect(reuse_if_open=True)
        try:
            yield current_app
        finally:
            if not database.in_transaction():
                database.close()


def _final_attempt():
    job = get_current_job()
    return job is None or not job.retries_left


def launch_instance(instance_id):
    from ctfhost.services import lifecycle

    with job_context():
        return lifecycle.launch(instance_id, final_attempt=_final_attempt())


def destroy_instance(instance_id):
    from ctfhost.services import lifecycle

    with job_context():
        return lifecycle.destroy(instance_id)


def reconcile_worker(worker_id):
    from ctfhost.services import lifecycle

    with job_context():
        return lifecycle.reconcile(worker_id)


def launch_failed(job, connection, exc_type, exc_value, traceback):
    """RQ failure callback: a launch job died (timeout, crash) before it could record why."""
    from ctfhost.services import lifecycle
    from ctfhost.models import Instance, Worker

    instance_id = job.args[0]
    with job_context():
        instance = Instance.get_or_none(Instance.id == instance_id)
        if instance is None or instance.status != "pending":
            return
        if job.retries_left:
            return
        worker = Worker.get_or_none(Worker.id == instance.worker_id)
        lifecycle.fail_launch(instance, worker, f"the launch job failed: {exc_type.__name__}: {exc_value}")
