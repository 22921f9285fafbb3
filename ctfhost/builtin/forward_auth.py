"""The forward-auth policy: access links, instance-bound cookies, and the pages a turned-away browser sees.

The core's `authorize` implementation, registered `trylast` (as plugin
`ctfhost.forward_auth`) so an installed plugin's policy wins.
"""

import urllib.parse

from flask import current_app, render_template
from werkzeug.http import dump_cookie

from ctfhost import hookimpl
from ctfhost.hooktypes import AccessDecision
from ctfhost.services import access

HTML = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}


def scoreboard_url():
    """Where a turned-away browser goes back to: CTFHOST_PUBLIC_SCOREBOARD_URL, else the sign-in URL's site; or None."""
    configured = current_app.config.get("CTFHOST_PUBLIC_SCOREBOARD_URL")
    if configured:
        return configured
    signin = urllib.parse.urlsplit(current_app.config.get("CTFHOST_AUTH_SIGNIN_URL") or "")
    if signin.scheme in ("http", "https") and signin.netloc:
        return f"{signin.scheme}://{signin.netloc}/"
    return None


def page(title, text):
    """A short HTML page for the browser that forward-auth turned away, with a link back to the scoreboard."""
    return render_template("instance_page.html", title=title, text=text, back_url=scoreboard_url())


def _cookie_header(instance, proto):
    """Set-Cookie for a fresh cookie of this instance and team."""
    value, max_age = access.cookie_for(instance)
    # no Domain attribute: the cookie stays on this instance's host only
    return dump_cookie(
        access.COOKIE_NAME, value, max_age=max_age, path="/", secure=proto == "https", httponly=True, samesite="Lax"
    )


def _redeem(request, instance, query, proto):
    params = urllib.parse.parse_qs(query)
    try:
        access.redeem_ticket(params.get("ticket", [""])[0], instance)
    except access.AccessDenied as exc:
        return AccessDecision.deny(401, page("Access link refused", str(exc)), **HTML)
    cookie = _cookie_header(instance, proto)
    # absolute, on the instance's own host: Traefik resolves a relative
    # Location against the forward-auth address, i.e. the API's host
    # built from the instance, never from the raw X-Forwarded-Host (its
    # lookup ignores what follows a colon: "host:80@evil.example" matched)
    location = access.instance_url(instance, proto) + access.safe_next(params.get("next", ["/"])[0])
    return AccessDecision.deny(302, "", **{"Location": location, "Set-Cookie": cookie, "Cache-Control": "no-store"})


@hookimpl(trylast=True)
def authorize(request, instance):
    """Let the owning team in: access link -> cookie bound to the instance -> 2xx."""
    uri = request.headers.get("X-Forwarded-Uri") or "/"
    proto = (request.headers.get("X-Forwarded-Proto") or "http").lower()
    path, _, query = uri.partition("?")
    if path == access.ACCESS_PATH:
        return _redeem(request, instance, query, proto)
    cookie = request.cookies.get(access.COOKIE_NAME)
    if cookie and access.check_cookie(cookie, instance):
        headers = {"X-Ctfhost-Team": instance.team_id, "X-Ctfhost-Instance": instance.id}
        if not access.cookie_is_current(cookie):
            # minted under an older key (a rotation is going on): the browser gets one under the newest
            headers["Set-Cookie"] = _cookie_header(instance, proto)
        return AccessDecision.allow(**headers)
    signin = current_app.config.get("CTFHOST_AUTH_SIGNIN_URL")
    if signin:
        original = f"{proto}://{request.headers.get('X-Forwarded-Host', '')}{uri}"
        location = signin.replace("{instance_id}", urllib.parse.quote(instance.id, safe="")).replace(
            "{next}", urllib.parse.quote(original, safe="")
        )
        return AccessDecision.deny(302, "", Location=location, **{"Cache-Control": "no-store"})
    return AccessDecision.deny(
        401,
        page(
            "This instance is private",
            "Only the team that launched it can open it. Open it from the scoreboard (its Open button), "
            "or ask the API for an access link: POST /api/v1/instances/{id}/access.",
        ),
        **HTML,
    )
