"""The REST API as served: flask-smorest setup, error answers, Swagger UI assets, the resources' blueprints."""

import logging

import flask
import peewee
import redis
import swagger_ui_bundle
from flask_smorest import Api
from werkzeug.http import HTTP_STATUS_CODES

from ctfhost.api import (access, audit, challenges, cluster, events, health, instances, meta, settings, submissions,
                         tokens, workers)
from ctfhost.api.auth import SECURITY_SCHEMES
from ctfhost.api.fields import UTCDateTime
from ctfhost.api.metrics import register_metrics
from ctfhost.api.parsing import JSONProvider
from ctfhost.limits import DEFAULT_MAX_REQUEST_BYTES
from ctfhost.plugins import get_plugins
from ctfhost.services.errors import ServiceError, invalid_fields_message

log = logging.getLogger(__name__)


def _error(status, message, errors=None, headers=None, reason=None):
    payload = {"code": status, "status": HTTP_STATUS_CODES.get(status, "Error"), "message": message}
    if errors is not None:
        payload["errors"] = errors
    if reason is not None:
        payload["reason"] = reason
    response = flask.jsonify(payload)
    response.status_code = status
    response.headers.update(headers or {})
    return response


class CtfhostApi(Api):
    """flask-smorest's Api whose error answers always carry a message."""

    def handle_http_exception(self, error):
        payload, status, headers = super().handle_http_exception(error)
        if status == 405 and hasattr(error, "get_headers"):
            # werkzeug's MethodNotAllowed knows the allowed methods; keep its Allow header
            headers = {**dict(error.get_headers()), **(headers or {})}
            headers.pop("Content-Type", None)
        if "message" not in payload:
            # flask-smorest leaves it out for validation errors and for errors
            # raised outside abort() (unknown route, wrong method, crash)
            if status == 422:
                payload["message"] = invalid_fields_message(payload.get("errors"))
            else:
                payload["message"] = error.description or error.name
        return payload, status, headers


def register_error_handlers(app):
    @app.errorhandler(ServiceError)
    def _service_error(exc):
        return _error(exc.status, exc.message, exc.errors, exc.headers, exc.reason)

    @app.errorhandler(peewee.OperationalError)
    def _database_down(exc):
        log.error("database error: %s", exc)
        return _error(503, "the database is unavailable; try again")

    @app.errorhandler(redis.exceptions.ConnectionError)
    def _redis_down(exc):
        log.error("redis error: %s", exc)
        return _error(503, "the job queue (Redis) is unavailable; try again")


def limit_request_size(app):
    """413 for a body larger than CTFHOST_MAX_REQUEST_BYTES, before anything reads or authenticates it."""
    app.config["MAX_CONTENT_LENGTH"] = app.config.setdefault("CTFHOST_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES)

    @app.before_request
    def _too_large():
        # werkzeug also stops a chunked body at MAX_CONTENT_LENGTH while reading it
        length = flask.request.content_length
        if length is not None and length > app.config["MAX_CONTENT_LENGTH"]:
            return _error(413, f"the request body is {length} bytes; at most {app.config['MAX_CONTENT_LENGTH']} are accepted")
        return None


def register_api(app):
    app.json = JSONProvider(app)
    limit_request_size(app)
    api = CtfhostApi(app)
    api.register_field(UTCDateTime, "string", "date-time")
    for name, scheme in SECURITY_SCHEMES.items():
        api.spec.components.security_scheme(name, scheme)
    app.extensions["ctfhost.api"] = api

    assets = flask.Blueprint(
        "swagger_ui_assets", __name__, static_folder=swagger_ui_bundle.swagger_ui_path, static_url_path="/docs/assets"
    )
    app.register_blueprint(assets)

    for module in (health, meta, challenges, instances, access, submissions, events, workers, cluster, settings, tokens,
                   audit):
        api.register_blueprint(module.blp)
    app.after_request(audit.record_request)
    register_metrics(app)
    get_plugins(app).register_blueprints(app, api)
    register_error_handlers(app)
    return api
