"""/api/v1/instances: launch, read, renew, restart and stop team instances."""

from flask.views import MethodView
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields, validate

from ctfhost.api.auth import ADMIN, API_KEY, TEAM, Blueprint, current_principal, for_caller, team_of_request
from ctfhost.api.fields import PageArgsSchema, StrictInteger, TeamId, UTCDateTime
from ctfhost.models import STATUSES
from ctfhost.services import instances as service
from ctfhost.services.errors import Forbidden, NotFound

READ, WRITE = "instances:read", "instances:write"

blp = Blueprint("instances", __name__, url_prefix="/api/v1/instances", description="Per-team challenge instances.")


class InstanceEndpointSchema(Schema):
    name = fields.String(metadata={"description": "`main` for the challenge's port; else the name the challenge gives"})
    service = fields.String(metadata={"description": "The service that listens: `main` or one of the challenge's services"})
    port = fields.Integer(metadata={"description": "The service's port"})
    protocol = fields.String(metadata={"enum": ["http", "tcp"]})
    url = fields.String(metadata={"description": "The proxy URL: http(s)://... or tls://host:port"})
    connection = fields.Dict(
        keys=fields.String(), values=fields.String(), allow_none=True,
        metadata={"description": "TCP endpoints: ready-to-paste commands (openssl, pwntools, ncat); null for HTTP"},
    )


class InstanceSchema(Schema):
    id = fields.UUID(dump_only=True)
    team_id = TeamId(attribute="team")
    challenge_id = fields.String()
    runtime = fields.String()
    protocol = fields.String(metadata={"enum": ["http", "tcp"]})
    status = fields.String(metadata={"enum": list(STATUSES)})
    endpoint = fields.String(
        metadata={"description": "The proxy URL of the instance, set from the start: http(s)://... or tls://host:port"}
    )
    connection = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        allow_none=True,
        metadata={"description": "TCP instances: ready-to-paste commands (openssl, pwntools, ncat); null for HTTP"},
    )
    endpoints = fields.List(
        fields.Nested(InstanceEndpointSchema), attribute="endpoint_list", dump_only=True,
        metadata={"description": "Every endpoint of the instance in a stable order, `main` first (its url is `endpoint`)"},
    )
    worker_id = fields.String(allow_none=True)
    phase = fields.String(allow_none=True, metadata={
        "enum": ["pulling", "starting", None],
        "description": "A pending instance whose worker lacks its image: `pulling`, then `starting`; null otherwise"})
    expires_at = UTCDateTime()
    started_at = UTCDateTime(allow_none=True, metadata={"description": "null until running"})
    created_at = UTCDateTime()
    ended_at = UTCDateTime(allow_none=True)
    error = fields.String(
        allow_none=True,
        metadata={"description": "Why the instance is in status error: the detail for operators (team tokens get public_error here)"},
    )
    public_error = fields.Function(
        lambda instance: service.public_error(instance.error),
        allow_none=True,
        metadata={"type": "string", "description": "A short reason fit for players, without the runtime's details"},
    )
    renewals = fields.Integer(metadata={"description": "Times renewed (see the challenge's max_renewals); a restart keeps it"})
    renewals_left = fields.Integer(
        allow_none=True, metadata={"description": "Renewals still allowed (the challenge's max_renewals); null: no limit"}
    )
    ttl_seconds = fields.Integer(
        metadata={"description": "What a renew gives: expires_at becomes now + ttl_seconds (the challenge's TTL)"}
    )
    flag = fields.String(
        allow_none=True,
        metadata={"description": "This instance's own flag (challenges with a flag_template); never shown to team tokens"},
    )

    def dump(self, obj, *, many=None):
        # renewal terms for every row at once (a pre_dump hook's signature differs across marshmallow 3 and 4)
        many = self.many if many is None else bool(many)
        if many:
            obj = list(obj)
        service.renewal_terms(obj if many else [obj])
        return super().dump(obj, many=many)


class TeamInstanceSchema(InstanceSchema):
    """What a team token reads: no flag, and only the short reason of a failure."""

    error = fields.Function(lambda instance: service.public_error(instance.error), allow_none=True)

    class Meta:
        exclude = ("flag",)


class LaunchSchema(Schema):
    team_id = TeamId(load_default=None, metadata={"description": "Required, but for a team token (its own team)"})
    challenge_id = fields.String(required=True, validate=validate.Length(min=1, max=63))


class ListArgsSchema(PageArgsSchema):
    team_id = fields.String(validate=validate.Length(min=1, max=64))
    challenge_id = fields.String(validate=validate.Length(min=1, max=63))
    status = fields.String(validate=validate.OneOf(STATUSES))
    worker_id = fields.String(validate=validate.Length(min=1, max=128),
                              metadata={"description": "Only the instances placed on this worker"})


def shaped(value, status=200, headers=None, many=False):
    """Instances as the caller may see them: a team token never sees flags nor a failure's details."""
    return for_caller(value, TeamInstanceSchema(many=many), status, headers)


def own(instance):
    """The instance, if the caller may act for its team; a team token gets 404 for another team's."""
    if not current_principal().may_act_for(instance.team_id):
        raise NotFound(f"instance {instance.id} not found")
    return instance


def limited():
    """Fair-use limits bind everyone but the admin (who also alone launches challenges that are not active)."""
    return current_principal().kind != ADMIN


def check_team(team_id):
    if not current_principal().may_act_for(team_id):
        raise Forbidden(f"a team token acts for its own team only, not for team {team_id}")


MAX_WAIT_SECONDS = 120


class LaunchWaitSchema(Schema):
    wait = fields.Integer(
        strict=False, validate=validate.Range(min=0, max=MAX_WAIT_SECONDS),
        metadata={"description": "Answer once the instance is running or failed (201), or after this many seconds "
                  "with it still pending (202); 0 or absent: at once"})


class GetWaitSchema(Schema):
    wait = fields.Integer(
        strict=False, validate=validate.Range(min=0, max=MAX_WAIT_SECONDS),
        metadata={"description": "Answer once the instance's status differs from its status when the request "
                  "arrived, or after this many seconds; 0 or absent: at once"})


class RenewSchema(Schema):
    expires_at = UTCDateTime()
    seconds_added = StrictInteger()


@blp.route("")
class Instances(MethodView):
    @blp.allow(API_KEY, TEAM, scope=READ)
    @blp.arguments(ListArgsSchema, location="query")
    @blp.response(200, InstanceSchema(many=True), headers={"X-Total-Count": {"description": "Rows matching the filters", "schema": {"type": "integer"}}})
    def get(self, args):
        """List instances, newest first (filters; LIMIT/OFFSET pagination); a team token sees its team's"""
        principal = current_principal()
        if principal.is_team:
            if "team_id" in args:
                check_team(args["team_id"])
            args["team_id"] = principal.team_id
        rows, total = service.list_instances(**args)
        return shaped(rows, headers={"X-Total-Count": str(total)}, many=True)

    @blp.allow(API_KEY, TEAM, scope=WRITE)
    @blp.arguments(LaunchSchema)
    @blp.arguments(LaunchWaitSchema, location="query", as_kwargs=True)
    @blp.response(201, InstanceSchema, description="The pending instance (its endpoint is final); with `wait`, "
                  "the instance once running or failed.")
    @blp.alt_response(202, schema=InstanceSchema, description="With `wait`: still pending when the wait ran out.")
    @blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
    @blp.alt_response(409, schema=ErrorSchema, description="The team already has an active instance of it, or the challenge is not active (only the admin launches drafts and inactive ones).")
    @blp.alt_response(429, schema=ErrorSchema, description="max_instances_per_team reached, or launch_cooldown_seconds not over (Retry-After).")
    @blp.alt_response(503, schema=ErrorSchema, description="No worker has room, or the queue is down; nothing was created.")
    def post(self, data, wait=0):
        """Launch an instance for a team (`?wait=` to answer once it runs)"""
        team_id = team_of_request(data["team_id"])
        check_team(team_id)
        instance = service.create_instance(team_id, data["challenge_id"], enforce_limits=limited(),
                                           allow_inactive=not limited())
        if wait:
            instance = service.wait_for_change(instance.id, "pending", wait, current_principal().own_team_id)
            if instance.status == "pending":
                return shaped(instance, 202)
        return shaped(instance, 201)


@blp.route("/<uuid:instance_id>")
class InstanceById(MethodView):
    @blp.allow(API_KEY, TEAM, scope=READ)
    @blp.arguments(GetWaitSchema, location="query", as_kwargs=True)
    @blp.response(200, InstanceSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such instance.")
    def get(self, instance_id, wait=0):
        """Get an instance (`?wait=` to answer once its status changes)"""
        instance = own(service.get_instance(instance_id))
        if wait:
            instance = service.wait_for_change(instance.id, instance.status, wait,
                                                current_principal().own_team_id)
        return shaped(instance)

    @blp.allow(API_KEY, TEAM, scope=WRITE)
    @blp.response(204, description="Ended; its route is gone and a job removes its resources.")
    @blp.alt_response(404, schema=ErrorSchema, description="No such instance.")
    def delete(self, instance_id):
        """Stop and remove an instance"""
        own(service.get_instance(instance_id))
        service.destroy_instance(instance_id)


@blp.route("/<uuid:instance_id>/restart", methods=["POST"])
@blp.allow(API_KEY, TEAM, scope=WRITE)
@blp.response(200, InstanceSchema, description="The new pending instance (new id, new hostname, full TTL).")
@blp.alt_response(404, schema=ErrorSchema, description="No such instance.")
@blp.alt_response(409, schema=ErrorSchema, description="The instance is not active.")
@blp.alt_response(503, schema=ErrorSchema, description="No worker has room; the old instance is kept.")
def restart(instance_id):
    """Replace an instance with a fresh one"""
    own(service.get_instance(instance_id))
    return shaped(service.restart_instance(instance_id, enforce_limits=limited(), allow_inactive=not limited()))


@blp.route("/<uuid:instance_id>/renew", methods=["POST"])
@blp.allow(API_KEY, TEAM, scope=WRITE)
@blp.response(200, RenewSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such instance.")
@blp.alt_response(409, schema=ErrorSchema, description="Not active, or renewing would not extend it.")
def renew(instance_id):
    """Extend an instance to now + the challenge TTL"""
    own(service.get_instance(instance_id))
    expires_at, added = service.renew_instance(instance_id, enforce_limits=limited())
    return {"expires_at": expires_at, "seconds_added": added}


@blp.route("/team/<string:team_id>/<string:challenge_id>")
@blp.allow(API_KEY, TEAM, scope=READ)
@blp.response(200, InstanceSchema)
@blp.alt_response(404, schema=ErrorSchema, description="The team has no active instance of this challenge.")
def team_instance(team_id, challenge_id):
    """The team's active instance of a challenge"""
    if not current_principal().may_act_for(team_id):
        raise NotFound(f"team {team_id} has no active instance of challenge {challenge_id!r}")
    return shaped(service.get_active(team_id, challenge_id))
