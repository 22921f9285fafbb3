"""Render Traefik v3 dynamic configuration for the routed instances, byte-stable."""

import bisect
import datetime
import json
import re

from ctfhost.plugin_api import encoded_team

AUTH_MIDDLEWARE = "ctfhost-forward-auth"
# Traefik's rateLimit in front of forward-auth for hosts no instance router claims: per host name, and per
# client address (random names under the wildcard each have a host count of their own)
AUTH_LIMIT_MIDDLEWARE = "ctfhost-forward-auth-limit"
AUTH_CLIENT_LIMIT_MIDDLEWARE = "ctfhost-forward-auth-client-limit"
# the access middleware's name in Traefik's static config (experimental.localPlugins) and its Go module
ACCESS_PLUGIN = "ctfhost-access"
ACCESS_MODULE = "github.com/ctfhost/access"  # Traefik evaluates <last element>.New: the Go package is `access`
# the lowest-priority router for instance hostnames no instance router claims
# (ended, never existed): forward-auth answers them with ctfhost's page
ENDED_ROUTER = "ctfhost-ended-instances"
# never reached: forward-auth refuses every host without an active instance,
# and an active one's own router (longer rule, higher priority) wins
UNREACHABLE_BACKEND = "http://127.0.0.1:1"
# every instance router's priority. Traefik sorts its routes again after adding each
# one; routes of one priority are already in order, so each sort is one pass,
# where priorities from the rules' lengths (Traefik's default) cost it ~0.7 s per
# reload at 10,000 instances. An instance's exact host beats any wildcard router
# an operator may add under the same domain; the catch-all below has priority 1.
INSTANCE_PRIORITY = 10000
# where `dumps` splices a RouteMap into the serialized skeleton: "\u0000<n>\u0000"
_MARKER = re.compile(rb'"\\u0000(\d+)\\u0000"')


def router_name(instance_id, endpoint=None):
    """`ctfhost-<instance id>` for the instance's main endpoint; `ctfhost-<instance id>-<name>` for another."""
    return f"ctfhost-{instance_id}" + (f"-{endpoint}" if endpoint else "")


def access_middleware_name(instance_id):
    return f"ctfhost-access-{instance_id}"


def _unix(moment):
    """A naive UTC datetime (the database's) as Unix seconds."""
    return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp())


def _access_middleware(instance_id, team_id, expires_at, options):
    """The instance router's own access check in Traefik: what its cookie must be bound to, and until when."""
    return {"plugin": {ACCESS_PLUGIN: {
        "instance": instance_id,
        "team": encoded_team(team_id),
        "expires": _unix(expires_at),
        "keysFile": options.keys_file,
        "forwardAuth": options.auth_url,
        "maxAuthBody": options.auth_max_body,
        "authResponseHeaders": list(options.auth_headers),
        **({"trustForwardHeader": True} if options.trust_forward else {}),
        # off: the entry points delete every header with "_" or "." in its name (aliasHeadersStrategy: delete)
        **({"stripAliases": True} if options.strip_aliases else {}),
        **({"authRate": options.auth_rate, "authBurst": options.auth_burst} if options.auth_rate > 0 else {}),
    }}}


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
    router = {"rule": f"Host(`{hostname}`)", "entryPoints": list(options.entrypoints), "priority": INSTANCE_PRIORITY}
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
        "priority": INSTANCE_PRIORITY,
    }
    address = backend.split("://", 1)[-1]
    return router, {"loadBalancer": {"servers": [{"address": address}]}}


def _ended_route(options):
    """A catch-all under the instance domain, so a gone instance's host gets ctfhost's page, not Traefik's bare 404."""
    pattern = r"^[a-z0-9]+\.[a-z0-9-]+\." + re.escape(options.base_domain) + "$"
    router = {
        "rule": f"HostRegexp(`{pattern}`)", "entryPoints": list(options.entrypoints), "priority": 1,
        "middlewares": ([AUTH_CLIENT_LIMIT_MIDDLEWARE, AUTH_LIMIT_MIDDLEWARE] if options.auth_rate > 0 else [])
        + [AUTH_MIDDLEWARE],
        "service": ENDED_ROUTER,
    }
    if options.tls:
        # no certResolver: nothing is requested for names no instance holds
        router["tls"] = {"options": options.tls_options} if options.tls_options else {}
    return router, {"loadBalancer": {"servers": [{"url": UNREACHABLE_BACKEND}]}}


def instance_route(row, options, endpoint=None):
    """(kind, name, router, service, middleware) of one routed_instances() row: one instance's share of the config.

    `middleware` is (name, definition) of the router's own access check, or None.
    `endpoint`: a routed_endpoints() row of the instance: the entry of that
    endpoint instead (its own host and backend, the instance's access check).
    """
    instance_id, hostname, backend, protocol, team_id, expires_at = row
    name = router_name(instance_id)
    if endpoint is not None:
        _, endpoint_name, hostname, backend, protocol = endpoint
        name = router_name(instance_id, endpoint_name)
    kind = "tcp" if protocol == "tcp" else "http"
    router, service = (_tcp_route if kind == "tcp" else _http_route)(hostname, backend, options)
    router["service"] = name
    middleware = None
    if kind == "http" and options.auth_url and options.access_in_traefik:
        # one per instance: the cookie it checks is bound to the instance, whichever of its hosts holds it
        middleware = (access_middleware_name(instance_id), _access_middleware(instance_id, team_id, expires_at, options))
        router["middlewares"] = [middleware[0]]
    return kind, name, router, service, middleware


def instance_routes(row, options, endpoints=()):
    """Every entry of one instance: its main endpoint's, then one per routed_endpoints() row of it."""
    return [instance_route(row, options)] + [instance_route(row, options, endpoint) for endpoint in endpoints]


def endpoints_by_instance(endpoint_rows):
    """{instance id: [routed_endpoints() rows]}."""
    grouped = {}
    for endpoint in endpoint_rows:
        grouped.setdefault(endpoint[0], []).append(endpoint)
    return grouped


def fixed_routes(options):
    """The (kind, name, router, service, None) entries every config has whatever the fleet: the catch-all for ended hosts."""
    if options.auth_url and options.base_domain:
        return [("http", ENDED_ROUTER, *_ended_route(options), None)]
    return []


def fixed_middlewares(options):
    """{name: definition} of the middlewares every config with routers has: ctfhost's forwardAuth."""
    if not options.auth_url:
        return {}
    middlewares = {AUTH_MIDDLEWARE: {
        "forwardAuth": {
            "address": options.auth_url,
            # Traefik would otherwise pass on X-Forwarded-* from the client
            "trustForwardHeader": options.trust_forward,
            "authResponseHeaders": list(options.auth_headers),
            "maxResponseBodySize": options.auth_max_body,
            # a fresh cookie forward-auth sets when it lets in a cookie under an older key (a key rotation)
            "addAuthCookiesToResponse": ["ctfhost_access"],
        }
    }}
    if options.auth_rate > 0 and options.base_domain:
        middlewares[AUTH_LIMIT_MIDDLEWARE] = {"rateLimit": {
            "average": options.auth_rate, "burst": options.auth_burst, "period": "1s",
            "sourceCriterion": {"requestHost": True},
        }}
        # Traefik's default source: the client address (the front's, behind a shard's front: X-Forwarded-For then)
        middlewares[AUTH_CLIENT_LIMIT_MIDDLEWARE] = {"rateLimit": {
            "average": options.auth_rate, "burst": options.auth_burst, "period": "1s",
        }}
    return middlewares


def empty_routes(route_map=dict):
    """{kind: (routers, services, middlewares)}, the maps `document` takes, each made by `route_map`."""
    return {"http": (route_map(), route_map(), route_map()), "tcp": (route_map(), route_map(), route_map())}


def add_route(routes, entry):
    """Put one (kind, name, router, service, middleware) entry into `routes`."""
    kind, name, router, service, middleware = entry
    routes[kind][0][name] = router
    routes[kind][1][name] = service
    if middleware is not None:
        routes[kind][2][middleware[0]] = middleware[1]


def remove_route(routes, entry):
    """Take one entry's router, service and middleware out of `routes` (maps with `discard`).

    `entry` is (kind, name, middleware name or None), as `added` tells of an entry.
    """
    kind, name, middleware = entry
    routes[kind][0].discard(name)
    routes[kind][1].discard(name)
    if middleware is not None:
        routes[kind][2].discard(middleware)


def added(entry):
    """What remove_route needs of an entry: (kind, name, middleware name or None)."""
    kind, name, _, _, middleware = entry
    return kind, name, middleware and middleware[0]


def start_routes(options, route_map=dict):
    """`routes` holding what every config has (fixed routes and middlewares), ready for the instances'."""
    routes = empty_routes(route_map)
    for entry in fixed_routes(options):
        add_route(routes, entry)
    for name, definition in fixed_middlewares(options).items():
        routes["http"][2][name] = definition
    return routes


def document(routes, options, default_certificate=None, one_of_shards=False):
    """The dynamic configuration around the routers, services and middlewares in `routes` ({kind: (routers, services, middlewares)}).

    The maps may be dicts or `RouteMap`s (already serialized entries, which
    `dumps` splices in as they are). `one_of_shards`: the config of one of
    several Traefik shards (shards.py), whose TLS speaks HTTP/1.1 only.
    """
    config = {}
    for kind, (routers, services, middlewares) in routes.items():
        # Traefik refuses empty maps ("routers cannot be a standalone element")
        part = {key: value for key, value in (("routers", routers), ("services", services)) if len(value)}
        if len(middlewares) and len(routers):
            part["middlewares"] = middlewares
        if part:
            config[kind] = part
    if default_certificate:
        config["tls"] = {"stores": {"default": {"defaultCertificate": dict(default_certificate)}}}
    if one_of_shards and options.tls and not options.tls_options:
        # A browser reuses an HTTP/2 connection for any host its certificate
        # covers at the same address: made for one instance of a challenge
        # (a wildcard per challenge), it would carry another instance's
        # requests to this shard, which does not route it. HTTP/1.1 is never
        # shared across hosts. Traefik's `default` TLS options apply to every
        # router without options of its own.
        config.setdefault("tls", {})["options"] = {"default": {"alpnProtocols": ["http/1.1", "acme-tls/1"]}}
    return config


def render(instances, options, default_certificate=None, endpoints=()):
    """The dynamic configuration dict for routed_instances() rows and their routed_endpoints() rows.

    `default_certificate` ({"certFile", "keyFile"}: paths or PEM) goes into
    Traefik's default TLS store; see default_certificate.py for why.
    """
    routes = start_routes(options)
    grouped = endpoints_by_instance(endpoints)
    for row in instances:
        for entry in instance_routes(row, options, grouped.get(row[0], ())):
            add_route(routes, entry)
    return document(routes, options, default_certificate)


def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class RouteMap:
    """A map of routers or services kept as serialized `"name":{...}` entries in name order.

    Setting or removing one entry costs one entry's serialization; the map's
    bytes are then a join of the entries, as `json.dumps(sort_keys=True)`
    would have written the whole dict.
    """

    def __init__(self):
        self._names = []  # sorted, as json.dumps sorts keys
        self._entries = []  # the serialized entries, in the same order

    def __len__(self):
        return len(self._names)

    def __setitem__(self, name, value):
        entry = (_json(name) + ":" + _json(value)).encode()
        index = bisect.bisect_left(self._names, name)
        if index < len(self._names) and self._names[index] == name:
            self._entries[index] = entry
        else:
            self._names.insert(index, name)
            self._entries.insert(index, entry)

    def discard(self, name):
        index = bisect.bisect_left(self._names, name)
        if index < len(self._names) and self._names[index] == name:
            del self._names[index], self._entries[index]

    def encoded(self, merge_chunk=None):
        """The map's bytes: JSON, or with `merge_chunk`, YAML merging maps of at most that many entries.

        `{<<: [{...}, {...}]}` is YAML (flow style; every entry stays JSON) for
        the same map. Traefik's YAML decoder checks every key of a mapping
        against every other, so a map of n entries costs n²/2 comparisons on
        each reload: 100 million at 10,000 instances, about 1.7 s here. Merged
        from maps of 100, it costs n × 50.
        """
        if merge_chunk is None or len(self._entries) <= merge_chunk:
            return b"{" + b",".join(self._entries) + b"}"
        chunks = (self._entries[start:start + merge_chunk] for start in range(0, len(self._entries), merge_chunk))
        return b"{<<: [" + b",".join(b"{" + b",".join(chunk) + b"}" for chunk in chunks) + b"]}"


# entries per merged map in the YAML form (see RouteMap.encoded)
MERGE_CHUNK = 100


def dumps(config, merge_chunk=None):
    """Serialize with sorted keys and fixed separators: same fleet, same bytes.

    `RouteMap`s in the config (at config[kind][section]) are spliced in as
    their serialized entries; the rest is small and serialized here. With
    `merge_chunk` the result is the YAML form of the same config (JSON where
    a RouteMap is small); without, JSON.
    """
    spliced = {}
    skeleton = {}
    for key, part in config.items():
        skeleton[key] = part
        if isinstance(part, dict) and any(isinstance(value, RouteMap) for value in part.values()):
            skeleton[key] = dict(part)
            for section, value in part.items():
                if isinstance(value, RouteMap):
                    # a string no rendered value contains: NUL never occurs in hostnames or URLs
                    skeleton[key][section] = f"\0{len(spliced)}\0"
                    spliced[str(len(spliced)).encode()] = value
    # the skeleton is small; the maps' bytes are copied once, into the result
    return _MARKER.sub(lambda match: spliced[match[1]].encoded(merge_chunk), _json(skeleton).encode())
