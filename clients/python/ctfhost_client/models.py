"""Typed answers of the ctfhost API: dataclasses built from its JSON, each matching one schema of /openapi.json.

Every field may be None: a team token is shown fewer fields than the API
key (no ``flag``, no challenge ``image``), and older servers lack newer
fields. Fields the server sends that a model does not know are kept in
``model.extra`` instead of failing, so a newer server does not break an
older client. ``SCHEMA`` names the OpenAPI component a model mirrors; a test
checks that the two have the same fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

TeamId = typing.Union[int, str]


def parse_time(value):
    """An ISO 8601 time (ctfhost's ``...Z``) as an aware UTC datetime; anything unreadable is kept as given."""
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


class Model:
    """Base of the answer models: ``from_json`` builds one, ``to_json`` gives JSON-ready data back."""

    SCHEMA: ClassVar[str | None] = None

    @classmethod
    def from_json(cls, data):
        if data is None:
            return None
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__} expects a JSON object, got {type(data).__name__}")
        hints = _hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {name: _convert(hints[name], data[name]) for name in known if name in data}
        model = cls(**values)
        model.extra = {key: value for key, value in data.items() if key not in known}
        return model

    def to_json(self):
        """The model as JSON-ready data (times as ISO 8601 with Z), unknown fields included."""
        data = {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}
        data.update(getattr(self, "extra", {}) or {})
        return data

    @classmethod
    def field_names(cls):
        return [f.name for f in dataclasses.fields(cls)]


_HINTS = {}


def _hints(cls):
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _convert(hint, value):
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = options[0] if len(options) == 1 else Any
        origin = typing.get_origin(hint)
    if hint is datetime.datetime:
        return parse_time(value)
    if isinstance(hint, type) and issubclass(hint, Model):
        return hint.from_json(value) if isinstance(value, dict) else value
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(item, v) for v in value]
    if origin is dict and isinstance(value, dict):
        _, item = typing.get_args(hint) or (str, Any)
        return {k: _convert(item, v) for k, v in value.items()}
    return value


def _to_json(value):
    if isinstance(value, Model):
        return value.to_json()
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def model(cls):
    """A dataclass whose fields all default to None, with ``extra`` (unknown fields) outside its fields."""
    for name in cls.__annotations__:
        if name != "SCHEMA" and not hasattr(cls, name):
            setattr(cls, name, None)
    cls = dataclass(cls)
    cls.extra = {}
    return cls


# -- challenges ---------------------------------------------------------------


@model
class ChallengeEndpoint(Model):
    """A port of a challenge's service that players reach (a challenge's ``expose``)."""

    SCHEMA = "Endpoint"
    name: str | None
    port: int | None
    protocol: str | None


@model
class Challenge(Model):
    """A challenge teams can launch. A team token sees only its public fields (no image, runtime options, flag)."""

    SCHEMA = "Challenge"
    id: str | None
    name: str | None
    runtime: str | None
    image: str | None
    port: int | None
    protocol: str | None
    cpu_count: int | None
    memory_mb: int | None
    ttl_seconds: int | None
    max_renewals: int | None
    flag_template: str | None
    extra_config: str | None
    services: dict[str, dict] | None
    expose: list[ChallengeEndpoint] | None
    status: str | None
    version: str | None
    description: str | None
    metadata: dict | None
    created_at: datetime.datetime | None
    updated_at: datetime.datetime | None


@model
class PullState(Model):
    """One image of a challenge on one worker."""

    SCHEMA = "PullState"
    worker_id: str | None
    image: str | None
    state: str | None
    error: str | None
    updated_at: datetime.datetime | None


@model
class Operation(Model):
    """What an operation on a challenge's fleet answered (pull)."""

    SCHEMA = "Operation"
    slug: str | None
    operation: str | None
    status: str | None
    detail: str | None


@model
class ChallengeStatus(Model):
    """A challenge's images per worker and its active instance count."""

    SCHEMA = "ChallengeStatus"
    slug: str | None
    operation: str | None
    status: str | None
    detail: str | None
    workers: list[PullState] | None
    active_instances: int | None


@model
class RestartOperation(Model):
    """What restarting every active instance of a challenge answered."""

    SCHEMA = "RestartOperation"
    slug: str | None
    operation: str | None
    status: str | None
    detail: str | None
    restarted: int | None
    failed: int | None


# -- instances ----------------------------------------------------------------


@model
class Endpoint(Model):
    """One endpoint of an instance: its name, protocol and proxy URL (and, for TCP, ready-to-paste commands)."""

    SCHEMA = "InstanceEndpoint"
    name: str | None
    service: str | None
    port: int | None
    protocol: str | None
    url: str | None
    connection: dict[str, str] | None


ACTIVE_STATUSES = ("pending", "running")


@model
class Instance(Model):
    """A team's instance of a challenge. ``status``: pending -> running -> destroyed | expired | error."""

    SCHEMA = "Instance"
    id: str | None
    team_id: TeamId | None
    challenge_id: str | None
    runtime: str | None
    protocol: str | None
    status: str | None
    endpoint: str | None
    connection: dict[str, str] | None
    endpoints: list[Endpoint] | None
    worker_id: str | None
    phase: str | None
    expires_at: datetime.datetime | None
    started_at: datetime.datetime | None
    created_at: datetime.datetime | None
    ended_at: datetime.datetime | None
    error: str | None
    public_error: str | None
    renewals: int | None
    renewals_left: int | None
    ttl_seconds: int | None
    flag: str | None

    @property
    def active(self):
        return self.status in ACTIVE_STATUSES

    def endpoint_named(self, name):
        """The endpoint called `name` (``main`` is the instance's ``endpoint``); KeyError if it has none."""
        for endpoint in self.endpoints or ():
            if endpoint.name == name:
                return endpoint
        raise KeyError(f"instance {self.id} has no endpoint {name!r}")


@model
class Renewal(Model):
    """What a renew answered: the new expiry and the seconds it added."""

    SCHEMA = "Renew"
    expires_at: datetime.datetime | None
    seconds_added: int | None


@model
class AccessLink(Model):
    """A single-use link that lets a browser into one HTTP endpoint of an instance."""

    SCHEMA = "AccessLink"
    url: str | None
    expires_in: int | None


# -- submissions --------------------------------------------------------------


@model
class Verdict(Model):
    """The grade of a flag: ``correct``, a message, the team's instance it was checked against, flag sharing."""

    SCHEMA = "Verdict"
    correct: bool | None
    message: str | None
    instance_id: str | None
    shared: bool | None

    def __bool__(self):
        return bool(self.correct)


@model
class FlagSharing(Model):
    """A flag submitted by one team that belongs to another team's instance."""

    SCHEMA = "FlagSharing"
    id: int | None
    at: datetime.datetime | None
    challenge_id: str | None
    submitting_team_id: str | None
    owning_team_id: str | None
    instance_id: str | None


# -- tokens, meta -------------------------------------------------------------


@model
class Token(Model):
    """A team token as listed (never its secret)."""

    SCHEMA = "Token"
    id: str | None
    team_id: TeamId | None
    name: str | None
    scopes: list[str] | None
    expires_at: datetime.datetime | None
    created_at: datetime.datetime | None
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None


@model
class NewToken(Model):
    """A token just minted: ``token`` is its secret (``cth_...``), shown this once."""

    SCHEMA = "NewToken"
    id: str | None
    team_id: TeamId | None
    name: str | None
    scopes: list[str] | None
    expires_at: datetime.datetime | None
    created_at: datetime.datetime | None
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    token: str | None


@model
class Caller(Model):
    """Who the server sees: ``kind`` admin, api_key, team or worker; a team token's team and id; the scopes."""

    SCHEMA = "Caller"
    kind: str | None
    team_id: str | None
    token_id: str | None
    scopes: list[str] | None


@model
class Meta(Model):
    """The server's version, API version, runtimes and features, and the caller."""

    SCHEMA = "Meta"
    server_version: str | None
    api_version: str | None
    runtimes: list[str] | None
    features: list[str] | None
    caller: Caller | None


# -- events -------------------------------------------------------------------


@model
class Event(Model):
    """One event of the live stream (``GET /api/v1/events``).

    ``type`` is e.g. ``instance.phase`` (``data["phase"]``: queued, placed,
    pulling, starting, probing, routing), ``instance.running``,
    ``instance.error`` (``data["message"]``) or ``submission.correct``;
    ``id`` is what a reconnect sends as ``Last-Event-ID``. The spec describes
    the stream as text, so this model is checked against the JSON the live
    server sends (tests/test_sdk_events.py), not against a schema.
    """

    SCHEMA = None
    id: str | None
    type: str | None
    time: datetime.datetime | None
    team_id: str | None
    challenge_id: str | None
    instance_id: str | None
    data: dict = field(default_factory=dict)

    @property
    def phase(self):
        """The launch phase of an ``instance.phase`` event, else None."""
        return (self.data or {}).get("phase") if self.type == "instance.phase" else None

    @classmethod
    def from_sse(cls, event_id, event_type, data):
        """An Event from one Server-Sent Event's fields (its data a JSON object, or anything else kept as text)."""
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return cls(id=event_id, type=event_type, data={"text": data})
        event = cls.from_json(body)
        event.id = event.id or event_id
        event.type = event.type or event_type
        if event.data is None:
            event.data = {}
        return event


# -- operators: workers, settings, audit, cluster -----------------------------


@model
class WorkerImage(Model):
    """An image ctfhost asked a worker to hold, with its pull state."""

    SCHEMA = "WorkerImage"
    runtime: str | None
    image: str | None
    state: str | None
    error: str | None
    updated_at: datetime.datetime | None


@model
class Worker(Model):
    """A worker agent: liveness (``status``), placement ``state`` (ready, cordoned, draining), load and images."""

    SCHEMA = "Worker"
    id: str | None
    address: str | None
    agent_port: int | None
    runtime: str | None
    runtimes: list[str] | None
    max_instances: int | None
    status: str | None
    state: str | None
    active_instances: int | None
    images: list[WorkerImage] | None
    last_heartbeat_at: datetime.datetime | None
    registered_at: datetime.datetime | None


@model
class Settings(Model):
    """Operator settings stored in the database."""

    SCHEMA = "Settings"
    default_ttl_seconds: int | None
    max_instances_per_team: int | None
    tcp_port: int | None
    launch_cooldown_seconds: int | None
    max_services_per_challenge: int | None
    max_endpoints_per_challenge: int | None


@model
class AuditEvent(Model):
    """One row of the audit trail: who changed what, and how it went."""

    SCHEMA = "AuditEvent"
    id: int | None
    at: datetime.datetime | None
    actor: str | None
    token_id: str | None
    team_id: str | None
    method: str | None
    action: str | None
    target: str | None
    client_ip: str | None
    status: int | None
    result: str | None
    message: str | None


@model
class Capacity(Model):
    """Workers, capacity and instances of one runtime (or of the whole fleet)."""

    SCHEMA = "Capacity"
    active_workers: int | None
    schedulable_workers: int | None
    capacity: int | None
    active_instances: int | None
    free_slots: int | None
    pending_launches: int | None


@model
class Cluster(Model):
    """The fleet's capacity per runtime and in total."""

    SCHEMA = "Cluster"
    runtimes: dict[str, Capacity] | None
    total: Capacity | None


class Page(list):
    """A list of one page of rows; ``total`` is every row matching the filters (the X-Total-Count header)."""

    def __init__(self, rows=(), total=None):
        super().__init__(rows)
        self.total = total


MODELS = [ChallengeEndpoint, Challenge, PullState, Operation, ChallengeStatus, RestartOperation, Endpoint, Instance,
          Renewal, AccessLink, Verdict, FlagSharing, Token, NewToken, Caller, Meta, Event, WorkerImage, Worker,
          Settings, AuditEvent, Capacity, Cluster]
