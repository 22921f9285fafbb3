"""Access to an instance through the proxy: single-use tickets and instance-bound cookies.

A ticket is a signed, 60-second, single-use link that ctfhost hands to the
scoreboard (or the team) for one instance; following it through the proxy
trades it for a cookie bound to that instance and team. Forward-auth then
lets a request through only with such a cookie.
"""

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse

import peewee
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ctfhost.db import database, is_postgresql
from ctfhost.models import ACTIVE, Instance, InstanceEndpoint, Setting, utcnow
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


def issue_ticket(instance, next_path="/", endpoint=None):
    """(link, seconds valid): the access path of the instance's main endpoint, or of `endpoint` (an
    InstanceEndpoint of it), carrying a fresh ticket.

    A ticket is bound to the instance and its team; redeemed on any HTTP
    endpoint of the instance, it sets that host's cookie (cookies are per host).
    """
    ticket = _serializer("ctfhost-ticket").dumps({"i": instance.id, "t": instance.team_id, "n": secrets.token_urlsafe(12)})
    query = urllib.parse.urlencode({"ticket": ticket, "next": safe_next(next_path)})
    return f"{endpoint.endpoint if endpoint else instance.endpoint}{ACCESS_PATH}?{query}", TICKET_SECONDS


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

# The cookie's keys, kept in the database and shared with the proxy, which
# checks cookies itself (the Traefik plugin's middleware: same format, same
# keys, read from a file the proxy holds). Several keys during a rotation:
# the newest mints, all are accepted.
COOKIE_KEYS_SETTING = "auth.cookie_keys"
# how long a process trusts its copy of the keys: a rotation reaches every API process within this
KEYRING_SECONDS = 5.0
COOKIE_VERSION = "c2"
_MAC_CONTEXT = "ctfhost-access." + COOKIE_VERSION + "."
_keyrings = {}  # database URL -> (read at, keyring)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_key():
    # a key id never holds a dot: cookies are dot-separated
    return {"kid": secrets.token_hex(4), "key": _b64(secrets.token_bytes(32)), "created_at": utcnow().isoformat() + "Z"}


def _stored_keyring(for_update=False):
    query = Setting.select().where(Setting.key == COOKIE_KEYS_SETTING)
    if for_update and is_postgresql():
        query = query.for_update()
    row = query.first()
    return json.loads(row.value) if row else None


def _save_keyring(ring):
    value = json.dumps(ring)
    Setting.insert(key=COOKIE_KEYS_SETTING, value=value).on_conflict(
        conflict_target=[Setting.key], update={Setting.value: value}
    ).execute()
    _keyrings.clear()


def keyring(fresh=False):
    """{"mint": kid, "keys": [{"kid", "key", "created_at"}], "legacy": bool}: made once, kept in the database.

    `legacy`: cookies of ctfhost before this format (signed with the app's
    signing key) are still accepted, until the first rotation finishes.
    """
    url = current_app.config["CTFHOST_DATABASE_URL"]
    cached = _keyrings.get(url)
    if cached and not fresh and time.monotonic() - cached[0] < KEYRING_SECONDS:
        return cached[1]
    ring = _stored_keyring()
    if ring is None:
        first = _new_key()
        ring = {"mint": first["kid"], "keys": [first], "legacy": True}
        try:
            # first writer wins; everyone then reads the same ring
            Setting.insert(key=COOKIE_KEYS_SETTING, value=json.dumps(ring)).on_conflict_ignore().execute()
        except peewee.IntegrityError:
            pass
        ring = _stored_keyring()
    _keyrings[url] = (time.monotonic(), ring)
    return ring


def rotate_keys():
    """Start a rotation: a new key mints cookies from now on; every older key is still accepted. Returns the ring."""
    with database.atomic():
        keyring(fresh=True)  # exists
        ring = _stored_keyring(for_update=True)
        new = _new_key()
        ring["keys"].append(new)
        ring["mint"] = new["kid"]
        _save_keyring(ring)
    return ring


def finish_rotation():
    """End a rotation: only the key that mints is accepted; cookies under older keys (and legacy ones) stop working."""
    with database.atomic():
        keyring(fresh=True)
        ring = _stored_keyring(for_update=True)
        ring["keys"] = [key for key in ring["keys"] if key["kid"] == ring["mint"]]
        ring["legacy"] = False
        _save_keyring(ring)
    return ring


def _key_bytes(entry):
    return base64.urlsafe_b64decode(entry["key"] + "=" * (-len(entry["key"]) % 4))


def _mac(key, kid, instance_id, team):
    message = f"{_MAC_CONTEXT}{kid}.{instance_id}.{team}".encode()
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def encoded_team(team_id):
    """The team id as it appears in cookies and in the proxy's config: unpadded base64url of its text."""
    return _b64(str(team_id).encode())


def cookie_for(instance):
    """(value, max_age): a cookie bound to the instance and its team; the instance's own life bounds access.

    "c2.<kid>.<instance id>.<team>.<mac>": <team> is encoded_team(), <mac>
    the unpadded base64url HMAC-SHA256, under key <kid>, of
    "ctfhost-access.c2.<kid>.<instance id>.<team>".
    """
    ring = keyring()
    entry = next(key for key in ring["keys"] if key["kid"] == ring["mint"])
    team = encoded_team(instance.team_id)
    mac = _mac(_key_bytes(entry), entry["kid"], instance.id, team)
    return f"{COOKIE_VERSION}.{entry['kid']}.{instance.id}.{team}.{mac}", COOKIE_MAX_AGE


def check_cookie(value, instance):
    """True when the cookie was issued for this very instance and team (the caller checks the instance is active)."""
    ring = keyring()
    parts = value.split(".")
    if len(parts) == 5 and parts[0] == COOKIE_VERSION:
        _, kid, instance_id, team, mac = parts
        if instance_id != instance.id or team != encoded_team(instance.team_id):
            return False
        entry = next((key for key in ring["keys"] if key["kid"] == kid), None)
        return entry is not None and hmac.compare_digest(_mac(_key_bytes(entry), kid, instance_id, team), mac)
    if not ring.get("legacy"):
        return False
    try:
        data = _serializer("ctfhost-cookie").loads(value, max_age=COOKIE_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(data, dict) and data.get("i") == instance.id and data.get("t") == instance.team_id


def keys_file_text():
    """The keys as the proxy's middleware reads them: one "<kid> <key>" per line, every accepted key.

    Read fresh from the database (connecting for the call when nothing is
    connected, as in a long-running command).
    """
    if database.is_closed():
        with database.connection_context():
            ring = keyring(fresh=True)
    else:
        ring = keyring(fresh=True)
    # the minting key first: the proxy sends a cookie under any other key to forward-auth, which renews it
    ordered = sorted(ring["keys"], key=lambda key: key["kid"] != ring["mint"])
    return "".join(f"{key['kid']} {key['key']}\n" for key in ordered)


def cookie_is_current(value):
    """Whether a (valid) cookie was minted under the key that mints now; else forward-auth hands out a fresh one."""
    return value.startswith(f"{COOKIE_VERSION}.{keyring()['mint']}.")


def instance_url(instance, proto):
    """`proto`://<the host the request came to>[:<public port of its endpoint>]: where the browser goes back to.

    The host is the instance's own, or that of the endpoint the request was
    for (`served_url`, set by active_instance_for_host).
    """
    served = getattr(instance, "served_url", None)
    port = urllib.parse.urlsplit(served or instance.endpoint).port
    hostname = urllib.parse.urlsplit(served).hostname if served else instance.hostname
    return f"{proto}://{hostname}" + (f":{port}" if port else "")


def active_instance_for_host(host):
    """The active instance serving `host` (a Host header value, port allowed) on its main or another HTTP endpoint,
    or None. For another endpoint, the instance's `served_endpoint` and `served_url` name it."""
    hostname = (host or "").strip().lower().split(":", 1)[0]
    if not hostname:
        return None
    # forward-auth runs on every request a player makes: a fixed raw query
    # skips building SQL, and fromisoformat beats peewee's strptime guessing
    database = Instance._meta.database
    row = database.execute_sql(_BY_HOST_SQL.format(p=database.param), (hostname,)).fetchone()
    served = None
    if row is None:
        # not a main endpoint (an ended instance's host mostly): one of another endpoint?
        row = database.execute_sql(_BY_ENDPOINT_HOST_SQL.format(p=database.param), (hostname,)).fetchone()
        if row is None:
            return None
        served, row = row[-2:], row[:-2]
    values = dict(zip(_BY_HOST_COLUMNS, row))
    for name in ("created_at", "started_at", "expires_at", "ended_at"):
        if isinstance(values[name], str):
            values[name] = datetime.datetime.fromisoformat(values[name])
    values["team_id_numeric"] = bool(values["team_id_numeric"])
    instance = Instance(**values)
    if served is not None:
        instance.served_endpoint, instance.served_url = served
    return instance


_BY_HOST_COLUMNS = [field.column_name for field in Instance._meta.sorted_fields]
_ACTIVE_SQL = "(" + ", ".join(f"'{s}'" for s in ACTIVE) + ")"
_BY_HOST_SQL = (
    "SELECT " + ", ".join(f'"{c}"' for c in _BY_HOST_COLUMNS) + ' FROM "instance" WHERE "hostname" = {p} AND "status" IN '
    + _ACTIVE_SQL
)
_BY_ENDPOINT_HOST_SQL = (
    "SELECT " + ", ".join(f'i."{c}"' for c in _BY_HOST_COLUMNS) + ', e."name", e."endpoint" FROM "instance_endpoint" AS e '
    'JOIN "instance" AS i ON i."id" = e."instance_id" WHERE e."hostname" = {p} AND e."protocol" = \'http\' '
    'AND i."status" IN ' + _ACTIVE_SQL
)


def http_endpoint(instance, name):
    """The instance's HTTP endpoint `name` beside main, as an InstanceEndpoint; LookupError saying why not."""
    endpoints = list(InstanceEndpoint.select().where(InstanceEndpoint.instance_id == instance.id)
                     .order_by(InstanceEndpoint.position))
    found = next((endpoint for endpoint in endpoints if endpoint.name == name), None)
    if found is not None and found.protocol == "http":
        return found
    opened = ", ".join(["main"] * (instance.protocol == "http") + [e.name for e in endpoints if e.protocol == "http"])
    if found is None:
        problem = f"instance {instance.id} has no endpoint named {name!r}"
    else:
        problem = f"endpoint {name!r} is a TCP endpoint: connect to it with its connection commands, no link needed"
    raise LookupError(problem + (f" (its HTTP endpoints: {opened})" if opened else ""))


def instance_is_active(instance):
    return instance.status in ACTIVE and instance.expires_at > utcnow()
