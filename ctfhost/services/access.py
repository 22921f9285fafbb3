"""Access to an instance through the proxy: single-use tickets and instance-bound cookies.

A ticket is a signed, 60-second, single-use link that ctfhost hands to the
scoreboard (or the team) for one instance; following it through the proxy
trades it for a cookie bound to that instance and team. Forward-auth then
lets a request through only with such a cookie.
"""

import datetime
import json
import secrets
import threading
import urllib.parse

import peewee
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ctfhost.models import ACTIVE, Instance, Setting, utcnow
from ctfhost.redis_client import redis_connection

ACCESS_PATH = "/.ctfhost/access"
COOKIE_NAME = "ctfhost_access"
TICKET_SECONDS = 60
SIGNING_KEY_SETTING = "auth.signing_key"

_lock = threading.Lock()
_keys = {}


class AccessDenied(Exception):
    """A ticket or cookie that does not grant access; the message says why."""


def signing_key():
    """CTFHOST_SECRET_KEY, or a random key made once and kept in the database."""
    configured = current_app.config.get("CTFHOST_SECRET_KEY")
    if configured:
        return configured
    url = current_app.config["CTFHOST_DATABASE_URL"]
    with _lock:
        if url not in _keys:
            row = Setting.get_or_none(Setting.key == SIGNING_KEY_SETTING)
            if row is None:
                try:
                    Setting.insert(key=SIGNING_KEY_SETTING, value=json.dumps(secrets.token_urlsafe(48))).on_conflict_ignore().execute()
                except peewee.IntegrityError:
                    pass
                row = Setting.get(Setting.key == SIGNING_KEY_SETTING)
            _keys[url] = json.loads(row.value)
        return _keys[url]


def _serializer(salt):
    return URLSafeTimedSerializer(signing_key(), salt=salt)


def safe_next(value):
    """A path on the instance's own host, or "/": never another host (no open redirect)."""
    if not value or not isinstance(value, str):
        return "/"
    parsed = urllib.parse.urlsplit(value)
    if (
        not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or parsed.scheme
        or parsed.netloc
        or any(ord(c) < 32 for c in value)
    ):
        return "/"
    return value


def issue_ticket(instance, next_path="/"):
    """(link, seconds valid): the endpoint's access path carrying a fresh ticket."""
    ticket = _serializer("ctfhost-ticket").dumps({"i": instance.id, "t": instance.team_id, "n": secrets.token_urlsafe(12)})
    query = urllib.parse.urlencode({"ticket": ticket, "next": safe_next(next_path)})
    return f"{instance.endpoint}{ACCESS_PATH}?{query}", TICKET_SECONDS


def redeem_ticket(ticket, instance):
    """The team a ticket grants this instance to; each ticket works once."""
    try:
        data = _serializer("ctfhost-ticket").loads(ticket, max_age=TICKET_SECONDS)
    except SignatureExpired:
        raise AccessDenied("this access link has expired; ask for a new one") from None
    except BadSignature:
        raise AccessDenied("this access link is not valid") from None
    if not isinstance(data, dict) or data.get("i") != instance.id or data.get("t") != instance.team_id:
        raise AccessDenied("this access link is for another instance")
    used = redis_connection().set(f"ctfhost:ticket:{data['n']}", instance.id, nx=True, ex=TICKET_SECONDS * 2)
    if not used:
        raise AccessDenied("this access link was already used; ask for a new one")
    return data["t"]


# The cookie lives as long as an instance can: forward-auth checks the
# instance's current expiry on every request, so a renewed instance stays
# reachable with the cookie its team already holds, and an ended one is
# refused whatever the cookie says (its hostname and id are never reused).
COOKIE_MAX_AGE = 30 * 86400


def cookie_for(instance):
    """(value, max_age): a cookie bound to the instance and its team; the instance's own life bounds access."""
    value = _serializer("ctfhost-cookie").dumps({"i": instance.id, "t": instance.team_id})
    return value, COOKIE_MAX_AGE


def check_cookie(value, instance):
    """True when the cookie was issued for this very instance and team (the caller checks the instance is active)."""
    try:
        data = _serializer("ctfhost-cookie").loads(value, max_age=COOKIE_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(data, dict) and data.get("i") == instance.id and data.get("t") == instance.team_id


def instance_url(instance, proto):
    """`proto`://<the instance's hostname>[:<public port of its endpoint>]: where the browser goes back to."""
    port = urllib.parse.urlsplit(instance.endpoint).port
    return f"{proto}://{instance.hostname}" + (f":{port}" if port else "")


def active_instance_for_host(host):
    """The active instance serving `host` (a Host header value, port allowed), or None."""
    hostname = (host or "").strip().lower().split(":", 1)[0]
    if not hostname:
        return None
    # forward-auth runs on every request a player makes: a fixed raw query
    # skips building SQL, and fromisoformat beats peewee's strptime guessing
    database = Instance._meta.database
    row = database.execute_sql(_BY_HOST_SQL.format(p=database.param), (hostname,)).fetchone()
    if row is None:
        return None
    values = dict(zip(_BY_HOST_COLUMNS, row))
    for name in ("created_at", "started_at", "expires_at", "ended_at"):
        if isinstance(values[name], str):
            values[name] = datetime.datetime.fromisoformat(values[name])
    values["team_id_numeric"] = bool(values["team_id_numeric"])
    return Instance(**values)


_BY_HOST_COLUMNS = [field.column_name for field in Instance._meta.sorted_fields]
_BY_HOST_SQL = (
    "SELECT " + ", ".join(f'"{c}"' for c in _BY_HOST_COLUMNS) + ' FROM "instance" WHERE "hostname" = {p} AND "status" IN ('
    + ", ".join(f"'{s}'" for s in ACTIVE) + ")"
)


def instance_is_active(instance):
    return instance.status in ACTIVE and instance.expires_at > utcnow()
