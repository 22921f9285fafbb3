"""007: challenge.status (draft, active, inactive; existing challenges are active), version, description, metadata."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields(
        "challenge",
        status=pw.CharField(max_length=16, default="active"),
        version=pw.CharField(max_length=100, null=True),
        description=pw.TextField(null=True),
        metadata=pw.TextField(default="{}"),
    )


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("challenge", "status", "version", "description", "metadata")
