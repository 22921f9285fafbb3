"""Which instances the proxy routes: the rows a proxy plugin renders its configuration from."""

from ctfhost.models import ACTIVE, Instance


def routed_instances():
    """(id, hostname, backend, protocol) of active instances that have a backend, ordered by id."""
    return list(
        Instance.select(Instance.id, Instance.hostname, Instance.backend, Instance.protocol)
        .where(Instance.status.in_(list(ACTIVE)), Instance.backend.is_null(False))
        .order_by(Instance.id)
        .tuples()
    )
