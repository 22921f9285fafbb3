"""GET /api/v1/traefik/config: the dynamic configuration Traefik's HTTP provider polls."""

from flask import Response

from ctfhost.api.auth import Blueprint

from ctfhost_plugin_traefik import config_cache

blp = Blueprint(
    "traefik", __name__, url_prefix="/api/v1/traefik", description="Configuration for Traefik's HTTP provider."
)

EXAMPLE = {
    "http": {
        "routers": {
            "ctfhost-3f1c...": {
                "entryPoints": ["web"],
                "rule": "Host(`9c2e41d0a7b3.web-babysql.localhost`)",
                "service": "ctfhost-3f1c...",
            }
        },
        "services": {
            "ctfhost-3f1c...": {
                "loadBalancer": {"passHostHeader": True, "servers": [{"url": "http://127.0.0.1:32768"}]}
            }
        },
    }
}


@blp.route("/config")
@blp.api_key_required
@blp.response(
    200,
    description="Traefik v3 dynamic configuration (JSON, sorted keys: unchanged fleet, unchanged bytes).",
    example=EXAMPLE,
    content_type="application/json",
)
def traefik_config():
    """Dynamic configuration: one router and service per routed instance"""
    return Response(config_cache.body(), mimetype="application/json")
