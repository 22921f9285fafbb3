"""Who may call the control plane: the x-api-key check and its OpenAPI security scheme."""

import functools
import hmac

from flask import current_app, request
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest import abort
from flask_smorest.error_handler import ErrorSchema

API_KEY_SCHEME = "ApiKeyAuth"

SECURITY_SCHEMES = {
    API_KEY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The control-plane key, CTFHOST_API_KEY on the server.",
    },
}


def check_api_key():
    expected = current_app.config.get("CTFHOST_API_KEY")
    given = request.headers.get("x-api-key")
    if not expected:
        abort(401, message="the control plane is locked: the server has no CTFHOST_API_KEY set")
    if not given:
        abort(401, message="missing x-api-key header")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        abort(401, message="wrong API key")


class Blueprint(SmorestBlueprint):
    """A flask-smorest blueprint whose views state who may call them."""

    def api_key_required(self, func):
        """Check x-api-key before the view parses anything; document it in the spec."""

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            check_api_key()
            return func(*args, **kwargs)

        wrapper = self.doc(security=[{API_KEY_SCHEME: []}])(wrapper)
        return self.alt_response(401, schema=ErrorSchema, description="Missing or wrong x-api-key.")(wrapper)

    def public(self, func):
        return self.doc(security=[])(func)
