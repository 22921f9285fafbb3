"""Schema upgrades: add the columns a newer ctfhost expects to tables an older one created."""

import logging

from playhouse.migrate import SchemaMigrator, migrate

from ctfhost.db import database

log = logging.getLogger(__name__)


def add_missing_columns(models):
    """Add every model field missing from its table (fields added since are nullable or defaulted)."""
    migrator = SchemaMigrator.from_database(database.obj)
    operations = []
    for model in models:
        table = model._meta.table_name
        existing = {column.name for column in database.get_columns(table)}
        for field in model._meta.sorted_fields:
            if field.column_name not in existing:
                log.info("adding column %s.%s", table, field.column_name)
                operations.append(migrator.add_column(table, field.column_name, field))
    if operations:
        with database.atomic():
            migrate(*operations)
    return len(operations)
