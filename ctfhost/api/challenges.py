"""/api/v1/challenges: register, read, change and remove challenges."""

import json
import re

from flask.views import MethodView
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, ValidationError, fields, validate

from ctfhost import jsontext, limits
from ctfhost.api.auth import API_KEY, TEAM, Blueprint, current_principal, for_caller
from ctfhost.api.fields import StrictInteger, UTCDateTime
from ctfhost.models import CHALLENGE_STATUSES
from ctfhost.plugins import UnknownRuntime, get_plugins
from ctfhost.services import challenges as service
from ctfhost.services import pulls
from ctfhost.services.errors import NotFound

blp = Blueprint("challenges", __name__, url_prefix="/api/v1/challenges", description="Challenges that teams can launch.")

SLUG = r"^[a-z0-9][a-z0-9-]*[a-z0-9]$"
TTL_RANGE = validate.Range(min=1, max=limits.MAX_TTL_SECONDS)
RENEWALS_RANGE = validate.Range(min=0, max=limits.MAX_RENEWALS)


class ExtraConfig(fields.Field):
    """A string holding a JSON object of runtime options (an object is accepted too)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {}).update(
            {"type": "string", "example": '{"env": {"MODE": "easy"}, "readiness_timeout": 30}'}
        )
        super().__init__(**kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return value

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict):
            if jsontext.depth(value) > limits.MAX_JSON_DEPTH:
                raise ValidationError(f"Nested more than {limits.MAX_JSON_DEPTH} levels deep.")
            return json.dumps(value, sort_keys=True)
        if not isinstance(value, str):
            raise ValidationError("Must be a string holding a JSON object.")
        if not value.strip():
            return "{}"
        try:
            parsed = jsontext.loads(value)
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}.") from None
        if not isinstance(parsed, dict):
            raise ValidationError("Must hold a JSON object.")
        return value


# \Z, not $: `$` also matches before a final newline ("db\n" would pass)
SERVICE_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?\Z")
SERVICE_NAME_RULE = "a DNS label: 1-63 lowercase letters, digits and inner hyphens, starting with a letter"
ENVIRONMENT_NAME = r"^[A-Za-z_][A-Za-z0-9_]*\Z"
PROTOCOLS = ["http", "tcp"]
CPU_COUNTS = list(limits.CPU_COUNTS)
MEMORY_SIZES = list(limits.MEMORY_SIZES)


def service_name_problems(name, what="service name"):
    if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
        return [f"{name!r} is not a valid {what}: {SERVICE_NAME_RULE}."]
    if name == "main":
        return [f"`main` is the challenge's own {'service' if what == 'service name' else 'endpoint'} (image, port)."]
    return []


class EndpointSchema(Schema):
    """A port of a service that players reach, under a name of its own."""

    name = fields.String(
        required=True,
        validate=[validate.Regexp(SERVICE_NAME, error=f"Must be {SERVICE_NAME_RULE}."),
                  validate.Length(max=limits.MAX_ENDPOINT_NAME_LENGTH)],
        metadata={"description": "Unique within the challenge; `main` is the main port's. At most "
                  f"{limits.MAX_ENDPOINT_NAME_LENGTH} characters", "example": "admin"},
    )
    port = StrictInteger(required=True, validate=validate.Range(min=1, max=65535))
    protocol = fields.String(
        load_default="http", validate=validate.OneOf(PROTOCOLS),
        metadata={"description": "http: Host routing behind the team's access check; tcp: TLS with SNI"},
    )


def _argv(description):
    return fields.List(
        fields.String(validate=validate.Length(max=limits.MAX_ARGUMENT_LENGTH)),
        validate=validate.Length(max=limits.MAX_ARGUMENTS), metadata={"description": description},
    )


class RuntimeOptionsField(fields.Dict):
    """An object of runtime options (checked against the runtime's options schema when the challenge is saved)."""

    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(), values=fields.Raw(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        if jsontext.depth(result) > limits.MAX_JSON_DEPTH:
            raise ValidationError(f"Nested more than {limits.MAX_JSON_DEPTH} levels deep.")
        return result


class ServiceSchema(Schema):
    """A container beside the main one, in the instance's private network, reachable there by its name."""

    image = fields.String(required=True, validate=validate.Length(min=1, max=500))
    command = _argv("Arguments replacing the image's CMD")
    entrypoint = _argv("Replaces the image's ENTRYPOINT")
    environment = fields.Dict(
        keys=fields.String(validate=validate.Regexp(ENVIRONMENT_NAME, error="Not a valid environment variable name.")),
        values=fields.String(validate=validate.Length(max=limits.MAX_ARGUMENT_LENGTH)),
        validate=validate.Length(max=limits.MAX_ENVIRONMENT),
        metadata={"description": "Environment variables (FLAG is set to the instance's flag in every service)"},
    )
    cpu_count = StrictInteger(load_default=1, validate=validate.OneOf(CPU_COUNTS))
    memory_mb = StrictInteger(load_default=512, validate=validate.OneOf(MEMORY_SIZES))
    expose = fields.List(fields.Nested(EndpointSchema), load_default=list,
                         metadata={"description": "Ports of this service players reach (none: only inside the instance)"})
    options = RuntimeOptionsField(
        load_default=dict, metadata={"description": "This service's runtime options, as the challenge's extra_config"},
    )


class _StoredAsJSON:
    """A field whose model attribute is JSON text: parsed to be shown, dumped once loaded."""

    empty = "{}"

    def _serialize(self, value, attr, obj, **kwargs):
        if isinstance(value, str):
            value = json.loads(value or self.empty)
        return super()._serialize(value, attr, obj, **kwargs)


class ServicesField(_StoredAsJSON, fields.Dict):
    """services: {name: service}, kept as JSON text; errors are keyed by the service's name and field."""

    def __init__(self, service_schema=ServiceSchema, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault(
            "description", "Services beside the main one, by name (a DNS label, not `main`): "
            "each instance runs them all in a private network where each reaches the others by name",
        )
        self.service_schema = service_schema
        super().__init__(keys=fields.String(), values=fields.Nested(service_schema), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError("Must be an object mapping service names to services.")
        result, errors = {}, {}
        for name, spec in value.items():
            problems = service_name_problems(name)
            if problems:
                errors[name] = {"name": problems}
                continue
            if not isinstance(spec, dict):
                errors[name] = {"_schema": ["Must be an object (image, command, environment...)."]}
                continue
            try:
                result[name] = self.service_schema().load(spec)
            except ValidationError as exc:
                errors[name] = exc.messages
        if errors:
            raise ValidationError(errors)
        return json.dumps(result)


class ExposeField(_StoredAsJSON, fields.List):
    """expose: the main service's extra endpoints, kept as JSON text."""

    empty = "[]"

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault(
            "description", "Extra endpoints of the main service (its `port` is always exposed, as `main`)",
        )
        super().__init__(fields.Nested(EndpointSchema), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return json.dumps(super()._deserialize(value, attr, data, **kwargs))


class MetadataField(_StoredAsJSON, fields.Dict):
    """metadata: an object of the operator's own keys (author, category, tags...), kept as JSON text."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault(
            "description", "The operator's own keys (author, category, tags...): any JSON object, "
            f"at most {limits.MAX_METADATA_LENGTH} characters as JSON",
        )
        super().__init__(keys=fields.String(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError("Must be an object.")
        if jsontext.depth(value) > limits.MAX_JSON_DEPTH:
            raise ValidationError(f"Nested more than {limits.MAX_JSON_DEPTH} levels deep.")
        text = json.dumps(super()._deserialize(value, attr, data, **kwargs), sort_keys=True)
        if len(text) > limits.MAX_METADATA_LENGTH:
            raise ValidationError(f"Longer than {limits.MAX_METADATA_LENGTH} characters as JSON.")
        return text


STATUS_DESCRIPTION = (
    "draft: being written; active: teams launch it; inactive: withdrawn (running instances go on). Only the admin "
    "launches a challenge that is not active"
)


def installed_runtime(name):
    """Refuse a runtime no installed plugin provides, with the other field errors."""
    try:
        get_plugins().require_runtime(name)
    except UnknownRuntime as exc:
        raise ValidationError(str(exc)) from None


class ChallengeSchema(Schema):
    id = fields.String(
        required=True,
        validate=[
            validate.Length(min=2, max=63),
            validate.Regexp(SLUG, error="Must be a slug: lowercase letters, digits and inner hyphens."),
        ],
        metadata={"description": "Slug, equal to the CTFd challenge slug", "example": "web-babysql"},
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    runtime = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=64), installed_runtime],
        metadata={"description": "A runtime an installed plugin provides (see `flask ctfhost plugins`)", "example": "docker"},
    )
    image = fields.String(required=True, validate=validate.Length(min=1, max=500))
    port = StrictInteger(required=True, validate=validate.Range(min=1, max=65535))
    protocol = fields.String(
        load_default="http",
        validate=validate.OneOf(PROTOCOLS),
        metadata={"description": "http: Host routing behind forward-auth; tcp: TLS with SNI on the shared TLS port"},
    )
    cpu_count = StrictInteger(load_default=1, validate=validate.OneOf(CPU_COUNTS))
    memory_mb = StrictInteger(load_default=512, validate=validate.OneOf(MEMORY_SIZES))
    ttl_seconds = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=TTL_RANGE,
        metadata={"description": "Instance lifetime in seconds (at most 30 days); null uses the global default_ttl_seconds"},
    )
    max_renewals = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=RENEWALS_RANGE,
        metadata={"description": f"Renewals allowed per instance (at most {limits.MAX_RENEWALS}); null: unlimited"},
    )
    flag_template = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=256),
        metadata={
            "description": "Per-instance flags, e.g. `flag{{{hex:16}}}` ({hex:N}, {alnum:N}, {digits:N}, {lower:N}, "
            "{upper:N}, {uuid}; {{ and }} are literal braces); null: the scoreboard keeps static flags",
            "example": "flag{{{hex:16}}}",
        },
    )
    extra_config = ExtraConfig(load_default="{}")
    services = ServicesField(load_default="{}")
    expose = ExposeField(load_default="[]")
    status = fields.String(
        load_default="active", validate=validate.OneOf(CHALLENGE_STATUSES),
        metadata={"description": STATUS_DESCRIPTION + "; active when a new challenge gives none"},
    )
    version = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=100),
        metadata={"description": "The operator's version of the challenge", "example": "1.2.0"},
    )
    description = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=limits.MAX_DESCRIPTION_LENGTH),
        metadata={"description": "Notes for operators (players read CTFd's description)"},
    )
    metadata = MetadataField(load_default="{}")
    created_at = UTCDateTime(dump_only=True)
    updated_at = UTCDateTime(dump_only=True)


class PublicServiceSchema(Schema):
    """What a team token may read of a service: its exposed endpoints, not its image, command or environment."""

    expose = fields.List(fields.Nested(EndpointSchema))


class PublicChallengeSchema(Schema):
    """What a team token may read of a challenge: not its image or runtime options."""

    id = fields.String()
    name = fields.String()
    runtime = fields.String()
    port = fields.Integer()
    protocol = fields.String()
    cpu_count = fields.Integer()
    memory_mb = fields.Integer()
    ttl_seconds = fields.Integer(allow_none=True)
    max_renewals = fields.Integer(allow_none=True)
    services = ServicesField(service_schema=PublicServiceSchema)
    expose = ExposeField()
    status = fields.String()
    version = fields.String(allow_none=True)


class ChallengePatchSchema(ChallengeSchema):
    class Meta:
        exclude = ("id",)

    # no defaults on PATCH: only the fields given change
    protocol = fields.String(validate=validate.OneOf(PROTOCOLS))
    cpu_count = StrictInteger(validate=validate.OneOf(CPU_COUNTS))
    memory_mb = StrictInteger(validate=validate.OneOf(MEMORY_SIZES))
    ttl_seconds = StrictInteger(allow_none=True, validate=TTL_RANGE)
    max_renewals = StrictInteger(allow_none=True, validate=RENEWALS_RANGE)
    flag_template = fields.String(allow_none=True, validate=validate.Length(min=1, max=256))
    extra_config = ExtraConfig()
    services = ServicesField()
    expose = ExposeField()
    status = fields.String(validate=validate.OneOf(CHALLENGE_STATUSES), metadata={"description": STATUS_DESCRIPTION})
    version = fields.String(allow_none=True, validate=validate.Length(min=1, max=100))
    description = fields.String(allow_none=True, validate=validate.Length(max=limits.MAX_DESCRIPTION_LENGTH))
    metadata = MetadataField()


class ListChallengesArgsSchema(Schema):
    status = fields.String(validate=validate.OneOf(CHALLENGE_STATUSES),
                           metadata={"description": "Only challenges in this status (team tokens see active ones only)"})


class DeactivateArgsSchema(Schema):
    destroy_instances = fields.Boolean(
        load_default=False, metadata={"description": "Also destroy the challenge's active instances (else they run on)"})


class DeleteArgsSchema(Schema):
    force = fields.Boolean(load_default=False, metadata={"description": "Destroy active instances first"})


class WeightsSchema(Schema):
    weights = fields.Dict(keys=fields.String(), values=fields.Float())


@blp.route("")
class Challenges(MethodView):
    @blp.allow(API_KEY, TEAM, scope="instances:read")
    @blp.arguments(ListChallengesArgsSchema, location="query")
    @blp.response(200, ChallengeSchema(many=True), description="A team token gets the public fields of active challenges only.")
    def get(self, args):
        """List challenges"""
        status = args.get("status")
        if current_principal().is_team:  # drafts and withdrawn challenges are the operators' business
            if status not in (None, "active"):
                return for_caller([], PublicChallengeSchema(many=True))
            status = "active"
        return for_caller(service.list_challenges(status), PublicChallengeSchema(many=True))

    @blp.api_key_required
    @blp.arguments(ChallengeSchema)
    @blp.response(201, ChallengeSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="A challenge with this id exists.")
    def post(self, data):
        """Register a challenge"""
        return service.create_challenge(data)


@blp.route("/<string:challenge_id>")
class ChallengeById(MethodView):
    @blp.allow(API_KEY, TEAM, scope="instances:read")
    @blp.response(200, ChallengeSchema, description="A team token gets the public fields only.")
    @blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
    def get(self, challenge_id):
        """Get a challenge (a team token: an active one)"""
        challenge = service.get_challenge(challenge_id)
        if current_principal().is_team and not challenge.is_active:
            raise NotFound(f"challenge {challenge_id!r} not found")
        return for_caller(challenge, PublicChallengeSchema())

    @blp.api_key_required
    @blp.arguments(ChallengePatchSchema(partial=True))
    @blp.response(200, ChallengeSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
    def patch(self, changes, challenge_id):
        """Change some fields of a challenge"""
        return service.update_challenge(challenge_id, changes)

    @blp.api_key_required
    @blp.arguments(DeleteArgsSchema, location="query")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
    @blp.alt_response(409, schema=ErrorSchema, description="The challenge has active instances and force is not set.")
    def delete(self, args, challenge_id):
        """Delete a challenge (force=true destroys its active instances first)"""
        service.delete_challenge(challenge_id, force=args["force"])


@blp.route("/<string:challenge_id>/activate", methods=["POST"])
@blp.api_key_required
@blp.response(200, ChallengeSchema, description="The challenge, now active: teams may launch it.")
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
def activate(challenge_id):
    """Make a challenge active: teams may launch it"""
    return service.set_status(challenge_id, "active")


@blp.route("/<string:challenge_id>/deactivate", methods=["POST"])
@blp.api_key_required
@blp.arguments(DeactivateArgsSchema, location="query")
@blp.response(200, ChallengeSchema, description="The challenge, now inactive: only the admin may launch it.")
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
def deactivate(args, challenge_id):
    """Withdraw a challenge: no new instances but the admin's; running ones go on unless destroy_instances=true"""
    return service.set_status(challenge_id, "inactive", destroy_instances=args["destroy_instances"])


class OperationSchema(Schema):
    """What an operation on a challenge's fleet answers (the admin surface's RuntimeOperationResponse)."""

    slug = fields.String(metadata={"description": "The challenge id"})
    operation = fields.String(metadata={"enum": ["pull", "status", "restart"]})
    status = fields.String(metadata={
        "description": "pull: accepted (queued), skipped (no active worker) or failed (the queue is down); status: "
        "the pulls as one word (pulled, pulling, unpulled, failed); restart: accepted, partial or failed"})
    detail = fields.String()


class PullStateSchema(Schema):
    worker_id = fields.String()
    image = fields.String()
    state = fields.String(metadata={"enum": ["unpulled", "pulling", "pulled", "failed"]})
    error = fields.String(allow_none=True, metadata={"description": "Why the last pull failed (the engine's words)"})
    updated_at = UTCDateTime(allow_none=True)


class ChallengeStatusSchema(OperationSchema):
    workers = fields.List(fields.Nested(PullStateSchema), metadata={
        "description": "Every image of the challenge on every active worker of its runtime"})
    active_instances = fields.Integer()


class RestartOperationSchema(OperationSchema):
    restarted = fields.Integer(metadata={"description": "Instances replaced by a new one"})
    failed = fields.Integer(metadata={"description": "Instances that could not be restarted (detail says why)"})


@blp.route("/<string:challenge_id>/pull", methods=["POST"])
@blp.api_key_required
@blp.response(202, OperationSchema, description="Pulls queued on every active worker of the challenge's runtime.")
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
def pull(challenge_id):
    """Pull every image of the challenge on every active worker serving its runtime, in the background"""
    return pulls.request_pull(challenge_id)


@blp.route("/<string:challenge_id>/status")
@blp.api_key_required
@blp.response(200, ChallengeStatusSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
def status(challenge_id):
    """The challenge's images per worker (pull states) and its active instance count"""
    return pulls.challenge_status(challenge_id)


@blp.route("/<string:challenge_id>/restart", methods=["POST"])
@blp.api_key_required
@blp.response(202, RestartOperationSchema, description="Every active instance replaced by a new one (queued).")
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
def restart_all(challenge_id):
    """Restart every active instance of the challenge (new id, new hostnames, full TTL), e.g. after fixing it"""
    return service.restart_instances(challenge_id)


@blp.route("/<string:challenge_id>/weights")
@blp.api_key_required
@blp.response(200, WeightsSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
def weights(challenge_id):
    """Per-team weights plugins report for a challenge"""
    return {"weights": service.collect_weights(challenge_id)}
