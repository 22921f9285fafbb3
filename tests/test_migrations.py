"""A database made by an older ctfhost is upgraded in place, data kept."""

import peewee
import pytest

from ctfhost.db import database
from ctfhost.models import MODELS, Challenge, Instance, create_tables


@pytest.fixture
def legacy_schema(app):
    """The instance and challenge tables as the first release made them, with a row each."""
    database.drop_tables(MODELS, safe=True)
    database.execute_sql(
        'CREATE TABLE "challenge" ("id" VARCHAR(63) PRIMARY KEY, "name" VARCHAR(200) NOT NULL, '
        '"runtime" VARCHAR(64) NOT NULL, "image" VARCHAR(500) NOT NULL, "port" INTEGER NOT NULL, '
        '"cpu_count" INTEGER NOT NULL, "memory_mb" INTEGER NOT NULL, "ttl_seconds" INTEGER, '
        '"extra_config" TEXT NOT NULL, "created_at" TIMESTAMP NOT NULL, "updated_at" TIMESTAMP NOT NULL)'
    )
    database.execute_sql(
        'CREATE TABLE "instance" ("id" VARCHAR(36) PRIMARY KEY, "team_id" VARCHAR(64) NOT NULL, '
        '"team_id_numeric" BOOLEAN NOT NULL, "challenge_id" VARCHAR(63) NOT NULL, "runtime" VARCHAR(64) NOT NULL, '
        '"status" VARCHAR(16) NOT NULL, "hostname" VARCHAR(255) NOT NULL UNIQUE, "endpoint" VARCHAR(300) NOT NULL, '
        '"backend" VARCHAR(300), "worker_id" VARCHAR(128), "error" TEXT, "created_at" TIMESTAMP NOT NULL, '
        '"started_at" TIMESTAMP, "expires_at" TIMESTAMP NOT NULL, "ended_at" TIMESTAMP)'
    )
    database.execute_sql(
        "INSERT INTO \"challenge\" VALUES ('web-old', 'Old', 'fake', 'i', 80, 1, 512, NULL, '{}', "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    database.execute_sql(
        "INSERT INTO \"instance\" (\"id\", \"team_id\", \"team_id_numeric\", \"challenge_id\", \"runtime\", \"status\", "
        "\"hostname\", \"endpoint\", \"created_at\", \"expires_at\") VALUES ('00000000-0000-4000-8000-000000000001', "
        "'1', true, 'web-old', 'fake', 'destroyed', 'a.web-old.localhost', 'http://a.web-old.localhost', "
        "'2026-01-01 00:00:00', '2026-01-01 01:00:00')"
    )
    yield
    database.drop_tables(MODELS, safe=True)
    create_tables()


def test_old_tables_gain_the_new_columns_and_keep_their_rows(legacy_schema):
    create_tables()
    create_tables()  # and again: nothing left to do
    columns = {c.name for c in database.get_columns("instance")}
    assert {"flag", "protocol", "renewals"} <= columns
    assert {"flag_template", "max_renewals", "protocol"} <= {c.name for c in database.get_columns("challenge")}
    old = Instance.get_by_id("00000000-0000-4000-8000-000000000001")
    assert (old.team, old.protocol, old.renewals, old.flag) == (1, "http", 0, None)
    assert Challenge.get_by_id("web-old").protocol == "http"
    indexes = {index.name for index in database.get_indexes("instance")}
    assert "instance_flag" in indexes and "instance_one_active_per_team" in indexes
    # the index is on the real column: a lookup by flag uses it and finds rows
    Instance.update(flag="flag{x}").execute()
    assert Instance.select().where(Instance.flag == "flag{x}").count() == 1
    with pytest.raises(peewee.IntegrityError):
        with database.atomic():
            for n in (2, 3):
                Instance.create(id=f"00000000-0000-4000-8000-00000000000{n}", team_id="1", challenge_id="web-old",
                                runtime="fake", status="running", hostname=f"{n}.web-old.localhost",
                                endpoint="http://x", expires_at=old.expires_at)
