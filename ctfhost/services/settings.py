"""Operator settings kept in the database, with defaults from the environment."""

import json

import peewee
from flask import current_app

from ctfhost.models import Setting
from ctfhost.services.errors import Invalid, require_changes


def _defaults():
    config = current_app.config
    return {
        "default_ttl_seconds": config["CTFHOST_DEFAULT_TTL_SECONDS"],
        "max_instances_per_team": config["CTFHOST_MAX_INSTANCES_PER_TEAM"],
        "launch_cooldown_seconds": config["CTFHOST_LAUNCH_COOLDOWN_SECONDS"],
        "tcp_port": config["CTFHOST_TCP_PUBLIC_PORT"],
        "max_services_per_challenge": config["CTFHOST_MAX_SERVICES_PER_CHALLENGE"],
        "max_endpoints_per_challenge": config["CTFHOST_MAX_ENDPOINTS_PER_CHALLENGE"],
    }


def get_settings():
    values = _defaults()
    for row in Setting.select().where(Setting.key.in_(list(values))):
        values[row.key] = json.loads(row.value)
    return values


def update_settings(changes):
    require_changes(changes)
    known = _defaults()
    with Setting._meta.database.atomic():
        for key, value in changes.items():
            if key not in known:
                raise Invalid({"json": {key: [f"unknown setting; known settings are {', '.join(sorted(known))}"]}})
            Setting.insert(key=key, value=json.dumps(value)).on_conflict(
                conflict_target=[Setting.key], update={Setting.value: json.dumps(value)}
            ).execute()
    return get_settings()


def default_ttl_seconds():
    return get_settings()["default_ttl_seconds"]


def ttl_for(challenge):
    return challenge.ttl_seconds or default_ttl_seconds()


def stored_value(key, create):
    """The JSON value kept under `key`; the first caller stores `create()`, every process then reads the same."""
    row = Setting.get_or_none(Setting.key == key)
    if row is None:
        try:
            # first writer wins
            Setting.insert(key=key, value=json.dumps(create())).on_conflict_ignore().execute()
        except peewee.IntegrityError:
            pass
        row = Setting.get(Setting.key == key)
    return json.loads(row.value)
