"""Wait until Traefik has loaded an instance's router, asking Traefik's own API."""

import logging
import threading
import time

import requests

from ctfhost.plugin_api import LaunchError

from ctfhost_plugin_traefik import shards
from ctfhost_plugin_traefik.dynamic import router_name
from ctfhost.plugin_api import plugin_setting

log = logging.getLogger(__name__)

POLL_SECONDS = 0.01

_local = threading.local()
_warned = []


def _session():
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def router_loaded(api_url, instance_id, protocol="http"):
    kind = "tcp" if protocol == "tcp" else "http"
    url = f"{api_url.rstrip('/')}/api/{kind}/routers/{router_name(instance_id)}@http"
    try:
        response = _session().get(url, timeout=2)
    except requests.RequestException:
        return False
    return response.status_code == 200 and response.json().get("status") == "enabled"


def wait_until_loaded(instance, timeout):
    # with several Traefik shards, the API of the one that routes this host
    try:
        api_url = shards.api_url_for(instance.hostname, plugin_setting("TRAEFIK", "API_URL"))
    except ValueError as exc:
        raise LaunchError(f"CTFHOST_TRAEFIK_API_URL lists one Traefik API per shard: {exc}") from None
    if not api_url:
        if not _warned:
            _warned.append(True)
            log.warning(
                "CTFHOST_TRAEFIK_API_URL is not set: instances are marked running without "
                "checking that Traefik has loaded their route"
            )
        return
    deadline = time.monotonic() + timeout
    while not router_loaded(api_url, instance.id, getattr(instance, "protocol", "http")):
        if time.monotonic() >= deadline:
            raise LaunchError(
                f"Traefik at {api_url} did not load the route for {instance.hostname} within {timeout:g} s; "
                "is its HTTP provider polling /api/v1/traefik/config with the API key? (With `traefik run "
                "--shards`, CTFHOST_TRAEFIK_API_URL lists every shard's API, in shard order.)"
            )
        time.sleep(POLL_SECONDS)
