"""Gauges of the fleet computed when Prometheus scrapes: instances, workers, queue depths (one query each, not per row)."""

import logging

import peewee
import redis
from prometheus_client.core import GaugeMetricFamily

from ctfhost.models import ACTIVE, PULL_STATES, WORKER_STATES, ImagePull, Instance, Worker, utcnow
from ctfhost.redis_client import redis_connection
from ctfhost.services import workers
from ctfhost.worker import queue

log = logging.getLogger(__name__)


def worker_liveness(worker, now):
    """`active` (heartbeating), `stale` (silent past CTFHOST_WORKER_STALE_SECONDS: no new placements) or `lost`
    (silent past CTFHOST_WORKER_LOST_SECONDS: its instances were failed)."""
    silent = now - worker.last_heartbeat_at
    if silent >= workers.lost_after():
        return "lost"
    return "active" if workers.is_active(worker, now) else "stale"


class FleetCollector:
    """A prometheus_client collector reading the database and Redis at each scrape (call it in an app context)."""

    def collect(self):
        now = utcnow()
        instances = GaugeMetricFamily("ctfhost_instances", "Active instances, by status (pending, running) and challenge",
                                      labels=["status", "challenge"])
        # ended instances are history (counted by ctfhost_launches_total, _expiries_total, _destroys_total): active
        # rows only, through the status index
        rows = (Instance.select(Instance.status, Instance.challenge_id, peewee.fn.COUNT(Instance.id).alias("count"))
                .where(Instance.status.in_(list(ACTIVE)))
                .group_by(Instance.status, Instance.challenge_id)
                .tuples())
        for status, challenge, count in rows:
            instances.add_metric([status, challenge], count)
        yield instances

        registered = list(Worker.select(Worker.id, Worker.last_heartbeat_at, Worker.state, Worker.runtime)
                          .order_by(Worker.id))
        by_state = GaugeMetricFamily(
            "ctfhost_workers", "Registered workers, by liveness (active, stale, lost) and state (ready, cordoned, draining)",
            labels=["liveness", "state"])
        age = GaugeMetricFamily("ctfhost_worker_heartbeat_age_seconds", "Seconds since each worker's last heartbeat",
                                labels=["worker", "liveness", "state"])
        counts = {(liveness, state): 0 for liveness in ("active", "stale", "lost") for state in WORKER_STATES}
        for worker in registered:
            liveness = worker_liveness(worker, now)
            counts[liveness, worker.state] = counts.get((liveness, worker.state), 0) + 1
            age.add_metric([worker.id, liveness, worker.state], max(0.0, (now - worker.last_heartbeat_at).total_seconds()))
        for labels, count in counts.items():
            by_state.add_metric(list(labels), count)
        yield by_state
        yield age

        pulls = GaugeMetricFamily("ctfhost_image_pulls", "Images on workers, by runtime and pull state "
                                  "(unpulled, pulling, pulled, failed)", labels=["runtime", "state"])
        found = {(runtime, state): 0 for runtime in sorted({r for w in registered for r in w.runtimes})
                 for state in PULL_STATES}
        for runtime, state, count in (ImagePull.select(ImagePull.runtime, ImagePull.state,
                                                       peewee.fn.COUNT(ImagePull.id))
                                      .group_by(ImagePull.runtime, ImagePull.state).tuples()):
            found[runtime, state] = count
        for labels, count in sorted(found.items()):
            pulls.add_metric(list(labels), count)
        yield pulls

        depths = queue_depths([worker.id for worker in registered])
        if depths is not None:
            depth = GaugeMetricFamily("ctfhost_queue_depth", "Jobs waiting in each worker's RQ queue", labels=["worker"])
            for worker_id, length in depths.items():
                depth.add_metric([worker_id], length)
            yield depth


def queue_depths(worker_ids):
    """{worker id: jobs waiting in its queue}, in one Redis round trip; None when Redis is unreachable."""
    connection = redis_connection()
    pipeline = connection.pipeline(transaction=False)
    for worker_id in worker_ids:
        pipeline.llen(queue.worker_queue(worker_id, connection).key)
    try:
        return dict(zip(worker_ids, pipeline.execute()))
    except redis.exceptions.RedisError as exc:
        log.warning("metrics: no queue depths, Redis is unreachable (%s)", exc)
        return None
