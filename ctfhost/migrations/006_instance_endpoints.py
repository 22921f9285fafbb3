"""006: instance_endpoint, the endpoints of an instance beside `main`, each with its own hostname and backend."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class InstanceEndpoint(pw.Model):
        id = pw.AutoField()
        instance_id = pw.CharField(max_length=36)
        position = pw.IntegerField()
        name = pw.CharField(max_length=63)
        service = pw.CharField(max_length=63)
        port = pw.IntegerField()
        protocol = pw.CharField(max_length=8, default="http")
        hostname = pw.CharField(max_length=255, unique=True)
        endpoint = pw.CharField(max_length=300)
        backend = pw.CharField(max_length=300, null=True)

        class Meta:
            table_name = "instance_endpoint"
            legacy_table_names = False
            indexes = ((("instance_id", "name"), True),)


def rollback(migrator, database, *, fake=False):
    migrator.remove_model("instance_endpoint")
