"""Team tokens: issue (secret shown once), list, revoke, and authenticate; the scopes a token holds."""

import datetime
import hashlib
import secrets
import uuid

from ctfhost.db import database
from ctfhost.models import Token, utcnow
from ctfhost.services.errors import Forbidden, Invalid, NotFound

PREFIX = "cth_"
# what a team token may do; the admin and the API key may do everything
SCOPES = ("instances:read", "instances:write", "submissions", "events", "tokens")
# tokens made without scopes, and those made before scopes existed: everything but minting tokens
DEFAULT_SCOPES = tuple(scope for scope in SCOPES if scope != "tokens")
# last_used_at is written at most this often, so busy tokens do not write on every request
TOUCH_EVERY = datetime.timedelta(seconds=60)


def hash_secret(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def scopes_of(token):
    """The scopes a token row holds, in SCOPES order."""
    if token.scopes is None:
        return DEFAULT_SCOPES
    held = set(token.scopes.split())
    return tuple(scope for scope in SCOPES if scope in held)


def check_scopes(scopes):
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise Invalid({"json": {"scopes": [f"unknown scope(s) {', '.join(map(repr, unknown))}; "
                                           f"known: {', '.join(SCOPES)}"]}})


def create_token(team_id, name, expires_at=None, scopes=None, minted_by=None):
    """A new token for a team; returns (row, secret). The secret is not stored.

    `scopes`: what the token may do (None: DEFAULT_SCOPES, or the minting
    token's). `minted_by`: the team token minting it (self-service), which
    grants only its own team, its own scopes and at most its own lifetime.
    """
    if scopes is not None:
        check_scopes(scopes)
    if minted_by is not None:
        if str(team_id) != minted_by.team_id:
            raise Forbidden(f"a team token mints tokens for its own team only, not for team {team_id}")
        held = scopes_of(minted_by)
        if scopes is None:
            scopes = held
        beyond = [scope for scope in SCOPES if scope in scopes and scope not in held]
        if beyond:
            raise Forbidden(f"this token lacks the scope {beyond[0]!r}: a token grants only scopes it holds "
                            f"({', '.join(held)})", errors={"scope": beyond[0]})
        if minted_by.expires_at is not None:
            if expires_at is None:
                expires_at = minted_by.expires_at
            elif expires_at > minted_by.expires_at:
                raise Invalid({"json": {"expires_at": [
                    f"must not be later than the minting token's own expiry "
                    f"({minted_by.expires_at.isoformat(timespec='seconds')}Z)"]}})
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid({"json": {"expires_at": ["must be in the future"]}})
    scopes = DEFAULT_SCOPES if scopes is None else tuple(scope for scope in SCOPES if scope in set(scopes))
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token.create(
        id=str(uuid.uuid4()),
        team_id=str(team_id),
        team_id_numeric=isinstance(team_id, int),
        name=name,
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
        scopes=" ".join(scopes),
        parent_id=minted_by.id if minted_by is not None else None,
    )
    return token, secret


def list_tokens(team_id=None, include_revoked=False):
    query = Token.select().order_by(Token.created_at.desc(), Token.id)
    if team_id is not None:
        query = query.where(Token.team_id == str(team_id))
    if not include_revoked:
        query = query.where(Token.revoked_at.is_null())
    return list(query)


def get_token(token_id):
    return Token.get_or_none(Token.id == token_id)


def revoke_token(token_id, team_id=None):
    """Revoke a live token and every token minted from it, at any depth; with `team_id`, only one of that team's
    (another's is not found). Returns the ids revoked."""
    token = Token.get_or_none(Token.id == token_id)
    if token is None or token.revoked_at is not None or (team_id is not None and token.team_id != str(team_id)):
        raise NotFound(f"token {token_id} not found")
    revoked, generation = [token.id], [token.id]
    while generation:
        generation = [row.id for row in Token.select(Token.id).where(Token.parent_id.in_(generation),
                                                                      Token.revoked_at.is_null())]
        revoked.extend(generation)
    Token.update(revoked_at=utcnow()).where(Token.id.in_(revoked), Token.revoked_at.is_null()).execute()
    return revoked


def is_live(token_id):
    """Whether the token is still unrevoked and unexpired (an open event stream asks now and then).

    Gives the database connection back at once: the caller is a stream that holds none between asks.
    """
    try:
        token = Token.get_or_none(Token.id == token_id)
        return (token is not None and token.revoked_at is None
                and (token.expires_at is None or token.expires_at > utcnow()))
    finally:
        if not database.is_closed() and not database.in_transaction():
            database.close()


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
