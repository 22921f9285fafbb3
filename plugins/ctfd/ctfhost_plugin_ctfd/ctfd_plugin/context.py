"""What the plugin reads from CTFd while serving a request: settings, the ctfhost client, the player's team."""

import os

from CTFd.utils import get_config
from CTFd.utils.user import get_current_user

from . import settings
from .client import CtfhostClient


def current_settings():
    return settings.resolve(get_config, os.environ)


def ctfhost_client():
    """A client with the current settings; unconfigured, its calls raise CtfhostError (status None)."""
    configured = current_settings()
    return CtfhostClient(configured.url, configured.api_key)


def current_account():
    """(logged in, team id): the team id is the user's account_id (users mode: the user; teams mode: the team, or None)."""
    user = get_current_user()
    if user is None:
        return False, None
    return True, user.account_id
