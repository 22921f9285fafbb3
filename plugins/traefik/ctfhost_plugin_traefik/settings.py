"""The plugin's CTFHOST_TRAEFIK_* settings, read from the app config."""

from typing import NamedTuple

from flask import current_app


def setting(name, default=None):
    value = current_app.config.get(f"CTFHOST_TRAEFIK_{name}")
    return default if value in (None, "") else value


def _flag(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def tls_enabled():
    """TLS on routers: explicit CTFHOST_TRAEFIK_TLS, else whenever endpoints are https."""
    explicit = setting("TLS")
    if explicit is not None:
        return _flag(explicit)
    return current_app.config["CTFHOST_BASE_DOMAIN"] != "localhost"


def entrypoints():
    default = "websecure" if tls_enabled() else "web"
    return [name.strip() for name in str(setting("ENTRYPOINTS", default)).split(",") if name.strip()]


def _names(value):
    return tuple(name.strip() for name in str(value).split(",") if name.strip())


class RenderOptions(NamedTuple):
    """Everything besides the instances that shapes the rendered config (hashable: a cache key)."""

    entrypoints: tuple = ("web",)
    tls: bool = False
    cert_resolver: str | None = None
    tls_options: str | None = None
    auth_url: str | None = None
    auth_headers: tuple = ("X-Ctfhost-Team", "X-Ctfhost-Instance")
    trust_forward: bool = False
    tcp_entrypoints: tuple = ("websecure",)


def options():
    return RenderOptions(
        entrypoints=tuple(entrypoints()),
        tls=tls_enabled(),
        cert_resolver=setting("CERT_RESOLVER"),
        tls_options=setting("TLS_OPTIONS"),
        auth_url=setting("FORWARD_AUTH_URL"),
        auth_headers=_names(setting("AUTH_RESPONSE_HEADERS", "X-Ctfhost-Team,X-Ctfhost-Instance")),
        trust_forward=_flag(setting("TRUST_FORWARD_HEADER", "false")),
        tcp_entrypoints=_names(setting("TCP_ENTRYPOINTS", "websecure")),
    )
