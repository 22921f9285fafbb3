"""GET /api/v1/traefik/config: the dynamic configuration Traefik's HTTP provider polls."""

from flask import Response

from ctfhost.plugin_api import Blueprint

from ctfhost_plugin_traefik import config_cache
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
    warn_if_open()  # here, not at import: the app server serving Traefik is where it matters
    return Response(config_cache.body(), mimetype="application/json")
