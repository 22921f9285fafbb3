"""GET /health and /api/v1/health: is ctfhost able to serve (database and Redis)."""

from flask import current_app
from marshmallow import Schema, fields

from ctfhost import __version__
from ctfhost.api.auth import Blueprint
from ctfhost.db import database
from ctfhost.redis_client import redis_connection

# no url_prefix: the same public check answers at /health and /api/v1/health
blp = Blueprint("health", __name__, description="Liveness of the API, database and Redis.")


class HealthSchema(Schema):
    status = fields.String(metadata={"description": "`ok`, or `error` when a dependency is down"})
    version = fields.String()
    database = fields.String(metadata={"description": "`ok` or what went wrong"})
    redis = fields.String(metadata={"description": "`ok` or what went wrong"})


def check():
    result = {"status": "ok", "version": __version__}
    try:
        database.execute_sql("SELECT 1")
        result["database"] = "ok"
    except Exception as exc:
        result["database"] = f"unreachable: {exc}".strip()
    try:
        redis_connection(current_app).ping()
        result["redis"] = "ok"
    except Exception as exc:
        result["redis"] = f"unreachable: {exc}".strip()
    if result["database"] != "ok" or result["redis"] != "ok":
        result["status"] = "error"
        return result, 503
    return result, 200


@blp.route("/health", endpoint="health_root")
@blp.route("/api/v1/health")
@blp.public
@blp.response(200, HealthSchema, description="Everything is reachable.")
@blp.alt_response(503, schema=HealthSchema, description="The database or Redis is unreachable.")
def health():
    """Health of the API, its database and Redis (public)"""
    return check()
