"""The versioned schema: which migrations a database has, applying the pending ones, refusing to serve when behind."""

import dataclasses
import logging
from pathlib import Path

import peewee
from peewee_migrate import Migrator, Router

from ctfhost.db import database, is_postgresql

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
HISTORY_TABLE = "migratehistory"
UPGRADE_COMMAND = "flask --app ctfhost ctfhost db upgrade"
# the tables releases before versioned migrations created at start (frozen: those releases do not change)
LEGACY_TABLES = {"challenge", "worker", "instance", "setting", "token", "audit_event", "flag_sharing_event"}
# the PostgreSQL advisory lock two `db upgrade` runs take, so the second waits and finds nothing to do
# (SQLite: the transaction begins IMMEDIATE, which serialises them already)
UPGRADE_LOCK = 0x63746668  # "ctfh"


class SchemaBehind(RuntimeError):
    """The database lacks migrations this ctfhost needs: nothing may serve it until `db upgrade`."""

    def __init__(self, pending):
        self.pending = list(pending)
        super().__init__(f"the database schema is behind: run `{UPGRADE_COMMAND}` (pending: {', '.join(self.pending)})")


class SchemaUnknown(RuntimeError):
    """Tables made before versioned migrations that match no migration's schema: nothing can be adopted safely."""


@dataclasses.dataclass
class Status:
    applied: list  # migration names recorded in the history, in order
    pending: list  # shipped migrations not applied yet
    unknown: list  # recorded names this ctfhost does not ship (a newer release migrated the database)
    legacy: bool  # ctfhost tables made before versioned migrations, without a history yet

    @property
    def current(self):
        return not self.pending


def _router():
    return Router(database, migrate_dir=MIGRATIONS_DIR, migrate_table=HISTORY_TABLE, logger=log)


def _applied():
    if not database.table_exists(HISTORY_TABLE):
        return []
    history = peewee.Table(HISTORY_TABLE, ("id", "name")).bind(database)
    return [row["name"] for row in history.select(history.name).order_by(history.id).dicts()]


def status():
    """Where the database stands; reads only (no DDL), so serving processes may call it."""
    shipped = _router().todo
    applied = _applied()
    done = set(applied)
    legacy = not database.table_exists(HISTORY_TABLE) and bool(LEGACY_TABLES & set(database.get_tables()))
    return Status(
        applied=applied,
        pending=[name for name in shipped if name not in done],
        unknown=[name for name in applied if name not in shipped],
        legacy=legacy,
    )


def check():
    """Raise SchemaBehind when a migration is pending: the app and the workers never run DDL themselves."""
    state = status()
    if state.unknown:
        log.warning("the database has migrations this ctfhost does not know (%s): a newer release migrated it",
                    ", ".join(state.unknown))
    if state.pending:
        raise SchemaBehind(state.pending)
    return state


def _adoptable(router):
    """The migrations whose schema a database made before versioned migrations already has.

    Those releases created tables at start (the last one: a5a8e59, the schema
    of 001), and builds after it also added newer columns. Each migration is
    replayed without touching the database; the longest prefix whose tables
    and columns all exist is what the database already holds.
    """
    existing = {table: {column.name for column in database.get_columns(table)} for table in database.get_tables()}
    migrator = Migrator(database)
    adoptable, missing = [], []
    for name in router.todo:
        router.run_one(name, migrator, fake=True)
        missing = [
            f"{model._meta.table_name}.{field.column_name}"
            for model in migrator.orm
            for field in model._meta.sorted_fields
            if field.column_name not in existing.get(model._meta.table_name, ())
        ]
        if missing:
            break
        adoptable.append(name)
    if not adoptable:
        raise SchemaUnknown(
            "the database has tables but no migration history, and lacks columns of the first migration "
            f"({', '.join(missing)}): it predates ctfhost a5a8e59; start that release once against it, then upgrade"
        )
    return adoptable


@dataclasses.dataclass
class Upgrade:
    adopted: list  # migrations recorded as applied because a pre-migrations database already had their schema
    applied: list  # migrations run now
    state: Status  # where the database stands afterwards


def upgrade():
    """Apply every pending migration in one transaction; adopt tables made before versioned migrations first."""
    router = _router()
    adopted = []
    with database.atomic():
        if is_postgresql():
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK,))
        if status().legacy:
            adopted = _adoptable(router)
            for name in adopted:
                router.model.create(name=name)
            log.info("adopted tables made before versioned migrations as %s", ", ".join(adopted))
        applied = router.run()
    return Upgrade(adopted=adopted, applied=applied, state=status())
