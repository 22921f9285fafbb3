"""The rendered config, kept per process as per-instance fragments and brought up to date from a Redis change log.

Traefik polls often (a short poll interval is what makes new routes go live
fast), so a poll of an unchanged fleet must be cheap: one Redis round-trip,
then the bytes this process already holds. A route change costs one
instance's work: the `route` hook appends the instance's id to a change log
in Redis (`ctfhost:traefik:changes`, numbered by the counter
`ctfhost:traefik:generation`); each web process re-reads only the changed
instances from the database, replaces their fragments and joins the body
again. The body is byte-identical to `dynamic.dumps(dynamic.render(...))`
of the whole fleet.

A process renders the whole fleet when it starts, when it fell further
behind than the log keeps, or when Redis lost the log (flushed or restarted:
the random `ctfhost:traefik:epoch` then changes). While Redis cannot be
reached it serves what it has for at most CTFHOST_TRAEFIK_CACHE_SECONDS,
then renders the whole fleet on each poll.
"""

import logging
import secrets
import threading
import time

from redis.exceptions import RedisError

from ctfhost.plugin_api import plugin_setting, redis_connection, routed_endpoints, routed_instances

from ctfhost_plugin_traefik import dynamic, shards
from ctfhost_plugin_traefik.default_certificate import default_certificate
from ctfhost_plugin_traefik.settings import options

log = logging.getLogger(__name__)

GENERATION_KEY = "ctfhost:traefik:generation"
CHANGES_KEY = "ctfhost:traefik:changes"
EPOCH_KEY = "ctfhost:traefik:epoch"
# entries kept in the change log: a process further behind renders the whole fleet
CHANGE_LOG_LENGTH = 10000
# a change whose instance is unknown (invalidate() without an id): everyone renders the whole fleet
EVERYTHING = "*"
# rendered configs kept per process, one per set of render options and shard (e.g. two Traefiks polling
# two addresses, or 16 shards)
STATES_KEPT = 20
# more changed instances than this since a process's last poll: one full render is cheaper than re-reading them
MOST_CHANGES_APPLIED = 1000
# the forms of the body
JSON, YAML = "json", "yaml"

# Both scripts run atomically in Redis, so a generation and its log entry
# are never seen apart. Entries are "<generation> <instance id>".
_RECORD = """
local generation = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], generation .. ' ' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('SETNX', KEYS[3], ARGV[3])
return generation
"""
# -> {epoch, generation[, entries after ARGV[1]]}; no entries when the caller is current, new or too far behind
_READ = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[3], epoch)
end
local generation = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
if since < 0 or since >= generation or generation - since > tonumber(ARGV[3]) then
  return {epoch, generation}
end
return {epoch, generation, redis.call('LRANGE', KEYS[2], since - generation, -1)}
"""

_lock = threading.Lock()
_states = {}  # (options, certificate) -> _Rendered


def _script(source):
    # registered per connection: redis-py loads it again after a Redis restart (NOSCRIPT)
    return redis_connection().register_script(source)


def invalidate(instance_id=None):
    """Tell every process that this instance's route changed (None: that anything may have changed)."""
    try:
        _script(_RECORD)(
            keys=[GENERATION_KEY, CHANGES_KEY, EPOCH_KEY],
            args=[instance_id or EVERYTHING, CHANGE_LOG_LENGTH, secrets.token_hex(8)],
        )
    except RedisError as exc:  # other processes then catch up by age (CACHE_SECONDS)
        log.warning("could not record a route change in %s: %s", CHANGES_KEY, exc)
        with _lock:
            _states.clear()


class _Rendered:
    """One process's config for one set of render options: per-instance fragments and the joined body."""

    def __init__(self, render_options, certificate, epoch, generation, rows, endpoints, shard=None):
        self.options, self.certificate = render_options, certificate
        self.shard = shard  # (index, count): only the instances of that shard, else the whole fleet
        self.epoch, self.generation = epoch, generation
        self.routes = dynamic.start_routes(render_options, dynamic.RouteMap)
        self.entries = {}  # instance id -> [(kind, name, middleware name)] of its routers
        self.apply({}, rows, endpoints)

    def apply(self, changed_ids, rows, endpoints=()):
        """Drop the fragments of `changed_ids`, add those of `rows` (the ones of them still routed) and of their
        `endpoints` (routed_endpoints() rows), join again."""
        for instance_id in changed_ids:
            for entry in self.entries.pop(instance_id, ()):
                dynamic.remove_route(self.routes, entry)
        grouped = dynamic.endpoints_by_instance(endpoints)
        for row in rows:
            # all of an instance's hosts start with the same hex digit: its shard holds every one of its routers
            if self.shard is not None and shards.shard_of(row[1], self.shard[1]) != self.shard[0]:
                continue
            entries = dynamic.instance_routes(row, self.options, grouped.get(row[0], ()))
            self.entries[row[0]] = [dynamic.added(entry) for entry in entries]
            for entry in entries:
                dynamic.add_route(self.routes, entry)
        self.bodies = {}  # format -> bytes, joined when first asked for
        self.checked_at = time.monotonic()

    def body(self, form):
        if form not in self.bodies:
            merge_chunk = dynamic.MERGE_CHUNK if form == YAML else None
            sharded = self.shard is not None and self.shard[1] > 1
            document = dynamic.document(self.routes, self.options, self.certificate, one_of_shards=sharded)
            self.bodies[form] = dynamic.dumps(document, merge_chunk)
        return self.bodies[form]


def _read_changes(state):
    """(epoch, generation, entries since `state`'s generation or None when they are not all in the log)."""
    since = -1 if state is None else state.generation
    reply = _script(_READ)(
        keys=[GENERATION_KEY, CHANGES_KEY, EPOCH_KEY], args=[since, secrets.token_hex(8), CHANGE_LOG_LENGTH]
    )
    epoch, generation = reply[0], int(reply[1])
    entries = [entry.decode().split(" ", 1) for entry in reply[2]] if len(reply) > 2 else None
    # the log must hold exactly since+1 .. generation, else something is missing
    if entries is not None and [int(number) for number, _ in entries] != list(range(since + 1, generation + 1)):
        entries = None
    return epoch, generation, entries


def _changed(state, epoch, generation, entries):
    """The instance ids to re-read for `state` to reach `generation`; None when it must render the whole fleet."""
    if state is None or state.epoch != epoch or generation < state.generation:
        return None
    if generation == state.generation:
        return set()
    if entries is None:
        return None
    ids = {instance_id for _, instance_id in entries}
    return None if EVERYTHING in ids or len(ids) > MOST_CHANGES_APPLIED else ids


def body(form=JSON, shard=None):
    """The current config as bytes: JSON, or (YAML) the YAML form Traefik decodes fastest.

    `shard` (index, count): only the instances of that shard (shards.py).
    """
    render_options = options()
    certificate = default_certificate()
    key = (render_options, tuple(sorted(certificate.items())) if certificate else None, shard)
    with _lock:
        state = _states.get(key)
        try:
            # read the generation before the rows: a change committed after this
            # read has a later generation, so the next poll re-reads it
            epoch, generation, entries = _read_changes(state)
        except RedisError as exc:
            max_age = float(plugin_setting("TRAEFIK", "CACHE_SECONDS", 5))
            if state is not None and time.monotonic() - state.checked_at < max_age:
                return state.body(form)
            log.warning("Redis unreachable (%s): rendering the Traefik config from the database", exc)
            epoch, generation, entries, state = None, -1, None, None
        ids = _changed(state, epoch, generation, entries)
        if ids is None:
            state = _Rendered(render_options, certificate, epoch, generation, routed_instances(), routed_endpoints(),
                              shard)
            _states.pop(key, None)
            _states[key] = state
            while len(_states) > STATES_KEPT:
                _states.pop(next(iter(_states)))
        elif ids:
            state.apply(ids, routed_instances(ids), routed_endpoints(ids))
            state.generation = generation
        else:
            state.checked_at = time.monotonic()
        return state.body(form)
