"""What a player reads when ctfhost says no: one message per (action, ctfhost answer).

ctfhost's own messages are written for operators ("max_instances_per_team =
3"); players get these instead, with a code the challenge window uses to
pick its look and ``retry_after`` for a countdown.
"""

from dataclasses import dataclass
from typing import Optional

NOT_LOGGED_IN = "Log in to launch an instance."
NO_TEAM = "You need to join or create a team before you can launch instances or submit flags."
NOT_CONFIGURED = "Instances are not available yet: the organizers have not finished setting them up."
UNREACHABLE = "The instance service is not reachable right now. Try again in a minute."
REFUSED_CREDENTIALS = "The instance service refused CTFd's API key. Tell the organizers."
NOT_SET_UP = "This challenge is not set up on the instance service. Tell the organizers."
GONE = "This instance does not exist any more. Launch a new one."
ENDED = "This instance has ended. Launch a new one."
# ctfhost refuses launches of a challenge that is not active (a hidden one in CTFd) but for its admin
NOT_ACTIVE = "This challenge is closed for now: no new instance can be started. Ask the organisers if that is unexpected."
QUOTA = "Your team already runs as many instances as allowed. Stop one (see My instances) to launch another."
CAPACITY = "No room for a new instance right now: every server is busy. Try again in a minute."
NOT_LAUNCHABLE = "This challenge cannot be launched right now. Try again later, and tell the organizers if it lasts."
UNKNOWN_STATE = "Your team's instance could not be checked right now, so it may or may not be running. Try again in a minute."
RENEW_LIMIT = "This instance cannot be renewed any more: it has used all its renewals."
RENEW_NOT_NEEDED = "Nothing to renew yet: the instance already runs for its full time."
FAILED = "The instance service failed. Try again, and tell the organizers if it keeps happening."
FLAG_UNCHECKED = "Your flag could not be checked right now, so this attempt does not count. Try again in a minute."
CORRECT = "Correct"
INCORRECT = "Incorrect"
ENDED_TOO_LONG_AGO = "Incorrect: that flag belongs to an instance of yours that ended too long ago. Launch a new one."
PREVIEW_SHARED = "Incorrect for this account: it is the flag of another account's instance."
FAILED_INSTANCE = "it could not be started"
INVALID_ENDPOINT = (
    "endpoint must name one of the instance's addresses: up to 40 lowercase letters, digits and inner hyphens, "
    "starting with a letter."
)
NOT_A_WEB_ENDPOINT = "This address of the instance cannot be opened in the browser."
# the API tokens page
TOKENS_NOT_LOGGED_IN = "Log in to manage your team's API tokens."
TOKENS_NO_TEAM = "You need to join or create a team before you can create API tokens: a token acts for your team."
TOKENS_DISABLED = "The organizers have turned off API tokens for players."
TOKENS_CTF_NOT_RUNNING = "The CTF is not running: API tokens can be created only while it is."
TOKENS_CTF_ENDED = "The CTF has ended: API tokens can no longer be created (a token never outlives the CTF)."
TOKENS_UNAVAILABLE = "API tokens are not available right now. Try again in a minute."
TOKENS_REFUSED_CREDENTIALS = "The instance service refused to manage tokens for CTFd. Tell the organizers."
TOKEN_FORM = "Check the marked fields."
TOKEN_REFUSED = "The instance service refused this token: check the marked fields."
NO_SUCH_TOKEN = "No such token: it may have been revoked already."


def flag_refused(reasons):
    """Incorrect, with why ctfhost refused the flag as given (too long, ...)."""
    return f"Incorrect: the flag was refused ({' '.join(reasons)})"


def renew_too_early(seconds):
    """Renewing now would add less than the minimum; it becomes possible in `seconds`."""
    minutes, rest = divmod(max(0, int(seconds)), 60)
    wait = f"{minutes} min {rest} s" if minutes else f"{rest} s"
    return f"Renewing now would add almost nothing. Renew becomes possible in {wait}."


def no_endpoint(name):
    return f"This instance has no address named {name!r}."


def tcp_endpoint(name):
    return f"The address {name!r} is not a web page: connect to it with the commands shown for it."


def explain_tokens(error):
    """The Problem to show for a CtfhostError raised while listing, creating or revoking a team's tokens."""
    status = error.status
    if status is None:
        if "not configured" in (error.message or "").lower():
            return Problem(503, "not_configured", NOT_CONFIGURED)
        return Problem(503, "unavailable", TOKENS_UNAVAILABLE)
    if status in (401, 403):
        return Problem(503, "misconfigured", TOKENS_REFUSED_CREDENTIALS)
    if status == 404:
        return Problem(404, "not_found", NO_SUCH_TOKEN)
    if status in (429, 503):
        return Problem(status, "unavailable", TOKENS_UNAVAILABLE, error.retry_after)
    return Problem(502, "error", FAILED)


def cooldown(seconds):
    if seconds:
        return f"You launched this challenge moments ago. Try again in {seconds} second{'s' if seconds != 1 else ''}."
    return "You launched this challenge moments ago. Try again in a few seconds."


@dataclass(frozen=True)
class Problem:
    """Why a player's action did not happen: HTTP status for CTFd's answer, a code, a message."""

    status: int
    code: str
    message: str
    retry_after: Optional[int] = None

    def body(self):
        return {"success": False, "code": self.code, "message": self.message, "retry_after": self.retry_after}


def explain(error, action):
    """The Problem to show for a CtfhostError raised while doing `action`.

    `action` is one of "launch", "status", "access", "renew", "restart", "stop", "list".
    """
    status, text = error.status, (error.message or "").lower()
    if status is None:
        if "not configured" in text:
            return Problem(503, "not_configured", NOT_CONFIGURED)
        return Problem(503, "unavailable", UNREACHABLE)
    if status in (401, 403):
        return Problem(503, "misconfigured", REFUSED_CREDENTIALS)
    if status == 404:
        if action == "launch":
            return Problem(404, "not_set_up", NOT_SET_UP)
        return Problem(404, "gone", GONE)
    if status == 409:
        if action in ("launch", "restart") and "is not active" in text:
            return Problem(409, "not_active", NOT_ACTIVE)
        if action == "renew" and "max_renewals" in text:
            return Problem(409, "renew_limit", RENEW_LIMIT)
        if action == "renew" and "would not extend" in text:
            return Problem(409, "renew_not_needed", RENEW_NOT_NEEDED)
        return Problem(409, "ended", ENDED)
    if status == 422 and action == "access" and (error.messages_for("endpoint") or "endpoint" in text):
        # an endpoint ctfhost does not have, or one that is not HTTP
        return Problem(422, "endpoint", NOT_A_WEB_ENDPOINT)
    if status == 429:
        # ctfhost sends Retry-After with the cooldown only; the per-team cap lasts until an instance stops
        if error.retry_after is not None or "cooldown" in text:
            return Problem(429, "cooldown", cooldown(error.retry_after), error.retry_after)
        return Problem(429, "quota", QUOTA)
    if status == 503:
        # ctfhost says "reason"; older versions only say it in words
        if error.reason == "no_worker" or (error.reason is None and "no active worker serves" in text):
            return Problem(503, "not_launchable", NOT_LAUNCHABLE)
        if error.reason == "capacity" or (error.reason is None and "capacity" in text):
            return Problem(503, "capacity", CAPACITY, error.retry_after)
        return Problem(503, "unavailable", UNREACHABLE, error.retry_after)
    return Problem(502, "error", FAILED)
