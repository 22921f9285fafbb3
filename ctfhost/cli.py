"""The `flask ctfhost` command group."""

import json
import os
import uuid

import click
import yaml
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError

from ctfhost import mcp_server, schema
from ctfhost.api.challenges import ChallengeSchema
from ctfhost.api.instances import InstanceSchema
from ctfhost.db import database
from ctfhost.plugins import get_plugins
from ctfhost.services import access
from ctfhost.services.challenges import import_challenges, list_challenges
from ctfhost.services.compose import ComposeError, challenge_from_compose
from ctfhost.services.errors import Invalid, ServiceError
from ctfhost.services.instances import destroy_instance, list_instances
from ctfhost.worker.agent import Agent

ctfhost_group = AppGroup("ctfhost", help="Operate ctfhost: workers, plugins, challenges, instances.")


def _fail(exc):
    if isinstance(exc, Invalid):
        detail = json.dumps(exc.errors, indent=2, sort_keys=True, default=str)
        raise click.ClickException(f"{exc.message}\n{detail}")
    raise click.ClickException(exc.message)


def _table(rows, columns):
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row.get(c, "") if row.get(c) is not None else "-").ljust(widths[c]) for c in columns))


@ctfhost_group.command("worker")
@click.option("--id", "worker_id", help="Worker id (default: CTFHOST_WORKER_ID or the host name).")
@click.option("--address", help="Address the proxy uses to reach this host (default: CTFHOST_WORKER_ADDRESS or 127.0.0.1).")
@click.option("--agent-port", type=int, help="Port of this agent, reported to the API (default 0: none).")
@click.option("--runtime", "runtimes", multiple=True, help="Runtime to serve; repeat for several (default: every installed runtime).")
@click.option("--max-instances", type=click.IntRange(min=0), help="Capacity (default: CTFHOST_WORKER_MAX_INSTANCES or 50).")
@click.option("--concurrency", type=click.IntRange(min=1, max=64), help="Jobs run at once (default: CTFHOST_WORKER_CONCURRENCY or 4).")
def worker_command(worker_id, address, agent_port, runtimes, max_instances, concurrency):
    """Run the worker agent: register, heartbeat, expire, reconcile, run jobs."""
    names = [name for value in runtimes for name in value.split(",") if name]
    agent = Agent(
        current_app._get_current_object(),
        worker_id=worker_id,
        address=address,
        agent_port=agent_port,
        runtimes=names or None,
        max_instances=max_instances,
        concurrency=concurrency,
    )
    try:
        agent.run()
    except ServiceError as exc:
        _fail(exc)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@ctfhost_group.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(as_json):
    """List loaded plugins, their versions and hooks."""
    plugins = get_plugins()
    rows = plugins.describe()
    if as_json:
        click.echo(json.dumps({"plugins": rows, "runtimes": plugins.runtimes(), "disabled": plugins.disabled}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']} {row['version'] or ''}".rstrip())
        click.echo(f"    hooks: {', '.join(row['hooks']) or '-'}")
    click.echo(f"runtimes: {', '.join(plugins.runtimes()) or 'none'}")
    if plugins.disabled:
        click.echo(f"disabled: {', '.join(plugins.disabled)}")


# -- database schema ---------------------------------------------------------

db_group = AppGroup("db", help="The database schema: versioned migrations.")
ctfhost_group.add_command(db_group)


def _names(names):
    return ", ".join(names) or "none"


@db_group.command("upgrade")
def db_upgrade():
    """Apply the pending migrations (safe to run again); adopts tables made before versioned migrations."""
    try:
        with database.connection_context():
            result = schema.upgrade()
    except schema.SchemaUnknown as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"database ready: {_safe_url(current_app.config['CTFHOST_DATABASE_URL'])}")
    if result.adopted:
        click.echo(f"adopted (tables made before versioned migrations): {_names(result.adopted)}")
    if result.applied:
        click.echo(f"applied: {_names(result.applied)}")
    else:
        click.echo(f"nothing to apply: the schema is current ({_names(result.state.applied[-1:])})")


@db_group.command("status")
def db_status():
    """Show the applied and the pending migrations."""
    with database.connection_context():
        state = schema.status()
    click.echo(f"database: {_safe_url(current_app.config['CTFHOST_DATABASE_URL'])}")
    click.echo(f"applied: {_names(state.applied)}")
    click.echo(f"pending: {_names(state.pending)}")
    if state.unknown:
        click.echo(f"unknown (applied by a newer ctfhost): {_names(state.unknown)}")
    if state.legacy:
        click.echo("tables made before versioned migrations: `db upgrade` adopts them")
    click.echo("current" if state.current else f"behind: run `{schema.UPGRADE_COMMAND}`")


@ctfhost_group.command("init-db")
@click.pass_context
def init_db_command(ctx):
    """Create or upgrade the database schema: an alias of `db upgrade`."""
    ctx.invoke(db_upgrade)


def _safe_url(url):
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@ctfhost_group.command("openapi")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default: stdout).")
def openapi_command(output):
    """Print the OpenAPI spec as JSON."""
    api = current_app.extensions["ctfhost.api"]
    output.write(json.dumps(api.spec.to_dict(), indent=2, sort_keys=True) + "\n")


# -- challenges --------------------------------------------------------------

challenges_group = AppGroup("challenges", help="Register and list challenges.")
ctfhost_group.add_command(challenges_group)


@challenges_group.command("import")
@click.argument("path", type=click.File("r"))
def challenges_import(path):
    """Create or update challenges from a YAML or JSON list (all or nothing)."""
    try:
        data = yaml.safe_load(path.read())
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path.name}: not valid YAML or JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("challenges"), list):
        data = data["challenges"]
    if not isinstance(data, list):
        raise click.ClickException(f"{path.name}: expected a list of challenges")
    # an entry naming a `compose` file (relative to this file) is that file's challenge, with the entry's id,
    # name and runtime, and any other field of the entry over it
    base = os.path.dirname(os.path.abspath(path.name)) if path.name != "<stdin>" else os.getcwd()
    for position, entry in enumerate(data):
        if isinstance(entry, dict) and "compose" in entry:
            entry = dict(entry)
            compose = os.path.join(base, str(entry.pop("compose")))
            missing = [key for key in ("id", "name") if key not in entry]
            if missing:
                raise click.ClickException(f"{path.name}: entry {position} names a compose file but no {', '.join(missing)}")
            built = _compose_challenge(compose, entry["id"], entry["name"], entry.get("runtime", "docker"),
                                       where=f"{path.name}: entry {position} ({compose})")
            built.update(entry)
            data[position] = built
    _import_items(path.name, data)


def _compose_challenge(path, challenge_id, name, runtime, where=None):
    """The challenge of a compose file, or a ClickException listing every problem (nothing is created)."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise click.ClickException(f"{where or path}: cannot read {path}: {exc.strerror}") from None
    try:
        return challenge_from_compose(text, challenge_id, name, runtime)
    except ComposeError as exc:
        detail = "\n".join(f"  - {problem}" for problem in exc.problems)
        raise click.ClickException(f"{where or path}: cannot be a challenge; nothing was imported:\n{detail}") from None


@challenges_group.command("import-compose")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--id", "challenge_id", required=True, help="The challenge's id (a slug).")
@click.option("--name", required=True, help="The challenge's name.")
@click.option("--runtime", default="docker", show_default=True, help="The runtime that runs it.")
def challenges_import_compose(path, challenge_id, name, runtime):
    """Create or update a challenge from a docker-compose file (its services; x-ctfhost says what players reach)."""
    data = _compose_challenge(path, challenge_id, name, runtime)
    _import_items(path, [data])


def _import_items(source, data):
    try:
        items = ChallengeSchema(many=True).load(data)
    except ValidationError as exc:
        detail = json.dumps(exc.messages, indent=2, sort_keys=True, default=str)
        raise click.ClickException(
            f"{source}: invalid challenges (by position in the list); nothing was imported:\n{detail}"
        ) from None
    with database.connection_context():
        try:
            created, updated = import_challenges(items)
        except ServiceError as exc:
            _fail(exc)
    click.echo(f"imported {len(items)} challenge(s): {len(created)} created, {len(updated)} updated")


@challenges_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def challenges_list(as_json):
    """List challenges."""
    with database.connection_context():
        rows = ChallengeSchema(many=True).dump(list_challenges())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table(rows, ["id", "name", "runtime", "image", "port", "cpu_count", "memory_mb", "ttl_seconds"])


# -- instances ---------------------------------------------------------------

instances_group = AppGroup("instances", help="List and destroy instances.")
ctfhost_group.add_command(instances_group)


@instances_group.command("list")
@click.option("--team", "team_id")
@click.option("--challenge", "challenge_id")
@click.option("--status", type=click.Choice(["pending", "running", "destroyed", "expired", "error"]))
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def instances_list(team_id, challenge_id, status, limit, as_json):
    """List instances, newest first."""
    with database.connection_context():
        rows, total = list_instances(team_id=team_id, challenge_id=challenge_id, status=status, limit=limit)
        rows = InstanceSchema(many=True).dump(rows)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table(rows, ["id", "team_id", "challenge_id", "status", "endpoint", "expires_at"])
        if total > len(rows):
            click.echo(f"({len(rows)} of {total} shown)")


@instances_group.command("destroy")
@click.argument("instance_id")
def instances_destroy(instance_id):
    """Stop an instance and queue the removal of its resources."""
    try:
        uuid.UUID(instance_id)
    except ValueError:
        raise click.ClickException(f"{instance_id!r} is not an instance id (a UUID)") from None
    with database.connection_context():
        try:
            instance = destroy_instance(instance_id)
        except ServiceError as exc:
            _fail(exc)
    click.echo(f"instance {instance.id} is {instance.status}; its resources are being removed")


# -- MCP for agent harnesses -----------------------------------------------------


@ctfhost_group.command("mcp")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=mcp_server.DEFAULT_PORT, show_default=True,
              help="Port to listen on.")
def mcp_command(host, port):
    """Serve MCP (streamable HTTP) at /api/v1/mcp for agent harnesses, beside the API.

    A companion ASGI process: route /api/v1/mcp to it and the rest to the API.
    It needs the optional MCP SDK (pip install 'ctfhost[mcp]').
    """
    try:
        mcp_server.serve(current_app._get_current_object(), host=host, port=port)
    except mcp_server.MissingDependency as exc:
        raise click.ClickException(str(exc)) from None


# -- access -------------------------------------------------------------------

access_group = AppGroup("access", help="The keys of the instance access cookies (shared with the proxy).")
ctfhost_group.add_command(access_group)


def _show_keys(ring):
    rows = [{"kid": key["kid"], "created_at": key["created_at"], "mints": "yes" if key["kid"] == ring["mint"] else ""}
            for key in ring["keys"]]
    _table(rows, ["kid", "created_at", "mints"])


@access_group.command("keys")
def access_keys():
    """List the cookie keys (ids and ages, never the keys): which one mints, which are still accepted."""
    with database.connection_context():
        _show_keys(access.keyring(fresh=True))


@access_group.command("rotate-key")
@click.option("--finish", is_flag=True, help="End the rotation: only the newest key is accepted from now on.")
def access_rotate_key(finish):
    """Start a key rotation (a new key mints cookies; older ones are still accepted), or --finish it."""
    with database.connection_context():
        ring = access.finish_rotation() if finish else access.rotate_keys()
    _show_keys(ring)
    if finish:
        click.echo("cookies under other keys are refused from now on; players open their instance again from the scoreboard")
    else:
        click.echo("new cookies use the new key; a cookie under an older key still works, and its next request gets "
                   "a fresh one, until `rotate-key --finish`")
    click.echo("the proxy reads the keys from its keys file: `flask ctfhost traefik run` rewrites it within seconds; "
               "where Traefik runs on its own, run `flask ctfhost traefik middleware` there", err=True)


# commands that run whatever the schema's state: `db upgrade` must run on a
# database that is behind, and these others read no table
SCHEMA_FREE_COMMANDS = {"db", "init-db", "plugins", "openapi"}


class CommandGroup(AppGroup):
    """The `ctfhost` group: a command that uses the database refuses to run while its schema is behind.

    create_app leaves the check to the command line (it cannot know the
    command when the `flask` CLI builds it); here the command is known.
    """

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        asks_help = any(arg in ctx.help_option_names for arg in rest)
        if name not in SCHEMA_FREE_COMMANDS and not asks_help and not ctx.resilient_parsing:
            try:
                with database.connection_context():
                    schema.check()
            except schema.SchemaBehind as exc:
                raise click.ClickException(str(exc)) from None
        return name, command, rest


def command_group():
    """A fresh `ctfhost` group for one app, so plugin commands stay with the app that loaded them."""
    group = CommandGroup(ctfhost_group.name, help=ctfhost_group.help)
    for name, command in ctfhost_group.commands.items():
        group.add_command(command, name)
    return group
