"""009: image_pull, whether each worker holds each image (pull state), and instance.phase."""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class ImagePull(pw.Model):
        id = pw.AutoField()
        worker_id = pw.CharField(max_length=128)
        runtime = pw.CharField(max_length=64)
        image = pw.CharField(max_length=500)
        state = pw.CharField(max_length=16, default="unpulled")
        error = pw.TextField(null=True)
        updated_at = pw.DateTimeField()

        class Meta:
            table_name = "image_pull"
            legacy_table_names = False
            indexes = ((("worker_id", "runtime", "image"), True),)

    migrator.add_fields("instance", phase=pw.CharField(max_length=16, null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("instance", "phase")
    migrator.remove_model("image_pull")
