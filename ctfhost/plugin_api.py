"""Everything a ctfhost plugin may import from the core; a promise to plugin authors (docs/plugins.md).

A name listed in ``__all__`` keeps its meaning across minor releases. Changing
or removing one goes through a deprecation path: the old name keeps working
for at least one minor release and warns with ``DeprecationWarning`` first.
Plugins import nothing else from ``ctfhost``; everything else may change.
"""

from flask import current_app

from ctfhost import hookimpl
from ctfhost.api.auth import Blueprint
from ctfhost.hooktypes import (
    CORE_OPTIONS,
    AccessDecision,
    Backend,
    Checked,
    CoreOptions,
    LaunchError,
    RuntimeOptions,
    RuntimeState,
    TransientError,
)
from ctfhost.redis_client import redis_connection
from ctfhost.services.access import encoded_team, keys_file_text
from ctfhost.services.routing import routed_endpoints, routed_instances
from ctfhost.services.settings import stored_value

__all__ = [
    "AccessDecision",
    "Backend",
    "Blueprint",
    "CORE_OPTIONS",
    "Checked",
    "CoreOptions",
    "LaunchError",
    "RuntimeOptions",
    "RuntimeState",
    "TransientError",
    "core_setting",
    "encoded_team",
    "hookimpl",
    "keys_file_text",
    "plugin_setting",
    "redis_connection",
    "routed_endpoints",
    "routed_instances",
    "stored_value",
]


def plugin_setting(prefix, name, default=None):
    """The value of ``CTFHOST_<PREFIX>_<NAME>`` in the current app's config, or `default` when unset or empty."""
    value = current_app.config.get(f"CTFHOST_{prefix}_{name}")
    return default if value in (None, "") else value


def core_setting(name):
    """The value of the core setting ``CTFHOST_<NAME>`` (README's settings table), e.g. ``core_setting("BASE_DOMAIN")``."""
    return current_app.config.get(f"CTFHOST_{name}")
