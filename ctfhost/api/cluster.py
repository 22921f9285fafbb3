"""/api/v1/cluster: how much room the fleet has, per runtime and in total."""

from marshmallow import Schema, fields

from ctfhost.api.auth import Blueprint
from ctfhost.services import workers as service

blp = Blueprint("cluster", __name__, url_prefix="/api/v1/cluster", description="The fleet's capacity.")


class CapacitySchema(Schema):
    active_workers = fields.Integer(metadata={"description": "Workers whose heartbeat is fresh"})
    schedulable_workers = fields.Integer(metadata={"description": "Active workers that take new instances (ready)"})
    capacity = fields.Integer(metadata={"description": "Sum of max_instances of the schedulable workers"})
    active_instances = fields.Integer(metadata={"description": "Pending and running instances"})
    free_slots = fields.Integer(metadata={"description": "Instances the schedulable workers can still take"})
    pending_launches = fields.Integer(metadata={"description": "Instances still starting"})


class ClusterSchema(Schema):
    runtimes = fields.Dict(
        keys=fields.String(), values=fields.Nested(CapacitySchema),
        metadata={"description": "Per runtime (a worker serving several runtimes counts under each)"},
    )
    total = fields.Nested(CapacitySchema, metadata={"description": "The whole fleet, each worker once"})


@blp.route("")
@blp.api_key_required
@blp.response(200, ClusterSchema)
def cluster():
    """Workers, capacity, active instances, free slots and pending launches, per runtime and in total"""
    return service.cluster()
