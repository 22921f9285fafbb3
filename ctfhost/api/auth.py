"""Who is calling and what they may do: admin token, API key, team tokens and their scopes.

Every control-plane view declares the callers it allows with
``@blp.allow(...)``, and the scope a team token needs for it with
``scope=``; the admin is always allowed. A missing or wrong credential is
401, a valid one without permission (or without the scope) 403.
"""

import functools
import hmac
import os
from dataclasses import dataclass

from flask import current_app, jsonify, request
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest import abort
from flask_smorest.error_handler import ErrorSchema

from ctfhost.api.parsing import ArgumentsParser
from ctfhost.services.errors import Invalid
from ctfhost.services.tokens import SCOPES, scopes_of
from ctfhost.services.tokens import authenticate as token_for

ADMIN, API_KEY, TEAM, WORKER = "admin", "api_key", "team", "worker"

API_KEY_SCHEME, ADMIN_SCHEME, BEARER_SCHEME, WORKER_SCHEME = "ApiKeyAuth", "AdminToken", "BearerAuth", "WorkerToken"

SECURITY_SCHEMES = {
    API_KEY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The scoreboard's server-to-server key (CTFHOST_API_KEY); acts for any team.",
    },
    ADMIN_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Admin-Token",
        "description": "The admin token (CTFHOST_ADMIN_TOKEN or CTFHOST_ADMIN_TOKEN_FILE); may do everything.",
    },
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`: the admin token, or a team token (`cth_...`) "
        "that acts for its own team's instances only.",
    },
    WORKER_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Worker-Token",
        "description": "The worker credential (CTFHOST_WORKER_TOKEN); may register and heartbeat workers only. "
        "While it is set, the API key may not register workers.",
    },
}

# which schemes a kind of caller can use
SCHEMES_OF = {
    ADMIN: (ADMIN_SCHEME, BEARER_SCHEME), API_KEY: (API_KEY_SCHEME,), TEAM: (BEARER_SCHEME,), WORKER: (WORKER_SCHEME,),
}

LABELS = {ADMIN: "the admin token", API_KEY: "the API key", TEAM: "a team token", WORKER: "the worker token"}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    kind: str
    team_id: str | None = None
    token_id: str | None = None
    scopes: tuple = SCOPES
    # the team id as the token's creator gave it (an int for CTFd's numeric ids)
    team: object = None

    @property
    def is_team(self):
        return self.kind == TEAM

    def holds(self, scope):
        return scope in self.scopes

    @property
    def own_team_id(self):
        """A team token's team, to which it is confined; None for callers that act for any team."""
        return self.team_id if self.is_team else None

    def may_act_for(self, team_id):
        return not self.is_team or str(team_id) == self.team_id


def admin_token():
    config = current_app.config
    token = config.get("CTFHOST_ADMIN_TOKEN")
    if token:
        return token
    path = config.get("CTFHOST_ADMIN_TOKEN_FILE")
    if path:
        cache = current_app.extensions.setdefault("ctfhost.admin_token", {})
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        if cache.get("mtime") != mtime:
            with open(path) as handle:
                cache.update(mtime=mtime, token=handle.read().strip())
        return cache.get("token") or None
    return None


def _same(given, expected):
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


PRINCIPAL_KEY = "ctfhost.principal"


def authenticate():
    """The caller of this request; aborts 401 when a credential is missing or wrong."""
    # kept in the request's environ, not in g: an app context can outlive a request
    principal = request.environ.get(PRINCIPAL_KEY)
    if principal is None:
        principal = _resolve()
        request.environ[PRINCIPAL_KEY] = principal
    return principal


def _resolve():
    admin_header = request.headers.get("X-Admin-Token")
    if admin_header is not None:
        if _same(admin_header, admin_token()):
            return Principal(ADMIN)
        abort(401, message="wrong admin token")
    worker_header = request.headers.get("X-Worker-Token")
    if worker_header is not None:
        if _same(worker_header, current_app.config.get("CTFHOST_WORKER_TOKEN")):
            return Principal(WORKER, scopes=())
        abort(401, message="wrong worker token (or the server has no CTFHOST_WORKER_TOKEN set)")
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            abort(401, message="the Authorization header must be 'Bearer <token>'")
        if _same(secret, admin_token()):
            return Principal(ADMIN)
        token = token_for(secret)
        if token is None:
            abort(401, message="unknown, revoked or expired token")
        return Principal(TEAM, team_id=token.team_id, token_id=token.id, scopes=scopes_of(token), team=token.team)
    api_key = request.headers.get("x-api-key")
    if api_key is not None:
        expected = current_app.config.get("CTFHOST_API_KEY")
        if not expected:
            abort(401, message="the control plane is locked: the server has no CTFHOST_API_KEY set")
        if _same(api_key, expected):
            return Principal(API_KEY)
        abort(401, message="wrong API key")
    message = "missing credentials: send x-api-key, X-Admin-Token or Authorization: Bearer <token>"
    if not current_app.config.get("CTFHOST_API_KEY"):
        message += " (the server has no CTFHOST_API_KEY set: only admin and team tokens can work)"
    abort(401, message=message)


def current_principal():
    """The authenticated caller of this request, or None before (or without) authentication."""
    return request.environ.get(PRINCIPAL_KEY)


def for_caller(value, team_schema, status=200, headers=None):
    """A view's answer as the caller may see it.

    The API key and the admin get `value` for the route's response schema;
    a team token gets it dumped with `team_schema` (fewer fields), since the
    route's schema is fixed when the view is declared.
    """
    if not current_principal().is_team:
        return (value, status, headers) if headers else (value, status)
    response = jsonify(team_schema.dump(value))
    response.status_code = status
    response.headers.update(headers or {})
    return response


class Blueprint(SmorestBlueprint):
    """A flask-smorest blueprint whose views state who may call them."""

    ARGUMENTS_PARSER = ArgumentsParser()

    def allow(self, *kinds, scope=None):
        """Let these kinds of caller (and the admin) call the view; document it in the spec.

        `scope`: what a team token must hold to call it (the admin and the API key hold every scope).
        """
        allowed = {ADMIN, *kinds}
        schemes = []
        for kind in (API_KEY, ADMIN, TEAM, WORKER):
            if kind in allowed:
                schemes.extend(s for s in SCHEMES_OF[kind] if s not in schemes)
        who = ", ".join(LABELS[k] for k in (ADMIN, API_KEY, TEAM, WORKER) if k in allowed)

        def decorator(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                principal = authenticate()
                if principal.kind not in allowed:
                    abort(403, message=f"{LABELS[principal.kind]} may not call {request.method} {request.path}")
                if scope is not None and not principal.holds(scope):
                    abort(403, message=f"this token lacks the scope {scope!r} that {request.method} {request.path} "
                                       f"needs (it holds: {', '.join(principal.scopes) or 'none'})",
                          errors={"scope": scope})
                return func(*args, **kwargs)

            description = f"Callers: {who}."
            extensions = {}
            if scope is not None:
                description += f" Token scope: `{scope}`."
                extensions["x-ctfhost-scope"] = scope
            wrapper = self.doc(security=[{scheme: []} for scheme in schemes], description=description,
                               **extensions)(wrapper)
            wrapper = self.alt_response(401, schema=ErrorSchema, description="Missing or wrong credentials.")(wrapper)
            return self.alt_response(403, schema=ErrorSchema, description="Not allowed for this caller.")(wrapper)

        return decorator

    def api_key_required(self, func):
        """Callers: the API key (and the admin)."""
        return self.allow(API_KEY)(func)

    def admin_only(self, func):
        return self.allow()(func)

    def public(self, func):
        return self.doc(security=[])(func)


def team_of_request(team_id):
    """The team a request acts for: `team_id` as given, or a team token's own team when it names none."""
    principal = current_principal()
    if team_id is None:
        if principal.is_team:
            return principal.team
        raise Invalid({"json": {"team_id": ["Missing data for required field (only a team token may leave it out)."]}})
    return team_id
