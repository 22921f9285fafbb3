"""What the plugin reads from CTFd while serving a request: settings, the ctfhost client, the player's team."""

import os

from CTFd.utils import get_config
from CTFd.utils.config import is_teams_mode
from CTFd.utils.user import get_current_user

from . import accounts, settings
from .client import CtfhostClient


def current_settings():
    return settings.resolve(get_config, os.environ)


def ctfhost_client(timeout=None):
    """A client with the current settings; unconfigured, its calls raise CtfhostError (status None)."""
    configured = current_settings()
    if timeout is None:
        return CtfhostClient(configured.url, configured.api_key)
    return CtfhostClient(configured.url, configured.api_key, timeout=timeout)


def current_account():
    """(logged in, ctfhost team id): "user-<id>" for a user, the team's number in teams mode (None without a team).

    See accounts.py: the kind is part of the id, so a mode switch hands no
    instance to another account.
    """
    user = get_current_user()
    if user is None:
        return False, None
    return True, accounts.ctfhost_team_id(is_teams_mode(), user.id, user.team_id, admin=user.type == "admin")
