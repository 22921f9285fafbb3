"""Grading flags against per-instance flags, and catching flags passed between teams."""

import datetime

from flask import current_app

from ctfhost.models import ACTIVE, Challenge, FlagSharingEvent, Instance, utcnow
from ctfhost.services import events
from ctfhost.services.errors import Conflict, NotFound


def _grace():
    return datetime.timedelta(seconds=int(current_app.config.get("CTFHOST_FLAG_GRACE_SECONDS") or 600))


def grade(team_id, challenge_id, flag, record=True):
    """{"correct", "message", "instance_id", "shared"} for a team's submission.

    Correct: the flag of this team's instance of the challenge, active or
    ended less than the grace period ago (CTFHOST_FLAG_GRACE_SECONDS). A flag
    of another team's instance is incorrect and, with `record`, leaves a
    flag-sharing event.
    """
    challenge = Challenge.get_or_none(Challenge.id == challenge_id)
    if challenge is None:
        raise NotFound(f"challenge {challenge_id!r} not found")
    if not challenge.flag_template:
        raise Conflict(
            f"challenge {challenge_id!r} has no flag_template: its flags are static and kept by the scoreboard"
        )
    flag = flag.strip()
    team = str(team_id)
    matches = list(Instance.select().where(Instance.challenge_id == challenge.id, Instance.flag == flag))
    own = [i for i in matches if i.team_id == team]
    if own:
        instance = own[0]
        if instance.status in ACTIVE or (instance.ended_at and utcnow() - instance.ended_at <= _grace()):
            if record:
                events.publish("submission.correct", instance, {"instance_id": str(instance.id)})
            return {"correct": True, "message": "correct", "instance_id": instance.id, "shared": False}
        return {
            "correct": False,
            "message": "this flag belongs to an instance of yours that ended too long ago; launch a new one",
            "instance_id": instance.id,
            "shared": False,
        }
    others = [i for i in matches if i.team_id != team]
    if others:
        owner = others[0]
        if record:
            FlagSharingEvent.create(
                challenge_id=challenge.id, submitting_team_id=team, owning_team_id=owner.team_id, instance_id=owner.id
            )
        return {"correct": False, "message": "incorrect", "instance_id": None, "shared": True}
    return {"correct": False, "message": "incorrect", "instance_id": None, "shared": False}


def list_events(challenge_id=None, team_id=None, since=None, limit=100, offset=0):
    """(rows, total), newest first; team_id matches submitting or owning team."""
    query = FlagSharingEvent.select()
    if challenge_id is not None:
        query = query.where(FlagSharingEvent.challenge_id == challenge_id)
    if team_id is not None:
        query = query.where(
            (FlagSharingEvent.submitting_team_id == str(team_id)) | (FlagSharingEvent.owning_team_id == str(team_id))
        )
    if since is not None:
        query = query.where(FlagSharingEvent.at >= since)
    total = query.count()
    rows = list(query.order_by(FlagSharingEvent.at.desc(), FlagSharingEvent.id.desc()).limit(limit).offset(offset))
    return rows, total
