"""Placement: which worker gets a new instance."""

from ctfhost.db import is_postgresql
from ctfhost.models import Worker, utcnow
from ctfhost.services.errors import Unavailable
from ctfhost.services.pulls import pulled_on
from ctfhost.services.workers import active_counts, stale_after


# what a 503 for lack of room tells clients to wait before trying again: a slot frees when an instance ends
RETRY_AFTER_SECONDS = 30


def choose_worker(runtime, image=None):
    """The active, ready (not cordoned or draining) worker serving `runtime` with room, preferring those that hold
    `image` already, then the least loaded.

    Call inside a write transaction: on SQLite the transaction already holds
    the write lock; on PostgreSQL the chosen row is locked so concurrent
    launches cannot overfill it.
    """
    cutoff = utcnow() - stale_after()
    live = [w for w in Worker.select().where(Worker.last_heartbeat_at >= cutoff) if runtime in w.runtimes]
    if not live:
        raise Unavailable(
            f"no active worker serves runtime {runtime!r}; start one with `flask ctfhost worker`",
            reason="no_worker",
        )
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    schedulable = [w for w in live if w.state == "ready"]
    if not schedulable:
        raise Unavailable(
            f"every active worker for runtime {runtime!r} ({len(live)}) is cordoned or draining: no new instance "
            "can be placed; uncordon one (POST /api/v1/workers/{id}/uncordon) or start another",
            reason="capacity", headers=retry,
        )
    if is_postgresql():
        ids = [w.id for w in schedulable]
        schedulable = list(Worker.select().where(Worker.id.in_(ids), Worker.state == "ready")
                           .order_by(Worker.id).for_update())
    counts = active_counts([w.id for w in schedulable])
    with_room = [w for w in schedulable if counts.get(w.id, 0) < w.max_instances]
    if not with_room:
        raise Unavailable(
            f"all {len(schedulable)} schedulable worker(s) for runtime {runtime!r} are at capacity; "
            f"try again in {RETRY_AFTER_SECONDS} s",
            reason="capacity", headers=retry,
        )
    # holding the image (no pull before the launch), then least loaded by fraction used, then by id for a stable choice
    holding = pulled_on([w.id for w in with_room], runtime, image) if image and len(with_room) > 1 else set()
    return min(with_room, key=lambda w: (w.id not in holding, counts.get(w.id, 0) / w.max_instances, w.id))
