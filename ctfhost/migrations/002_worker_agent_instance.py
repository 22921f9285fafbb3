"""002: worker.agent_instance, the agent run that holds a worker's registration."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("worker", agent_instance=pw.CharField(max_length=128, null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("worker", "agent_instance")
