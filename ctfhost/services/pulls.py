"""Images on workers: pre-pulls per worker and image, their states, and operations on a challenge's fleet.

A pull runs as a job on the worker's own queue (the `prepare_image` hook of
the challenge's runtime); its state per worker, runtime and image is kept in
`image_pull`: unpulled -> pulling -> pulled | failed (with the error).
Pulls are asked for when a challenge is created or activated or changes
image, when a worker registers (every active challenge of its runtimes), and
by operators (`POST /api/v1/challenges/{id}/pull`).
"""

import logging

from ctfhost.db import database
from ctfhost.models import ACTIVE, Challenge, ImagePull, Instance, Worker, utcnow
from ctfhost.services import workers
from ctfhost.services.errors import NotFound
from ctfhost.worker import queue

log = logging.getLogger(__name__)


def images_of(challenge):
    """Every image an instance of `challenge` runs: main's, then each service's, each once."""
    found = [challenge.image]
    for spec in challenge.service_specs.values():
        if spec.get("image") and spec["image"] not in found:
            found.append(spec["image"])
    return found


def serving_workers(runtime):
    """The active workers (heartbeat fresh) serving `runtime`, whatever their placement state."""
    now = utcnow()
    return [w for w in Worker.select().order_by(Worker.id) if runtime in w.runtimes and workers.is_active(w, now)]


def _challenge(challenge_id):
    challenge = Challenge.get_or_none(Challenge.id == challenge_id)
    if challenge is None:
        raise NotFound(f"challenge {challenge_id!r} not found")
    return challenge


def record(worker_id, runtime, image, state, error=None):
    """Set the pull state of `image` on a worker (the row is made on first use)."""
    now = utcnow()
    ImagePull.insert(worker_id=worker_id, runtime=runtime, image=image, state=state, error=error,
                     updated_at=now).on_conflict(
        conflict_target=[ImagePull.worker_id, ImagePull.runtime, ImagePull.image],
        update={ImagePull.state: state, ImagePull.error: error, ImagePull.updated_at: now},
    ).execute()


def _queue_pulls(challenge, targets):
    """Queue a pull of each of the challenge's images on each of `targets`; returns (queued, problems)."""
    queued, problems = 0, []
    for worker in targets:
        for image in images_of(challenge):
            # a first pull shows `unpulled` until its job starts; an earlier state stays until then
            ImagePull.insert(worker_id=worker.id, runtime=challenge.runtime, image=image, state="unpulled",
                             updated_at=utcnow()).on_conflict_ignore().execute()
            try:
                queue.enqueue_pull(worker.id, challenge.runtime, image)
                queued += 1
            except Exception as exc:  # Redis down: the state stays, a later pull or launch fetches it
                log.warning("could not queue the pull of %s on %s: %s", image, worker.id, exc)
                problems.append(f"{worker.id}: the job queue is unavailable")
    return queued, problems


def request_pull(challenge_id):
    """Queue pulls of every image of the challenge on every active worker of its runtime: the operation record."""
    challenge = _challenge(challenge_id)
    targets = serving_workers(challenge.runtime)
    if not targets:
        return operation(challenge, "pull", "skipped",
                         f"no active worker serves runtime {challenge.runtime!r}: nothing to pull on")
    queued, problems = _queue_pulls(challenge, targets)
    images = images_of(challenge)
    detail = f"pulling {len(images)} image(s) on {len(targets)} worker(s)"
    if problems:
        detail += f"; not queued: {'; '.join(problems)}"
    return operation(challenge, "pull", "accepted" if queued else "failed", detail)


def pull_quietly(challenge):
    """Queue the challenge's pulls if it is active (after a create, an activation, a new image); never raises."""
    if not challenge.is_active:
        return
    try:
        _queue_pulls(challenge, serving_workers(challenge.runtime))
    except Exception:
        log.exception("could not queue the pulls of challenge %s", challenge.id)


def pull_for_worker(worker):
    """Queue pulls of every active challenge's images on a worker that just registered; never raises."""
    try:
        for challenge in Challenge.select().where(Challenge.status == "active"):
            if challenge.runtime in worker.runtimes:
                _queue_pulls(challenge, [worker])
    except Exception:
        log.exception("could not queue the pulls for worker %s", worker.id)


def states(challenge, targets=None):
    """[{worker_id, image, state, error, updated_at}] for every image of `challenge` on every active worker of its
    runtime (a worker never asked: unpulled)."""
    targets = serving_workers(challenge.runtime) if targets is None else targets
    images = images_of(challenge)
    rows = {(row.worker_id, row.image): row for row in ImagePull.select().where(
        ImagePull.runtime == challenge.runtime, ImagePull.image.in_(images),
        ImagePull.worker_id.in_([w.id for w in targets] or [""]))}
    found = []
    for worker in targets:
        for image in images:
            row = rows.get((worker.id, image))
            found.append({"worker_id": worker.id, "image": image, "state": row.state if row else "unpulled",
                          "error": row.error if row else None, "updated_at": row.updated_at if row else None})
    return found


def overall(pulls):
    """One word for many pull states: failed, pulling, unpulled or pulled (none: unpulled)."""
    found = {pull["state"] for pull in pulls}
    for state in ("failed", "pulling", "unpulled"):
        if state in found:
            return state
    return "pulled" if found else "unpulled"


def challenge_status(challenge_id):
    """The operation record of a challenge's state: its pulls per worker and image, and its active instances."""
    challenge = _challenge(challenge_id)
    pulls = states(challenge)
    counts = {}
    for pull in pulls:
        counts[pull["state"]] = counts.get(pull["state"], 0) + 1
    detail = ", ".join(f"{number} {state}" for state, number in sorted(counts.items())) or "no active worker"
    answer = operation(challenge, "status", overall(pulls), f"{challenge.status}; images on workers: {detail}")
    answer["workers"] = pulls
    answer["active_instances"] = Instance.select().where(
        Instance.challenge_id == challenge.id, Instance.status.in_(list(ACTIVE))).count()
    return answer


def operation(challenge, name, status, detail):
    """The admin surface's RuntimeOperationResponse shape: {slug, operation, status, detail}."""
    return {"slug": challenge.id, "operation": name, "status": status, "detail": detail}


def worker_images(worker_ids=None):
    """{worker id: [{runtime, image, state, error, updated_at}]}, one query."""
    query = ImagePull.select().order_by(ImagePull.worker_id, ImagePull.runtime, ImagePull.image)
    if worker_ids is not None:
        query = query.where(ImagePull.worker_id.in_(list(worker_ids)))
    found = {}
    for row in query:
        found.setdefault(row.worker_id, []).append({"runtime": row.runtime, "image": row.image, "state": row.state,
                                                    "error": row.error, "updated_at": row.updated_at})
    return found


def pulled_on(worker_ids, runtime, image):
    """The ids among `worker_ids` that hold `image` for `runtime`."""
    if not worker_ids:
        return set()
    return {row.worker_id for row in ImagePull.select(ImagePull.worker_id).where(
        ImagePull.worker_id.in_(list(worker_ids)), ImagePull.runtime == runtime, ImagePull.image == image,
        ImagePull.state == "pulled")}


def delete_worker(worker_id):
    """Forget a worker without active instances (Conflict otherwise), and its pull states."""
    workers.delete_worker(worker_id)
    with database.atomic():
        ImagePull.delete().where(ImagePull.worker_id == worker_id).execute()
