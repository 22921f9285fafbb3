"""Grading a submission against the team's own instance flag through ctfhost."""

from dataclasses import dataclass

from . import messages
from .client import CtfhostError


@dataclass(frozen=True)
class Verdict:
    """CTFd's attempt status ("correct"/"incorrect"), the message, and whether the attempt counts.

    An attempt ctfhost could not grade does not count: CTFd records no
    failed submission for it, so an outage never eats a team's attempts.
    """

    status: str
    message: str
    counted: bool = True

    @property
    def correct(self):
        return self.status == "correct"


def grade(client, team_id, challenge_id, submission, preview=False):
    """The Verdict for `submission` by `team_id` on ctfhost challenge `challenge_id`.

    `preview` (an admin trying the challenge) checks without recording anything,
    and says when the flag is another account's. A flag of another team's
    instance is incorrect; ctfhost records the flag sharing, and the player is
    not told that it noticed. A flag ctfhost refuses as given (too long) is an
    incorrect attempt with ctfhost's reason; one it could not check does not count.
    """
    if team_id is None:
        return Verdict("incorrect", messages.NO_TEAM, counted=False)
    flag = (submission or "").strip()
    if not flag:
        return Verdict("incorrect", messages.INCORRECT)
    try:
        answer = (client.verify if preview else client.submit)(team_id, challenge_id, flag)
    except CtfhostError as exc:
        refused = exc.messages_for("flag") if exc.status == 422 else []
        if refused:
            # the flag itself is unacceptable (too long, ...): a wrong answer, not an outage
            return Verdict("incorrect", messages.flag_refused(refused))
        return Verdict("incorrect", messages.FLAG_UNCHECKED, counted=False)
    if answer.get("correct"):
        return Verdict("correct", messages.CORRECT)
    if preview and answer.get("shared"):
        return Verdict("incorrect", messages.PREVIEW_SHARED)
    if answer.get("instance_id") and not answer.get("shared"):
        # the team's own flag, from an instance that ended longer ago than the grace period
        return Verdict("incorrect", messages.ENDED_TOO_LONG_AGO)
    return Verdict("incorrect", messages.INCORRECT)
