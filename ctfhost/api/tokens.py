"""/api/v1/tokens: team tokens, managed by the admin."""

from flask.views import MethodView
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields, validate

from ctfhost.api.auth import Blueprint
from ctfhost.api.fields import TeamId, UTCDateTime
from ctfhost.services import tokens as service

blp = Blueprint("tokens", __name__, url_prefix="/api/v1/tokens", description="Team tokens (admin only).")


class TokenCreateSchema(Schema):
    team_id = TeamId(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    expires_at = UTCDateTime(load_default=None, allow_none=True, metadata={"description": "ISO 8601; null: never"})


class TokenSchema(Schema):
    id = fields.String()
    team_id = TeamId(attribute="team")
    name = fields.String()
    expires_at = UTCDateTime(allow_none=True)
    created_at = UTCDateTime()
    last_used_at = UTCDateTime(allow_none=True)
    revoked_at = UTCDateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "The secret (`cth_...`), shown this once; only a hash is kept"})


class TokenListArgsSchema(Schema):
    team_id = fields.String(validate=validate.Length(min=1, max=64))
    include_revoked = fields.Boolean(load_default=False)


@blp.route("")
class Tokens(MethodView):
    @blp.admin_only
    @blp.arguments(TokenListArgsSchema, location="query")
    @blp.response(200, TokenSchema(many=True))
    def get(self, args):
        """List team tokens (never their secrets)"""
        return service.list_tokens(**args)

    @blp.admin_only
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, NewTokenSchema)
    def post(self, data):
        """Issue a team token; the secret is in this answer only"""
        token, secret = service.create_token(data["team_id"], data["name"], data["expires_at"])
        token.token = secret
        return token


@blp.route("/<string:token_id>", methods=["DELETE"])
@blp.admin_only
@blp.response(204)
@blp.alt_response(404, schema=ErrorSchema, description="No such token.")
def revoke(token_id):
    """Revoke a team token"""
    service.revoke_token(token_id)
