"""Which instances the proxy routes: the rows a proxy plugin renders its configuration from."""

from ctfhost.models import ACTIVE, Instance, InstanceEndpoint


def routed_instances(instance_ids=None):
    """(id, hostname, backend, protocol, team_id, expires_at) of active instances that have a backend, ordered by id.

    With `instance_ids`, only those of them that are routed: what a proxy
    plugin re-reads after being told those instances changed.
    """
    query = Instance.select(
        Instance.id, Instance.hostname, Instance.backend, Instance.protocol, Instance.team_id, Instance.expires_at
    ).where(
        Instance.status.in_(list(ACTIVE)), Instance.backend.is_null(False)
    )
    if instance_ids is not None:
        query = query.where(Instance.id.in_(list(instance_ids)))
    return list(query.order_by(Instance.id).tuples())


def routed_endpoints(instance_ids=None):
    """(instance_id, name, hostname, backend, protocol) of the endpoints beside `main` of routed instances.

    Ordered by instance id, then the challenge's order. An instance of
    routed_instances() whose challenge exposes more than its main port has
    its other endpoints here; each is routed at its own hostname. With
    `instance_ids`, only those instances' endpoints.
    """
    query = (
        InstanceEndpoint.select(
            InstanceEndpoint.instance_id, InstanceEndpoint.name, InstanceEndpoint.hostname, InstanceEndpoint.backend,
            InstanceEndpoint.protocol,
        )
        .join(Instance, on=(Instance.id == InstanceEndpoint.instance_id))
        .where(Instance.status.in_(list(ACTIVE)), Instance.backend.is_null(False),
               InstanceEndpoint.backend.is_null(False))
    )
    if instance_ids is not None:
        query = query.where(InstanceEndpoint.instance_id.in_(list(instance_ids)))
    return list(query.order_by(InstanceEndpoint.instance_id, InstanceEndpoint.position).tuples())
