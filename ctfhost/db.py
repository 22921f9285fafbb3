"""The peewee database proxy and how a URL becomes a connection."""

import os

import peewee
from playhouse.db_url import connect

database = peewee.DatabaseProxy()

# per connection; WAL is a property of the file, set once in open_database
SQLITE_PRAGMAS = {
    "busy_timeout": 30000,
    "foreign_keys": 1,
    "synchronous": "normal",
}


def default_url(instance_path):
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "ctfhost.sqlite3")


def open_database(url):
    """Create the peewee database for `url` and point the proxy at it."""
    # pooled: a request or job returns its connection instead of closing it,
    # so the next one skips connecting (and SQLite's pragmas)
    pool = {"max_connections": 64, "stale_timeout": 300, "timeout": 30}
    if url.startswith("sqlite:"):
        # IMMEDIATE: a write transaction takes the lock when it begins, so two
        # placements never read the same capacity and both commit.
        db = connect(
            "sqlite+pool:" + url[len("sqlite:"):],
            pragmas=SQLITE_PRAGMAS,
            lock_type="IMMEDIATE",
            check_same_thread=False,  # a pooled connection serves one thread at a time, not always the same
            **pool,
        )
        with db.connection_context():
            db.execute_sql("PRAGMA journal_mode=wal")
    elif url.startswith(("postgres:", "postgresql:")):
        scheme, rest = url.split(":", 1)
        db = connect(f"{scheme}+pool:{rest}", **pool)
    else:
        db = connect(url)
    database.initialize(db)
    return db


def is_sqlite():
    return isinstance(database.obj, peewee.SqliteDatabase)


def is_postgresql():
    return isinstance(database.obj, peewee.PostgresqlDatabase)
