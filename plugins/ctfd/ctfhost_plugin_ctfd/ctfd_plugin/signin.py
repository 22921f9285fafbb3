"""Sign-in for forward-auth: may this CTFd session enter that instance, and where does the browser go?

ctfhost's forward-auth sends a browser without access to
``CTFHOST_AUTH_SIGNIN_URL``, here ``<CTFd>/plugins/ctfhost/access?instance=
{instance_id}&next={next}``, from any HTTP endpoint of the instance. CTFd
checks its own session, and only for the team owning the instance asks
ctfhost for a single-use access link to the endpoint `next` is on and
redirects there. CTFd's session cookie stays on CTFd's host: the instance
only ever sees ctfhost's instance-bound cookie.
"""

import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Optional

from . import messages
from .client import CtfhostError
from .player import ACTIVE, MAIN, instance_endpoints, same_team


@dataclass(frozen=True)
class Decision:
    """Either a redirect (``location``) or a page to show (``title``, ``message``) with ``status``."""

    status: int
    location: Optional[str] = None
    title: Optional[str] = None
    message: Optional[str] = None

    @property
    def is_redirect(self):
        return self.location is not None


def redirect(location):
    return Decision(302, location=location)


def page(status, title, message):
    return Decision(status, title=title, message=message)


def _split(url):
    """urlsplit, or None for what it cannot parse (an unclosed "[" in the host)."""
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:
        return None


def _hostname(url):
    """The lowercase host name of a URL; "" when it has none."""
    parts = _split(url) if isinstance(url, str) else None
    return (parts.hostname or "") if parts else ""


def instance_path(next_url, endpoint):
    """The path (and query) of `next_url` to land on inside the instance; "/" when it is not on the instance's host.

    `next_url` is what forward-auth sent: the full original URL. A bare path
    (the Open button sends "/") is accepted too.
    """
    if not next_url or not isinstance(next_url, str) or any(ord(c) < 32 for c in next_url) or "\\" in next_url:
        return "/"
    target = _split(next_url)
    if target is None:
        return "/"
    if target.scheme or target.netloc:
        if target.scheme not in ("http", "https") or not target.hostname or target.hostname != _hostname(endpoint):
            return "/"
    path = target.path or "/"
    if not path.startswith("/") or path.startswith("//"):
        return "/"
    return path + (f"?{target.query}" if target.query else "")


def signin_target(next_url, instance):
    """(endpoint name, path): which HTTP endpoint of the instance `next_url` is on, and the path to land on there.

    Each HTTP endpoint has a host of its own, and an access link opens one
    host only, so the link asked for is the one of the endpoint whose host
    `next_url` names. A bare path (the Open button of main sends "/") is on
    main. A URL on any other host, or on a TCP endpoint's, leads to main's
    "/": the browser is never sent to a host that is not the instance's.
    """
    if not isinstance(next_url, str):
        return MAIN, "/"
    target = _split(next_url)
    if target is None:
        return MAIN, "/"
    if not (target.scheme or target.netloc):
        return MAIN, instance_path(next_url, None)
    for endpoint in instance_endpoints(instance):
        if endpoint["protocol"] != "tcp" and target.hostname and _hostname(endpoint["url"]) == target.hostname:
            return endpoint["name"], instance_path(next_url, endpoint["url"])
    return MAIN, "/"


def login_location(login_url, return_to):
    """CTFd's login page, coming back to `return_to` (a path on CTFd) afterwards."""
    separator = "&" if "?" in login_url else "?"
    return f"{login_url}{separator}{urllib.parse.urlencode({'next': return_to})}"


def decide(client, instance_id, next_url, logged_in, team_id, login_url, return_to):
    """Where a browser asking to enter `instance_id` goes.

    :param client: a CtfhostClient with the API key.
    :param logged_in: whether the CTFd session belongs to a user.
    :param team_id: the user's ``account_id`` (None in teams mode without a team).
    :param login_url: CTFd's login page; :param return_to: this request's path and query on CTFd.
    """
    if not logged_in:
        return redirect(login_location(login_url, return_to))
    try:
        instance_id = str(uuid.UUID(str(instance_id)))
    except ValueError:
        return page(400, "Broken link", "This sign-in link does not name an instance. Open the instance from its challenge.")
    if team_id is None:
        return page(403, "No team", messages.NO_TEAM)
    try:
        instance = client.get_instance(instance_id)
    except CtfhostError as exc:
        if exc.status == 404:
            return page(404, "No such instance", messages.GONE)
        return page(503, "Try again later", messages.explain(exc, "access").message)
    if not same_team(instance, team_id):
        return page(
            403,
            "Not your instance",
            "This instance belongs to another team. Open your own instance from the challenge window.",
        )
    if instance.get("status") not in ACTIVE:
        return page(410, "Instance ended", messages.ENDED)
    try:
        endpoint, path = signin_target(next_url, instance)
        link = client.access_link(instance_id, path, endpoint)
    except CtfhostError as exc:
        problem = messages.explain(exc, "access")
        return page(410 if problem.code == "ended" else problem.status, "Cannot open the instance", problem.message)
    return redirect(link["url"])
