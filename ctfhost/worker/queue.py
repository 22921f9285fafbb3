"""Queue naming and the enqueue helpers for lifecycle jobs (enqueued by dotted name: no import of the jobs)."""

import datetime
import hashlib
import logging

from flask import current_app
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from ctfhost.redis_client import redis_connection

log = logging.getLogger(__name__)

# job states in which enqueueing the same job id again would add nothing
WAITING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def queue_name(worker_id):
    return f"ctfhost:worker:{worker_id}"


def worker_queue(worker_id, connection=None):
    return Queue(queue_name(worker_id), connection=connection or redis_connection())


def job_status(job_id, connection=None):
    try:
        return Job.fetch(job_id, connection=connection or redis_connection()).get_status()
    except NoSuchJobError:
        return None


def scheduled_for(job_id, worker_id, connection=None):
    """When a scheduled job is due (naive UTC), or None when it is not in the worker's scheduled registry."""
    registry = ScheduledJobRegistry(queue_name(worker_id), connection=connection or redis_connection())
    try:
        return registry.get_scheduled_time(job_id).astimezone(datetime.timezone.utc).replace(tzinfo=None)
    except NoSuchJobError:
        return None


def _enqueue_once(queue, func, args, job_id, **options):
    """Enqueue func(*args) unless the same job is already waiting or running; re-run a finished one."""
    try:
        return queue.enqueue(func, *args, job_id=job_id, unique=True, **options)
    except DuplicateJobError:
        try:
            job = Job.fetch(job_id, connection=queue.connection)
        except NoSuchJobError:
            job = None
        if job is not None and job.get_status() in WAITING:
            return job
        if job is not None:
            job.delete()
        return queue.enqueue(func, *args, job_id=job_id, unique=True, **options)


def launch_job_id(instance_id):
    return f"launch-{instance_id}"


def destroy_job_id(instance_id):
    return f"destroy-{instance_id}"


# jobs are named, not imported: the web process enqueues them without loading the worker's code
LAUNCH_JOB = "ctfhost.worker.jobs.launch_instance"
LAUNCH_FAILED_CALLBACK = "ctfhost.worker.jobs.launch_failed"
DESTROY_JOB = "ctfhost.worker.jobs.destroy_instance"


def enqueue_launch(instance, readiness_timeout):
    timeout = int(readiness_timeout + current_app.config["CTFHOST_JOB_TIMEOUT_SECONDS"])
    return _enqueue_once(
        worker_queue(instance.worker_id),
        LAUNCH_JOB,
        (instance.id,),
        launch_job_id(instance.id),
        job_timeout=timeout,
        retry=Retry(max=2, interval=[1, 3]),
        on_failure=Callback(LAUNCH_FAILED_CALLBACK),
        result_ttl=3600,
        failure_ttl=7 * 86400,
        description=f"launch instance {instance.id}",
    )


PULL_JOB = "ctfhost.worker.jobs.pull_image"
# an image may be large and the registry slow: a pull job may take this long, whatever CTFHOST_JOB_TIMEOUT_SECONDS says
PULL_TIMEOUT_SECONDS = 1800


def pull_job_id(worker_id, runtime, image):
    digest = hashlib.sha256(f"{runtime}\0{image}".encode()).hexdigest()[:20]
    return f"pull-{worker_id}-{digest}"


def enqueue_pull(worker_id, runtime, image):
    """Queue a pull of `image` for `runtime` on the worker (once: a pull already waiting is that one)."""
    return _enqueue_once(
        worker_queue(worker_id),
        PULL_JOB,
        (worker_id, runtime, image),
        pull_job_id(worker_id, runtime, image),
        job_timeout=max(PULL_TIMEOUT_SECONDS, current_app.config["CTFHOST_JOB_TIMEOUT_SECONDS"]),
        result_ttl=600,
        failure_ttl=86400,
        description=f"pull {image} ({runtime})",
    )


def enqueue_destroy(instance):
    return _enqueue_once(
        worker_queue(instance.worker_id),
        DESTROY_JOB,
        (instance.id,),
        destroy_job_id(instance.id),
        job_timeout=current_app.config["CTFHOST_JOB_TIMEOUT_SECONDS"],
        retry=Retry(max=5, interval=[2, 5, 10, 30, 60]),
        result_ttl=3600,
        failure_ttl=7 * 86400,
        description=f"destroy instance {instance.id}",
    )
