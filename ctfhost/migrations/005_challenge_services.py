"""005: challenge.services, the services beside the main one (JSON), and challenge.expose, its extra endpoints."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("challenge", services=pw.TextField(default="{}"), expose=pw.TextField(default="[]"))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("challenge", "services", "expose")
