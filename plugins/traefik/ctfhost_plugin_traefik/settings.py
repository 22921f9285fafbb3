"""The plugin's CTFHOST_TRAEFIK_* settings, read from the app config."""

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


def options():
    """Everything that shapes the rendered config, as one hashable value."""
    return (
        tuple(entrypoints()),
        tls_enabled(),
        setting("CERT_RESOLVER"),
        setting("TLS_OPTIONS"),
        setting("FORWARD_AUTH_URL"),
        tuple(h.strip() for h in str(setting("AUTH_RESPONSE_HEADERS", "X-Ctfhost-Team,X-Ctfhost-Instance")).split(",") if h.strip()),
        _flag(setting("TRUST_FORWARD_HEADER", "false")),
    )
