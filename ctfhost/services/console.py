"""What the operator's console reads: instance counts, recent launches and failures, filtered instance lists."""

import datetime

import peewee

from ctfhost.models import ACTIVE, STATUSES, Instance, utcnow


def instance_counts():
    """{status: count} over every instance, each status present (0 when none)."""
    counts = dict.fromkeys(STATUSES, 0)
    query = Instance.select(Instance.status, peewee.fn.COUNT(peewee.SQL("*"))).group_by(Instance.status).tuples()
    for status, number in query:
        counts[status] = number
    return counts


def recent_activity(seconds=3600, now=None):
    """{"launches", "errors"} among instances created in the last `seconds`: all of them, and those that failed."""
    since = (now or utcnow()) - datetime.timedelta(seconds=seconds)
    recent = Instance.select().where(Instance.created_at >= since)
    return {"launches": recent.count(), "errors": recent.where(Instance.status == "error").count()}


def active_counts_by_challenge():
    """{challenge id: its count of pending and running instances}."""
    query = (Instance.select(Instance.challenge_id, peewee.fn.COUNT(peewee.SQL("*")))
             .where(Instance.status.in_(list(ACTIVE))).group_by(Instance.challenge_id).tuples())
    return dict(query)


def list_instances(challenge_id=None, team_id=None, status=None, worker_id=None, limit=50, offset=0):
    """(rows, total) for the filters, newest first, paginated in SQL.

    services.instances.list_instances without the worker filter the console
    needs; once that one takes `worker_id`, this can go.
    """
    query = Instance.select()
    filters = {Instance.challenge_id: challenge_id, Instance.team_id: team_id, Instance.status: status,
               Instance.worker_id: worker_id}
    for column, value in filters.items():
        if value is not None:
            query = query.where(column == str(value))
    total = query.count()
    rows = list(query.order_by(Instance.created_at.desc(), Instance.id).limit(limit).offset(offset))
    return rows, total


def recent_errors(challenge_id, limit=10):
    """The challenge's latest failed instances, newest first."""
    return list(Instance.select().where(Instance.challenge_id == challenge_id, Instance.status == "error")
                .order_by(Instance.created_at.desc()).limit(limit))
