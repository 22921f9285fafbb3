"""/api/v1/workers: worker agents register and heartbeat; operators list them."""

import functools

from flask import current_app
from flask.views import MethodView
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, ValidationError, fields, validate

from ctfhost import limits
from ctfhost.api.auth import ADMIN, API_KEY, WORKER, Blueprint, authenticate
from ctfhost.api.fields import StrictInteger, UTCDateTime
from ctfhost.models import WORKER_STATES
from ctfhost.services import instances, pulls
from ctfhost.services import workers as service
from ctfhost.services.errors import Forbidden

blp = Blueprint("workers", __name__, url_prefix="/api/v1/workers", description="Worker agents that run instances.")


def _address(value):
    problem = service.address_problem(value)
    if problem:
        raise ValidationError(problem)


ADDRESS_DOC = "Host name or IP the proxy uses to reach this worker's instances (no scheme, port or path)"
AGENT_INSTANCE = fields.String(
    load_default=None,
    validate=[
        validate.Length(min=1, max=128),
        validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$", error="Letters, digits, '.', '_', ':', '/' and '-' only."),
    ],
    metadata={
        "description": "Identity of this agent run (random per start). While the worker's heartbeat is fresh, "
        "only the same agent run may register or heartbeat it again."
    },
)


def worker_credential(func):
    """Refuse the API key when CTFHOST_WORKER_TOKEN is set (single-key setups keep registering with it)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if authenticate().kind == API_KEY and current_app.config.get("CTFHOST_WORKER_TOKEN"):
            raise Forbidden(
                "CTFHOST_WORKER_TOKEN is set: workers register and heartbeat with X-Worker-Token, not the API key"
            )
        return func(*args, **kwargs)

    return wrapper


class WorkerRegisterSchema(Schema):
    id = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=128),
            validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", error="Letters, digits, '.', '_' and '-' only."),
        ],
    )
    address = fields.String(required=True, validate=_address, metadata={"description": ADDRESS_DOC})
    agent_port = StrictInteger(load_default=0, validate=validate.Range(min=0, max=65535))
    runtime = fields.String(
        required=True,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "Runtime served, or several separated by commas", "example": "docker"},
    )
    max_instances = StrictInteger(load_default=50, validate=validate.Range(min=0, max=limits.MAX_WORKER_INSTANCES))
    agent_instance = AGENT_INSTANCE


class RegisterArgsSchema(Schema):
    force = fields.Boolean(
        load_default=False,
        metadata={"description": "Admin only: take over a live worker held by another agent run"},
    )


class HeartbeatSchema(Schema):
    class Meta:
        unknown = "exclude"  # older agents sent anything, or nothing

    agent_instance = AGENT_INSTANCE
    address = fields.String(load_default=None, validate=_address, metadata={"description": ADDRESS_DOC})


class WorkerImageSchema(Schema):
    runtime = fields.String()
    image = fields.String()
    state = fields.String(metadata={"enum": ["unpulled", "pulling", "pulled", "failed"]})
    error = fields.String(allow_none=True)
    updated_at = UTCDateTime(allow_none=True)


def with_images(described):
    """Workers (or one) with their pull states as `images`, one query."""
    many = isinstance(described, list)
    rows = described if many else [described]
    found = pulls.worker_images([worker.id for worker in rows])
    for worker in rows:
        worker.images = found.get(worker.id, [])
    return described


class WorkerSchema(Schema):
    id = fields.String()
    address = fields.String()
    agent_port = fields.Integer()
    runtime = fields.String()
    runtimes = fields.List(fields.String())
    max_instances = fields.Integer()
    status = fields.String(metadata={"enum": ["active", "inactive"], "description": "active: heartbeat under 60 s old"})
    state = fields.String(metadata={
        "enum": list(WORKER_STATES),
        "description": "ready: takes new instances; cordoned: takes none; draining: takes none, its instances run out "
        "(or were destroyed)",
    })
    active_instances = fields.Integer()
    images = fields.List(fields.Nested(WorkerImageSchema), metadata={
        "description": "The images ctfhost asked this worker to hold, with their pull states"})
    last_heartbeat_at = UTCDateTime()
    registered_at = UTCDateTime()


@blp.route("")
class Workers(MethodView):
    @blp.api_key_required
    @blp.response(200, WorkerSchema(many=True))
    def get(self):
        """List workers with liveness, placement state, load and pull states"""
        return with_images(service.describe_workers())

    @blp.allow(API_KEY, WORKER)
    @worker_credential
    @blp.arguments(WorkerRegisterSchema)
    @blp.arguments(RegisterArgsSchema, location="query")
    @blp.response(201, WorkerSchema, description="Registered a new worker.")
    @blp.alt_response(200, schema=WorkerSchema, description="Updated an existing worker (registering is idempotent).")
    @blp.alt_response(409, schema=ErrorSchema, description="The worker is live and held by another agent run.")
    def post(self, data, args):
        """Register a worker, or update it when registered before

        With CTFHOST_WORKER_TOKEN set, only the worker token (X-Worker-Token) and the admin may register.
        """
        if args["force"] and authenticate().kind != ADMIN:
            raise Forbidden("only the admin may force a registration (force=true)")
        existed = service.is_registered(data["id"])
        worker = service.register_worker(
            data["id"], data["address"], data["runtime"], data["agent_port"], data["max_instances"],
            agent_instance=data["agent_instance"], force=args["force"],
        )
        pulls.pull_for_worker(worker)  # every active challenge of its runtimes, ahead of their launches
        return with_images(service.describe(worker)), (200 if existed else 201)


@blp.route("/<string:worker_id>/heartbeat", methods=["POST"])
@blp.allow(API_KEY, WORKER)
@worker_credential
@blp.arguments(HeartbeatSchema, required=False)
@blp.response(200, WorkerSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such worker.")
@blp.alt_response(409, schema=ErrorSchema, description="Another agent run holds this worker.")
@blp.alt_response(422, schema=ErrorSchema, description="A bad address or agent_instance.")
def heartbeat(data, worker_id):
    """Record that a worker is alive (the agent re-asserts its address)"""
    data = data or {}
    return with_images(service.describe(service.heartbeat(worker_id, data.get("agent_instance"), data.get("address"))))


class DrainArgsSchema(Schema):
    destroy = fields.Boolean(load_default=False,
                             metadata={"description": "Also destroy its active instances now (else they run out)"})


@blp.route("/<string:worker_id>", methods=["DELETE"])
@blp.api_key_required
@blp.response(204, description="Forgotten (an agent still running registers it again: stop the agent first).")
@blp.alt_response(404, schema=ErrorSchema, description="No such worker.")
@blp.alt_response(409, schema=ErrorSchema, description="It still runs active instances.")
def delete_worker(worker_id):
    """Forget a worker that runs no active instance"""
    pulls.delete_worker(worker_id)


@blp.route("/<string:worker_id>/cordon", methods=["POST"])
@blp.api_key_required
@blp.response(200, WorkerSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such worker.")
def cordon(worker_id):
    """Place no new instance on a worker (its instances go on)"""
    return with_images(service.set_state(worker_id, "cordoned"))


@blp.route("/<string:worker_id>/uncordon", methods=["POST"])
@blp.api_key_required
@blp.response(200, WorkerSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such worker.")
def uncordon(worker_id):
    """Let placement choose a cordoned or draining worker again"""
    return with_images(service.set_state(worker_id, "ready"))


@blp.route("/<string:worker_id>/drain", methods=["POST"])
@blp.api_key_required
@blp.arguments(DrainArgsSchema, location="query")
@blp.response(200, WorkerSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such worker.")
def drain(args, worker_id):
    """Cordon a worker to empty it: its instances run out (nothing is moved), or are destroyed with destroy=true"""
    return with_images(instances.drain_worker(worker_id, destroy=args["destroy"]))
