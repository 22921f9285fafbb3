"""004: an index on instance (worker_id, status): placement counts each worker's active instances from it alone."""


def migrate(migrator, database, *, fake=False):
    migrator.sql('CREATE INDEX "instance_worker_id_status" ON "instance" ("worker_id", "status")')


def rollback(migrator, database, *, fake=False):
    migrator.sql('DROP INDEX "instance_worker_id_status"')
