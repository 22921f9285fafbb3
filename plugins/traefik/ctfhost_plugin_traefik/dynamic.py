"""Render Traefik v3 dynamic configuration for the routed instances, byte-stable."""

import json

from ctfhost.models import ACTIVE, Instance

AUTH_MIDDLEWARE = "ctfhost-forward-auth"


def router_name(instance_id):
    return f"ctfhost-{instance_id}"


def routed_instances():
    """Active instances that have a backend, in a stable order."""
    return list(
        Instance.select(Instance.id, Instance.hostname, Instance.backend)
        .where(Instance.status.in_(list(ACTIVE)), Instance.backend.is_null(False))
        .order_by(Instance.id)
        .tuples()
    )


def render(instances, options, default_certificate=None):
    """The dynamic configuration dict for (id, hostname, backend) rows.

    `default_certificate` ({"certFile", "keyFile"}: paths or PEM) goes into
    Traefik's default TLS store; see default_certificate.py for why.
    """
    entrypoints, tls, cert_resolver, tls_options, auth_url, auth_headers, trust_forward = options
    routers, services, middlewares = {}, {}, {}
    if auth_url:
        middlewares[AUTH_MIDDLEWARE] = {
            "forwardAuth": {
                "address": auth_url,
                # Traefik would otherwise pass on X-Forwarded-* from the client
                "trustForwardHeader": trust_forward,
                "authResponseHeaders": list(auth_headers),
            }
        }
    for instance_id, hostname, backend in instances:
        name = router_name(instance_id)
        router = {
            "rule": f"Host(`{hostname}`)",
            "service": name,
            "entryPoints": list(entrypoints),
        }
        if auth_url:
            router["middlewares"] = [AUTH_MIDDLEWARE]
        if tls:
            router["tls"] = {}
            if cert_resolver:
                router["tls"]["certResolver"] = cert_resolver
            if tls_options:
                router["tls"]["options"] = tls_options
        routers[name] = router
        services[name] = {"loadBalancer": {"servers": [{"url": backend}], "passHostHeader": True}}
    # Traefik refuses empty maps ("routers cannot be a standalone element"),
    # so sections without entries are left out
    http = {key: value for key, value in (("routers", routers), ("services", services), ("middlewares", middlewares)) if value}
    config = {"http": http} if http else {}
    if default_certificate:
        config["tls"] = {"stores": {"default": {"defaultCertificate": dict(default_certificate)}}}
    return config


def dumps(config):
    """Serialize with sorted keys and fixed separators: same fleet, same bytes."""
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
