"""Redis connection, queue naming and the enqueue helpers for lifecycle jobs."""

import datetime
import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from flask import current_app
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

log = logging.getLogger(__name__)

# job states in which enqueueing the same job id again would add nothing
WAITING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def connect(url):
    """A Redis client that fails fast when Redis is down.

    An API call answers 503 at once instead of after the client's default
    retries with backoff.
    """
    return redis.Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=10, health_check_interval=30, retry=RedisRetry(NoBackoff(), 1)
    )


def redis_connection(app=None):
    app = app or current_app
    conn = app.extensions.get("ctfhost.redis")
    if conn is None:
        conn = connect(app.config["CTFHOST_REDIS_URL"])
        app.extensions["ctfhost.redis"] = conn
    return conn


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


def _enqueue_once(queue, func, instance_id, job_id, **options):
    """Enqueue unless the same job is already waiting or running; re-run a finished one."""
    try:
        return queue.enqueue(func, instance_id, job_id=job_id, unique=True, **options)
    except DuplicateJobError:
        try:
            job = Job.fetch(job_id, connection=queue.connection)
        except NoSuchJobError:
            job = None
        if job is not None and job.get_status() in WAITING:
            return job
        if job is not None:
            job.delete()
        return queue.enqueue(func, instance_id, job_id=job_id, unique=True, **options)


def launch_job_id(instance_id):
    return f"launch-{instance_id}"


def destroy_job_id(instance_id):
    return f"destroy-{instance_id}"


def enqueue_launch(instance, readiness_timeout):
    from ctfhost import jobs

    timeout = int(readiness_timeout + current_app.config["CTFHOST_JOB_TIMEOUT_SECONDS"])
    return _enqueue_once(
        worker_queue(instance.worker_id),
        jobs.launch_instance,
        instance.id,
        launch_job_id(instance.id),
        job_timeout=timeout,
        retry=Retry(max=2, interval=[1, 3]),
        on_failure=Callback(jobs.launch_failed),
        result_ttl=3600,
        failure_ttl=7 * 86400,
        description=f"launch instance {instance.id}",
    )


def enqueue_destroy(instance):
    from ctfhost import jobs

    return _enqueue_once(
        worker_queue(instance.worker_id),
        jobs.destroy_instance,
        instance.id,
        destroy_job_id(instance.id),
        job_timeout=current_app.config["CTFHOST_JOB_TIMEOUT_SECONDS"],
        retry=Retry(max=5, interval=[2, 5, 10, 30, 60]),
        result_ttl=3600,
        failure_ttl=7 * 86400,
        description=f"destroy instance {instance.id}",
    )
