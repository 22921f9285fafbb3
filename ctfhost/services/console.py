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


def recent_errors(challenge_id, limit=10):
    """The challenge's latest failed instances, newest first."""
    return list(Instance.select().where(Instance.challenge_id == challenge_id, Instance.status == "error")
                .order_by(Instance.created_at.desc()).limit(limit))
