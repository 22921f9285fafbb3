"""The admin pages' session: signing in with the admin token, the session cookie, CSRF tokens, sign-in rate limits.

The cookie is signed with the app's signing key and carries a random session
id, and a fingerprint of the admin token it was opened with: changing the
token ends every session. Signing out revokes the session id in Redis until
the cookie would have expired anyway. A client address that fails to sign
in FAILURE_LIMIT times within FAILURE_WINDOW seconds is refused (even with
the right token) until the window ends.
"""

import hashlib
import hmac
import secrets

from flask import request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ctfhost.api.auth import admin_token
from ctfhost.redis_client import redis_connection
from ctfhost.services.access import signing_key

COOKIE_NAME = "ctfhost_admin"
COOKIE_PATH = "/admin"
SESSION_SECONDS = 12 * 3600
FAILURE_LIMIT = 10
FAILURE_WINDOW = 60
CSRF_FIELD = "csrf_token"
_SALT = "ctfhost-admin-session"


def _digest(context, value):
    return hmac.new(signing_key().encode(), f"{context}.{value}".encode(), hashlib.sha256).hexdigest()


def token_matches(given):
    """Whether `given` is the admin token (False while none is configured)."""
    expected = admin_token()
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def _fingerprint():
    return _digest("ctfhost-admin-token", admin_token() or "")[:32]


def _serializer():
    return URLSafeTimedSerializer(signing_key(), salt=_SALT)


def _revoked_key(session_id):
    return f"ctfhost:admin:revoked:{session_id}"


def open_session():
    """(cookie value, session id) for a new session; call after checking the token."""
    session_id = secrets.token_urlsafe(24)
    return _serializer().dumps({"s": session_id, "k": _fingerprint()}), session_id


def session_id_of(cookie):
    """The session id a cookie holds, or None when it is forged, expired, revoked or from another admin token."""
    if not cookie or not admin_token():
        return None
    try:
        data = _serializer().loads(cookie, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("s"), str):
        return None
    if not hmac.compare_digest(str(data.get("k", "")), _fingerprint()):
        return None
    if redis_connection().exists(_revoked_key(data["s"])):
        return None
    return data["s"]


def close_session(session_id):
    """Revoke a session id: its cookie stops working at once, wherever it was copied to."""
    redis_connection().set(_revoked_key(session_id), 1, ex=SESSION_SECONDS)


def set_cookie(response, value):
    response.set_cookie(COOKIE_NAME, value, max_age=SESSION_SECONDS, path=COOKIE_PATH, httponly=True,
                        samesite="Strict", secure=request.is_secure)


def clear_cookie(response):
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=request.is_secure)


def csrf_token(session_id):
    """The CSRF token of a session: forms carry it, and a POST without it (or with another session's) is refused."""
    return _digest("ctfhost-admin-csrf", session_id)


def csrf_ok(session_id, given):
    return bool(given) and isinstance(given, str) and hmac.compare_digest(given.encode(), csrf_token(session_id).encode())


def _failures_key(address):
    return f"ctfhost:admin:sign-in-failures:{address}"


def blocked_for(address):
    """Seconds this client address must wait before trying to sign in again (0: it may try now)."""
    connection = redis_connection()
    failures = connection.get(_failures_key(address))
    if failures is None or int(failures) < FAILURE_LIMIT:
        return 0
    return max(1, connection.ttl(_failures_key(address)))


def count_failure(address):
    """Count a failed sign-in of this address in the current window."""
    pipe = redis_connection().pipeline()
    # the window starts at the first failure; INCR keeps the key's expiry
    pipe.set(_failures_key(address), 0, ex=FAILURE_WINDOW, nx=True)
    pipe.incr(_failures_key(address))
    pipe.execute()
