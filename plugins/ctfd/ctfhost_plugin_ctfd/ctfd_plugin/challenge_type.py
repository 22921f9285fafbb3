"""The ``ctfhost`` challenge type: CTFd's admin form and flags, kept in step with ctfhost.

Creating or editing one in CTFd's admin creates or updates the challenge in
ctfhost in the same request; when ctfhost refuses, the CTFd change is rolled
back and the reason shows in the admin form. Deleting it deletes it in
ctfhost (with its instances). Challenges with a flag template are graded by
ctfhost against the team's own instance; without one, CTFd's flags apply.
"""

import logging

from flask import Blueprint, g
from werkzeug.exceptions import HTTPException

from CTFd.exceptions.challenges import ChallengeCreateException, ChallengeUpdateException
from CTFd.models import db
from CTFd.plugins.challenges import BaseChallenge, ChallengeResponse, calculate_value
from CTFd.plugins.challenges.decay import DECAY_FUNCTIONS
from CTFd.utils.user import is_admin

from . import challenge_spec, grading, slugs
from .client import CtfhostError
from .context import ctfhost_client, current_account
from .models import CtfhostChallenge
from .settings import PLUGIN_NAME

log = logging.getLogger(__name__)

ASSETS = f"/plugins/{PLUGIN_NAME}/assets/"
SCORING = ("initial", "minimum", "decay")
UNCOUNTED = "ctfhost_attempt_not_counted"


def _check_scoring(challenge, error):
    """Dynamic scoring needs initial, minimum and decay, as for CTFd's standard challenges."""
    if challenge.function in DECAY_FUNCTIONS:
        for attr in SCORING:
            if getattr(challenge, attr) in (None, ""):
                raise error(f"Missing '{attr}' but function is {challenge.function}")


def _sync(challenge, values, error, create_first):
    """Send the challenge to ctfhost; on refusal undo the CTFd change and raise `error` for the admin form."""
    spec = challenge_spec.spec(challenge.slug, challenge.name, values, getattr(challenge, "state", None))
    try:
        ctfhost_client().put_challenge(spec, create_first=create_first)
    except CtfhostError as exc:
        db.session.rollback()
        raise error(f"ctfhost refused challenge {spec['id']!r}: {exc.describe()}") from None


def _sync_state(challenge):
    """Hidden -> inactive, visible -> active in ctfhost; best effort: showing or hiding works while ctfhost is down."""
    client = ctfhost_client()
    status = challenge_spec.status_of(challenge.state)
    try:
        client.update_challenge(challenge.slug, {"status": status})
    except CtfhostError as exc:
        log.warning("challenge %s is %s in CTFd but ctfhost was not told (%s): set it %s there",
                    challenge.slug, challenge.state, exc.describe(), status)


class DeleteRefused(HTTPException):
    """The challenge is kept: ctfhost could not delete it.

    CTFd's delete API has no error path of its own; flask-restx answers with
    ``data`` as the body, shaped like CTFd's refused edits, and a 4xx keeps
    a traceback out of CTFd's log. The challenge's admin page (update.js)
    shows the message.
    """

    code = 409

    def __init__(self, message):
        super().__init__(description=message)
        self.data = {"success": False, "message": message, "errors": {"": [message]}}


class CtfhostChallengeType(BaseChallenge):
    id = "ctfhost"
    name = "ctfhost"
    templates = {
        "create": ASSETS + "create.html",
        "update": ASSETS + "update.html",
        "view": ASSETS + "view.html",
    }
    scripts = {
        "create": ASSETS + "create.js",
        "update": ASSETS + "update.js",
        "view": ASSETS + "view.js",
    }
    route = ASSETS
    blueprint = Blueprint("ctfhost_challenge", __name__, template_folder="templates", static_folder="assets")
    challenge_model = CtfhostChallenge

    @classmethod
    def create(cls, request):
        data = dict(request.form or request.get_json())
        try:
            values = challenge_spec.parse_fields(data, creating=True)
        except challenge_spec.InvalidField as exc:
            raise ChallengeCreateException(str(exc)) from None
        fields = challenge_spec.without_fields(data)
        fields.pop("slug", None)
        challenge = cls.challenge_model(**fields, **values)
        if challenge.function in DECAY_FUNCTIONS and fields.get("value") and not fields.get("initial"):
            challenge.initial = fields["value"]
        _check_scoring(challenge, ChallengeCreateException)
        db.session.add(challenge)
        db.session.flush()  # the id, which the slug carries
        challenge.slug = slugs.challenge_slug(challenge.name, challenge.id)
        _sync(challenge, values, ChallengeCreateException, create_first=True)
        db.session.commit()
        if challenge.function in DECAY_FUNCTIONS:
            return calculate_value(challenge)
        return challenge

    @classmethod
    def read(cls, challenge):
        data = super().read(challenge)
        data["per_instance_flag"] = bool(challenge.flag_template)
        data["ttl_seconds"] = challenge.ttl_seconds
        if is_admin():
            data.update(challenge_spec.values_of(challenge), slug=challenge.slug)
        return data

    @classmethod
    def update(cls, challenge, request):
        data = dict(request.form or request.get_json())
        try:
            values = challenge_spec.parse_fields(data, creating=False)
        except challenge_spec.InvalidField as exc:
            raise ChallengeUpdateException(str(exc)) from None
        before = (challenge.name, challenge_spec.values_of(challenge))
        state_before = challenge.state
        for attr, value in challenge_spec.without_fields(data).items():
            if attr in ("slug", "id", "type"):
                continue
            if attr in SCORING and value is not None:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    db.session.rollback()
                    raise ChallengeUpdateException(f"Invalid input for '{attr}'") from None
            setattr(challenge, attr, value)
        for attr, value in values.items():
            setattr(challenge, attr, value)
        try:
            _check_scoring(challenge, ChallengeUpdateException)
        except ChallengeUpdateException:
            db.session.rollback()
            raise
        unsynced = not challenge.slug
        if unsynced:
            challenge.slug = slugs.challenge_slug(challenge.name, challenge.id)
        # a score change alone does not concern ctfhost, and keeps working while it is down
        if unsynced or (challenge.name, challenge_spec.values_of(challenge)) != before:
            _sync(challenge, challenge_spec.values_of(challenge), ChallengeUpdateException, create_first=False)
        elif challenge.state != state_before:
            _sync_state(challenge)
        db.session.commit()
        if challenge.function in DECAY_FUNCTIONS:
            return calculate_value(challenge)
        return challenge

    @classmethod
    def delete(cls, challenge):
        if challenge.slug:
            client = ctfhost_client()
            if client.configured:
                try:
                    client.delete_challenge(challenge.slug, force=True)
                except CtfhostError as exc:
                    # keep both sides in step: nothing is deleted here either
                    message = f"Not deleted: ctfhost could not delete challenge {challenge.slug!r}: {exc.describe()}"
                    log.warning("%s", message)
                    raise DeleteRefused(message) from None
            else:
                log.warning("ctfhost is not configured: challenge %s deleted in CTFd only", challenge.slug)
        super().delete(challenge)

    @classmethod
    def attempt(cls, challenge, request):
        if not challenge.flag_template:
            return super().attempt(challenge, request)
        data = request.form or request.get_json()
        _, team_id = current_account()
        preview = is_admin() and bool(request.args.get("preview"))
        verdict = grading.grade(ctfhost_client(), team_id, challenge.slug, data.get("submission"), preview=preview)
        if not verdict.counted:
            setattr(g, UNCOUNTED, True)
        return ChallengeResponse(status=verdict.status, message=verdict.message)

    @classmethod
    def fail(cls, user, team, challenge, request):
        # an attempt ctfhost could not grade is not held against the team
        if getattr(g, UNCOUNTED, False):
            return
        super().fail(user, team, challenge, request)

