"""Settings read from CTFHOST_* environment variables."""

import os

from ctfhost.limits import DEFAULT_MAX_REQUEST_BYTES

# name -> (type, default); every CTFHOST_<NAME> becomes app.config["CTFHOST_<NAME>"]
SETTINGS = {
    "DATABASE_URL": (str, None),
    "REDIS_URL": (str, "redis://127.0.0.1:6379/0"),
    "API_KEY": (str, None),
    "BASE_DOMAIN": (str, "localhost"),
    "PUBLIC_PORT": (int, None),
    # the TLS port all TCP instances share (SNI routing), shown in their endpoints
    "TCP_PUBLIC_PORT": (int, 443),
    "DEFAULT_TTL_SECONDS": (int, 1800),
    "MAX_INSTANCES_PER_TEAM": (int, 3),
    "LAUNCH_COOLDOWN_SECONDS": (int, 10),
    # services beside the main one, and exposed endpoints besides `main`, a challenge may declare
    "MAX_SERVICES_PER_CHALLENGE": (int, 8),
    "MAX_ENDPOINTS_PER_CHALLENGE": (int, 8),
    # how long after an instance ends its flag still counts for its team
    "FLAG_GRACE_SECONDS": (int, 600),
    "DISABLED_PLUGINS": (str, ""),
    "READINESS_TIMEOUT_SECONDS": (float, 60.0),
    "WORKER_ID": (str, None),
    "WORKER_ADDRESS": (str, "127.0.0.1"),
    "WORKER_AGENT_PORT": (int, 0),
    "WORKER_RUNTIMES": (str, ""),
    "WORKER_MAX_INSTANCES": (int, 50),
    "WORKER_CONCURRENCY": (int, 4),
    "WORKER_HEARTBEAT_SECONDS": (float, 30.0),
    "WORKER_STALE_SECONDS": (float, 60.0),
    # after this long without a heartbeat a worker's active instances are failed
    "WORKER_LOST_SECONDS": (float, 180.0),
    # the credential workers register and heartbeat with (X-Worker-Token); unset: the API key may
    "WORKER_TOKEN": (str, None),
    "EXPIRY_INTERVAL_SECONDS": (float, 2.0),
    "RECONCILE_INTERVAL_SECONDS": (float, 60.0),
    "JOB_TIMEOUT_SECONDS": (int, 300),
    # the link back on forward-auth's pages (else the site of CTFHOST_AUTH_SIGNIN_URL)
    "PUBLIC_SCOREBOARD_URL": (str, None),
    # how many reverse proxies in front of the API set X-Forwarded-For (audit client IPs)
    "PROXY_COUNT": (int, 0),
    # largest request body the API reads (413 beyond)
    "MAX_REQUEST_BYTES": (int, DEFAULT_MAX_REQUEST_BYTES),
    # registries challenge images may come from (comma-separated, e.g. "registry.example.com,docker.io"); empty: any
    "ALLOWED_REGISTRIES": (str, ""),
    # threads per gunicorn process for requests that change instances (ctfhost.serving.LaneWorker); 0: no lane
    "LAUNCH_LANE_THREADS": (int, 2),
    # Bearer token Prometheus sends to GET /metrics (the admin token works too); /metrics is 404 while neither is set
    "METRICS_TOKEN": (str, None),
    # a worker agent serves its own /metrics on this port (its RQ processes' launches, destroys, expiries); 0: off
    "WORKER_METRICS_PORT": (int, 0),
    "WORKER_METRICS_ADDRESS": (str, "127.0.0.1"),
    # live events (GET /api/v1/events): how many and how long the Redis Stream keeps them for reconnecting clients
    "EVENTS_MAX_LENGTH": (int, 100000),
    "EVENTS_RETENTION_SECONDS": (int, 3600),
    # event streams and ?wait= requests one serving process holds at once (503 beyond; the LaneWorker's stream lane)
    "EVENTS_MAX_STREAMS": (int, 1000),
    # of which one team's tokens may hold at most (429 beyond)
    "EVENTS_MAX_STREAMS_PER_TEAM": (int, 20),
    # a comment line on an idle stream this often, so proxies keep it open
    "EVENTS_HEARTBEAT_SECONDS": (float, 15.0),
    # instance.expiring is sent this long before an instance expires
    "EVENTS_EXPIRING_SECONDS": (int, 300),
}


class ConfigError(ValueError):
    """A CTFHOST_* variable holds a value of the wrong type."""


def _convert(name, kind, raw):
    if kind is str:
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"CTFHOST_{name}={raw!r} is not a valid {kind.__name__}") from None


def from_environment(environ=None):
    """Return a dict of CTFHOST_* settings from the environment, typed, with defaults."""
    environ = os.environ if environ is None else environ
    config = {}
    for name, (kind, default) in SETTINGS.items():
        raw = environ.get(f"CTFHOST_{name}")
        if raw is None or raw == "":
            config[f"CTFHOST_{name}"] = default
        else:
            config[f"CTFHOST_{name}"] = _convert(name, kind, raw)
    # plugins read their own CTFHOST_<PLUGIN>_* variables from app.config as strings
    for key, value in environ.items():
        if key.startswith("CTFHOST_") and key not in config:
            config[key] = value
    return config
