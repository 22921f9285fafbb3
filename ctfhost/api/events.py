"""GET /api/v1/events: live instance events as Server-Sent Events, replayed after a Last-Event-ID."""

import time

from flask import Response, current_app, request
from marshmallow import Schema, ValidationError, fields, validate, validates
from redis.exceptions import RedisError

from ctfhost.api.auth import API_KEY, TEAM, Blueprint, current_principal
from ctfhost.api.instances import check_team
from ctfhost.redis_client import redis_connection
from ctfhost.services import events as service
from ctfhost.services import tokens
from ctfhost.services.errors import Invalid, TooManyRequests, Unavailable

blp = Blueprint("events", __name__, url_prefix="/api/v1", description="Live instance events (Server-Sent Events).")

# how long a client waits before reconnecting after the stream drops (the SSE `retry:` field)
RECONNECT_MS = 3000
KEEPALIVE = b": keepalive\n\n"
# replayed at most this many events after a Last-Event-ID
REPLAY_LIMIT = 10000


_TYPE = "(" + "|".join(t.replace(".", "\\.") for t in service.TYPES) + ")"
# what `types` accepts, for clients reading the spec (the validator below names the unknown ones)
TYPES_PATTERN = f"^ *{_TYPE} *(, *{_TYPE} *)*$"


class EventArgsSchema(Schema):
    team_id = fields.String(validate=validate.Length(min=1, max=64),
                            metadata={"description": "Only this team's events (a team token: always its own team)"})
    challenge_id = fields.String(validate=validate.Length(min=1, max=63))
    instance_id = fields.UUID()
    types = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": f"Comma-separated event types (any of: {', '.join(service.TYPES)})",
                  "pattern": TYPES_PATTERN})
    last_event_id = fields.String(
        validate=validate.Length(min=3, max=41),
        metadata={"description": "Replay the kept events after this id, as the Last-Event-ID header does "
                  "(for clients that cannot set headers)", "pattern": service.EVENT_ID.pattern.replace("\\A", "^")
                  .replace("\\Z", "$"), "example": "1764745200000-0"})

    @validates("types")
    def _known_types(self, value, **kwargs):
        unknown = sorted({t.strip() for t in value.split(",")} - set(service.TYPES))
        if unknown:
            raise ValidationError(f"unknown event type(s) {', '.join(map(repr, unknown))}; "
                                  f"known: {', '.join(service.TYPES)}")


def _stream(hub, listener, replay, private, heartbeat, still_allowed=lambda: True):
    """The response body: replayed events, then live ones, with a comment line whenever it is idle.

    Every `heartbeat` seconds, events or not, `still_allowed()` is asked
    whether the caller may go on (a team token revoked or expired meanwhile
    may not): the stream ends when it says no.
    """
    try:
        yield f"retry: {RECONNECT_MS}\n: connected\n\n".encode()
        seen = (-1, -1)
        for event in replay:
            seen = event.order
            yield event.as_sse(private)
        next_check = time.monotonic() + heartbeat
        while not listener.overflowed:
            event = listener.next(max(0.0, next_check - time.monotonic()))
            if event is not None and event.order > seen:
                yield event.as_sse(private)
            if time.monotonic() >= next_check:
                if not still_allowed():
                    return
                next_check = time.monotonic() + heartbeat
                if event is None:
                    yield KEEPALIVE
    finally:
        hub.forget(listener)


def _token_checker(principal):
    """still_allowed for a stream: a team token must stay unrevoked and unexpired; others always may."""
    if not principal.is_team:
        return lambda: True
    return lambda: tokens.is_live(principal.token_id)


@blp.route("/events")
@blp.allow(API_KEY, TEAM, scope="events")
@blp.arguments(EventArgsSchema, location="query")
@blp.doc(responses={"200": {
    "description": "`text/event-stream`: each event has `id`, `event` (its type) and `data` (JSON: id, type, time, "
                   "team_id, challenge_id, instance_id, data); `: keepalive` comments while idle. Reconnect with "
                   "`Last-Event-ID` to receive what was missed (kept for CTFHOST_EVENTS_RETENTION_SECONDS).",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
@blp.alt_response(422, description="A bad filter or Last-Event-ID.")
@blp.alt_response(429, description="The team holds its most streams on this server process (Retry-After).")
@blp.alt_response(503, description="Redis is unreachable, or this process holds its most streams (Retry-After).")
def stream(args):
    """Follow instance events live: a team token gets its own team's; the API key and the admin everyone's, filtered"""
    principal = current_principal()
    team_id = args.get("team_id")
    if principal.is_team:
        if team_id is not None:
            check_team(team_id)
        team_id = principal.team_id
    types = {t.strip() for t in args["types"].split(",")} if args.get("types") else None
    wants = service.Filter(team_id, args.get("challenge_id"), args.get("instance_id"), types)
    after = request.headers.get("Last-Event-ID") or args.get("last_event_id")
    if after is not None and not service.valid_id(after):
        raise Invalid({"headers": {"Last-Event-ID": [f"{after[:40]!r} is not an event id (like 1764745200000-0)"]}})
    try:
        redis_connection().ping()
    except RedisError:
        raise Unavailable("the event stream (Redis) is unavailable; try again", headers={"Retry-After": "5"}) from None
    hub = service.hub()
    try:
        listener = hub.listen(wants, owner=principal.own_team_id)
    except service.TooManyListeners as exc:
        raise Unavailable(f"{exc}; try again", headers={"Retry-After": "5"}) from None
    except service.TooManyForTeam as exc:
        raise TooManyRequests(f"{exc}; close one first", headers={"Retry-After": "5"}) from None
    try:
        # after listening: an event published while the replay is read reaches the listener too
        replay = service.read_after(redis_connection(), after, wants, REPLAY_LIMIT) if after else []
    except Exception:
        hub.forget(listener)
        raise
    heartbeat = current_app.config["CTFHOST_EVENTS_HEARTBEAT_SECONDS"]
    # no stream_with_context: the request (and its database connection) ends here, the body streams without it
    body = _stream(hub, listener, replay, private=not principal.is_team, heartbeat=heartbeat,
                   still_allowed=_token_checker(principal))
    response = Response(body, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    # a HEAD answer never runs the body, whose end forgets the listener: the server's close of the answer does
    response.call_on_close(lambda: hub.forget(listener))
    return response
