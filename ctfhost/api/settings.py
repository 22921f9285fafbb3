"""/api/v1/settings: operator settings stored in the database."""

from flask.views import MethodView
from marshmallow import Schema, validate

from ctfhost import limits
from ctfhost.api.auth import Blueprint
from ctfhost.api.fields import StrictInteger
from ctfhost.services import settings as service

blp = Blueprint("settings", __name__, url_prefix="/api/v1/settings", description="Global settings.")


class SettingsSchema(Schema):
    default_ttl_seconds = StrictInteger(
        required=True,
        validate=validate.Range(min=1, max=limits.MAX_TTL_SECONDS),
        metadata={"description": "Instance lifetime for challenges without ttl_seconds (at most 30 days)"},
    )
    max_instances_per_team = StrictInteger(
        required=True,
        validate=validate.Range(min=0, max=limits.MAX_INSTANCES_PER_TEAM),
        metadata={"description": "Active instances a team may hold at once (429 beyond)"},
    )
    tcp_port = StrictInteger(
        required=True,
        validate=validate.Range(min=1, max=65535),
        metadata={"description": "Public TLS port of TCP instances (tls://<host>:<tcp_port>)"},
    )
    launch_cooldown_seconds = StrictInteger(
        required=True,
        validate=validate.Range(min=0, max=limits.MAX_COOLDOWN_SECONDS),
        metadata={"description": "Wait between launches or restarts of one challenge by one team (429 with Retry-After)"},
    )

    max_services_per_challenge = StrictInteger(
        required=True,
        validate=validate.Range(min=0, max=limits.MAX_SERVICES),
        metadata={"description": "Services a challenge may declare beside its main one (422 beyond)"},
    )
    max_endpoints_per_challenge = StrictInteger(
        required=True,
        validate=validate.Range(min=0, max=limits.MAX_ENDPOINTS),
        metadata={"description": "Exposed endpoints a challenge may declare besides its main port (422 beyond)"},
    )


class SettingsPatchSchema(SettingsSchema):
    """Only the settings given change."""


@blp.route("")
class Settings(MethodView):
    @blp.api_key_required
    @blp.response(200, SettingsSchema)
    def get(self):
        """Current settings"""
        return service.get_settings()

    @blp.api_key_required
    @blp.arguments(SettingsPatchSchema(partial=True))
    @blp.response(200, SettingsSchema)
    def patch(self, changes):
        """Change settings (persisted)"""
        return service.update_settings(changes)
