"""GET /api/v1/traefik/config: the dynamic configuration Traefik's HTTP provider polls."""

from flask import Response, request

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


@blp.route("/config")
@blp.api_key_required
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
def traefik_config():
    """Dynamic configuration: one router and service per routed instance"""
    warn_if_open()  # here, not at import: the app server serving Traefik is where it matters
    if request.accept_mimetypes.best_match(FORMS) == "application/yaml":
        response = Response(config_cache.body(config_cache.YAML), mimetype="application/yaml")
    else:
        response = Response(config_cache.body(config_cache.JSON), mimetype="application/json")
    response.vary.add("Accept")
    return response


FORMS = ["application/json", "application/yaml"]  # the first wins when the client accepts both alike
