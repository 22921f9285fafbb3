"""Instances: launch, look up, renew, restart, destroy and expire."""

import datetime
import logging
import math
import secrets
import time
import uuid

import peewee
from flask import current_app

from ctfhost import metrics
from ctfhost.worker import queue
from ctfhost.db import database, is_postgresql
from ctfhost.models import ACTIVE, Challenge, Instance, InstanceEndpoint, Worker, utcnow
from ctfhost.plugins import get_plugins
from ctfhost.services import events, flags, settings, workers
from ctfhost.services.errors import Conflict, NotFound, TooManyRequests, Unavailable
from ctfhost.services.placement import choose_worker
from ctfhost.timeutil import to_iso

log = logging.getLogger(__name__)


def new_hostname(challenge_id, first=None):
    """<12 random lowercase hex>.<challenge>.<base domain>; `first` fixes the first hex digit.

    An instance's other endpoints share its first digit: the Traefik shard
    that routes an instance is chosen by it, and holds all its routers.
    """
    prefix = secrets.token_hex(6)  # 12 lowercase hex characters
    if first is not None:
        prefix = first + prefix[1:]
    return f"{prefix}.{challenge_id}.{current_app.config['CTFHOST_BASE_DOMAIN']}"


def endpoint_for(hostname, protocol="http", tcp_port=None):
    """The proxy URL of an instance: http(s)://host[:port], or tls://host:port for TCP."""
    config = current_app.config
    if protocol == "tcp":
        return f"tls://{hostname}:{tcp_port or settings.get_settings()['tcp_port']}"
    scheme = "http" if config["CTFHOST_BASE_DOMAIN"] == "localhost" else "https"
    port = config.get("CTFHOST_PUBLIC_PORT")
    return f"{scheme}://{hostname}" + (f":{port}" if port else "")


def readiness_timeout(challenge):
    return float(challenge.options.get("readiness_timeout", current_app.config["CTFHOST_READINESS_TIMEOUT_SECONDS"]))


def get_instance(instance_id):
    instance = Instance.get_or_none(Instance.id == str(instance_id))
    if instance is None:
        raise NotFound(f"instance {instance_id} not found")
    return instance


def find_active(team_id, challenge_id):
    return Instance.get_or_none(
        Instance.team_id == str(team_id),
        Instance.challenge_id == challenge_id,
        Instance.status.in_(list(ACTIVE)),
    )


def get_active(team_id, challenge_id):
    instance = find_active(team_id, challenge_id)
    if instance is None:
        raise NotFound(f"team {team_id} has no active instance of challenge {challenge_id!r}")
    return instance


def list_instances(team_id=None, challenge_id=None, status=None, limit=100, offset=0, worker_id=None):
    """(rows, total) for the filters, newest first, paginated in SQL."""
    query = Instance.select()
    filters = {Instance.team_id: team_id, Instance.challenge_id: challenge_id, Instance.status: status,
               Instance.worker_id: worker_id}
    for column, value in filters.items():
        if value is not None:
            query = query.where(column == str(value))
    total = query.count()
    rows = list(query.order_by(Instance.created_at.desc(), Instance.id).limit(limit).offset(offset))
    return rows, total


def _insert_pending(team_id, challenge, limits, renewals=0):
    """Place and insert a pending instance; call inside a write transaction.

    `limits` are the settings the caller read in that transaction. A restart
    passes the old instance's `renewals`, so it cannot reset the challenge's
    max_renewals.
    """
    worker = choose_worker(challenge.runtime, challenge.image)
    now = utcnow()
    hostname = new_hostname(challenge.id)
    ttl = challenge.ttl_seconds or limits["default_ttl_seconds"]
    instance = Instance.create(
        id=str(uuid.uuid4()),
        team_id=str(team_id),
        team_id_numeric=isinstance(team_id, int),
        challenge_id=challenge.id,
        runtime=challenge.runtime,
        protocol=challenge.protocol,
        status="pending",
        hostname=hostname,
        endpoint=endpoint_for(hostname, challenge.protocol, limits["tcp_port"]),
        worker_id=worker.id,
        flag=flags.draw(challenge.flag_template) if challenge.flag_template else None,
        renewals=renewals,
        created_at=now,
        expires_at=now + datetime.timedelta(seconds=ttl),
    )
    endpoints = []
    for position, spec in enumerate(challenge.endpoint_specs):
        endpoint_host = new_hostname(challenge.id, first=hostname[0])
        endpoints.append(InstanceEndpoint.create(
            instance_id=instance.id, position=position, name=spec["name"], service=spec["service"],
            port=spec["port"], protocol=spec["protocol"], hostname=endpoint_host,
            endpoint=endpoint_for(endpoint_host, spec["protocol"], limits["tcp_port"]),
        ))
    _set_terms(instance, challenge, ttl, endpoints)  # what the answer shows, without reading them again
    instance.terms_known = True
    return instance


def _duplicate(team_id, challenge_id):
    return Conflict(f"team {team_id} already has an active instance of challenge {challenge_id!r}")


def _start(instance, challenge):
    """Queue the launch of a freshly committed instance (and tell listeners); undo it if the queue is down."""
    # told before the job may run (a fast worker's `placed` must not precede `queued`), in one round trip
    events.publish_all([
        ("instance.created", instance, {"status": instance.status, "endpoint": instance.endpoint,
                                        "expires_at": to_iso(instance.expires_at)}),
        events.phase_event(instance, "queued", events.launch_eta(instance)),
    ])
    try:
        queue.enqueue_launch(instance, readiness_timeout(challenge))
    except Exception as exc:
        log.error("could not queue launch of %s: %s", instance.id, exc)
        with database.atomic():
            if Instance.delete().where(Instance.id == instance.id, Instance.status == "pending").execute():
                InstanceEndpoint.delete().where(InstanceEndpoint.instance_id == instance.id).execute()
        events.instance_error(instance, "it could not be started", "the job queue is unavailable; nothing was launched")
        raise Unavailable("the job queue is unavailable; nothing was launched, try again") from None


def _lock_team(team_id):
    """Serialize a team's launches inside the transaction (SQLite's write lock already does)."""
    if is_postgresql():
        database.execute_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ctfhost-team:{team_id}",))


def check_fair_use(team_id, challenge_id, limits, replacing=False):
    """429 when the team holds too many instances, or launched this challenge too recently.

    Call inside the launch transaction with the settings read in it. A
    restart (`replacing`) swaps one instance for another, so only the
    cooldown applies to it.
    """
    if not replacing:
        most = limits["max_instances_per_team"]
        held = Instance.select().where(Instance.team_id == str(team_id), Instance.status.in_(list(ACTIVE))).count()
        if held >= most:
            raise TooManyRequests(
                f"team {team_id} already has {held} active instance(s), the most allowed "
                f"(max_instances_per_team = {most}); stop one first"
            )
    cooldown = limits["launch_cooldown_seconds"]
    if cooldown:
        last = (
            Instance.select(peewee.fn.MAX(Instance.created_at))
            .where(Instance.team_id == str(team_id), Instance.challenge_id == challenge_id)
            .scalar()
        )
        if last is not None:
            if isinstance(last, str):  # SQLite returns MAX() of a datetime column as text
                last = datetime.datetime.fromisoformat(last)
            wait = cooldown - (utcnow() - last).total_seconds()
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                raise TooManyRequests(
                    f"team {team_id} launched challenge {challenge_id!r} moments ago; "
                    f"wait {retry_after} s (launch_cooldown_seconds = {cooldown})",
                    headers={"Retry-After": str(retry_after)},
                )


def not_active(challenge):
    """The Conflict for launching `challenge` when it is not active (only the admin may, to test it)."""
    return Conflict(f"challenge {challenge.id!r} is not active (it is {challenge.status}): only the admin may launch "
                    "it; activate it first (POST /api/v1/challenges/{id}/activate)")


def create_instance(team_id, challenge_id, enforce_limits=True, allow_inactive=False):
    """Create a pending instance for a team and queue its launch.

    A challenge that is not active is launched only with `allow_inactive`
    (the admin testing a draft); else 409.
    """
    challenge = Challenge.get_or_none(Challenge.id == challenge_id)
    if challenge is None:
        raise NotFound(f"challenge {challenge_id!r} not found")
    if not challenge.is_active and not allow_inactive:
        raise not_active(challenge)
    existing = find_active(team_id, challenge_id)
    if existing is not None and not end_if_worker_lost(existing):
        raise _duplicate(team_id, challenge_id)
    try:
        with database.atomic():
            if enforce_limits:
                _lock_team(team_id)
            limits = settings.get_settings()
            if enforce_limits:
                check_fair_use(team_id, challenge_id, limits)
            instance = _insert_pending(team_id, challenge, limits)
    except peewee.IntegrityError:
        # the partial unique index lost us the race against an identical request
        if find_active(team_id, challenge_id) is not None:
            raise _duplicate(team_id, challenge_id) from None
        raise
    _start(instance, challenge)
    return instance


def drain_worker(worker_id, destroy=False):
    """Cordon a worker as `draining` to empty it: nothing is moved; with `destroy`, its active instances are
    destroyed now. Returns the worker, described."""
    worker = workers.set_state(worker_id, "draining")
    if destroy:
        for instance in workers.active_instances_of(worker_id):
            destroy_instance(instance.id)
        worker = workers.describe(worker)
    return worker


def end_instance(instance, status, error=None, only_from=ACTIVE):
    """Move an active instance to an ended status; True when this call did it.

    The update is conditional on the instance still being in one of
    `only_from` (active), so concurrent deletes, expiries and failures end it
    exactly once, and a failed launch (`only_from=("pending",)`) never ends
    an instance whose launch completed meanwhile.
    """
    now = utcnow()
    changed = (
        Instance.update(status=status, error=error, ended_at=now)
        .where(Instance.id == instance.id, Instance.status.in_(list(only_from)))
        .execute()
    )
    if changed:
        instance.status, instance.error, instance.ended_at = status, error, now
        get_plugins().route(instance, "withdraw")
        if status == "error":
            events.instance_error(instance, public_error(error), error)
        else:
            events.publish(f"instance.{status}", instance)
    return bool(changed)


def lost_worker_reason(worker_id):
    return (
        f"the worker {worker_id!r} running this instance stopped responding (no heartbeat for over "
        f"{workers.lost_after().total_seconds():g} s); launch it again"
    )


def end_if_worker_lost(instance):
    """End `instance` `error` when its worker is lost (CTFHOST_WORKER_LOST_SECONDS); True when this call did.

    The API calls it when the team launches again, so a relaunch never
    waits for an agent's sweep (there may be no live agent at all).
    """
    if not instance.worker_id or not workers.lost_workers().where(Worker.id == instance.worker_id).exists():
        return False
    return end_instance(instance, "error", lost_worker_reason(instance.worker_id))


def _queue_destroy(instance):
    try:
        queue.enqueue_destroy(instance)
    except Exception as exc:
        # the row already says ended; reconcile removes the leftovers later
        log.error("could not queue destroy of %s (reconcile will clean up): %s", instance.id, exc)


def destroy_instance(instance_id):
    """End an instance now (its route goes at once) and queue removal of its resources."""
    instance = get_instance(instance_id)
    end_instance(instance, "destroyed")
    if instance.worker_id:
        _queue_destroy(instance)
    return instance


def _get_active(instance_id, action):
    instance = get_instance(instance_id)
    if not instance.is_active:
        raise Conflict(f"instance {instance.id} is {instance.status}; only an active instance can be {action}")
    return instance


def restart_instance(instance_id, enforce_limits=True, allow_inactive=False):
    """Replace an active instance with a new one: new id, new hostname, full TTL (a launch: see create_instance)."""
    old = _get_active(instance_id, "restarted")
    challenge = Challenge.get_or_none(Challenge.id == old.challenge_id)
    if challenge is None:
        raise NotFound(f"challenge {old.challenge_id!r} no longer exists")
    if not challenge.is_active and not allow_inactive:
        raise not_active(challenge)
    ended_at = utcnow()
    with database.atomic():
        if enforce_limits:
            _lock_team(old.team_id)
        limits = settings.get_settings()
        if enforce_limits:
            check_fair_use(old.team_id, old.challenge_id, limits, replacing=True)
        ended = (
            Instance.update(status="destroyed", ended_at=ended_at)
            .where(Instance.id == old.id, Instance.status == old.status)
            .execute()
        )
        if not ended:
            raise Conflict(f"instance {old.id} ended while restarting")
        new = _insert_pending(old.team, challenge, limits, renewals=old.renewals)
    try:
        _start(new, challenge)
    except Unavailable:
        # nothing was queued: give the team its old instance back, untouched
        Instance.update(status=old.status, ended_at=None).where(
            Instance.id == old.id, Instance.status == "destroyed", Instance.ended_at == ended_at
        ).execute()
        raise Unavailable("the job queue is unavailable; the instance was not restarted, try again") from None
    old = get_instance(old.id)
    get_plugins().route(old, "withdraw")
    _queue_destroy(old)
    events.publish("instance.restarted", old, {"replaced_by": str(new.id)})
    return new


def renewal_terms(instances):
    """Set `ttl_seconds` (what a renew gives: expiry = now + that) and `renewals_left` (None: no limit) on each instance.

    One query for their challenges and one for the settings, however many
    instances are shown.
    """
    instances = list(instances)
    unknown = [instance for instance in instances if not getattr(instance, "terms_known", False)]
    ids = {instance.challenge_id for instance in unknown}
    challenges = {c.id: c for c in Challenge.select().where(Challenge.id.in_(list(ids)))} if ids else {}
    default_ttl = settings.default_ttl_seconds() if unknown else None
    endpoints = endpoints_of([instance.id for instance in unknown])
    for instance in unknown:
        challenge = challenges.get(instance.challenge_id)
        _set_terms(instance, challenge, (challenge.ttl_seconds if challenge else None) or default_ttl,
                   endpoints.get(instance.id, ()))
    return instances


def endpoints_of(instance_ids):
    """{instance id: [InstanceEndpoint, ...] in the challenge's order} for the instances that have endpoints beside main."""
    found = {}
    if not instance_ids:
        return found
    query = (InstanceEndpoint.select().where(InstanceEndpoint.instance_id.in_(list(instance_ids)))
             .order_by(InstanceEndpoint.instance_id, InstanceEndpoint.position))
    for endpoint in query:
        found.setdefault(endpoint.instance_id, []).append(endpoint)
    return found


def _set_terms(instance, challenge, ttl, endpoints=()):
    instance.ttl_seconds = ttl
    # every endpoint players reach, `main` first
    instance.endpoint_list = [{
        "name": "main", "service": "main", "port": challenge.port if challenge else None, "protocol": instance.protocol,
        "url": instance.endpoint, "connection": instance.connection,
    }] + [{
        "name": endpoint.name, "service": endpoint.service, "port": endpoint.port, "protocol": endpoint.protocol,
        "url": endpoint.endpoint, "connection": endpoint.connection,
    } for endpoint in endpoints]
    most = challenge.max_renewals if challenge else None
    instance.renewals_left = None if most is None else max(0, most - instance.renewals)


# What a team may read of why its instance failed: reasons the core writes,
# by their start; anything else (a runtime's own words: engine errors,
# exception reprs, image names) is for operators only.
PUBLIC_ERRORS = (
    ("the instance did not accept connections", "it did not become ready in time"),
    ("the instance stopped while starting", "it stopped while starting"),
    ("the worker ", "the server running it stopped responding"),
    ("the launch was interrupted", "its launch was interrupted"),
    ("the launch job was lost", "its launch was interrupted"),
    ("the instance ended while it was starting", "it was stopped while starting"),
    ("the instance's resources disappeared", "it stopped unexpectedly"),
)
PUBLIC_ERROR = "it could not be started"


def public_error(error):
    """A short reason for the team (None when there is no error); the detail stays in `error`."""
    if not error:
        return None
    for start, reason in PUBLIC_ERRORS:
        if error.startswith(start):
            return reason
    return PUBLIC_ERROR


def renew_instance(instance_id, enforce_limits=True):
    """Push expiry to now + the challenge TTL; returns (expires_at, seconds_added)."""
    instance = _get_active(instance_id, "renewed")
    challenge = Challenge.get_or_none(Challenge.id == instance.challenge_id)
    if enforce_limits and challenge is not None and challenge.max_renewals is not None:
        if instance.renewals >= challenge.max_renewals:
            raise Conflict(
                f"instance {instance.id} was renewed {instance.renewals} time(s), the most challenge "
                f"{challenge.id!r} allows (max_renewals = {challenge.max_renewals})"
            )
    ttl = settings.ttl_for(challenge) if challenge else settings.default_ttl_seconds()
    new_expiry = utcnow() + datetime.timedelta(seconds=ttl)
    added = int((new_expiry - instance.expires_at).total_seconds())
    # whole seconds, as the API shows times: a renew that gains only
    # milliseconds (right after a launch) does not extend anything
    if added < 1:
        raise Conflict(
            f"renewing now would not extend instance {instance.id}: it already runs until {to_iso(instance.expires_at)}"
        )
    changed = (
        Instance.update(expires_at=new_expiry, renewals=Instance.renewals + 1)
        .where(
            Instance.id == instance.id,
            Instance.status.in_(list(ACTIVE)),
            Instance.expires_at == instance.expires_at,
            Instance.renewals == instance.renewals,
        )
        .execute()
    )
    if not changed:
        raise Conflict(f"instance {instance.id} changed while renewing; try again")
    if instance.backend:
        # the proxy may check access itself against the instance's expiry (the Traefik plugin's middleware)
        instance.expires_at, instance.renewals = new_expiry, instance.renewals + 1
        get_plugins().route(instance, "publish")
    events.publish("instance.renewed", instance, {"expires_at": to_iso(new_expiry), "seconds_added": added})
    return new_expiry, added


EXPIRY_BATCH = 100


def expire_due(now=None, batch=EXPIRY_BATCH, deadline=None):
    """Expire active instances past their expiry, longest overdue first, and queue their removal; returns their ids.

    It reads `batch` due instances at a time through the expiry indexes (not
    every active instance), and takes no new batch after `deadline`
    (time.monotonic()): the next sweep goes on from there.
    """
    now = now or utcnow()
    expired = []
    while True:
        # read the batch first: an update while the SELECT is still open would
        # need SQLite to upgrade a stale read snapshot
        due = list(
            Instance.select()
            .where(Instance.status.in_(list(ACTIVE)), Instance.expires_at <= now)
            .order_by(Instance.expires_at)
            .limit(batch)
        )
        for instance in due:
            if end_instance(instance, "expired"):
                expired.append(instance.id)
                metrics.record_expiry(instance, now)
                _queue_destroy(instance)
        if len(due) < batch or (deadline is not None and time.monotonic() >= deadline):
            return expired


def warn_expiring(within_seconds, now=None, batch=EXPIRY_BATCH, deadline=None):
    """Publish `instance.expiring` once per expiry for running instances that end within `within_seconds`.

    Pages through the whole window (by expiry, then id), so instances warned
    already never hide the ones after them; no new page after `deadline`
    (time.monotonic()). Returns the ids warned now.
    """
    now = now or utcnow()
    window = (Instance.status == "running") & (Instance.expires_at > now) & (
        Instance.expires_at <= now + datetime.timedelta(seconds=within_seconds))
    warned, after = [], None
    while True:
        query = Instance.select().where(window)
        if after is not None:
            query = query.where((Instance.expires_at > after[0]) | (
                (Instance.expires_at == after[0]) & (Instance.id > after[1])))
        page = list(query.order_by(Instance.expires_at, Instance.id).limit(batch))
        warned += events.warn_each(page, now)
        if len(page) < batch or (deadline is not None and time.monotonic() >= deadline):
            return warned
        after = (page[-1].expires_at, page[-1].id)


def wait_for_change(instance_id, status, seconds, team_id=None):
    """The instance once its status is no longer `status`, or when `seconds` have passed.

    It wakes on the instance's events (one shared reader of the stream per
    process) and looks at the database at least every 2 s, so a lost event
    only delays the answer. It gives its database connection back while it
    waits: hundreds of waiting requests hold none. A wait counts among the
    streams of `team_id` (a team token's caller); when the process (or the
    team) holds its most, it answers at once.
    """
    deadline = time.monotonic() + seconds
    hub = events.hub()
    try:
        listener = hub.listen(events.Filter(instance_id=instance_id), owner=team_id)
    except (events.TooManyListeners, events.TooManyForTeam) as exc:
        log.info("not waiting for instance %s: %s", instance_id, exc)
        return get_instance(instance_id)
    try:
        while True:
            instance = get_instance(instance_id)
            remaining = deadline - time.monotonic()
            if instance.status != status or remaining <= 0:
                return instance
            if not database.is_closed() and not database.in_transaction():
                database.close()
            listener.next(min(remaining, 2.0))
    finally:
        hub.forget(listener)
