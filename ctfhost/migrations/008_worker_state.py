"""008: worker.state, whether placement may choose it (ready) or not (cordoned, draining); existing workers are ready."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("worker", state=pw.CharField(max_length=16, default="ready"))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("worker", "state")
