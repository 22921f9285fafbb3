"""Forward-auth for the proxy, and access links for teams."""

import time

from flask import Response, request
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields, validate

from ctfhost import metrics
from ctfhost.api.auth import API_KEY, TEAM, Blueprint
from ctfhost.api.instances import own
from ctfhost.builtin.forward_auth import HTML, page
from ctfhost.plugins import get_plugins
from ctfhost.services import access as service
from ctfhost.services import instances
from ctfhost.services.errors import Conflict, Invalid

blp = Blueprint("access", __name__, url_prefix="/api/v1", description="Who may reach an instance through the proxy.")


class AccessRequestSchema(Schema):
    next = fields.String(
        load_default="/",
        validate=validate.Length(max=2000),
        metadata={"description": "Path on the instance to land on (anything else becomes /)"},
    )
    endpoint = fields.String(
        load_default="main",
        validate=validate.Length(min=1, max=63),
        metadata={"description": "Which HTTP endpoint of the instance to open (its `endpoints`): each has a host of "
                  "its own, and a link opens the one it is for", "example": "main"},
    )


class AccessLinkSchema(Schema):
    url = fields.String(metadata={"description": "<endpoint url>/.ctfhost/access?ticket=...&next=...: open it in the browser"})
    expires_in = fields.Integer(metadata={"description": "Seconds the single-use link stays valid"})


@blp.route("/instances/<uuid:instance_id>/access", methods=["POST"])
@blp.allow(API_KEY, TEAM, scope="instances:read")
@blp.arguments(AccessRequestSchema(), required=False)
@blp.response(200, AccessLinkSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such instance (or another team's).")
@blp.alt_response(409, schema=ErrorSchema, description="The instance is not active.")
def access_link(data, instance_id):
    """A single-use, 60-second link that lets a browser into one HTTP endpoint of the instance (main by default)"""
    data = data or {}
    instance = own(instances.get_instance(instance_id))
    if not service.instance_is_active(instance):
        raise Conflict(f"instance {instance.id} is {instance.status}; only an active instance can be opened")
    endpoint = None
    if data.get("endpoint", "main") != "main":
        try:
            endpoint = service.http_endpoint(instance, data["endpoint"])
        except LookupError as exc:
            raise Invalid({"json": {"endpoint": [str(exc)]}}) from None
    url, expires_in = service.issue_ticket(instance, data.get("next", "/"), endpoint)
    return {"url": url, "expires_in": expires_in}


@blp.route("/auth/forward", methods=["GET"])
@blp.public
@blp.doc(
    responses={
        "200": {"description": "Allowed; X-Ctfhost-Team and X-Ctfhost-Instance go to the backend."},
        "302": {"description": "An access link was redeemed (Set-Cookie), or the caller is sent to sign in."},
        "401": {"description": "No valid cookie (and no sign-in URL), or a bad access link."},
        "404": {"description": "No active instance has this host."},
    }
)
def forward_auth():
    """Traefik forwardAuth: may this request reach the instance at X-Forwarded-Host?"""
    started = time.perf_counter()
    response = _decide()
    metrics.record_forward_auth(response.status_code, time.perf_counter() - started)
    return response


def _decide():
    """The forward-auth answer for this request: 404 for an unknown host, else what the `authorize` hook says."""
    instance = service.active_instance_for_host(request.headers.get("X-Forwarded-Host"))
    if instance is None or not service.instance_is_active(instance):
        return Response(page("No such instance", "Nothing runs at this address (any more). Launch a new instance from the scoreboard."), 404, HTML)
    decision = get_plugins().authorize(request, instance)
    status = 200 if decision.allowed else decision.status
    response = Response(decision.body or "", status)
    for name, value in decision.headers.items():
        response.headers[name] = value
    return response
