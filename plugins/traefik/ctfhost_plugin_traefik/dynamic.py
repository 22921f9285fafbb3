"""Render Traefik v3 dynamic configuration for the routed instances, byte-stable."""

import json
import re

AUTH_MIDDLEWARE = "ctfhost-forward-auth"
# the lowest-priority router for instance hostnames no instance router claims
# (ended, never existed): forward-auth answers them with ctfhost's page
ENDED_ROUTER = "ctfhost-ended-instances"
# never reached: forward-auth refuses every host without an active instance,
# and an active one's own router (longer rule, higher priority) wins
UNREACHABLE_BACKEND = "http://127.0.0.1:1"


def router_name(instance_id):
    return f"ctfhost-{instance_id}"


def certificate_domain(hostname):
    """The wildcard a resolver is asked for: `*.<challenge>.<base>` for `<prefix>.<challenge>.<base>`."""
    return "*." + hostname.split(".", 1)[1]


def _tls(options, hostname):
    tls = {}
    if options.cert_resolver:
        tls["certResolver"] = options.cert_resolver
        # Without domains Traefik asks the resolver for the router's own host
        # name, and every certificate lands in the public Certificate
        # Transparency logs: a list of live instance hostnames, the only gate
        # of TCP instances. One wildcard per challenge names no instance (and
        # is issued once per challenge, not per launch); it needs a DNS-01 resolver.
        tls["domains"] = [{"main": certificate_domain(hostname)}]
    if options.tls_options:
        tls["options"] = options.tls_options
    return tls


def _http_route(hostname, backend, options):
    router = {"rule": f"Host(`{hostname}`)", "entryPoints": list(options.entrypoints)}
    if options.auth_url:
        router["middlewares"] = [AUTH_MIDDLEWARE]
    if options.tls:
        router["tls"] = _tls(options, hostname)
    return router, {"loadBalancer": {"servers": [{"url": backend}], "passHostHeader": True}}


def _tcp_route(hostname, backend, options):
    # TLS ends at Traefik (the certificate of the instance domain); the
    # challenge speaks plain TCP. forwardAuth does not exist for TCP.
    router = {
        "rule": f"HostSNI(`{hostname}`)", "entryPoints": list(options.tcp_entrypoints), "tls": _tls(options, hostname),
    }
    address = backend.split("://", 1)[-1]
    return router, {"loadBalancer": {"servers": [{"address": address}]}}


def _ended_route(options):
    """A catch-all under the instance domain, so a gone instance's host gets ctfhost's page, not Traefik's bare 404."""
    pattern = r"^[a-z0-9]+\.[a-z0-9-]+\." + re.escape(options.base_domain) + "$"
    router = {
        "rule": f"HostRegexp(`{pattern}`)", "entryPoints": list(options.entrypoints), "priority": 1,
        "middlewares": [AUTH_MIDDLEWARE], "service": ENDED_ROUTER,
    }
    if options.tls:
        # no certResolver: nothing is requested for names no instance holds
        router["tls"] = {"options": options.tls_options} if options.tls_options else {}
    return router, {"loadBalancer": {"servers": [{"url": UNREACHABLE_BACKEND}]}}


def render(instances, options, default_certificate=None):
    """The dynamic configuration dict for (id, hostname, backend, protocol) rows.

    `default_certificate` ({"certFile", "keyFile"}: paths or PEM) goes into
    Traefik's default TLS store; see default_certificate.py for why.
    """
    sections = {"http": ({}, {}), "tcp": ({}, {})}
    middlewares = {}
    if options.auth_url:
        middlewares[AUTH_MIDDLEWARE] = {
            "forwardAuth": {
                "address": options.auth_url,
                # Traefik would otherwise pass on X-Forwarded-* from the client
                "trustForwardHeader": options.trust_forward,
                "authResponseHeaders": list(options.auth_headers),
                "maxResponseBodySize": options.auth_max_body,
            }
        }
        if options.base_domain:
            router, service = _ended_route(options)
            sections["http"][0][ENDED_ROUTER] = router
            sections["http"][1][ENDED_ROUTER] = service
    for instance_id, hostname, backend, protocol in instances:
        name = router_name(instance_id)
        kind = "tcp" if protocol == "tcp" else "http"
        router, service = (_tcp_route if kind == "tcp" else _http_route)(hostname, backend, options)
        router["service"] = name
        sections[kind][0][name] = router
        sections[kind][1][name] = service
    config = {}
    for kind, (routers, services) in sections.items():
        # Traefik refuses empty maps ("routers cannot be a standalone element")
        part = {key: value for key, value in (("routers", routers), ("services", services)) if value}
        if kind == "http" and middlewares and routers:
            part["middlewares"] = middlewares
        if part:
            config[kind] = part
    if default_certificate:
        config["tls"] = {"stores": {"default": {"defaultCertificate": dict(default_certificate)}}}
    return config


def dumps(config):
    """Serialize with sorted keys and fixed separators: same fleet, same bytes."""
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
