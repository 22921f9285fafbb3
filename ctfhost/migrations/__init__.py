"""Versioned schema migrations, applied in name order by `flask ctfhost db upgrade` (see ctfhost.schema).

Each NNN_name.py holds `migrate(migrator, database, *, fake=False)` and
`rollback(...)` for peewee-migrate. A migration describes tables with its own
frozen model copies, never with ctfhost.models: the models change, a
migration must not.
"""
