"""/api/v1/submissions and /api/v1/flag-sharing: grading per-instance flags."""

from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields, validate

from ctfhost.api.auth import API_KEY, TEAM, Blueprint, team_of_request
from ctfhost.api.fields import PageArgsSchema, TeamId, UTCDateTime
from ctfhost.api.instances import check_team
from ctfhost.services import submissions as service

blp = Blueprint("submissions", __name__, url_prefix="/api/v1", description="Grading per-instance flags.")


class SubmissionSchema(Schema):
    team_id = TeamId(load_default=None, metadata={"description": "Required, but for a team token (its own team)"})
    challenge_id = fields.String(required=True, validate=validate.Length(min=1, max=63))
    flag = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class VerdictSchema(Schema):
    correct = fields.Boolean()
    message = fields.String()
    instance_id = fields.String(allow_none=True, metadata={"description": "The team's instance the flag belongs to"})
    shared = fields.Boolean(metadata={"description": "The flag belongs to another team's instance"})


class FlagSharingSchema(Schema):
    id = fields.Integer()
    at = UTCDateTime()
    challenge_id = fields.String()
    submitting_team_id = fields.String()
    owning_team_id = fields.String()
    instance_id = fields.String()


class FlagSharingArgsSchema(PageArgsSchema):
    challenge_id = fields.String(validate=validate.Length(min=1, max=63))
    team_id = fields.String(validate=validate.Length(min=1, max=64), metadata={"description": "submitting or owning"})
    since = UTCDateTime()


def _grade(data, record):
    team_id = team_of_request(data["team_id"])
    check_team(team_id)
    return service.grade(team_id, data["challenge_id"], data["flag"], record=record)


@blp.route("/submissions", methods=["POST"])
@blp.allow(API_KEY, TEAM, scope="submissions")
@blp.arguments(SubmissionSchema)
@blp.response(200, VerdictSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
@blp.alt_response(409, schema=ErrorSchema, description="The challenge has no flag_template.")
def submit(data):
    """Grade a flag against the team's instance; another team's flag is recorded as flag sharing"""
    return _grade(data, record=True)


@blp.route("/submissions/verify", methods=["POST"])
@blp.allow(API_KEY, TEAM, scope="submissions")
@blp.arguments(SubmissionSchema)
@blp.response(200, VerdictSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such challenge.")
@blp.alt_response(409, schema=ErrorSchema, description="The challenge has no flag_template.")
def verify(data):
    """Check a flag like /submissions, recording nothing"""
    return _grade(data, record=False)


@blp.route("/flag-sharing", methods=["GET"])
@blp.allow(API_KEY)
@blp.arguments(FlagSharingArgsSchema, location="query")
@blp.response(200, FlagSharingSchema(many=True), headers={"X-Total-Count": {"description": "Rows matching the filters", "schema": {"type": "integer"}}})
def flag_sharing(args):
    """Flags submitted by a team that belong to another team's instance (admin; the scoreboard's key may read)"""
    rows, total = service.list_events(**args)
    return rows, {"X-Total-Count": str(total)}
