"""/api/v1/tokens: team tokens, minted by the admin, the scoreboard's API key, or a team token for its own team."""

from flask.views import MethodView
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields, validate

from ctfhost.api.auth import API_KEY, TEAM, Blueprint, current_principal, team_of_request
from ctfhost.api.fields import TeamId, UTCDateTime
from ctfhost.services import tokens as service
from ctfhost.services.errors import Forbidden

blp = Blueprint("tokens", __name__, url_prefix="/api/v1/tokens",
                description="Team tokens and their scopes: the admin and the API key manage any team's; "
                            "a team token with the `tokens` scope manages its own team's.")

SCOPE_ITEMS = {"type": "string", "enum": list(service.SCOPES)}


class TokenCreateSchema(Schema):
    team_id = TeamId(load_default=None, metadata={"description": "Required, but for a team token (its own team)"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    expires_at = UTCDateTime(load_default=None, allow_none=True, metadata={
        "description": "ISO 8601; null: never (a team token's mint: its own expiry, and never later)"})
    scopes = fields.List(
        fields.String(validate=validate.OneOf(service.SCOPES)), load_default=None,
        validate=validate.Length(min=1, max=len(service.SCOPES)),
        metadata={"items": SCOPE_ITEMS, "description": "What the token may do; default: all but `tokens` "
                  "(a team token's mint: its own scopes, and never more)"},
    )


class TokenSchema(Schema):
    id = fields.String()
    team_id = TeamId(attribute="team")
    name = fields.String()
    expires_at = UTCDateTime(allow_none=True)
    created_at = UTCDateTime()
    last_used_at = UTCDateTime(allow_none=True)
    revoked_at = UTCDateTime(allow_none=True)
    scopes = fields.Function(lambda token: list(service.scopes_of(token)), metadata={"type": "array", "items": SCOPE_ITEMS})


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "The secret (`cth_...`), shown this once; only a hash is kept"})


class TokenListArgsSchema(Schema):
    team_id = fields.String(validate=validate.Length(min=1, max=64))
    include_revoked = fields.Boolean(load_default=False)


@blp.route("")
class Tokens(MethodView):
    @blp.allow(API_KEY, TEAM, scope="tokens")
    @blp.arguments(TokenListArgsSchema, location="query")
    @blp.response(200, TokenSchema(many=True))
    def get(self, args):
        """List team tokens (never their secrets); a team token sees its own team's"""
        team = current_principal().own_team_id
        if team is not None:
            if args.get("team_id") not in (None, team):
                raise Forbidden(f"a team token lists its own team's tokens only, not team {args['team_id']}'s")
            args["team_id"] = team
        return service.list_tokens(**args)

    @blp.allow(API_KEY, TEAM, scope="tokens")
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, NewTokenSchema)
    @blp.alt_response(422, schema=ErrorSchema, description="Bad field, or an expiry beyond the minting token's.")
    def post(self, data):
        """Issue a team token with scopes; the secret is in this answer only"""
        principal = current_principal()
        minted_by = None
        if principal.is_team:
            minted_by = service.get_token(principal.token_id)
            if minted_by is None:  # never unrestricted: a team token's mint is bounded by its own row
                raise Forbidden("this token is gone; it cannot mint tokens")
        token, secret = service.create_token(team_of_request(data["team_id"]), data["name"], data["expires_at"],
                                             scopes=data["scopes"], minted_by=minted_by)
        token.token = secret
        return token


@blp.route("/<string:token_id>", methods=["DELETE"])
@blp.allow(API_KEY, TEAM, scope="tokens")
@blp.response(204)
@blp.alt_response(404, schema=ErrorSchema, description="No such token (a team token: none of its team's).")
def revoke(token_id):
    """Revoke a team token"""
    service.revoke_token(token_id, team_id=current_principal().own_team_id)
