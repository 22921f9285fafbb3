"""The plugin's CTFHOST_TRAEFIK_* settings, read from the app config."""

import logging
from typing import NamedTuple

from flask import has_request_context, request

from ctfhost.plugin_api import core_setting, plugin_setting

log = logging.getLogger(__name__)

FORWARD_AUTH_PATH = "api/v1/auth/forward"
# who checks a player's instance cookie: Traefik itself (the plugin's middleware, see middleware/access.go),
# falling back to ctfhost's forward-auth without a valid one; or forward-auth on every request
ACCESS_CHECKS = ("traefik", "forward-auth")
# where the middleware reads the cookie keys; relative: Traefik's working directory
DEFAULT_KEYS_FILE = "ctfhost-access.keys"
# requests per host handed to forward-auth per second on average, and the burst (0: no limit)
DEFAULT_AUTH_RATE = 10
DEFAULT_AUTH_BURST = 50
# forwardAuth answers are ctfhost's own short pages; bounded so Traefik does
# not buffer whatever comes back (and does not warn once per router per reload)
DEFAULT_AUTH_MAX_BODY = 262144
OFF = ("0", "false", "no", "off")
OPEN_WARNING = (
    "forward-auth is off (CTFHOST_TRAEFIK_FORWARD_AUTH=off): Traefik lets anyone who knows an instance's "
    "hostname in; unset it to let only the owning team through"
)

_warned = []


def _flag(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def forward_auth_enabled():
    """Forward-auth is on unless CTFHOST_TRAEFIK_FORWARD_AUTH says off (any other value keeps it on)."""
    return str(plugin_setting("TRAEFIK", "FORWARD_AUTH", "on")).strip().lower() not in OFF


def forward_auth_url():
    """Where Traefik's forwardAuth asks: the configured address, else the API Traefik fetched its config from.

    Traefik reached /api/v1/traefik/config at the request's URL, so it reaches
    /api/v1/auth/forward beside it; behind a proxy, CTFHOST_PROXY_COUNT makes
    that URL the one the proxy was given. None when forward-auth is off.
    """
    if not forward_auth_enabled():
        return None
    configured = plugin_setting("TRAEFIK", "FORWARD_AUTH_URL")
    if configured:
        return configured
    return request.url_root + FORWARD_AUTH_PATH if has_request_context() else None


def access_check():
    """CTFHOST_TRAEFIK_ACCESS_CHECK: "traefik" (the default) or "forward-auth"; anything else is refused."""
    value = str(plugin_setting("TRAEFIK", "ACCESS_CHECK", "traefik")).strip().lower()
    if value not in ACCESS_CHECKS:
        raise ValueError(f"CTFHOST_TRAEFIK_ACCESS_CHECK={value!r} is not one of: {', '.join(ACCESS_CHECKS)}")
    return value


def _count(name, default):
    """A whole number >= 0 from CTFHOST_TRAEFIK_<name>; anything else is refused, naming the setting."""
    raw = plugin_setting("TRAEFIK", name, default)
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"CTFHOST_TRAEFIK_{name}={raw!r} is not a whole number of 0 or more")
    return value


def keys_file():
    return str(plugin_setting("TRAEFIK", "KEYS_FILE", DEFAULT_KEYS_FILE))


def warn_if_open():
    """Log, once per process, that forward-auth was turned off; called where Traefik starts or first polls."""
    if not forward_auth_enabled() and not _warned:
        _warned.append(True)
        log.warning(OPEN_WARNING)


def tls_enabled():
    """TLS on routers: explicit CTFHOST_TRAEFIK_TLS, else whenever endpoints are https."""
    explicit = plugin_setting("TRAEFIK", "TLS")
    if explicit is not None:
        return _flag(explicit)
    return core_setting("BASE_DOMAIN") != "localhost"


def entrypoints():
    default = "websecure" if tls_enabled() else "web"
    return [name.strip() for name in str(plugin_setting("TRAEFIK", "ENTRYPOINTS", default)).split(",") if name.strip()]


def _names(value):
    return tuple(name.strip() for name in str(value).split(",") if name.strip())


class RenderOptions(NamedTuple):
    """Everything besides the instances that shapes the rendered config (hashable: a cache key)."""

    entrypoints: tuple = ("web",)
    tls: bool = False
    cert_resolver: str | None = None
    tls_options: str | None = None
    auth_url: str | None = None
    auth_max_body: int = DEFAULT_AUTH_MAX_BODY
    auth_headers: tuple = ("X-Ctfhost-Team", "X-Ctfhost-Instance")
    trust_forward: bool = False
    # the access middleware looks for X_Ctfhost_Team-like aliases itself (entry points that keep them)
    strip_aliases: bool = False
    tcp_entrypoints: tuple = ("websecure",)
    # with forward-auth: hosts under <challenge>.<base_domain> no router claims get ctfhost's page
    base_domain: str | None = None
    # with forward-auth: Traefik checks cookies itself (a middleware per instance router), forward-auth the rest
    access_in_traefik: bool = False
    keys_file: str = DEFAULT_KEYS_FILE
    # forward-auth calls per host and second (average, burst); 0: no limit
    auth_rate: int = 0
    auth_burst: int = 0


def options():
    return RenderOptions(
        entrypoints=tuple(entrypoints()),
        tls=tls_enabled(),
        cert_resolver=plugin_setting("TRAEFIK", "CERT_RESOLVER"),
        tls_options=plugin_setting("TRAEFIK", "TLS_OPTIONS"),
        auth_url=forward_auth_url(),
        auth_max_body=int(plugin_setting("TRAEFIK", "FORWARD_AUTH_MAX_BODY", DEFAULT_AUTH_MAX_BODY)),
        auth_headers=_names(plugin_setting("TRAEFIK", "AUTH_RESPONSE_HEADERS", "X-Ctfhost-Team,X-Ctfhost-Instance")),
        trust_forward=_flag(plugin_setting("TRAEFIK", "TRUST_FORWARD_HEADER", "false")),
        strip_aliases=_flag(plugin_setting("TRAEFIK", "STRIP_ALIASES", "false")),
        tcp_entrypoints=_names(plugin_setting("TRAEFIK", "TCP_ENTRYPOINTS", "websecure")),
        base_domain=core_setting("BASE_DOMAIN"),
        access_in_traefik=access_check() == "traefik",
        keys_file=keys_file(),
        auth_rate=_count("AUTH_RATE", DEFAULT_AUTH_RATE),
        auth_burst=_count("AUTH_BURST", DEFAULT_AUTH_BURST),
    )
