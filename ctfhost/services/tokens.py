"""Team tokens: issue (secret shown once), list, revoke, and authenticate."""

import datetime
import hashlib
import secrets
import uuid

from ctfhost.models import Token, utcnow
from ctfhost.services.errors import Invalid, NotFound

PREFIX = "cth_"
# last_used_at is written at most this often, so busy tokens do not write on every request
TOUCH_EVERY = datetime.timedelta(seconds=60)


def hash_secret(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(team_id, name, expires_at=None):
    """A new token for a team; returns (row, secret). The secret is not stored."""
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid({"json": {"expires_at": ["must be in the future"]}})
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token.create(
        id=str(uuid.uuid4()),
        team_id=str(team_id),
        team_id_numeric=isinstance(team_id, int),
        name=name,
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    return token, secret


def list_tokens(team_id=None, include_revoked=False):
    query = Token.select().order_by(Token.created_at.desc(), Token.id)
    if team_id is not None:
        query = query.where(Token.team_id == str(team_id))
    if not include_revoked:
        query = query.where(Token.revoked_at.is_null())
    return list(query)


def revoke_token(token_id):
    token = Token.get_or_none(Token.id == token_id)
    if token is None or token.revoked_at is not None:
        raise NotFound(f"token {token_id} not found")
    Token.update(revoked_at=utcnow()).where(Token.id == token.id).execute()


def authenticate(secret):
    """The live token whose secret this is, or None (unknown, revoked or expired)."""
    if not secret.startswith(PREFIX):
        return None
    token = Token.get_or_none(Token.secret_hash == hash_secret(secret))
    now = utcnow()
    if token is None or token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
        Token.update(last_used_at=now).where(Token.id == token.id).execute()
        token.last_used_at = now
    return token
