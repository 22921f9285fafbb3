"""Placement: which worker gets a new instance."""

from ctfhost.db import is_postgresql
from ctfhost.models import Worker, utcnow
from ctfhost.services.errors import Unavailable
from ctfhost.services.workers import active_counts, stale_after


def choose_worker(runtime):
    """The active worker serving `runtime` with the most free room.

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
    if is_postgresql():
        ids = [w.id for w in live]
        live = list(Worker.select().where(Worker.id.in_(ids)).order_by(Worker.id).for_update())
    counts = active_counts([w.id for w in live])
    with_room = [w for w in live if counts.get(w.id, 0) < w.max_instances]
    if not with_room:
        raise Unavailable(
            f"all {len(live)} active worker(s) for runtime {runtime!r} are at capacity; try again later",
            reason="capacity",
        )
    # least loaded by fraction used, then by id for a stable choice
    return min(with_room, key=lambda w: (counts.get(w.id, 0) / w.max_instances, w.id))
