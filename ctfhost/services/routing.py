"""Which instances the proxy routes: the rows a proxy plugin renders its configuration from."""

from ctfhost.models import ACTIVE, Instance


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
