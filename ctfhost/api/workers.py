"""/api/v1/workers: worker agents register and heartbeat; operators list them."""

from flask.views import MethodView
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields, validate

from ctfhost.api.auth import Blueprint
from ctfhost.api.fields import StrictInteger, UTCDateTime
from ctfhost.services import workers as service

blp = Blueprint("workers", __name__, url_prefix="/api/v1/workers", description="Worker agents that run instances.")


class WorkerRegisterSchema(Schema):
    id = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=128),
            validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", error="Letters, digits, '.', '_' and '-' only."),
        ],
    )
    address = fields.String(
        required=True,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "Host name or IP the proxy uses to reach this worker's instances"},
    )
    agent_port = StrictInteger(load_default=0, validate=validate.Range(min=0, max=65535))
    runtime = fields.String(
        required=True,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "Runtime served, or several separated by commas", "example": "docker"},
    )
    max_instances = StrictInteger(load_default=50, validate=validate.Range(min=0, max=100000))


class WorkerSchema(Schema):
    id = fields.String()
    address = fields.String()
    agent_port = fields.Integer()
    runtime = fields.String()
    runtimes = fields.List(fields.String())
    max_instances = fields.Integer()
    status = fields.String(metadata={"enum": ["active", "inactive"], "description": "active: heartbeat under 60 s old"})
    active_instances = fields.Integer()
    last_heartbeat_at = UTCDateTime()
    registered_at = UTCDateTime()


@blp.route("")
class Workers(MethodView):
    @blp.api_key_required
    @blp.response(200, WorkerSchema(many=True))
    def get(self):
        """List workers with liveness and load"""
        return service.describe_workers()

    @blp.api_key_required
    @blp.arguments(WorkerRegisterSchema)
    @blp.response(201, WorkerSchema, description="Registered a new worker.")
    @blp.alt_response(200, schema=WorkerSchema, description="Updated an existing worker (registering is idempotent).")
    def post(self, data):
        """Register a worker, or update it when registered before"""
        existed = service.is_registered(data["id"])
        worker = service.register_worker(
            data["id"], data["address"], data["runtime"], data["agent_port"], data["max_instances"]
        )
        return service.describe(worker), (200 if existed else 201)


@blp.route("/<string:worker_id>/heartbeat", methods=["POST"])
@blp.api_key_required
@blp.response(200, WorkerSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such worker.")
def heartbeat(worker_id):
    """Record that a worker is alive"""
    return service.describe(service.heartbeat(worker_id))
