"""The SDK's entry points: :class:`Client` for teams (and the scoreboard's API key), :class:`AdminClient` for operators."""

from __future__ import annotations

import os
import time
import urllib.parse

from ctfhost_client import errors
from ctfhost_client.events import EventStream
from ctfhost_client.models import (
    AccessLink, AuditEvent, Challenge, ChallengeStatus, Cluster, FlagSharing, Instance, Meta, NewToken, Operation,
    Page, Renewal, RestartOperation, Settings, Token, Verdict, Worker,
)
from ctfhost_client.transport import RetryPolicy, Transport

MAX_SERVER_WAIT = 120  # the most ?wait= the server accepts
FAILED_STATUSES = ("error", "expired", "destroyed")
# a GET ?wait= that answers sooner than this without a change is an older server ignoring wait: pause instead
MIN_POLL_SECONDS = 0.5


def _path(*parts):
    """An API path from literal parts and ids: ``_path("instances", instance_id, "renew")``.

    Every part is percent-encoded as one path segment (``/``, ``?``, ``#``
    and ``%`` included), and a part that is only dots is encoded too, so an
    id such as ``"../tokens"`` or ``".."`` cannot reach another route. A
    part with a ``/`` raises NotFound without a request: servers decode
    ``%2F`` before routing (WSGI's PATH_INFO), so no encoding keeps it one
    segment, and no ctfhost id (challenge, instance, team, token, worker)
    contains one.
    """
    segments = []
    for part in parts:
        if "/" in str(part):
            raise errors.NotFound(f"{str(part)!r} is not a ctfhost id (ids never contain '/'); nothing was sent",
                                  status=404)
        segment = urllib.parse.quote(str(part), safe="")
        segments.append(segment.replace(".", "%2E") if segment in (".", "..") else segment)
    return "/api/v1/" + "/".join(segments)


def _total(response):
    try:
        return int(response.headers.get("X-Total-Count"))
    except (TypeError, ValueError):
        return None


def _page(transport, model, path, params):
    response = transport.call("GET", path, params=params)
    return Page((model.from_json(row) for row in response.json()), _total(response))


class Resource:
    """A group of calls sharing the client's transport (and, for team tokens, its idea of the caller's team)."""

    def __init__(self, client):
        self._client = client
        self._http = client.transport


# -- what teams (and the scoreboard) call -------------------------------------


class Challenges(Resource):
    """``client.challenges``: the challenges a team may launch (a team token sees active ones, public fields)."""

    def list(self, status=None):
        """Every challenge (``status``: draft, active or inactive, for the API key and admin)."""
        return [Challenge.from_json(row) for row in self._http.json("GET", "/api/v1/challenges", params={"status": status})]

    def get(self, challenge_id):
        """One challenge; NotFound if there is none (or, for a team token, it is not active)."""
        return Challenge.from_json(self._http.json("GET", _path("challenges", challenge_id)))


class Instances(Resource):
    """``client.instances``: launch, read, renew, restart and stop instances."""

    def start(self, challenge_id, team_id=None, *, wait=True, timeout=300.0, on_progress=None, use_events=None):
        """Launch an instance of `challenge_id` and (with ``wait``) return it once running.

        A team token launches for its own team (`team_id` may be left out);
        the API key and the admin must give `team_id`. With ``wait=False``
        the pending instance is returned at once. While waiting,
        `on_progress` is called with each :class:`~ctfhost_client.Event` of
        the instance (launch phases: queued, placed, pulling, starting,
        probing, routing) when the event stream is used, or with each
        :class:`~ctfhost_client.Instance` snapshot when polling.
        `use_events`: True to follow the event stream, False to poll with
        ``?wait=``; by default the stream is followed when `on_progress` is
        given and the server offers events to this caller.

        If the answer to the launch is lost (the connection broke after it
        was sent), the team's instance is looked up rather than launched
        twice; a retry answered 409 ("already has an active instance")
        likewise returns the existing instance.

        If the instance is restarted while the event stream is followed
        (someone else restarted it: an ``instance.restarted`` event, passed
        to `on_progress`, whose ``data["replaced_by"]`` names the new
        instance), ``start`` follows the replacement and returns it once
        running: the instance returned then has another ``id`` than the one
        launched (compare with ``event.data["replaced_by"]``). While polling
        (no event stream), a restart shows as the launched instance being
        destroyed: :class:`InstanceFailed`.

        Raises :class:`InstanceFailed` (with ``.instance`` and ``.error``)
        when it ends in error (or is destroyed or expires) before running,
        :class:`InstanceTimeout` (a TimeoutError) when `timeout` seconds pass.
        """
        started = time.monotonic()
        deadline = started + timeout if timeout is not None else None
        if use_events is None:
            use_events = on_progress is not None and self._client.may_stream_events()
        server_wait = 0 if not wait or use_events else self._server_wait(deadline)
        instance = self._launch(challenge_id, team_id, server_wait)
        if not wait:
            return instance
        if on_progress is not None and not use_events:
            on_progress(instance)
        if instance.status == "pending" and use_events:
            instance, followed = self._follow_events(instance, deadline, on_progress)
            use_events = followed  # without the stream, polling passes on the snapshots
        return self._await(instance, deadline, timeout, on_progress if not use_events else None)

    def wait(self, instance_id, timeout=300.0, on_progress=None):
        """Wait until the instance runs: the running Instance, or InstanceFailed / InstanceTimeout (as ``start``)."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        return self._await(self.get(instance_id), deadline, timeout, on_progress)

    def get(self, instance_id, *, wait=None):
        """One instance. ``wait`` (seconds, at most 120): answer as soon as its status changes, or when it ends."""
        timeout = None if not wait else wait + self._http.timeout
        return Instance.from_json(self._http.json("GET", _path("instances", instance_id),
                                                  params={"wait": wait or None}, timeout=timeout))

    def find(self, challenge_id, team_id=None):
        """The team's active instance of a challenge, or None."""
        team = self._client.team_for(team_id)
        if team is None:
            raise ValueError("team_id is needed to look an instance up with the API key or the admin token")
        try:
            return Instance.from_json(self._http.json("GET", _path("instances", "team", team, challenge_id)))
        except errors.NotFound:
            return None

    def list(self, *, team_id=None, challenge_id=None, status=None, worker_id=None, limit=None, offset=None):
        """Instances, newest first (a team token: its team's); a :class:`Page` (``.total``: all that match)."""
        return _page(self._http, Instance, "/api/v1/instances",
                     {"team_id": team_id, "challenge_id": challenge_id, "status": status, "worker_id": worker_id,
                      "limit": limit, "offset": offset})

    def renew(self, instance_id):
        """Extend the instance to now + its challenge's TTL: a :class:`Renewal` (new ``expires_at``, ``seconds_added``)."""
        return Renewal.from_json(self._http.json("POST", _path("instances", instance_id, "renew")))

    def restart(self, instance_id):
        """Replace the instance by a fresh one (new id, new hostname, full TTL): the new, pending Instance."""
        return Instance.from_json(self._http.json("POST", _path("instances", instance_id, "restart")))

    def stop(self, instance_id):
        """Stop and remove the instance (stopping an ended one is no error, so a retry after a lost answer is safe)."""
        self._http.call("DELETE", _path("instances", instance_id))

    def access_link(self, instance_id, endpoint=None, next_path=None):
        """A single-use, 60-second link that lets a browser into the instance (its `endpoint`, ``main`` by default)."""
        body = {key: value for key, value in (("endpoint", endpoint), ("next", next_path)) if value is not None}
        # a lost answer only leaves an unused ticket behind, which expires: safe to send again
        return AccessLink.from_json(self._http.json("POST", _path("instances", instance_id, "access"), json=body,
                                                    idempotent=True))

    # -- launching and waiting ---------------------------------------------

    @staticmethod
    def _server_wait(deadline):
        if deadline is None:
            return MAX_SERVER_WAIT
        return max(0, min(MAX_SERVER_WAIT, int(deadline - time.monotonic())))

    def _launch(self, challenge_id, team_id, server_wait):
        # a team token's own team is the server's default: the body names a team only when the caller did
        body = {"challenge_id": challenge_id}
        if team_id is not None:
            body["team_id"] = team_id

        def recover():
            # an earlier try may have created it: find it rather than launch a second one
            team = self._client.team_for(team_id)
            return self.find(challenge_id, team) if team is not None else None

        data = self._http.json("POST", "/api/v1/instances", json=body, params={"wait": server_wait or None},
                               recover=recover, timeout=server_wait + self._http.timeout)
        return data if isinstance(data, Instance) else Instance.from_json(data)

    def _await(self, instance, deadline, timeout, on_progress):
        while True:
            if instance.status == "running":
                return instance
            if instance.status in FAILED_STATUSES:
                raise errors.InstanceFailed(instance)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.InstanceTimeout(instance, timeout)
            wait = max(1, int(min(MAX_SERVER_WAIT, remaining if remaining is not None else MAX_SERVER_WAIT)))
            asked = time.monotonic()
            latest = self.get(instance.id, wait=wait)
            changed = latest.status != instance.status or latest.phase != instance.phase
            instance = latest
            if changed and on_progress is not None:
                on_progress(instance)
            if not changed and time.monotonic() - asked < MIN_POLL_SECONDS:
                time.sleep(MIN_POLL_SECONDS)

    def _follow_events(self, instance, deadline, on_progress):
        """Pass the instance's events to on_progress until it runs or fails: (its latest state, whether the stream served).

        When the instance is restarted meanwhile (``instance.restarted``, by
        a teammate, the console or an operator), the replacement it names
        (``data["replaced_by"]``) is followed from then on, its launch
        events passed on as well: the state returned is the replacement's.
        On trouble with the stream (no events scope, an older server, Redis
        down) polling with ?wait= takes over.
        """
        while True:
            # the stream replays events after this id: one just before the instance was created, in the server's clock
            since = f"{int(instance.created_at.timestamp() * 1000) - 1000}-0" if instance.created_at else None
            remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
            stream = self._client.events(instance_id=instance.id, last_event_id=since, max_duration=remaining)
            replaced_by = None
            try:
                for event in stream:
                    if event.instance_id not in (None, "", instance.id):
                        continue
                    on_progress(event)
                    if event.type == "instance.restarted":
                        replaced_by = (event.data or {}).get("replaced_by")
                        if replaced_by:
                            break
                    if event.type in ("instance.running", "instance.error", "instance.expired", "instance.destroyed"):
                        break
            except (errors.Forbidden, errors.NotFound, errors.Invalid, errors.Unavailable, errors.ConnectionFailed):
                return self.get(instance.id), False
            finally:
                stream.close()
            if not replaced_by:
                return self.get(instance.id), True
            instance = self.get(replaced_by)
            if instance.status != "pending" or (deadline is not None and time.monotonic() >= deadline):
                return instance, True


class Submissions(Resource):
    """``client.submissions``: grade flags against the team's instance."""

    def submit(self, challenge_id, flag, team_id=None):
        """Grade a flag and record it (another team's flag counts as flag sharing): a :class:`Verdict`."""
        return self._grade("/api/v1/submissions", challenge_id, flag, team_id, idempotent=False)

    def verify(self, challenge_id, flag, team_id=None):
        """Check a flag like ``submit``, recording nothing: a :class:`Verdict`."""
        return self._grade("/api/v1/submissions/verify", challenge_id, flag, team_id, idempotent=True)

    def _grade(self, path, challenge_id, flag, team_id, idempotent):
        body = {"challenge_id": challenge_id, "flag": flag}
        if team_id is not None:  # a team token's own team is the server's default
            body["team_id"] = team_id
        return Verdict.from_json(self._http.json("POST", path, json=body, idempotent=idempotent))


class Tokens(Resource):
    """``client.tokens`` / ``admin.tokens``: team tokens (a team token with the ``tokens`` scope: its own team's)."""

    def list(self, team_id=None, include_revoked=False):
        """Tokens, never their secrets."""
        rows = self._http.json("GET", "/api/v1/tokens",
                               params={"team_id": team_id, "include_revoked": "true" if include_revoked else None})
        return [Token.from_json(row) for row in rows]

    def create(self, name, team_id=None, *, expires_at=None, scopes=None):
        """Mint a token: a :class:`NewToken` whose ``token`` is the secret, shown this once.

        `expires_at`: a datetime or ISO 8601 text (None: never, or for a team
        token its own expiry); `scopes`: a subset of instances:read,
        instances:write, submissions, events, tokens.
        """
        body = {"name": name}
        if team_id is not None:
            body["team_id"] = team_id
        if expires_at is not None:
            body["expires_at"] = expires_at if isinstance(expires_at, str) else \
                expires_at.isoformat().replace("+00:00", "Z")
        if scopes is not None:
            body["scopes"] = list(scopes)
        return NewToken.from_json(self._http.json("POST", "/api/v1/tokens", json=body))

    def revoke(self, token_id):
        """Revoke a token (a team token: its own team's only)."""
        self._http.call("DELETE", _path("tokens", token_id))


class Client:
    """A ctfhost client for a team (team token) or the scoreboard (API key).

    ``Client(url, token)`` sends ``Authorization: Bearer <token>``;
    ``Client(url, api_key=...)`` sends ``x-api-key`` and must name the team
    in every team call. `retry` is a :class:`RetryPolicy`; `timeout` the
    seconds each request may take (waits add their own). On first use the
    client reads ``/api/v1/meta`` once and warns (CtfhostVersionWarning)
    when the server's major version is not the one it was written for.
    """

    def __init__(self, url, token=None, *, api_key=None, admin_token=None, timeout=30.0, retry=None,
                 check_version=True, http_transport=None, user_agent=None):
        self.transport = Transport(url, token=token, api_key=api_key, admin_token=admin_token, timeout=timeout,
                                   retry=retry, check_version=check_version, http_transport=http_transport,
                                   user_agent=user_agent)
        self.url = self.transport.url
        self._meta = None
        self.challenges = Challenges(self)
        self.instances = Instances(self)
        self.submissions = Submissions(self)
        self.tokens = Tokens(self)

    @classmethod
    def from_env(cls, environ=None, **kwargs):
        """A client from CTFHOST_URL and CTFHOST_TOKEN (or CTFHOST_API_KEY for the scoreboard's key)."""
        environ = os.environ if environ is None else environ
        url = environ.get("CTFHOST_URL")
        if not url:
            raise ValueError("CTFHOST_URL is not set (e.g. https://ctfhost.example.org)")
        token, api_key = environ.get("CTFHOST_TOKEN"), environ.get("CTFHOST_API_KEY")
        if not token and not api_key:
            raise ValueError("set CTFHOST_TOKEN (a team token, cth_...) or CTFHOST_API_KEY")
        return cls(url, token or None, api_key=None if token else api_key, **kwargs)

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def meta(self, refresh=False):
        """The server's version, API version, runtimes, features, and who the caller is (:class:`Meta`)."""
        if self._meta is None or refresh:
            self._meta = Meta.from_json(self.transport.json("GET", "/api/v1/meta"))
        return self._meta

    def team_for(self, team_id):
        """The team a call acts for: the one given, else a team token's own (from /api/v1/meta), else None."""
        if team_id is not None:
            return team_id
        try:
            caller = self.meta().caller
        except errors.NotFound:  # a server older than /api/v1/meta
            return None
        return caller.team_id if caller is not None and caller.kind == "team" else None

    def may_stream_events(self):
        """Whether the server offers the event stream to this caller (its features and the caller's scopes)."""
        try:
            meta = self.meta()
        except errors.CtfhostError:
            return False
        if "events" not in (meta.features or ()):
            return False
        return meta.caller is None or "events" in (meta.caller.scopes or ())

    def events(self, *, team_id=None, challenge_id=None, instance_id=None, types=None, last_event_id=None,
               reconnect=True, max_duration=None, idle_timeout=45.0, max_failures=None):
        """The live events (an iterator of :class:`Event`): a team token's own team's; filters for the others.

        `types`: event types to keep (e.g. ``["instance.running"]``);
        `last_event_id`: start after this event (the server replays what it
        kept since). It reconnects with backoff and ``Last-Event-ID`` until
        closed, until `max_duration` seconds pass, or (with `max_failures`)
        after that many failed connections in a row.
        """
        if types is not None and not isinstance(types, str):
            types = ",".join(types)
        params = {"team_id": team_id, "challenge_id": challenge_id, "instance_id": instance_id, "types": types}
        return EventStream(self.transport, params, last_event_id=last_event_id, reconnect=reconnect,
                           max_duration=max_duration, idle_timeout=idle_timeout, max_failures=max_failures)


# -- what operators call ------------------------------------------------------


class AdminChallenges(Challenges):
    """``admin.challenges``: register, change, open, close, pull, restart and remove challenges."""

    def create(self, challenge=None, **fields):
        """Register a challenge (the fields of the API's Challenge: id, name, runtime, image, port, ...)."""
        body = {**(challenge or {}), **fields}
        return Challenge.from_json(self._http.json("POST", "/api/v1/challenges", json=body))

    def update(self, challenge_id, changes=None, **fields):
        """Change some fields of a challenge: the challenge as changed."""
        body = {**(changes or {}), **fields}
        return Challenge.from_json(self._http.json("PATCH", _path("challenges", challenge_id), json=body,
                                                   idempotent=True))

    def delete(self, challenge_id, force=False):
        """Remove a challenge (Conflict while it has active instances, unless `force` destroys them first)."""
        self._http.call("DELETE", _path("challenges", challenge_id), params={"force": "true" if force else None})

    def activate(self, challenge_id):
        """Let teams launch the challenge."""
        return Challenge.from_json(self._http.json("POST", _path("challenges", challenge_id, "activate"),
                                                   idempotent=True))

    def deactivate(self, challenge_id, destroy_instances=False):
        """Withdraw the challenge (running instances go on unless `destroy_instances`)."""
        return Challenge.from_json(self._http.json(
            "POST", _path("challenges", challenge_id, "deactivate"),
            params={"destroy_instances": "true" if destroy_instances else None}, idempotent=True))

    def pull(self, challenge_id):
        """Pull the challenge's images on every active worker of its runtime, in the background (:class:`Operation`)."""
        return Operation.from_json(self._http.json("POST", _path("challenges", challenge_id, "pull"), idempotent=True))

    def restart(self, challenge_id):
        """Restart every active instance of the challenge (:class:`RestartOperation`)."""
        return RestartOperation.from_json(self._http.json("POST", _path("challenges", challenge_id, "restart")))

    def status(self, challenge_id):
        """The challenge's image pull states per worker and its active instances (:class:`ChallengeStatus`)."""
        return ChallengeStatus.from_json(self._http.json("GET", _path("challenges", challenge_id, "status")))

    def weights(self, challenge_id):
        """Per-team weights plugins report for the challenge: {team: weight}."""
        return self._http.json("GET", _path("challenges", challenge_id, "weights"))["weights"]


class Workers(Resource):
    """``admin.workers``: the worker agents, and their placement state."""

    def list(self):
        """Every worker with liveness, state, load and image pull states."""
        return [Worker.from_json(row) for row in self._http.json("GET", "/api/v1/workers")]

    def get(self, worker_id):
        """One worker (NotFound if none); the API has no single-worker route, so this reads the list."""
        for worker in self.list():
            if worker.id == worker_id:
                return worker
        raise errors.NotFound(f"worker {worker_id!r} not found", status=404)

    def cordon(self, worker_id):
        """Place no new instance on the worker (its instances go on)."""
        return self._state(worker_id, "cordon")

    def uncordon(self, worker_id):
        """Let placement choose the worker again."""
        return self._state(worker_id, "uncordon")

    def drain(self, worker_id, destroy=False):
        """Cordon the worker to empty it; `destroy` also destroys its active instances now."""
        return self._state(worker_id, "drain", {"destroy": "true" if destroy else None})

    def delete(self, worker_id):
        """Forget a worker that runs no active instance (Conflict otherwise)."""
        self._http.call("DELETE", _path("workers", worker_id))

    def _state(self, worker_id, action, params=None):
        return Worker.from_json(self._http.json("POST", _path("workers", worker_id, action), params=params,
                                                idempotent=True))


class SettingsResource(Resource):
    """``admin.settings``: the operator settings stored in the database."""

    def get(self):
        return Settings.from_json(self._http.json("GET", "/api/v1/settings"))

    def update(self, changes=None, **fields):
        """Change some settings: all settings as changed."""
        return Settings.from_json(self._http.json("PATCH", "/api/v1/settings", json={**(changes or {}), **fields},
                                                  idempotent=True))


class Audit(Resource):
    """``admin.audit``: who changed what (admin token only)."""

    def list(self, *, actor=None, team_id=None, token_id=None, target=None, method=None, result=None, status=None,
             since=None, until=None, limit=None, offset=None):
        """Audit rows, newest first, filtered; a :class:`Page` (``.total``: all that match)."""
        params = {"actor": actor, "team_id": team_id, "token_id": token_id, "target": target, "method": method,
                  "result": result, "status": status, "since": _iso(since), "until": _iso(until), "limit": limit,
                  "offset": offset}
        return _page(self._http, AuditEvent, "/api/v1/audit", params)


class ClusterResource(Resource):
    """``admin.cluster``: the fleet's capacity."""

    def get(self):
        """Workers, capacity, active instances, free slots, pending launches, per runtime and in total."""
        return Cluster.from_json(self._http.json("GET", "/api/v1/cluster"))


class FlagSharingResource(Resource):
    """``admin.flag_sharing``: flags a team submitted that belong to another team's instance."""

    def list(self, *, challenge_id=None, team_id=None, since=None, limit=None, offset=None):
        return _page(self._http, FlagSharing, "/api/v1/flag-sharing",
                     {"challenge_id": challenge_id, "team_id": team_id, "since": _iso(since), "limit": limit,
                      "offset": offset})


def _iso(value):
    if value is None or isinstance(value, str):
        return value
    return value.isoformat().replace("+00:00", "Z")


class AdminClient(Client):
    """A client for operators: the admin token (``Authorization: Bearer``), or the API key (``api_key=``).

    Besides what :class:`Client` offers (``instances`` of any team: give
    ``team_id``), it covers ``challenges`` (create, update, delete,
    activate, deactivate, pull, restart, status), ``workers``, ``settings``,
    ``tokens``, ``audit`` (admin token only), ``cluster`` and ``flag_sharing``.
    """

    def __init__(self, url, token=None, *, api_key=None, **kwargs):
        super().__init__(url, token, api_key=api_key, **kwargs)
        self.challenges = AdminChallenges(self)
        self.workers = Workers(self)
        self.settings = SettingsResource(self)
        self.audit = Audit(self)
        self.cluster = ClusterResource(self)
        self.flag_sharing = FlagSharingResource(self)

    @classmethod
    def from_env(cls, environ=None, **kwargs):
        """An admin client from CTFHOST_URL and CTFHOST_ADMIN_TOKEN (or CTFHOST_API_KEY)."""
        environ = os.environ if environ is None else environ
        url = environ.get("CTFHOST_URL")
        if not url:
            raise ValueError("CTFHOST_URL is not set")
        token, api_key = environ.get("CTFHOST_ADMIN_TOKEN"), environ.get("CTFHOST_API_KEY")
        if not token and not api_key:
            raise ValueError("set CTFHOST_ADMIN_TOKEN or CTFHOST_API_KEY")
        return cls(url, token or None, api_key=None if token else api_key, **kwargs)


__all__ = ["AdminClient", "Client", "RetryPolicy"]
