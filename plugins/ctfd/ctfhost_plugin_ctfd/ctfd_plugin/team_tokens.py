"""The "API tokens" page: a player mints, lists and revokes ctfhost tokens of their own team.

The team is always the signed-in player's, found from CTFd's session by the
caller; the browser sends only a name, an expiry and scopes. The token's
secret is in the answer to its creation only: ctfhost keeps a hash, and
neither CTFd nor a later page ever shows it again. A token of another team
looks missing, as another team's instance does.
"""

import datetime
from dataclasses import dataclass

from . import messages
from .client import CtfhostError
from .messages import Problem
from .player import Reply, ok, parse_time, refused, utcnow

# ctfhost's scopes, in its order
SCOPES = ("instances:read", "instances:write", "submissions", "events", "tokens")
# offered to players unless the organisers say otherwise: a token that mints tokens is for automation they allow
PLAYER_SCOPES = ("instances:read", "instances:write", "submissions", "events")
SCOPE_HELP = {
    "instances:read": "see your team's instances and open them",
    "instances:write": "launch, renew, restart and stop your team's instances",
    "submissions": "submit and check flags",
    "events": "follow your team's live instance events",
    "tokens": "create and revoke your team's tokens (never with more scopes or a longer life than its own)",
}
PRESET_DAYS = (1, 7, 30)
CUSTOM = "custom"
NAME_MAX = 200
# what the page shows of a token: never the team, nor (after its creation) the secret
TOKEN_FIELDS = ("id", "name", "scopes", "created_at", "expires_at", "last_used_at")
# where ctfhost's field errors go on the form
FORM_FIELDS = {"name": "name", "expires_at": "expires", "scopes": "scopes"}


def expiry_choices(max_days):
    """[(value, label)] of the expiry select: the presets up to `max_days`, `max_days` itself, and a custom date."""
    days = sorted({d for d in PRESET_DAYS if d <= max_days} | ({max_days} if max_days > 0 else set()))
    choices = [(str(d), f"{d} day{'s' if d != 1 else ''}") for d in days]
    return choices + [(CUSTOM, "a date")] if choices else []


@dataclass(frozen=True)
class TokenRequest:
    """What ctfhost is asked for: a name, when the token stops working (aware UTC), its scopes."""

    name: str
    expires_at: datetime.datetime
    scopes: tuple


def ended(now, not_after):
    """Whether the CTF's end (aware UTC, or None when there is none) has passed."""
    return not_after is not None and not_after <= now


def minting_closed(now, not_after, running, admin):
    """The Problem to answer when no token may be created now, else None.

    Never once the CTF's end has passed, whoever asks and whatever CTFd's
    "view after CTF" says: a token never outlives the CTF. Before that, while
    the CTF runs (`running`: CTFd's ctftime()), or for an admin.
    """
    if ended(now, not_after):
        return Problem(403, "closed", messages.TOKENS_CTF_ENDED)
    if not (running or admin):
        return Problem(403, "closed", messages.TOKENS_CTF_NOT_RUNNING)
    return None


def latest_expiry(max_days, now, not_after=None):
    """The latest a new token may live until: `max_days` from now, and never after the CTF's end when there is one.

    Once that end has passed this is in the past: no token may be created (:func:`minting_closed`).
    """
    latest = now + datetime.timedelta(days=max_days)
    return min(latest, not_after) if not_after is not None else latest


def parse_request(body, offered, max_days, now, not_after=None):
    """(TokenRequest, {}) from the page's form, or (None, {field: message}) saying what to change.

    :param body: the JSON the page sent: ``name``, ``expires`` (a number of
        days, or "custom" with ``expires_on`` = "YYYY-MM-DD", the token then
        stops working at 00:00 UTC that day), ``scopes`` (a list).
    :param offered: the scopes players may give (the organisers' setting).
    :param max_days: the longest life of a token; :param now: aware UTC.
    :param not_after: the CTF's end (aware UTC) or None: a token never outlives it.
    """
    body = body if isinstance(body, dict) else {}
    errors = {}
    name = body.get("name")
    name = " ".join(name.split()) if isinstance(name, str) else ""
    if not name:
        errors["name"] = "Give the token a name, e.g. where it is used."
    elif len(name) > NAME_MAX:
        errors["name"] = f"At most {NAME_MAX} characters."

    latest = latest_expiry(max_days, now, not_after)
    if latest <= now:
        errors["expires"] = messages.TOKENS_CTF_ENDED
        return None, errors
    expires_at = None
    choice = str(body.get("expires") or "").strip()
    if choice == CUSTOM:
        try:
            day = datetime.date.fromisoformat(str(body.get("expires_on") or "").strip())
        except ValueError:
            errors["expires_on"] = "Pick a date."
        else:
            expires_at = datetime.datetime.combine(day, datetime.time(), datetime.timezone.utc)
            if expires_at <= now:
                errors["expires_on"], expires_at = "Pick a date after today.", None
            elif expires_at > now + datetime.timedelta(days=max_days):
                errors["expires_on"], expires_at = f"At most {max_days} days from now.", None
    elif choice.isdigit() and 1 <= int(choice) <= max_days:
        expires_at = now + datetime.timedelta(days=int(choice))
    else:
        errors["expires"] = f"Choose how long the token works: at most {max_days} days."
    if expires_at is not None:
        expires_at = min(expires_at, latest)

    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        scopes = []
    unknown = sorted(set(scopes) - set(offered))
    if unknown:
        errors["scopes"] = f"Not offered: {', '.join(unknown)}."
    elif not scopes:
        errors["scopes"] = "Tick at least one thing the token may do."
    if errors:
        return None, errors
    return TokenRequest(name, expires_at, tuple(s for s in SCOPES if s in scopes)), {}


def words(messages):
    """ctfhost's messages about one field as one line; those about list items ({"0": [...]}) flattened."""
    if isinstance(messages, dict):
        return " ".join(words(value) for _, value in sorted(messages.items()))
    if isinstance(messages, list):
        return " ".join(words(message) for message in messages)
    return str(messages)


def form_errors(error):
    """{form field: ctfhost's words} for the fields of the form ctfhost named in a refusal."""
    found = {}
    for location in error.errors.values():
        for field, form_field in FORM_FIELDS.items():
            if isinstance(location, dict) and location.get(field):
                found[form_field] = words(location[field])
    return found


def public_token(row, secret=None):
    """The fields the page shows, plus the secret right after its creation."""
    shown = {key: row.get(key) for key in TOKEN_FIELDS}
    if secret is not None:
        shown["token"] = secret
    return shown


def live(row, now):
    expires = parse_time(row.get("expires_at"))
    return not row.get("revoked_at") and (expires is None or expires > now)


def invalid(errors, message=messages.TOKEN_FORM):
    """422 with a message per form field (name, expires, expires_on, scopes)."""
    return Reply(422, dict(Problem(422, "invalid", message).body(), errors=errors))


class TeamTokens:
    """One team's ctfhost tokens, as its players manage them: every method returns a Reply, never raises."""

    def __init__(self, client, team_id, offered=PLAYER_SCOPES, max_days=30, now=utcnow, not_after=None):
        self.client = client
        self.team_id = team_id
        self.offered = tuple(offered)
        self.max_days = max_days
        self.now = now
        self.not_after = not_after

    def _rows(self):
        """The team's tokens as ctfhost lists them (revoked ones left out), only ever this team's."""
        rows = self.client.list_tokens(self.team_id)
        # ctfhost filters by team already; compare as text as for instances, to be safe
        return [row for row in rows if str(row.get("team_id")) == str(self.team_id)]

    def list(self):
        """The team's tokens that still work, newest first."""
        try:
            rows = self._rows()
        except CtfhostError as exc:
            return refused(messages.explain_tokens(exc))
        now = self.now()
        rows = sorted((row for row in rows if live(row, now)), key=lambda row: row.get("created_at") or "", reverse=True)
        return ok([public_token(row) for row in rows])

    def mint(self, body):
        """Create a token for the team from the page's form; the answer carries its secret, this once."""
        if self.max_days <= 0:
            return refused(Problem(403, "disabled", messages.TOKENS_DISABLED))
        now = self.now()
        if ended(now, self.not_after):
            return refused(Problem(403, "closed", messages.TOKENS_CTF_ENDED))
        wanted, errors = parse_request(body, self.offered, self.max_days, now, self.not_after)
        if errors:
            return invalid(errors)
        try:
            row = self.client.create_token(self.team_id, wanted.name, wanted.expires_at, list(wanted.scopes))
        except CtfhostError as exc:
            fields = form_errors(exc)
            if exc.status == 422 and fields:
                return invalid(fields, messages.TOKEN_REFUSED)
            return refused(messages.explain_tokens(exc))
        return ok(public_token(row, row.get("token")), 201)

    def revoke(self, token_id):
        """Revoke one of the team's tokens; another team's (or an unknown id) answers 404 and reaches no DELETE."""
        missing = refused(Problem(404, "not_found", messages.NO_SUCH_TOKEN))
        try:
            owned = any(str(row.get("id")) == str(token_id) for row in self._rows())
        except CtfhostError as exc:
            return refused(messages.explain_tokens(exc))
        if not owned:
            return missing
        try:
            self.client.revoke_token(token_id)
        except CtfhostError as exc:
            return missing if exc.status == 404 else refused(messages.explain_tokens(exc))
        return ok(None)
