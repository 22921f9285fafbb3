"""010: token.scopes, the space-separated scopes of a team token (null, for tokens made before scopes: all but
`tokens`), and token.parent_id, the token that minted it (revoked with it)."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("token", scopes=pw.CharField(max_length=200, null=True),
                        parent_id=pw.CharField(max_length=36, null=True, index=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("token", "scopes", "parent_id")
