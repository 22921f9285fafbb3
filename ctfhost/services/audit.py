"""The audit trail: every state-changing request, who made it and how it ended."""

import logging

from ctfhost.models import AuditEvent

log = logging.getLogger(__name__)


def record(actor, method, action, status, target=None, team_id=None, token_id=None, client_ip=None, message=None):
    result = "ok" if status < 400 else ("refused" if status < 500 else "error")
    try:
        return AuditEvent.create(
            actor=actor, method=method, action=action[:200], status=status, result=result,
            target=(target or None) and target[:300], team_id=team_id, token_id=token_id,
            client_ip=client_ip, message=(message or None) and message[:1000],
        )
    except Exception:
        # the request already happened; a lost audit row must not turn it into an error
        log.exception("could not record audit event %s %s", method, action)
        return None


def list_events(actor=None, team_id=None, token_id=None, target=None, method=None, result=None, status=None,
                since=None, until=None, limit=100, offset=0):
    """(rows, total), newest first."""
    query = AuditEvent.select()
    filters = {
        AuditEvent.actor: actor, AuditEvent.team_id: team_id, AuditEvent.token_id: token_id,
        AuditEvent.target: target, AuditEvent.method: method, AuditEvent.result: result, AuditEvent.status: status,
    }
    for column, value in filters.items():
        if value is not None:
            query = query.where(column == (str(value) if column is AuditEvent.team_id else value))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    total = query.count()
    rows = list(query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset))
    return rows, total
