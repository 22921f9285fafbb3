"""Live instance events: published to a Redis Stream, replayed after a Last-Event-ID, fanned out to local listeners.

Every process that changes an instance (the API, worker jobs, the expiry
sweep) appends an event to one Redis Stream, capped in length
(CTFHOST_EVENTS_MAX_LENGTH) and age (CTFHOST_EVENTS_RETENTION_SECONDS). A
stream's entry id is the event's id, so a client reconnecting with the last
id it saw gets every later entry still kept.

A serving process reads the stream once, in one thread (`EventHub`), and
hands each entry to the listeners registered in that process: open SSE
streams and requests waiting (`?wait=`) for an instance to change. However
many clients listen, a process holds one blocking read on Redis.

Publishing never fails the change it reports: the database is the source of
truth, and an event lost while Redis is down is only a late notice.
"""

import json
import logging
import queue
import re
import threading
import time

import redis
from flask import current_app

from ctfhost.models import utcnow
from ctfhost.redis_client import connect, redis_connection
from ctfhost.timeutil import to_iso, to_iso_ms

log = logging.getLogger(__name__)

STREAM = "ctfhost:events"
# each challenge's recent launch time (created to running), for the ETA of a launch's phases
LAUNCH_SECONDS = "ctfhost:events:launch-seconds"
WARNED = "ctfhost:events:expiring:"

TYPES = (
    "instance.created", "instance.phase", "instance.running", "instance.renewed", "instance.restarted",
    "instance.expiring", "instance.expired", "instance.destroyed", "instance.error", "submission.correct",
)
# a launch's phases, in order
PHASES = ("queued", "placed", "pulling", "starting", "probing", "routing")
# what only operators read: a failure's detail (team tokens get its public message)
PRIVATE_DATA = ("detail",)
# how often a publishing process trims entries older than the retention
TRIM_EVERY_SECONDS = 10.0
_last_trim = [0.0]


def _settings(app=None):
    config = (app or current_app).config
    return config["CTFHOST_EVENTS_MAX_LENGTH"], config["CTFHOST_EVENTS_RETENTION_SECONDS"]


def _fields(kind, instance, data, team_id, challenge_id):
    if instance is not None:
        team_id, challenge_id = instance.team_id, instance.challenge_id
    return {
        "type": kind,
        "time": to_iso_ms(utcnow()),
        "team_id": "" if team_id is None else str(team_id),
        "challenge_id": challenge_id or "",
        "instance_id": "" if instance is None else str(instance.id),
        "data": json.dumps(data or {}, sort_keys=True, default=str),
    }


def publish_all(events):
    """Append events [(kind, instance, data)] to the stream in one round trip; their ids (None when Redis is down)."""
    entries = [_fields(kind, instance, data, None, None) for kind, instance, data in events]
    return _append(entries)


def publish(kind, instance=None, data=None, *, team_id=None, challenge_id=None):
    """Append an event about `instance` (or a team and challenge) to the stream; its id, or None when Redis is down."""
    return _append([_fields(kind, instance, data, team_id, challenge_id)])[0]


def _append(entries):
    max_length, retention = _settings()
    try:
        pipe = redis_connection().pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(STREAM, fields, maxlen=max_length, approximate=True)
        now = time.monotonic()
        if now - _last_trim[0] >= TRIM_EVERY_SECONDS:
            _last_trim[0] = now
            oldest = int(time.time() * 1000) - int(retention * 1000)
            pipe.xtrim(STREAM, minid=f"{oldest}-0", approximate=True)
        return [event_id.decode() for event_id in pipe.execute()[:len(entries)]]
    except redis.exceptions.RedisError as exc:
        log.warning("events %s not published (Redis: %s)",
                    ", ".join(f"{f['type']} of {f['instance_id'] or '-'}" for f in entries), exc)
        return [None] * len(entries)


def instance_error(instance, message, detail):
    publish("instance.error", instance, {"message": message, "detail": detail})


def phase_event(instance, name, eta_seconds=None):
    """(kind, instance, data) of the event: the launch of `instance` entered phase `name` (one of PHASES)."""
    return "instance.phase", instance, {"phase": name, "at": to_iso_ms(utcnow()), "eta_seconds": eta_seconds}


def phase(instance, name, eta_seconds=None):
    """Publish that the launch of `instance` entered phase `name` (one of PHASES)."""
    publish(*phase_event(instance, name, eta_seconds))


def launch_eta(instance):
    """Seconds until `instance` (pending) should be running, from its challenge's recent launches; None if unknown."""
    try:
        recent = redis_connection().hget(LAUNCH_SECONDS, instance.challenge_id)
    except redis.exceptions.RedisError:
        return None
    if recent is None:
        return None
    elapsed = (utcnow() - instance.created_at).total_seconds()
    return round(max(0.0, float(recent) - elapsed), 2)


def record_launch_seconds(challenge_id, seconds):
    """Fold one launch's created-to-running time into its challenge's recent figure (a moving average)."""
    try:
        conn = redis_connection()
        recent = conn.hget(LAUNCH_SECONDS, challenge_id)
        value = seconds if recent is None else 0.7 * float(recent) + 0.3 * seconds
        conn.hset(LAUNCH_SECONDS, challenge_id, f"{value:.3f}")
    except redis.exceptions.RedisError:
        pass


def warn_each(instances, now):
    """Publish `instance.expiring` for each instance whose present expiry was not warned about yet (one Redis round
    trip marks them all; a renew makes a new expiry); returns the ids warned now."""
    if not instances:
        return []
    try:
        pipe = redis_connection().pipeline(transaction=False)
        for instance in instances:
            left = (instance.expires_at - now).total_seconds()
            # the expiry as text: a naive datetime's timestamp() would read it in each agent's local time zone
            pipe.set(f"{WARNED}{instance.id}:{to_iso(instance.expires_at)}", "1", nx=True,
                     ex=max(60, int(left) + 60))
        firsts = pipe.execute()
    except redis.exceptions.RedisError:
        return []
    warned = []
    for instance, first in zip(instances, firsts):
        if first:
            left = (instance.expires_at - now).total_seconds()
            publish("instance.expiring", instance,
                    {"expires_at": to_iso(instance.expires_at), "seconds_left": max(0, int(left))})
            warned.append(instance.id)
    return warned


# -- reading ----------------------------------------------------------------------------------------


class Event:
    """One event as read from the stream."""

    __slots__ = ("id", "type", "time", "team_id", "challenge_id", "instance_id", "data", "order", "rendered")

    def __init__(self, event_id, fields):
        self.id = event_id
        self.order = id_order(event_id)
        self.type = fields.get("type", "")
        self.time = fields.get("time")
        self.team_id = fields.get("team_id") or None
        self.challenge_id = fields.get("challenge_id") or None
        self.instance_id = fields.get("instance_id") or None
        try:
            self.data = json.loads(fields.get("data") or "{}")
        except ValueError:
            self.data = {}
        self.rendered = {}

    @classmethod
    def from_entry(cls, entry):
        event_id, raw = entry
        return cls(_text(event_id), {_text(k): _text(v) for k, v in raw.items()})

    def as_dict(self, private=True):
        data = self.data if private else {k: v for k, v in self.data.items() if k not in PRIVATE_DATA}
        return {"id": self.id, "type": self.type, "time": self.time, "team_id": self.team_id,
                "challenge_id": self.challenge_id, "instance_id": self.instance_id, "data": data}

    def as_sse(self, private=True):
        """The event as a Server-Sent Events message; rendered once, however many streams send it."""
        found = self.rendered.get(private)
        if found is None:
            body = json.dumps(self.as_dict(private), sort_keys=True, separators=(",", ":"))
            found = self.rendered[private] = f"id: {self.id}\nevent: {self.type}\ndata: {body}\n\n".encode()
        return found


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def id_order(event_id):
    """A stream id ("ms-seq") as a tuple that sorts as Redis does; (-1, -1) for anything else."""
    ms, _, seq = str(event_id).partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return -1, -1


EVENT_ID = re.compile(r"\A(\d{1,20})-(\d{1,20})\Z")
MAX_ID_PART = 2 ** 64 - 1


def valid_id(event_id):
    """Whether `event_id` is a Redis Stream id ("ms-seq", each part below 2**64)."""
    found = EVENT_ID.match(str(event_id))
    return bool(found) and all(int(part) <= MAX_ID_PART for part in found.groups())


REPLAY_PAGE = 1000


def read_after(conn, event_id, wants, limit=10000):
    """The kept events after `event_id` that `wants` takes, oldest first: at most `limit` of them.

    Pages through the stream, so a team's own events are found however many
    of other teams' lie between.
    """
    found, position = [], event_id
    while len(found) < limit:
        entries = conn.xrange(STREAM, min=f"({position}", max="+", count=REPLAY_PAGE)
        for entry in entries:
            event = Event.from_entry(entry)
            if wants(event):
                found.append(event)
        if len(entries) < REPLAY_PAGE:
            break
        position = _text(entries[-1][0])
    return found[:limit]


def last_id(conn):
    """The id of the newest kept event, or "0-0"."""
    entries = conn.xrevrange(STREAM, count=1)
    return _text(entries[0][0]) if entries else "0-0"


class Filter:
    """Which events a listener wants: by team, challenge, instance and type (None: any)."""

    def __init__(self, team_id=None, challenge_id=None, instance_id=None, types=None):
        self.team_id = None if team_id is None else str(team_id)
        self.challenge_id = challenge_id
        self.instance_id = None if instance_id is None else str(instance_id)
        self.types = frozenset(types) if types else None

    def __call__(self, event):
        return ((self.team_id is None or event.team_id == self.team_id)
                and (self.challenge_id is None or event.challenge_id == self.challenge_id)
                and (self.instance_id is None or event.instance_id == self.instance_id)
                and (self.types is None or event.type in self.types))


class Listener:
    """A queue of the events one client wants, fed by the hub's thread.

    A client that stops reading while its connection stays open would make
    the queue grow without end: past BACKLOG waiting events the listener is
    `overflowed`, gets nothing more, and its stream ends (the client
    reconnects with its Last-Event-ID and is replayed what it missed).
    """

    BACKLOG = 10000

    def __init__(self, wants):
        self.wants = wants
        # SimpleQueue: a waiting thread wakes in C; queue.Queue's Python-level condition costs several times more
        # with hundreds of streams
        self.events = queue.SimpleQueue()
        self.overflowed = False

    def offer(self, event):
        if self.overflowed or not self.wants(event):
            return
        if self.events.qsize() >= self.BACKLOG:
            self.overflowed = True
            return
        self.events.put(event)

    def next(self, timeout):
        """The next event, or None after `timeout` seconds without one."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


class TooManyListeners(Exception):
    """This process holds as many listeners as CTFHOST_EVENTS_MAX_STREAMS allows."""


class TooManyForTeam(Exception):
    """This process holds as many listeners for one team as CTFHOST_EVENTS_MAX_STREAMS_PER_TEAM allows."""


class EventHub:
    """One process's reader of the stream: one thread, one blocking read, any number of listeners."""

    BLOCK_MS = 5000
    RETRY_SECONDS = 1.0

    def __init__(self, redis_url, max_listeners, max_per_owner=None):
        self.redis_url = redis_url
        self.max_listeners = max_listeners
        self.max_per_owner = max_per_owner
        self.owners = {}  # listener -> its owner (a team), for those that have one
        self.listeners = set()
        self.lock = threading.Lock()
        self.thread = None
        self.connected = threading.Event()

    def listen(self, wants, owner=None):
        """A new Listener; TooManyListeners when the process holds its most, TooManyForTeam when `owner` does."""
        listener = Listener(wants)
        with self.lock:
            if len(self.listeners) >= self.max_listeners:
                raise TooManyListeners(f"this server process holds {len(self.listeners)} event listeners, its most "
                                       f"(CTFHOST_EVENTS_MAX_STREAMS)")
            if owner is not None and self.max_per_owner is not None:
                held = sum(1 for other in self.owners.values() if other == owner)
                if held >= self.max_per_owner:
                    raise TooManyForTeam(f"team {owner} holds {held} event streams and waiting requests on this "
                                         f"server process, its most (CTFHOST_EVENTS_MAX_STREAMS_PER_TEAM)")
                self.owners[listener] = owner
            self.listeners.add(listener)
            if self.thread is None or not self.thread.is_alive():
                self.connected.clear()
                self.thread = threading.Thread(target=self._run, name="ctfhost-event-hub", daemon=True)
                self.thread.start()
        # events published from now on reach the listener once the reader has its position
        self.connected.wait(timeout=2)
        return listener

    def forget(self, listener):
        with self.lock:
            self.listeners.discard(listener)
            self.owners.pop(listener, None)

    def count(self):
        with self.lock:
            return len(self.listeners)

    def _run(self):
        # a connection of its own: the read blocks for BLOCK_MS at a time
        conn = connect(self.redis_url)
        conn.connection_pool.connection_kwargs["socket_timeout"] = self.BLOCK_MS / 1000 + 5
        position = None
        while True:
            with self.lock:
                if not self.listeners:
                    self.thread = None
                    return
            try:
                if position is None:
                    position = last_id(conn)
                    self.connected.set()
                found = conn.xread({STREAM: position}, block=self.BLOCK_MS, count=1000)
            except redis.exceptions.RedisError as exc:
                log.warning("event hub: Redis unreachable (%s); retrying", exc)
                self.connected.set()  # listeners go on with heartbeats and their own checks
                time.sleep(self.RETRY_SECONDS)
                continue
            for _stream, entries in found or ():
                for entry in entries:
                    event = Event.from_entry(entry)
                    position = event.id
                    with self.lock:
                        listeners = list(self.listeners)
                    for listener in listeners:
                        listener.offer(event)


def hub(app=None):
    """This process's EventHub (made on first use)."""
    app = app or current_app
    found = app.extensions.get("ctfhost.event_hub")
    if found is None:
        found = app.extensions.setdefault("ctfhost.event_hub", EventHub(
            app.config["CTFHOST_REDIS_URL"], app.config["CTFHOST_EVENTS_MAX_STREAMS"],
            app.config["CTFHOST_EVENTS_MAX_STREAMS_PER_TEAM"]))
    return found
