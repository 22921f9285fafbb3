"""Pages: sign-in for forward-auth, the player's "My instances" and "API tokens", the admin's instances and settings."""

import datetime

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from CTFd.cache import clear_config
from CTFd.models import Teams, Users
from CTFd.utils import set_config
from CTFd.utils.decorators import admins_only, authed_only

from . import accounts, checks, messages, signin, team_tokens
from .api import ctf_end, with_challenges
from .client import CtfhostError
from .context import ctfhost_client, current_account, current_settings
from .player import admin_instance, utcnow
from .settings import LABELS, PLUGIN_NAME, changes_from_form

TEMPLATES = f"plugins/{PLUGIN_NAME}/templates/"
STATUSES = ("pending", "running", "destroyed", "expired", "error")
PAGE_SIZE = 50

ctfhost_pages = Blueprint("ctfhost", __name__)


def no_store(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@ctfhost_pages.route(f"/plugins/{PLUGIN_NAME}/access")
def access():
    """Where ctfhost's forward-auth sends a browser without access (CTFHOST_AUTH_SIGNIN_URL), and the Open button."""
    logged_in, team_id = current_account()
    decision = signin.decide(
        ctfhost_client(),
        request.args.get("instance"),
        request.args.get("next"),
        logged_in=logged_in,
        team_id=team_id,
        login_url=url_for("auth.login"),
        return_to=request.full_path,
    )
    if decision.is_redirect:
        return no_store(redirect(decision.location, 302))
    # ctfhost down: the same sign-in may work in a minute
    retry_url = request.full_path if decision.status == 503 else None
    html = render_template(TEMPLATES + "message.html", title=decision.title, message=decision.message, retry_url=retry_url)
    return no_store(make_response(html, decision.status))


@ctfhost_pages.route(f"/plugins/{PLUGIN_NAME}/instances")
@authed_only
def my_instances():
    """The team's running instances with their buttons (filled in by ctfhost.js)."""
    return render_template(TEMPLATES + "instances.html")


@ctfhost_pages.route(f"/plugins/{PLUGIN_NAME}/tokens")
@authed_only
def api_tokens():
    """The team's ctfhost API tokens: create one (its secret shown once), list and revoke them (tokens.js).

    The page only renders the form; the team is found again by the API
    behind it on every request, from CTFd's session.
    """
    _, team_id = current_account()
    if team_id is None:
        html = render_template(
            TEMPLATES + "message.html", title="No team", message=messages.TOKENS_NO_TEAM,
            action_url=url_for("teams.private"), action_label="Join or create a team",
        )
        return no_store(make_response(html, 403))
    configured = current_settings()
    now = utcnow()
    end = ctf_end()
    latest = team_tokens.latest_expiry(configured.token_max_days, now, end)
    html = render_template(
        TEMPLATES + "tokens.html",
        settings=configured,
        choices=team_tokens.expiry_choices(configured.token_max_days),
        scopes=[(scope, team_tokens.SCOPE_HELP[scope]) for scope in configured.token_scopes],
        ticked=set(team_tokens.PLAYER_SCOPES),
        first_day=(now + datetime.timedelta(days=1)).date().isoformat(),
        last_day=latest.date().isoformat(),
        ctf_end=end,
        ended=team_tokens.ended(now, end),
        messages=messages,
    )
    return no_store(make_response(html))


# -- admin ---------------------------------------------------------------------


def account_names(team_ids):
    """ctfhost team id (text) -> the CTFd user ("user-5") or team (5) name; see accounts.py."""
    wanted = {"user": {}, "team": {}}
    for value in team_ids:
        account = accounts.ctfd_account(value) if value is not None else None
        if account:
            wanted[account[0]][account[1]] = str(value)
    names = {}
    for kind, model in (("user", Users), ("team", Teams)):
        ids = wanted[kind]
        if ids:
            for row in model.query.filter(model.id.in_(list(ids))).all():
                names[ids[row.id]] = f"{row.name} ({kind})"
    return names


CHECK_TIMEOUT = 5  # seconds: the challenge's admin page waits this long at most for ctfhost


def launch_check(challenge):
    """For the challenge's admin page (update.html): can players launch it? A checks.Check."""
    client = ctfhost_client(timeout=CHECK_TIMEOUT)
    if not client.configured:
        return checks.Check("warning", "The ctfhost plugin is not configured (Admin > ctfhost > Settings).")
    return checks.launch_check(client, challenge.slug, challenge.runtime)


@ctfhost_pages.route("/admin/ctfhost")
@admins_only
def admin_instances():
    status = request.args.get("status") or None
    if status not in STATUSES:
        status = None
    try:
        page = max(int(request.args.get("page", 1)), 1)
    except ValueError:
        page = 1
    client = ctfhost_client()
    instances, total, events, error = [], 0, [], None
    try:
        rows, total = client.list_instances(status=status, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        instances = [admin_instance(row) for row in rows]
        events = client.flag_sharing(limit=100)[0]
    except CtfhostError as exc:
        error = exc.describe()
    with_challenges(instances)
    with_challenges(events)
    names = account_names([i["team_id"] for i in instances] + [e.get(k) for e in events for k in ("submitting_team_id", "owning_team_id")])
    return render_template(
        TEMPLATES + "admin.html",
        instances=instances,
        events=events,
        names=names,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        status=status,
        statuses=STATUSES,
        error=error,
        settings=current_settings(),
    )


def connection_check(settings):
    """(ok, text) after asking ctfhost for its health and, with the API key, its challenges."""
    if not settings.configured:
        return False, "Set the ctfhost URL and API key."
    client = ctfhost_client()
    try:
        health = client.health() or {}
        challenges = client.list_challenges()
    except CtfhostError as exc:
        return False, exc.describe()
    return True, f"ctfhost answers (status {health.get('status', '?')}) and accepts the API key: {len(challenges)} challenge(s)."


@ctfhost_pages.route("/admin/ctfhost/settings", methods=["GET", "POST"])
@admins_only
def admin_settings():
    problems, saved = [], False
    if request.method == "POST":
        changes, problems = changes_from_form(request.form)
        if not problems:
            for key, value in changes.items():
                set_config(key, value)
            clear_config()
            saved = True
    settings = current_settings()
    ok, check = connection_check(settings)
    return render_template(
        TEMPLATES + "settings.html",
        settings=settings,
        labels=LABELS,
        problems=problems,
        saved=saved,
        connection_ok=ok,
        connection_text=check,
        signin_url=settings.signin_url(request.host_url),
    )
