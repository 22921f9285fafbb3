"""/admin: the operator's console, server-rendered over the same services as the API.

Only the admin sees a page: signed in through the form (a session cookie,
see ctfhost.admin.session) or sending X-Admin-Token. Every POST changes
state through a service, is refused without the session's CSRF token, and
lands in the audit trail as actor `admin` with an action such as
`admin.challenges.activate`.
"""

import logging

import peewee
import redis
from flask import Blueprint, g, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from marshmallow import ValidationError

from ctfhost import timeutil
from ctfhost.admin import forms, session
from ctfhost.api.audit import ACTORS, STATE_CHANGING, AuditArgsSchema
from ctfhost.api.auth import admin_token
from ctfhost.api.challenges import CPU_COUNTS, MEMORY_SIZES, PROTOCOLS
from ctfhost.api.instances import ListArgsSchema
from ctfhost.api.submissions import FlagSharingArgsSchema
from ctfhost.models import CHALLENGE_STATUSES, STATUSES, utcnow
from ctfhost.plugins import get_plugins
from ctfhost.services import audit, challenges, console, instances, pulls, submissions, workers
from ctfhost.services.access import safe_next, signing_key
from ctfhost.services.errors import ServiceError

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin", static_folder="static", static_url_path="/static")

PAGE_SIZE = 50
PUBLIC = {"admin.sign_in", "admin.static"}
FLASH_COOKIE = "ctfhost_admin_flash"
# the audit trail's action name of each state-changing page (filled by @action)
ACTIONS = {"admin.sign_in": "admin.sign_in"}
TARGETS = ("challenge_id", "instance_id", "worker_id")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def action(rule, name):
    """A POST page that changes state, recorded in the audit trail as `name`."""

    def decorator(func):
        ACTIONS[f"{bp.name}.{func.__name__}"] = name
        return bp.post(rule)(func)

    return decorator


# -- who is calling ---------------------------------------------------------------


@bp.before_request
def _guard():
    g.admin_session = None
    if request.endpoint in PUBLIC:
        return None
    header = request.headers.get("X-Admin-Token")
    if header is not None:
        # scripts: the header alone, no cookie, so no CSRF token either; failures count as sign-in failures
        refusal = _refuse_if_blocked()
        if refusal is not None:
            return refusal
        if session.token_matches(header):
            g.is_admin = True
            return None
        session.count_failure(request.remote_addr)
        _record(401, "wrong admin token (X-Admin-Token)", actor="anonymous", name="admin.sign_in")
        return _message(401, "Wrong admin token", "The X-Admin-Token header does not hold the admin token.")
    session_id = session.session_id_of(request.cookies.get(session.COOKIE_NAME))
    if session_id is None:
        if request.method in ("GET", "HEAD"):
            return redirect(url_for("admin.sign_in", next=request.full_path.rstrip("?")))
        _record(401, "not signed in", actor="anonymous")
        return _message(401, "Not signed in", "Sign in to the admin pages first.", link=url_for("admin.sign_in"))
    g.admin_session, g.is_admin = session_id, True
    if request.method in STATE_CHANGING and not session.csrf_ok(session_id, request.form.get(session.CSRF_FIELD)):
        _record(403, "CSRF token missing or wrong", actor="anonymous")
        return _message(403, "Refused", "This form was not sent from these admin pages, or is older than your "
                        "session (its CSRF token is missing or wrong). Reload the page and try again.")
    return None


def _refuse_if_blocked():
    wait = session.blocked_for(request.remote_addr)
    if not wait:
        return None
    log.warning("admin sign-in refused for %s: too many failures", request.remote_addr)
    return _message(429, "Too many failed sign-ins",
                    f"Too many wrong tokens from {request.remote_addr}: try again in {wait} s.",
                    headers={"Retry-After": str(wait)})


@bp.after_request
def _headers(response):
    if request.endpoint != "admin.static":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    flash = g.get("flash_out")
    if flash is not None:
        response.set_cookie(FLASH_COOKIE, _flash_serializer().dumps(flash), max_age=60, path=session.COOKIE_PATH,
                            httponly=True, samesite="Strict", secure=request.is_secure)
    elif g.get("flash_read"):
        response.delete_cookie(FLASH_COOKIE, path=session.COOKIE_PATH)
    return response


@bp.errorhandler(ServiceError)
def _service_error(exc):
    return _message(exc.status, "Not possible", exc.message)


@bp.errorhandler(redis.exceptions.ConnectionError)
def _redis_down(exc):
    log.error("admin pages: redis error: %s", exc)
    return _message(503, "Redis is unavailable", "The admin pages need Redis (sessions, sign-in limits, jobs). "
                    "Try again once it is back; GET /health tells what is down.")


@bp.errorhandler(peewee.OperationalError)
def _database_down(exc):
    log.error("admin pages: database error: %s", exc)
    return _message(503, "The database is unavailable", "Try again once it is back; GET /health tells what is down.")


# -- rendering, messages and the audit trail -----------------------------------


def _flash_serializer():
    return URLSafeSerializer(signing_key(), salt="ctfhost-admin-flash")


def _flash(kind, text):
    """A message for the next page this browser shows (kind: ok or error)."""
    g.flash_out = [kind, text]


def _flash_in():
    value = request.cookies.get(FLASH_COOKIE)
    if not value:
        return None
    g.flash_read = True
    try:
        kind, text = _flash_serializer().loads(value)
    except (BadSignature, ValueError, TypeError):
        return None
    return {"kind": kind, "text": text}


def _age(value):
    if value is None:
        return "never"
    seconds = max(0, int((utcnow() - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@bp.app_template_filter("admin_time")
def _time_filter(value):
    return timeutil.to_iso(value) or "—"


@bp.app_template_filter("admin_age")
def _age_filter(value):
    return _age(value)


def _render(template, http_status=200, headers=None, **context):
    context.setdefault("flash", _flash_in())
    context.update(
        csrf_field=session.CSRF_FIELD,
        csrf_token=session.csrf_token(g.admin_session) if g.get("admin_session") else "",
        signed_in=g.get("admin_session") is not None,
        is_admin=g.get("is_admin", False),
        here=request.full_path.rstrip("?"),
    )
    return render_template(f"admin/{template}", **context), http_status, headers or {}


def _message(status, title, text, link=None, headers=None):
    return _render("message.html", status, headers, title=title, text=text, link=link, flash=None)


def _target():
    args = request.view_args or {}
    return next((str(args[key]) for key in TARGETS if key in args), None)


def _record(status, message=None, actor="admin", target=None, name=None):
    audit.record(
        actor=actor, method=request.method, action=name or ACTIONS.get(request.endpoint, str(request.endpoint)),
        status=status, target=target or _target(), client_ip=request.remote_addr, message=message,
    )


def _safe_admin_path(value, default="/admin"):
    path = safe_next(value)
    return path if path == "/admin" or path.startswith("/admin/") or path.startswith("/admin?") else default


def _carry_out(do, done, back):
    """Run a state change through its service, record it, and go back to the page it came from with a message."""
    try:
        do()
    except ServiceError as exc:
        _record(exc.status, exc.message)
        _flash("error", exc.message)
    else:
        _record(200)
        _flash("ok", done)
    return redirect(_safe_admin_path(request.form.get("next"), back))


def _filters(schema):
    """(arguments, errors) of a list page's query string, through the API's schema for the same list."""
    given = {key: value.strip() for key, value in request.args.items() if value.strip()}
    try:
        return schema.load({"limit": str(PAGE_SIZE), **given}), {}
    except ValidationError as exc:
        # the page still shows, without the filters it could not read
        kept = {key: value for key, value in given.items() if key not in exc.messages}
        return schema.load({"limit": str(PAGE_SIZE), **kept}), exc.messages


def _page_links(args, total):
    """Where the previous and next pages are, and which rows this one shows."""
    limit, offset = args["limit"], args["offset"]
    query = {key: request.args[key] for key in request.args if key != "offset" and request.args[key].strip()}

    def link(at):
        return url_for(request.endpoint, **query, offset=at) if at else url_for(request.endpoint, **query)

    return {
        "first": offset + 1 if total else 0, "last": min(offset + limit, total), "total": total,
        "previous": link(max(0, offset - limit)) if offset else None,
        "next": link(offset + limit) if offset + limit < total else None,
    }


# -- signing in and out ---------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    next_path = _safe_admin_path(request.values.get("next"))
    if not admin_token():
        return _render("sign_in.html", 503, next_path=next_path, disabled=True,
                       error="No admin token is set (CTFHOST_ADMIN_TOKEN or CTFHOST_ADMIN_TOKEN_FILE): "
                             "the admin pages are off.")
    if request.method == "GET":
        if session.session_id_of(request.cookies.get(session.COOKIE_NAME)):
            return redirect(next_path)
        return _render("sign_in.html", next_path=next_path)
    refusal = _refuse_if_blocked()
    if refusal is not None:
        return refusal
    if not session.token_matches(request.form.get("token", "")):
        session.count_failure(request.remote_addr)
        _record(401, "wrong admin token", actor="anonymous")
        return _render("sign_in.html", 401, next_path=next_path, error="Wrong admin token.")
    value, session_id = session.open_session()
    _record(200, target=None)
    response = redirect(next_path)
    session.set_cookie(response, value)
    return response


@action("/sign-out", "admin.sign_out")
def sign_out():
    if g.admin_session:
        session.close_session(g.admin_session)
    _record(200)
    _flash("ok", "Signed out.")
    response = redirect(url_for("admin.sign_in"))
    session.clear_cookie(response)
    return response


# -- overview ----------------------------------------------------------------------


@bp.get("")
@bp.get("/")
def overview():
    now = utcnow()
    return _render(
        "overview.html", now=now, cluster=workers.cluster(now), counts=console.instance_counts(),
        activity=console.recent_activity(now=now), workers=workers.describe_workers(), statuses=STATUSES,
    )


# -- challenges --------------------------------------------------------------------


@bp.get("/challenges")
def challenge_list():
    status = request.args.get("status")
    status = status if status in CHALLENGE_STATUSES else None
    rows = challenges.list_challenges(status)
    serving = {runtime: pulls.serving_workers(runtime) for runtime in {challenge.runtime for challenge in rows}}
    pull_states = {challenge.id: pulls.states(challenge, serving[challenge.runtime]) for challenge in rows}
    return _render("challenges.html", challenges=rows, status=status, statuses=CHALLENGE_STATUSES,
                   active_counts=console.active_counts_by_challenge(), pull_states=pull_states)


def _form_page(challenge=None, values=None, errors=None, http_status=200):
    return _render(
        "challenge_form.html", http_status, challenge=challenge, values=values or {}, status_default="draft",
        errors={key: forms.flat_errors(messages) for key, messages in (errors or {}).items()},
        runtimes=sorted(get_plugins().runtimes()), protocols=PROTOCOLS, cpu_counts=CPU_COUNTS,
        memory_sizes=MEMORY_SIZES, statuses=CHALLENGE_STATUSES,
    )


@bp.get("/challenges/_new")
def challenge_new():
    return _form_page(values={"status": "draft", "protocol": "http", "cpu_count": "1", "memory_mb": "512"})


@action("/challenges/_new", "admin.challenges.create")
def challenge_create():
    challenge, errors, status = forms.save(request.form)
    if errors:
        _record(status, "; ".join(f"{key}: {line}" for key, messages in errors.items()
                                  for line in forms.flat_errors(messages)), target=request.form.get("id"))
        return _form_page(values=request.form, errors=errors, http_status=422)
    _record(status, target=challenge.id)
    _flash("ok", f"Challenge {challenge.id} created ({challenge.status}).")
    return redirect(url_for("admin.challenge_detail", challenge_id=challenge.id))


@bp.get("/challenges/<string:challenge_id>/edit")
def challenge_edit(challenge_id):
    challenge = challenges.get_challenge(challenge_id)
    return _form_page(challenge, forms.values_of(challenge))


@action("/challenges/<string:challenge_id>/edit", "admin.challenges.update")
def challenge_update(challenge_id):
    challenge = challenges.get_challenge(challenge_id)
    saved, errors, status = forms.save(request.form, challenge_id)
    if errors:
        _record(status, "; ".join(f"{key}: {line}" for key, messages in errors.items()
                                  for line in forms.flat_errors(messages)))
        return _form_page(challenge, request.form, errors, http_status=422)
    _record(status)
    _flash("ok", f"Challenge {saved.id} saved.")
    return redirect(url_for("admin.challenge_detail", challenge_id=saved.id))


@bp.get("/challenges/<string:challenge_id>")
def challenge_detail(challenge_id):
    challenge = challenges.get_challenge(challenge_id)
    rows, total = instances.list_instances(challenge_id=challenge.id, limit=PAGE_SIZE)
    return _render("challenge.html", challenge=challenge, instances=rows, total=total,
                   fleet=pulls.challenge_status(challenge.id), errors=console.recent_errors(challenge.id),
                   values=forms.values_of(challenge))


@action("/challenges/<string:challenge_id>/activate", "admin.challenges.activate")
def challenge_activate(challenge_id):
    return _carry_out(lambda: challenges.set_status(challenge_id, "active"),
                      f"Challenge {challenge_id} is active: teams may launch it.", url_for("admin.challenge_list"))


@action("/challenges/<string:challenge_id>/deactivate", "admin.challenges.deactivate")
def challenge_deactivate(challenge_id):
    destroy = request.form.get("destroy_instances") == "true"
    done = f"Challenge {challenge_id} is inactive" + (" and its instances are destroyed." if destroy else
                                                      ": its running instances go on.")
    return _carry_out(lambda: challenges.set_status(challenge_id, "inactive", destroy_instances=destroy), done,
                      url_for("admin.challenge_list"))


def _operation(do, back):
    """Run an operation on a challenge's fleet (pull, restart) and show its record's detail.

    Recorded with the status the API answers (202), and the detail when the
    operation did not simply go ahead (skipped, partial, failed).
    """
    try:
        answer = do()
    except ServiceError as exc:
        _record(exc.status, exc.message)
        _flash("error", exc.message)
    else:
        detail = answer["detail"][:1].upper() + answer["detail"][1:] + "."
        _record(202, None if answer["status"] == "accepted" else f"{answer['status']}: {answer['detail']}")
        _flash("error" if answer["status"] in ("failed", "partial") else "ok", detail)
    return redirect(_safe_admin_path(request.form.get("next"), back))


@action("/challenges/<string:challenge_id>/pull", "admin.challenges.pull")
def challenge_pull(challenge_id):
    return _operation(lambda: pulls.request_pull(challenge_id),
                      url_for("admin.challenge_detail", challenge_id=challenge_id))


@action("/challenges/<string:challenge_id>/restart", "admin.challenges.restart")
def challenge_restart(challenge_id):
    return _operation(lambda: challenges.restart_instances(challenge_id),
                      url_for("admin.challenge_detail", challenge_id=challenge_id))


# -- instances ---------------------------------------------------------------------


@bp.get("/instances")
def instance_list():
    args, errors = _filters(ListArgsSchema())
    rows, total = instances.list_instances(**args)
    return _render("instances.html", instances=rows, args=args, errors=errors, pages=_page_links(args, total),
                   statuses=STATUSES, challenges=challenges.list_challenges(), workers=workers.describe_workers())


@action("/instances/<string:instance_id>/destroy", "admin.instances.destroy")
def instance_destroy(instance_id):
    return _carry_out(lambda: instances.destroy_instance(instance_id), f"Instance {instance_id} destroyed.",
                      url_for("admin.instance_list"))


# -- workers -----------------------------------------------------------------------


@bp.get("/workers")
def worker_list():
    rows = workers.describe_workers()
    return _render("workers.html", workers=rows, images=pulls.worker_images([worker.id for worker in rows]))


def _set_worker_state(worker_id, state, done):
    return _carry_out(lambda: workers.set_state(worker_id, state), done, url_for("admin.worker_list"))


@action("/workers/<string:worker_id>/cordon", "admin.workers.cordon")
def worker_cordon(worker_id):
    return _set_worker_state(worker_id, "cordoned", f"Worker {worker_id} is cordoned: it takes no new instance.")


@action("/workers/<string:worker_id>/uncordon", "admin.workers.uncordon")
def worker_uncordon(worker_id):
    return _set_worker_state(worker_id, "ready", f"Worker {worker_id} is ready: it takes new instances again.")


@action("/workers/<string:worker_id>/drain", "admin.workers.drain")
def worker_drain(worker_id):
    destroy = request.form.get("destroy") == "true"

    def drain():
        instances.drain_worker(worker_id, destroy=destroy)

    done = f"Worker {worker_id} is draining" + (": its instances are destroyed." if destroy else
                                                ": its instances run out.")
    return _carry_out(drain, done, url_for("admin.worker_list"))


@action("/workers/<string:worker_id>/delete", "admin.workers.delete")
def worker_delete(worker_id):
    def delete():
        pulls.delete_worker(worker_id)

    return _carry_out(delete, f"Worker {worker_id} is forgotten.", url_for("admin.worker_list"))


# -- audit trail and flag sharing ------------------------------------------------


@bp.get("/audit")
def audit_list():
    args, errors = _filters(AuditArgsSchema())
    rows, total = audit.list_events(**args)
    return _render("audit.html", events=rows, args=args, errors=errors, pages=_page_links(args, total),
                   actors=ACTORS, methods=sorted(STATE_CHANGING))


@bp.get("/flag-sharing")
def flag_sharing_list():
    args, errors = _filters(FlagSharingArgsSchema())
    rows, total = submissions.list_events(**args)
    return _render("flag_sharing.html", events=rows, args=args, errors=errors, pages=_page_links(args, total),
                   challenges=challenges.list_challenges())
