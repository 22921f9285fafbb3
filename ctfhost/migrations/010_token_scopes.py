"""010: token.scopes, the space-separated scopes of a team token; null (tokens made before scopes) means all but `tokens`."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("token", scopes=pw.CharField(max_length=200, null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("token", "scopes")
