"""``/api/v1/plugins/ctfhost``: the buttons of the challenge window and of the instance pages.

Each resource finds the player's team (``account_id``) and, for a
challenge, checks the player may see it the way CTFd's own challenge API
does; :class:`player.Player` decides the rest. Requests come from CTFd's
pages with the session cookie and the ``CSRF-Token`` header, which CTFd
checks before any of this runs.
"""

import datetime
import functools

from flask import request
from flask_restx import Namespace, Resource

from CTFd.models import Challenges, Solves
from CTFd.utils import get_config
from CTFd.utils.dates import ctf_ended, ctftime, view_after_ctf
from CTFd.utils.decorators import admins_only, require_verified_emails
from CTFd.utils.user import get_current_user, is_admin

from . import messages, team_tokens
from .client import CtfhostError
from .context import ctfhost_client, current_account, current_settings
from .messages import Problem
from .models import CtfhostChallenge
from .player import MAIN, Player, Reply, admin_instance, ok, refused

ctfhost_namespace = Namespace("ctfhost", description="ctfhost instances of the current player's team")

CTF_CLOSED = Problem(403, "closed", "The CTF is not running: instances can be launched only while it is.")


def answer(reply):
    return reply.body, reply.status, {"Cache-Control": "no-store"}


def current_team(not_logged_in=messages.NOT_LOGGED_IN, no_team=messages.NO_TEAM):
    """(ctfhost team id, None), or (None, the Problem to answer) for a visitor or a teamless player."""
    logged_in, team_id = current_account()
    if not logged_in:
        return None, Problem(401, "login", not_logged_in)
    if team_id is None:
        return None, Problem(403, "no_team", no_team)
    return team_id, None


def current_player():
    """(Player, None), or (None, the Problem to answer)."""
    team_id, problem = current_team()
    if problem:
        return None, problem
    return Player(ctfhost_client(), team_id, renew_min_seconds=current_settings().renew_min_seconds), None


def current_team_tokens():
    """(TeamTokens of the player's team, None), or (None, the Problem to answer)."""
    team_id, problem = current_team(messages.TOKENS_NOT_LOGGED_IN, messages.TOKENS_NO_TEAM)
    if problem:
        return None, problem
    configured = current_settings()
    return team_tokens.TeamTokens(
        ctfhost_client(), team_id, configured.token_scopes, configured.token_max_days, not_after=ctf_end()
    ), None


def playable_challenge(challenge_id):
    """(challenge, None) if the player may open it, as CTFd's challenge API decides; else (None, Problem)."""
    challenge = CtfhostChallenge.query.filter_by(id=challenge_id).first()
    missing = Problem(404, "not_found", "No such challenge.")
    if challenge is None:
        return None, missing
    if is_admin():
        return challenge, None
    if challenge.state == "hidden":
        return None, missing
    if challenge.state == "locked":
        return None, Problem(403, "locked", "This challenge is locked.")
    prerequisites = set((challenge.requirements or {}).get("prerequisites", []))
    if prerequisites:
        existing = {row.id for row in Challenges.query.with_entities(Challenges.id).all()}
        # CTFd's own account id here (solves are CTFd's), not the ctfhost team id
        account_id = get_current_user().account_id
        solved = {row.challenge_id for row in Solves.query.with_entities(Solves.challenge_id).filter_by(account_id=account_id)}
        if not (prerequisites & existing) <= solved:
            return None, Problem(403, "locked", "Solve the challenges this one requires first.")
    return challenge, None


def ctf_open():
    return ctftime() or is_admin() or (ctf_ended() and view_after_ctf())


def ctf_end():
    """When the CTF ends (aware UTC), or None when CTFd has no end set."""
    end = get_config("end")
    try:
        return datetime.datetime.fromtimestamp(int(end), datetime.timezone.utc) if end else None
    except (TypeError, ValueError):
        return None


def acting_as(find):
    """Decorator: run the view with what `find()` gives for the signed-in player (it returns a Reply), or answer why not."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(self, *args, **kwargs):
            actor, problem = find()
            if problem:
                return answer(refused(problem))
            return answer(view(self, actor, *args, **kwargs))

        return wrapper

    return decorator


as_player = acting_as(current_player)
as_team_tokens = acting_as(current_team_tokens)


def with_challenges(instances):
    """Add the CTFd challenge id and name to each instance (by slug)."""
    slugs = {instance["challenge_id"] for instance in instances}
    rows = CtfhostChallenge.query.filter(CtfhostChallenge.slug.in_(slugs)).all() if slugs else []
    by_slug = {row.slug: row for row in rows}
    for instance in instances:
        row = by_slug.get(instance["challenge_id"])
        instance["ctfd_challenge_id"] = row.id if row else None
        instance["challenge_name"] = row.name if row else instance["challenge_id"]
    return instances


@ctfhost_namespace.route("/challenges/<int:challenge_id>/instance")
class ChallengeInstance(Resource):
    method_decorators = [require_verified_emails]

    @as_player
    def get(self, player, challenge_id):
        """The team's active instance of this challenge (data: null when none)"""
        challenge, problem = playable_challenge(challenge_id)
        return refused(problem) if problem else player.status(challenge.slug)

    @as_player
    def post(self, player, challenge_id):
        """Launch an instance of this challenge for the team"""
        challenge, problem = playable_challenge(challenge_id)
        if problem:
            return refused(problem)
        return player.launch(challenge.slug) if ctf_open() else refused(CTF_CLOSED)


@ctfhost_namespace.route("/instances")
class TeamInstances(Resource):
    method_decorators = [require_verified_emails]

    @as_player
    def get(self, player):
        """The team's active instances, with the CTFd challenge each belongs to"""
        reply = player.instances()
        if reply.status == 200:
            with_challenges(reply.body["data"])
        return reply


@ctfhost_namespace.route("/instances/<string:instance_id>")
class TeamInstance(Resource):
    method_decorators = [require_verified_emails]

    @as_player
    def get(self, player, instance_id):
        """One of the team's instances, in any status"""
        return player.get(instance_id)

    @as_player
    def delete(self, player, instance_id):
        """Stop the team's instance"""
        return player.stop(instance_id)


@ctfhost_namespace.route("/instances/<string:instance_id>/<string:action>")
class TeamInstanceAction(Resource):
    method_decorators = [require_verified_emails]

    @as_player
    def post(self, player, instance_id, action):
        """renew, restart, or access (a fresh single-use link into one HTTP endpoint of the instance)"""
        if action == "renew":
            return player.renew(instance_id)
        if action == "restart":
            return player.restart(instance_id) if ctf_open() else refused(CTF_CLOSED)
        if action == "access":
            # {"next": path, "endpoint": name}: the link opens that HTTP endpoint's host (default main)
            body = request.get_json(silent=True)
            body = body if isinstance(body, dict) else {}
            return player.access(instance_id, body.get("next") or "/", body.get("endpoint", MAIN))
        return refused(Problem(404, "not_found", f"Unknown action {action!r}."))


@ctfhost_namespace.route("/tokens")
class TeamTokenList(Resource):
    method_decorators = [require_verified_emails]

    @as_team_tokens
    def get(self, tokens):
        """The team's ctfhost API tokens that still work (never their secrets)"""
        return tokens.list()

    @as_team_tokens
    def post(self, tokens):
        """Create a ctfhost API token for the team: {"name", "expires": days or "custom", "expires_on", "scopes"}"""
        # not ctf_open(): CTFd's "view after CTF" reopens the challenges, never token minting
        problem = team_tokens.minting_closed(tokens.now(), tokens.not_after, ctftime(), is_admin())
        if problem:
            return refused(problem)
        return tokens.mint(request.get_json(silent=True))


@ctfhost_namespace.route("/tokens/<string:token_id>")
class TeamToken(Resource):
    method_decorators = [require_verified_emails]

    @as_team_tokens
    def delete(self, tokens, token_id):
        """Revoke one of the team's tokens"""
        return tokens.revoke(token_id)


# -- admin ---------------------------------------------------------------------


def operator_error(exc):
    """Admins read ctfhost's own words (and field errors)."""
    return answer(Reply(exc.status if exc.status in (404, 409) else 502, {"success": False, "message": exc.describe()}))


@ctfhost_namespace.route("/admin/instances")
class AdminInstances(Resource):
    method_decorators = [admins_only]

    def get(self):
        """Every instance, newest first (status, team_id, limit, offset)"""
        try:
            limit = min(max(int(request.args.get("limit", 50)), 1), 500)
            offset = max(int(request.args.get("offset", 0)), 0)
        except ValueError:
            return answer(refused(Problem(400, "invalid", "limit and offset must be whole numbers.")))
        try:
            rows, total = ctfhost_client().list_instances(
                team_id=request.args.get("team_id") or None,
                status=request.args.get("status") or None,
                limit=limit,
                offset=offset,
            )
        except CtfhostError as exc:
            return operator_error(exc)
        shown = with_challenges([admin_instance(row) for row in rows])
        return answer(Reply(200, {"success": True, "data": shown, "meta": {"total": total, "limit": limit, "offset": offset}}))


@ctfhost_namespace.route("/admin/instances/<string:instance_id>")
class AdminInstance(Resource):
    method_decorators = [admins_only]

    def delete(self, instance_id):
        """Destroy any team's instance"""
        try:
            ctfhost_client().destroy(instance_id)
        except CtfhostError as exc:
            return operator_error(exc)
        return answer(ok(None))


@ctfhost_namespace.route("/admin/flag-sharing")
class AdminFlagSharing(Resource):
    method_decorators = [admins_only]

    def get(self):
        """Flags one team submitted that belong to another team's instance, newest first"""
        try:
            rows, total = ctfhost_client().flag_sharing(limit=100)
        except CtfhostError as exc:
            return operator_error(exc)
        return answer(Reply(200, {"success": True, "data": rows, "meta": {"total": total}}))
