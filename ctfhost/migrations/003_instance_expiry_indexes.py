"""003: indexes for the expiry sweep (instance by status and expiry; active instances by expiry)."""


def migrate(migrator, database, *, fake=False):
    migrator.sql('CREATE INDEX "instance_status_expires_at" ON "instance" ("status", "expires_at")')
    migrator.sql(
        'CREATE INDEX "instance_active_expires_at" ON "instance" ("expires_at") '
        "WHERE (\"status\" IN ('pending', 'running'))"
    )


def rollback(migrator, database, *, fake=False):
    migrator.sql('DROP INDEX "instance_active_expires_at"')
    migrator.sql('DROP INDEX "instance_status_expires_at"')
