"""Versioned migrations: `db upgrade` builds the schema, upgrades the previous release's database keeping its rows,
and nothing serves a database whose schema is behind."""

import datetime
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import peewee
import pytest

from ctfhost import schema
from ctfhost.db import database, is_postgresql
from ctfhost.services.tokens import scopes_of
from ctfhost.models import MODELS, AuditEvent, Challenge, FlagSharingEvent, Instance, Setting, Token, Worker

FIXTURES = Path(__file__).parent / "fixtures"
FLASK = [sys.executable, "-m", "flask", "--app", "ctfhost", "ctfhost"]
BEHIND = "the database schema is behind: run `flask --app ctfhost ctfhost db upgrade`"
ALL = ["001_initial", "002_worker_agent_instance", "003_instance_expiry_indexes", "004_instance_worker_status_index",
       "005_challenge_services", "006_instance_endpoints", "007_challenge_status",
       "008_worker_state", "009_image_pulls", "010_token_scopes"]
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)


def previous_release_ddl(backend):
    """The statements ctfhost a5a8e59 (the last release without versioned migrations) ran on an empty database."""
    text = (FIXTURES / f"schema_a5a8e59.{backend}.sql").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("--")]
    return [statement for statement in "\n".join(lines).split(";\n") if statement.strip()]


def drop_all_tables():
    for table in database.get_tables():
        database.execute_sql(f'DROP TABLE "{table}"')


@pytest.fixture
def empty_database(app):
    """The session database with no table at all; afterwards the migrated schema again, session workers kept."""
    kept = list(Worker.select().dicts())
    drop_all_tables()
    yield
    drop_all_tables()
    schema.upgrade()
    if kept:
        Worker.insert_many(kept).execute()


@pytest.fixture
def previous_release_database(empty_database):
    """The tables the previous release created, with rows in every one of them."""
    for statement in previous_release_ddl("postgresql" if is_postgresql() else "sqlite"):
        database.execute_sql(statement)
    assert "agent_instance" not in {column.name for column in database.get_columns("worker")}
    # the previous release's columns only (the model has more: Challenge.create would name them)
    old = dict(id="web-old", name="Old", runtime="fake", image="ctf/old:1", port=80, protocol="http", cpu_count=1,
               memory_mb=512, max_renewals=2, flag_template="flag{{{hex:8}}}", extra_config='{"env": {"A": "1"}}',
               created_at=T0, updated_at=T0)
    columns = ", ".join(f'"{column}"' for column in old)
    marks = ", ".join([database.param] * len(old))
    database.execute_sql(f'INSERT INTO "challenge" ({columns}) VALUES ({marks})', list(old.values()))
    # the previous release's columns only (the model's insert would name the later ones, with their defaults)
    worker = dict(id="old-w", address="10.0.0.7", agent_port=0, runtime="fake", max_instances=20,
                  last_heartbeat_at=T0, registered_at=T0)
    columns = ", ".join(f'"{column}"' for column in worker)
    marks = ", ".join([database.param] * len(worker))
    database.execute_sql(f'INSERT INTO "worker" ({columns}) VALUES ({marks})', list(worker.values()))
    for n, status in ((1, "destroyed"), (2, "running")):
        Instance.create(id=f"00000000-0000-4000-8000-00000000000{n}", team_id="1", team_id_numeric=True,
                        challenge_id="web-old", runtime="fake", status=status, hostname=f"h{n}.web-old.localhost",
                        endpoint=f"http://h{n}.web-old.localhost", worker_id="old-w", flag=f"flag{{{n}}}",
                        created_at=T0, expires_at=T0 + datetime.timedelta(hours=1))
    Setting.create(key="announcement", value='"hello"')
    Token.create(id="00000000-0000-4000-8000-0000000000aa", team_id="team-a", name="laptop", secret_hash="ab" * 32,
                 created_at=T0)
    AuditEvent.create(at=T0, actor="api_key", method="POST", action="challenges.create", target="web-old",
                      status=201, result="ok")
    FlagSharingEvent.create(at=T0, challenge_id="web-old", submitting_team_id="2", owning_team_id="1",
                            instance_id="00000000-0000-4000-8000-000000000002")


def rows(model, fields):
    return sorted(model.select(*fields).tuples())


# columns later migrations added (the previous release's tables lack them)
LATER_COLUMNS = {"worker": {"agent_instance", "state"}, "instance": {"phase"}, "token": {"scopes", "parent_id"},
                 "challenge": {"services", "expose", "status", "version", "description", "metadata"}}
# tables later migrations added
LATER_TABLES = {"instance_endpoint", "image_pull"}
LEGACY_MODELS = [model for model in MODELS if model._meta.table_name not in LATER_TABLES]


def legacy_fields(model):
    later = LATER_COLUMNS.get(model._meta.table_name, set())
    return [field for field in model._meta.sorted_fields if field.name not in later]


def test_the_previous_release_database_is_upgraded_and_keeps_every_row(previous_release_database, app, api):
    before = {model: rows(model, legacy_fields(model)) for model in LEGACY_MODELS}
    assert all(before.values())
    state = schema.status()
    assert (state.legacy, state.applied, state.pending) == (True, [], ALL)

    runner = app.test_cli_runner()
    result = runner.invoke(args=["ctfhost", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "adopted (tables made before versioned migrations): 001_initial" in result.output
    assert "applied: 002_worker_agent_instance" in result.output

    assert {model: rows(model, legacy_fields(model)) for model in LEGACY_MODELS} == before
    assert Worker.get_by_id("old-w").agent_instance is None
    # a token made before scopes keeps every scope but minting tokens
    assert scopes_of(Token.get_by_id("00000000-0000-4000-8000-0000000000aa")) == (
        "instances:read", "instances:write", "submissions", "events")
    assert schema.status().applied == ALL
    assert "instance_one_active_per_team" in {index.name for index in database.get_indexes("instance")}

    again = runner.invoke(args=["ctfhost", "db", "upgrade"])
    assert again.exit_code == 0, again.output
    assert f"nothing to apply: the schema is current ({ALL[-1]})" in again.output
    assert {model: rows(model, legacy_fields(model)) for model in LEGACY_MODELS} == before

    # the old rows serve: the old worker takes an agent identity, the active instance still holds its slot
    response = api.post("/api/v1/workers", json={"id": "old-w", "address": "10.0.0.7", "runtime": "fake",
                                                  "max_instances": 20, "agent_instance": "host-a/boot/1/aaaa"})
    assert response.status_code == 200, response.get_json()
    assert Worker.get_by_id("old-w").agent_instance == "host-a/boot/1/aaaa"
    with pytest.raises(peewee.IntegrityError), database.atomic():
        Instance.create(id="00000000-0000-4000-8000-000000000003", team_id="1", challenge_id="web-old",
                        runtime="fake", status="pending", hostname="h3.web-old.localhost", endpoint="http://x",
                        expires_at=T0)


def model_columns(model):
    return {(field.column_name, field.null, field.primary_key) for field in model._meta.sorted_fields}


def database_columns(table):
    return {(column.name, column.null, column.primary_key) for column in database.get_columns(table)}


def model_indexes(model):
    return {(index._name, bool(index._unique), tuple(field.column_name for field in index._expressions))
            for index in model._meta.fields_to_index()}


def database_indexes(table):
    return {(index.name, bool(index.unique), tuple(index.columns)) for index in database.get_indexes(table)
            if not index.name.endswith("_pkey") and not index.name.startswith("sqlite_autoindex")}


def test_a_fresh_database_gets_exactly_the_schema_the_models_describe(empty_database):
    applied = schema.upgrade()
    assert (applied.adopted, applied.applied) == ([], ALL)
    assert set(database.get_tables()) == {model._meta.table_name for model in MODELS} | {schema.HISTORY_TABLE}
    for model in MODELS:
        table = model._meta.table_name
        assert database_columns(table) == model_columns(model), table
        assert database_indexes(table) == model_indexes(model), table
    partial = {index.name: index.sql for index in database.get_indexes("instance")}["instance_one_active_per_team"]
    assert "WHERE" in partial.upper() and "'pending'" in partial and "'running'" in partial

    again = schema.upgrade()
    assert (again.adopted, again.applied, again.state.applied) == ([], [], ALL)
    for model in MODELS:
        assert database_columns(model._meta.table_name) == model_columns(model)


def test_tables_made_after_the_release_with_agent_instance_adopt_both_migrations(previous_release_database):
    # builds between a5a8e59 and versioned migrations added the column at start
    database.execute_sql('ALTER TABLE "worker" ADD COLUMN "agent_instance" VARCHAR(128)')
    Worker.update(agent_instance="host-b/boot/2/bbbb").execute()
    result = schema.upgrade()
    # 005 came after versioned migrations: no such build has its columns
    assert (result.adopted, result.applied, result.state.applied) == (ALL[:4], ALL[4:], ALL)
    assert Worker.get_by_id("old-w").agent_instance == "host-b/boot/2/bbbb"


def waiting_for_the_upgrade_lock():
    if not is_postgresql():
        time.sleep(4)  # time to start; SQLite's BEGIN IMMEDIATE makes them wait anyway
        return True
    return database.execute_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                ).fetchone()[0] == 2


def test_two_upgrades_at_once_apply_each_migration_once(empty_database):
    # both start while this test holds the lock an upgrade takes, so they run into each other when it is released
    with database.atomic():
        if is_postgresql():
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (schema.UPGRADE_LOCK,))
        upgrades = [subprocess.Popen([*FLASK, "db", "upgrade"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for _ in range(2)]
        deadline = time.monotonic() + 60
        while not waiting_for_the_upgrade_lock():
            assert all(upgrade.poll() is None for upgrade in upgrades), "an upgrade ran while another held the lock"
            assert time.monotonic() < deadline, "the upgrades never waited for the lock"
            time.sleep(0.1)
    outputs = [upgrade.communicate(timeout=120) for upgrade in upgrades]
    assert [upgrade.returncode for upgrade in upgrades] == [0, 0], outputs
    said = sorted(next(line for line in out.splitlines() if line.startswith(("applied", "nothing"))) for out, _ in outputs)
    assert said == ["applied: " + ", ".join(ALL),
                    f"nothing to apply: the schema is current ({ALL[-1]})"]
    assert schema.status().applied == ALL


def test_a_database_shared_with_other_tables_gets_the_schema_beside_them(empty_database):
    database.execute_sql('CREATE TABLE "other_app" ("id" INTEGER NOT NULL PRIMARY KEY)')
    database.execute_sql('INSERT INTO "other_app" VALUES (7)')
    assert schema.status().legacy is False
    result = schema.upgrade()
    assert (result.adopted, result.applied) == ([], ALL)
    assert database.execute_sql('SELECT "id" FROM "other_app"').fetchall() == [(7,)]


def test_tables_older_than_the_first_migration_are_not_adopted(empty_database, app):
    database.execute_sql('CREATE TABLE "worker" ("id" VARCHAR(128) NOT NULL PRIMARY KEY, "address" VARCHAR(255))')
    result = app.test_cli_runner().invoke(args=["ctfhost", "db", "upgrade"])
    assert result.exit_code == 1
    assert "predates ctfhost a5a8e59" in result.output and "worker.agent_port" in result.output
    assert database.get_tables() == ["worker"]  # nothing half done


# -- processes on a database that is behind -------------------------------------------------


@pytest.fixture
def behind(tmp_path, test_env):
    """A SQLite file as the previous release left it, and the environment of processes pointed at it."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:
        for statement in previous_release_ddl("sqlite"):
            connection.execute(statement)
        connection.execute("INSERT INTO \"setting\" VALUES ('announcement', '\"kept\"')")
    connection.close()
    env = dict(os.environ, CTFHOST_DATABASE_URL=f"sqlite:///{path}")
    return path, env


def run(args, env, timeout=60):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def test_gunicorn_refuses_to_serve_a_database_that_is_behind(behind):
    _, env = behind
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed (pip install -e .[serve])")
    result = run([str(gunicorn), "--bind", "127.0.0.1:0", "--workers", "1", "--no-control-socket",
                  "ctfhost:create_app()"], env)
    assert result.returncode != 0
    assert BEHIND in result.stderr


def test_the_development_server_refuses_too(behind):
    _, env = behind
    result = run([sys.executable, "-m", "flask", "--app", "ctfhost", "run", "--port", "0"], env)
    assert result.returncode != 0
    assert BEHIND in result.stderr


def test_the_worker_and_database_commands_refuse_while_upgrade_and_harmless_ones_run(behind):
    path, env = behind
    worker = run([*FLASK, "worker", "--id", "w-behind"], env)
    assert worker.returncode == 1
    assert BEHIND in worker.stderr and "pending: 001_initial, 002_worker_agent_instance" in worker.stderr
    listing = run([*FLASK, "challenges", "list"], env)
    assert listing.returncode == 1 and BEHIND in listing.stderr

    for harmless in (["--help"], ["worker", "--help"], ["plugins"], ["openapi"]):
        result = run([*FLASK, *harmless], env)
        assert result.returncode == 0, (harmless, result.stderr)
    status = run([*FLASK, "db", "status"], env)
    assert status.returncode == 0, status.stderr
    assert "pending: 001_initial, 002_worker_agent_instance" in status.stdout
    assert "`db upgrade` adopts them" in status.stdout and "behind: run" in status.stdout

    upgrade = run([*FLASK, "db", "upgrade"], env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"database ready: sqlite:///{path}" in upgrade.stdout
    assert "applied: 002_worker_agent_instance" in upgrade.stdout
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT value FROM setting").fetchall() == [('"kept"',)]
        assert "agent_instance" in {row[1] for row in connection.execute("PRAGMA table_info(worker)")}
    connection.close()
    assert run([*FLASK, "challenges", "list"], env).returncode == 0
    status = run([*FLASK, "db", "status"], env)
    assert "pending: none" in status.stdout and status.stdout.rstrip().endswith("current")


def test_init_db_builds_an_empty_database_like_db_upgrade(tmp_path, test_env):
    env = dict(os.environ, CTFHOST_DATABASE_URL=f"sqlite:///{tmp_path}/new.sqlite3")
    result = run([*FLASK, "init-db"], env)
    assert result.returncode == 0, result.stderr
    assert "applied: 001_initial, 002_worker_agent_instance" in result.stdout
    status = run([*FLASK, "db", "status"], env)
    assert "applied: 001_initial, 002_worker_agent_instance" in status.stdout and "pending: none" in status.stdout
