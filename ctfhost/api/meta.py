"""GET /api/v1/meta: what this server is and can do, and who the caller is, for clients to check before they act."""

from flask import request
from marshmallow import Schema, fields

from ctfhost import __version__
from ctfhost.api.auth import Blueprint, authenticate
from ctfhost.plugins import get_plugins
from ctfhost.services.tokens import SCOPES

# /api/v1; the minor part grows with additions a client may test for (see `features`)
API_VERSION = "1.1"
FEATURES = ("events", "wait", "scoped_tokens", "submissions", "services", "endpoints", "tcp", "image_pulls")

blp = Blueprint("meta", __name__, url_prefix="/api/v1", description="Server version, features and the caller.")


class CallerSchema(Schema):
    kind = fields.String(metadata={"enum": ["admin", "api_key", "team", "worker"]})
    team_id = fields.String(allow_none=True, metadata={"description": "A team token's team; null otherwise"})
    token_id = fields.String(allow_none=True, metadata={"description": "A team token's id; null otherwise"})
    scopes = fields.List(fields.String(metadata={"enum": list(SCOPES)}),
                         metadata={"description": "What the caller may do (the admin and the API key: every scope)"})


class MetaSchema(Schema):
    server_version = fields.String()
    api_version = fields.String(metadata={"description": "MAJOR.MINOR: the major is the /api/vN of the paths"})
    runtimes = fields.List(fields.String(), metadata={"description": "Runtimes of the installed plugins"})
    features = fields.List(fields.String())
    caller = fields.Nested(CallerSchema, allow_none=True,
                           metadata={"description": "Who sent the credentials; null when none were sent"})


def _has_credentials(request_headers):
    return any(request_headers.get(name) is not None
               for name in ("X-Admin-Token", "X-Worker-Token", "Authorization", "x-api-key"))


@blp.route("/meta")
@blp.public
@blp.response(200, MetaSchema)
def meta():
    """The server's version, API version, runtimes and features; the caller and its scopes (any caller)"""
    caller = None
    if _has_credentials(request.headers):
        principal = authenticate()  # wrong credentials: 401, as anywhere
        caller = {"kind": principal.kind, "team_id": principal.team_id, "token_id": principal.token_id,
                  "scopes": list(principal.scopes)}
    return {"server_version": __version__, "api_version": API_VERSION, "runtimes": get_plugins().runtimes(),
            "features": list(FEATURES), "caller": caller}
