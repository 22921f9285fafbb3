"""The shared Redis connection: RQ jobs, access tickets, the proxy's config generation."""

import redis
from flask import current_app
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry


def connect(url):
    """A Redis client that fails fast when Redis is down.

    An API call answers 503 at once instead of after the client's default
    retries with backoff.
    """
    return redis.Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=10, health_check_interval=30, retry=RedisRetry(NoBackoff(), 1)
    )


def redis_connection(app=None):
    app = app or current_app
    conn = app.extensions.get("ctfhost.redis")
    if conn is None:
        conn = connect(app.config["CTFHOST_REDIS_URL"])
        app.extensions["ctfhost.redis"] = conn
    return conn
