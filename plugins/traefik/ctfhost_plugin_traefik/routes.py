"""GET /api/v1/traefik/config: the dynamic configuration Traefik's HTTP provider polls."""

from flask import Response, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ctfhost.plugin_api import Blueprint

from ctfhost_plugin_traefik import config_cache, shards
from ctfhost_plugin_traefik.settings import warn_if_open

blp = Blueprint(
    "traefik", __name__, url_prefix="/api/v1/traefik", description="Configuration for Traefik's HTTP provider."
)

EXAMPLE = {
    "http": {
        "routers": {
            "ctfhost-3f1c...": {
                "entryPoints": ["web"],
                "middlewares": ["ctfhost-forward-auth"],
                "priority": 10000,
                "rule": "Host(`9c2e41d0a7b3.web-babysql.localhost`)",
                "service": "ctfhost-3f1c...",
            }
        },
        "middlewares": {
            "ctfhost-forward-auth": {
                "forwardAuth": {
                    "address": "http://127.0.0.1:5000/api/v1/auth/forward",
                    "authResponseHeaders": ["X-Ctfhost-Team", "X-Ctfhost-Instance"],
                    "maxResponseBodySize": 262144,
                    "trustForwardHeader": False,
                }
            }
        },
        "services": {
            "ctfhost-3f1c...": {
                "loadBalancer": {"passHostHeader": True, "servers": [{"url": "http://127.0.0.1:32768"}]}
            }
        },
    }
}


class ConfigQuery(Schema):
    shard = fields.Integer(
        validate=validate.Range(min=0),
        metadata={"description": "Only the instances of this shard (0 .. shards-1), for one of several Traefiks"},
    )
    shards = fields.Integer(
        validate=validate.OneOf(shards.COUNTS), metadata={"description": "How many shards the fleet is split into"}
    )

    @validates_schema
    def shard_of_shards(self, data, **kwargs):
        if ("shard" in data) != ("shards" in data):
            raise ValidationError("shard and shards go together", "shard" if "shards" in data else "shards")
        if "shard" in data and data["shard"] >= data["shards"]:
            raise ValidationError(f"must be less than shards ({data['shards']})", "shard")


@blp.route("/config")
@blp.api_key_required
@blp.arguments(ConfigQuery, location="query")
@blp.response(
    200,
    description=(
        "Traefik v3 dynamic configuration (JSON, sorted keys: unchanged fleet, unchanged bytes). With "
        "`Accept: application/yaml` (what `flask ctfhost traefik static-config` sets for Traefik), the same "
        "configuration as YAML whose large maps are merged (`<<`) from maps of 100 entries: Traefik's YAML "
        "decoder compares every key of a map with every other, which costs seconds per reload at 10,000 instances."
    ),
    example=EXAMPLE,
    content_type="application/json",
)
def traefik_config(query):
    """Dynamic configuration: one router and service per routed instance (of one shard, with `shard`)"""
    warn_if_open()  # here, not at import: the app server serving Traefik is where it matters
    shard = (query["shard"], query["shards"]) if "shard" in query else None
    if request.accept_mimetypes.best_match(FORMS) == "application/yaml":
        response = Response(config_cache.body(config_cache.YAML, shard), mimetype="application/yaml")
    else:
        response = Response(config_cache.body(config_cache.JSON, shard), mimetype="application/json")
    response.vary.add("Accept")
    return response


FORMS = ["application/json", "application/yaml"]  # the first wins when the client accepts both alike
