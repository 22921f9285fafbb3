"""ctfhost proxy plugin for Traefik v3: dynamic configuration served to the HTTP provider."""

from ctfhost.plugin_api import hookimpl

from ctfhost_plugin_traefik import config_cache, readiness
from ctfhost_plugin_traefik.commands import traefik_group
from ctfhost_plugin_traefik.routes import blp
from ctfhost_plugin_traefik.settings import options

__version__ = "0.1.0"


@hookimpl
def register_blueprints(app, api):
    with app.app_context():
        options()  # a wrong CTFHOST_TRAEFIK_* value stops the app here, not at Traefik's first poll
    api.register_blueprint(blp)


@hookimpl
def register_commands(cli):
    cli.add_command(traefik_group)


@hookimpl
def route(instance, action):
    # The config is rendered from the database; every web process re-reads
    # this one instance and replaces its fragment (config_cache.py).
    config_cache.invalidate(instance.id)


@hookimpl
def wait_routed(instance, timeout):
    readiness.wait_until_loaded(instance, timeout)
