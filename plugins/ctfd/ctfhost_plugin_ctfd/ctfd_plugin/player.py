"""What each button of the challenge window does, decided from ctfhost's answers.

CTFd's API resources only find the player's team and the challenge's slug,
then call one method here and send back its :class:`Reply`. Everything a
player may see of an instance passes through :func:`public_instance`: no
flag, worker or backend ever reaches the browser.
"""

import datetime
import re
from dataclasses import dataclass, field

from . import messages
from .client import CtfhostError
from .messages import Problem, explain

ACTIVE = ("pending", "running")
PUBLIC_FIELDS = (
    "id", "challenge_id", "status", "protocol", "endpoint", "connection",
    "expires_at", "created_at", "started_at", "renewals", "renewals_left",
)
ENDPOINT_FIELDS = ("name", "service", "port", "protocol", "url", "connection")
MAIN = "main"
# what the browser may send as an endpoint's name: a DNS label, as ctfhost names endpoints, kept short
ENDPOINT_NAME = re.compile(r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?")
DEFAULT_RENEW_MIN_SECONDS = 300


@dataclass(frozen=True)
class Reply:
    """An HTTP status and the JSON body CTFd answers the browser with."""

    status: int
    body: dict = field(default_factory=dict)


def ok(data, status=200):
    return Reply(status, {"success": True, "data": data})


def refused(problem):
    return Reply(problem.status, problem.body())


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def parse_time(value):
    """An ISO 8601 time as ctfhost writes it ("...Z") -> aware datetime, or None."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def seconds_left(instance, now=None):
    expires = parse_time(instance.get("expires_at"))
    if expires is None or instance.get("status") not in ACTIVE:
        return None
    return max(0, int((expires - (now or utcnow())).total_seconds()))


def renewable_in(instance, min_seconds, now=None):
    """Seconds until a renew adds at least `min_seconds` (0: now); None when unknown or no renewal is left.

    A renew sets the expiry to now + the challenge's TTL (``ttl_seconds``),
    so it adds TTL - time left. A TTL shorter than twice the minimum lowers
    the minimum to half the TTL, so such an instance stays renewable.
    """
    left, ttl = seconds_left(instance, now), instance.get("ttl_seconds")
    if instance.get("renewals_left") == 0:
        return None
    if left is None or not isinstance(ttl, int) or ttl <= 0:
        return None
    least = min(max(0, int(min_seconds)), ttl // 2)
    return max(0, left - (ttl - least))


def instance_endpoints(instance):
    """Every endpoint of the instance, `main` first, each with only the fields a player may see.

    A ctfhost that predates ``endpoints`` describes only the main one, with
    ``endpoint``, ``protocol`` and ``connection``: it becomes the one entry.
    """
    listed = instance.get("endpoints")
    if not isinstance(listed, list) or not listed:
        listed = [{
            "name": MAIN, "service": MAIN, "port": None, "protocol": instance.get("protocol"),
            "url": instance.get("endpoint"), "connection": instance.get("connection"),
        }]
    return [{key: endpoint.get(key) for key in ENDPOINT_FIELDS} for endpoint in listed if isinstance(endpoint, dict)]


def web_endpoint_problem(instance, name):
    """None when the instance has an HTTP endpoint called `name`, else the Problem to answer (none, or TCP)."""
    for endpoint in instance_endpoints(instance):
        if endpoint["name"] == name:
            return Problem(422, "endpoint", messages.tcp_endpoint(name)) if endpoint["protocol"] == "tcp" else None
    return Problem(422, "endpoint", messages.no_endpoint(name))


def endpoint_name_problem(name):
    """None when `name` may name an endpoint (a DNS label of at most 40 characters), else the Problem to answer."""
    if isinstance(name, str) and ENDPOINT_NAME.fullmatch(name):
        return None
    return Problem(400, "invalid", messages.INVALID_ENDPOINT)


def public_instance(instance, now=None, renew_min_seconds=DEFAULT_RENEW_MIN_SECONDS):
    """The fields a player may see, plus seconds_left (the countdown does not trust the browser's clock).

    ``error`` is ctfhost's short reason for players (``public_error``), never
    the runtime's detail; ``renewable_in`` says when Renew is worth it.
    """
    if instance is None:
        return None
    shown = {key: instance.get(key) for key in PUBLIC_FIELDS}
    shown["endpoints"] = instance_endpoints(instance)
    shown["active"] = instance.get("status") in ACTIVE
    shown["seconds_left"] = seconds_left(instance, now)
    shown["renewable_in"] = renewable_in(instance, renew_min_seconds, now)
    shown["error"] = instance.get("public_error") or (messages.FAILED_INSTANCE if instance.get("error") else None)
    return shown


def admin_instance(instance, now=None):
    """What an admin sees in CTFd: the public fields, the owning team and the failure's detail; still no flag."""
    return dict(public_instance(instance, now), team_id=instance.get("team_id"), error=instance.get("error"))


def same_team(instance, team_id):
    # ctfhost gives back the type it was given; compare as text to be safe
    return instance is not None and str(instance.get("team_id")) == str(team_id)


class Player:
    """One team's view of ctfhost: every method returns a Reply, never raises CtfhostError."""

    def __init__(self, client, team_id, now=utcnow, renew_min_seconds=DEFAULT_RENEW_MIN_SECONDS):
        self.client = client
        self.team_id = team_id
        self.now = now
        self.renew_min_seconds = renew_min_seconds

    def _show(self, instance):
        return public_instance(instance, self.now(), self.renew_min_seconds)

    def _owned(self, instance_id, action):
        """The team's instance, or the Problem to answer (another team's instance looks missing)."""
        try:
            instance = self.client.get_instance(instance_id)
        except CtfhostError as exc:
            return None, explain(exc, action)
        if not same_team(instance, self.team_id):
            return None, explain(CtfhostError(404, "another team's instance"), action)
        return instance, None

    def status(self, challenge_id):
        """The team's active instance of the challenge (data null when there is none)."""
        try:
            return ok(self._show(self.client.team_instance(self.team_id, challenge_id)))
        except CtfhostError as exc:
            return refused(explain(exc, "status"))

    def get(self, instance_id):
        """One of the team's instances in any status, so a launch that failed can say why."""
        instance, problem = self._owned(instance_id, "status")
        if problem:
            return refused(problem)
        return ok(self._show(instance))

    def launch(self, challenge_id):
        """Start an instance; a second click while one is active answers with that one."""
        try:
            return ok(self._show(self.client.launch(self.team_id, challenge_id)), 201)
        except CtfhostError as exc:
            if exc.status == 409:
                try:
                    existing = self.client.team_instance(self.team_id, challenge_id)
                except CtfhostError as again:
                    return refused(explain(again, "status"))
                if existing is not None:
                    return ok(self._show(existing))
            return refused(explain(exc, "launch"))

    def access(self, instance_id, next_path="/", endpoint=MAIN):
        """A fresh single-use link into one HTTP endpoint of the instance ({"url", "expires_in"}).

        Each endpoint has a host of its own, and a link lets the browser into
        that host only. `endpoint` comes from the browser: a name that cannot
        be one is refused before asking ctfhost.
        """
        endpoint = MAIN if endpoint is None else endpoint
        problem = endpoint_name_problem(endpoint)
        if problem:
            return refused(problem)
        instance, problem = self._owned(instance_id, "access")
        if problem:
            return refused(problem)
        if instance.get("status") not in ACTIVE:
            return refused(explain(CtfhostError(409, "not active"), "access"))
        # main is asked for as before there were other endpoints: ctfhost decides, as it always has
        problem = web_endpoint_problem(instance, endpoint) if endpoint != MAIN else None
        if problem:
            return refused(problem)
        try:
            return ok(self.client.access_link(instance["id"], next_path, endpoint))
        except CtfhostError as exc:
            return refused(explain(exc, "access"))

    def renew(self, instance_id):
        """Renew, unless no renewal is left or it would add less than the minimum (a renewal is not wasted)."""
        instance, problem = self._owned(instance_id, "renew")
        if problem:
            return refused(problem)
        if instance.get("status") in ACTIVE:
            if instance.get("renewals_left") == 0:
                return refused(Problem(409, "renew_limit", messages.RENEW_LIMIT))
            wait = renewable_in(instance, self.renew_min_seconds, self.now())
            if wait:
                return refused(Problem(409, "renew_not_needed", messages.renew_too_early(wait), wait))
        try:
            renewed = self.client.renew(instance["id"])
        except CtfhostError as exc:
            return refused(explain(exc, "renew"))
        left = instance.get("renewals_left")
        instance = dict(
            instance,
            expires_at=renewed["expires_at"],
            renewals=(instance.get("renewals") or 0) + 1,
            renewals_left=None if left is None else max(0, left - 1),
        )
        shown = self._show(instance)
        shown["seconds_added"] = renewed.get("seconds_added")
        return ok(shown)

    def restart(self, instance_id):
        """Replace the instance with a fresh one (new id, new address, full time)."""
        instance, problem = self._owned(instance_id, "restart")
        if problem:
            return refused(problem)
        try:
            return ok(self._show(self.client.restart(instance["id"])))
        except CtfhostError as exc:
            return refused(explain(exc, "restart"))

    def stop(self, instance_id):
        instance, problem = self._owned(instance_id, "stop")
        if problem:
            return refused(problem)
        if instance.get("status") in ACTIVE:
            try:
                self.client.destroy(instance["id"])
            except CtfhostError as exc:
                if exc.status != 409:  # ended meanwhile: stopped is what the player wanted
                    return refused(explain(exc, "stop"))
        return ok(None)

    def instances(self):
        """The team's active instances, newest first."""
        try:
            rows = []
            for status in ACTIVE:
                rows.extend(self.client.list_instances(team_id=self.team_id, status=status, limit=100)[0])
        except CtfhostError as exc:
            return refused(explain(exc, "list"))
        rows.sort(key=lambda row: row.get("created_at") or "", reverse=True)
        return ok([self._show(row) for row in rows if same_team(row, self.team_id)])
