"""The rendered config, cached per process and invalidated through a Redis counter.

Traefik polls often (a short poll interval is what makes new routes go live
fast), so a poll must be cheap: one Redis GET, and a database query only
after a route changed somewhere.
"""

import logging
import threading
import time

from ctfhost.plugin_api import plugin_setting, redis_connection, routed_instances

from ctfhost_plugin_traefik import dynamic
from ctfhost_plugin_traefik.default_certificate import default_certificate
from ctfhost_plugin_traefik.settings import options

log = logging.getLogger(__name__)

GENERATION_KEY = "ctfhost:traefik:generation"

_lock = threading.Lock()
_cached = {"key": None, "body": None, "at": 0.0}


def invalidate():
    """Tell every process that the routed set changed."""
    _cached["key"] = None
    try:
        redis_connection().incr(GENERATION_KEY)
    except Exception as exc:  # the cache then expires by age instead
        log.warning("could not bump %s: %s", GENERATION_KEY, exc)


def _generation():
    try:
        return redis_connection().get(GENERATION_KEY)
    except Exception:
        return None


def body():
    """The current config as bytes."""
    max_age = float(plugin_setting("TRAEFIK", "CACHE_SECONDS", 5))
    # read the generation before the rows: a change committed after this read
    # bumps the counter again, so the next poll renders afresh
    generation = _generation()
    key = (generation, options())
    now = time.monotonic()
    with _lock:
        if generation is not None and _cached["key"] == key and now - _cached["at"] < max_age:
            return _cached["body"]
    rendered = dynamic.dumps(dynamic.render(routed_instances(), key[1], default_certificate()))
    with _lock:
        _cached.update(key=key, body=rendered, at=now)
    return rendered
