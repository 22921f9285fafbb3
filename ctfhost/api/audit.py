"""/api/v1/audit: the audit trail (admin only), and the hook that writes it."""

import json

from flask import request
from marshmallow import Schema, fields, validate

from ctfhost.api.auth import Blueprint, current_principal
from ctfhost.api.fields import PageArgsSchema, UTCDateTime
from ctfhost.services import audit as service

blp = Blueprint("audit", __name__, url_prefix="/api/v1/audit", description="Who changed what (admin only).")

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
ACTORS = ["admin", "api_key", "team", "anonymous"]


class AuditEventSchema(Schema):
    id = fields.Integer()
    at = UTCDateTime()
    actor = fields.String(metadata={"enum": ACTORS})
    token_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    method = fields.String()
    action = fields.String(metadata={"description": "Method and route, e.g. `POST /api/v1/instances/<instance_id>/restart`"})
    target = fields.String(allow_none=True, metadata={"description": "The id acted on"})
    client_ip = fields.String(allow_none=True)
    status = fields.Integer()
    result = fields.String(metadata={"enum": ["ok", "refused", "error"]})
    message = fields.String(allow_none=True)


class AuditArgsSchema(PageArgsSchema):
    actor = fields.String(validate=validate.OneOf(ACTORS))
    team_id = fields.String(validate=validate.Length(min=1, max=64))
    token_id = fields.String(validate=validate.Length(min=1, max=36))
    target = fields.String(validate=validate.Length(min=1, max=300))
    method = fields.String(validate=validate.OneOf(sorted(STATE_CHANGING)))
    result = fields.String(validate=validate.OneOf(["ok", "refused", "error"]))
    status = fields.Integer(validate=validate.Range(min=100, max=599))
    since = UTCDateTime()
    until = UTCDateTime()


@blp.route("")
@blp.admin_only
@blp.arguments(AuditArgsSchema, location="query")
@blp.response(200, AuditEventSchema(many=True), headers={"X-Total-Count": {"description": "Rows matching the filters", "schema": {"type": "integer"}}})
def audit_events(args):
    """The audit trail, newest first (filters; LIMIT/OFFSET pagination)"""
    rows, total = service.list_events(**args)
    return rows, {"X-Total-Count": str(total)}


def _target(response):
    args = dict(request.view_args or {})
    for key in ("instance_id", "challenge_id", "token_id", "worker_id"):
        if key in args:
            return str(args[key])
    if response.status_code < 300 and response.is_json:
        try:
            body = response.get_json(silent=True)
        except (ValueError, json.JSONDecodeError):
            body = None
        if isinstance(body, dict) and body.get("id") is not None:
            return str(body["id"])
    return None


def _message(response):
    if response.status_code >= 400 and response.is_json:
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            return body.get("message")
    return None


def record_request(response):
    """after_request: one audit row per state-changing API request."""
    if request.method not in STATE_CHANGING or not request.path.startswith("/api/"):
        return response
    principal = current_principal()
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    # only an authenticated caller's body is read (it is bounded and already
    # parsed by the view); an anonymous body is never parsed for the audit row
    body = request.get_json(silent=True) if principal is not None and request.is_json else None
    team_id = principal.team_id if principal is not None and principal.team_id else None
    if team_id is None and isinstance(body, dict) and body.get("team_id") is not None:
        team_id = str(body["team_id"])
    service.record(
        actor=principal.kind if principal is not None else "anonymous",
        method=request.method,
        action=f"{request.method} {rule}",
        status=response.status_code,
        target=_target(response),
        team_id=team_id,
        token_id=principal.token_id if principal is not None else None,
        client_ip=request.remote_addr,
        message=_message(response),
    )
    return response
