"""The application factory: config, database, API, plugins and CLI."""

import logging

import click
from flask import Flask
from flask.cli import run_command

from werkzeug.middleware.proxy_fix import ProxyFix

from ctfhost import __version__, config as ctfhost_config
from ctfhost.admin.pages import bp as admin_pages
from ctfhost.api.server import register_api
from ctfhost.builtin import forward_auth
from ctfhost.cli import command_group
from ctfhost.db import database, default_url, open_database
from ctfhost.plugins import Plugins
from ctfhost.schema import check as check_schema

API_DEFAULTS = {
    "API_TITLE": "ctfhost",
    "API_VERSION": __version__,
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    "OPENAPI_SWAGGER_UI_URL": "/docs/assets/",
    "OPENAPI_SWAGGER_UI_CONFIG": {"persistAuthorization": True, "tryItOutEnabled": True},
    "API_SPEC_OPTIONS": {
        "info": {
            "description": "Per-team instances of CTF challenges. Control-plane routes need the `x-api-key` header.",
        },
    },
    "JSON_SORT_KEYS": True,
}

# the core's own features written as plugins: {plugin name: module}
BUILTIN_PLUGINS = {"ctfhost.forward_auth": forward_auth}


def _serving():
    """False while the `flask` command line builds the app for one of its commands (other than `flask run`)."""
    command = click.get_current_context(silent=True)
    return command is None or command.command is run_command


def create_app(config=None):
    """Build the ctfhost Flask app; `config` overrides settings read from the environment."""
    app = Flask("ctfhost")
    app.config.update(API_DEFAULTS)
    app.config.update(ctfhost_config.from_environment())
    app.config.update(config or {})

    logging.basicConfig(level=app.config.get("CTFHOST_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if app.config["CTFHOST_PROXY_COUNT"]:
        count = app.config["CTFHOST_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)

    url = app.config["CTFHOST_DATABASE_URL"] or default_url(app.instance_path)
    app.config["CTFHOST_DATABASE_URL"] = url
    open_database(url)
    # No DDL here: `flask ctfhost db upgrade` migrates. A served app (gunicorn,
    # `flask run`, a worker's job processes, tests) refuses a schema that is
    # behind; for the other `flask` commands the command decides
    # (cli.CommandGroup), since `db upgrade` must run on exactly such a database.
    if _serving():
        with database.connection_context():
            check_schema()

    # the worker agent builds the app of each RQ worker process it spawns with this
    app.extensions["ctfhost.app_factory"] = create_app

    disabled = (app.config.get("CTFHOST_DISABLED_PLUGINS") or "").split(",")
    app.extensions["ctfhost.plugins"] = Plugins(disabled=disabled, builtins=BUILTIN_PLUGINS)

    # peewee connects on the first query, so requests that never touch the
    # database (a cached Traefik config) never open a connection
    @app.teardown_request
    def _close(exc):
        if not database.is_closed():
            database.close()

    register_api(app)
    app.register_blueprint(admin_pages)

    group = command_group()
    app.extensions["ctfhost.plugins"].register_commands(group)
    app.cli.add_command(group)
    return app
