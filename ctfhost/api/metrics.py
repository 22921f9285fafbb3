"""GET /metrics for Prometheus (the metrics token or the admin token), and the count of HTTP requests by route."""

import hmac

import flask
from flask_smorest import abort
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ctfhost import metrics
from ctfhost.api.auth import admin_token
from ctfhost.services.fleet_metrics import FleetCollector

bp = flask.Blueprint("metrics", __name__)

EXPOSITION_KEY = "ctfhost.metrics_exposition"


def _matches(given, expected):
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _check_caller():
    """404 while no token is set (metrics are off), 401 without a right one."""
    token, admin = flask.current_app.config.get("CTFHOST_METRICS_TOKEN"), admin_token()
    if not token and not admin:
        abort(404, message="metrics are off: set CTFHOST_METRICS_TOKEN (or CTFHOST_ADMIN_TOKEN)")
    scheme, _, bearer = flask.request.headers.get("Authorization", "").partition(" ")
    bearer = bearer.strip() if scheme.lower() == "bearer" else ""
    if _matches(bearer, token) or _matches(bearer, admin) or _matches(flask.request.headers.get("X-Admin-Token"), admin):
        return
    abort(401, message="send Authorization: Bearer <CTFHOST_METRICS_TOKEN> (or the admin token)")


@bp.get("/metrics")
def prometheus_metrics():
    """The Prometheus text format: what every process of this server recorded, and the fleet's gauges."""
    _check_caller()
    exposition = flask.current_app.extensions[EXPOSITION_KEY]
    return flask.Response(generate_latest(exposition), 200, {"Content-Type": CONTENT_TYPE_LATEST})


def _count_request(response):
    # the URL rule, never the raw path: one series per route, whatever ids players send
    rule = flask.request.url_rule
    metrics.record_http_request(rule.rule if rule is not None else "<unmatched>", flask.request.method, response.status_code)
    return response


def register_metrics(app):
    """Serve /metrics and count every request the app answers."""
    app.extensions[EXPOSITION_KEY] = metrics.Exposition(*metrics.recorded(), FleetCollector())
    app.register_blueprint(bp)
    app.after_request(_count_request)
