"""001: the schema as the last release before versioned migrations (a5a8e59) created it."""

import peewee as pw

ACTIVE = ["pending", "running"]


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class Challenge(pw.Model):
        id = pw.CharField(primary_key=True, max_length=63)
        name = pw.CharField(max_length=200)
        runtime = pw.CharField(max_length=64)
        image = pw.CharField(max_length=500)
        port = pw.IntegerField()
        protocol = pw.CharField(max_length=8, default="http")
        cpu_count = pw.IntegerField(default=1)
        memory_mb = pw.IntegerField(default=512)
        ttl_seconds = pw.IntegerField(null=True)
        max_renewals = pw.IntegerField(null=True)
        flag_template = pw.TextField(null=True)
        extra_config = pw.TextField(default="{}")
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()

        class Meta:
            table_name = "challenge"
            legacy_table_names = False  # as the models: index names from the table name

    @migrator.create_model
    class Worker(pw.Model):
        id = pw.CharField(primary_key=True, max_length=128)
        address = pw.CharField(max_length=255)
        agent_port = pw.IntegerField(default=0)
        runtime = pw.CharField(max_length=255)
        max_instances = pw.IntegerField(default=50)
        last_heartbeat_at = pw.DateTimeField()
        registered_at = pw.DateTimeField()

        class Meta:
            table_name = "worker"
            legacy_table_names = False  # as the models: index names from the table name

    @migrator.create_model
    class Instance(pw.Model):
        id = pw.CharField(primary_key=True, max_length=36)
        team_id = pw.CharField(max_length=64)
        team_id_numeric = pw.BooleanField(default=False)
        challenge_id = pw.CharField(max_length=63, index=True)
        runtime = pw.CharField(max_length=64)
        protocol = pw.CharField(max_length=8, default="http")
        status = pw.CharField(max_length=16, default="pending", index=True)
        hostname = pw.CharField(max_length=255, unique=True)
        endpoint = pw.CharField(max_length=300)
        backend = pw.CharField(max_length=300, null=True)
        worker_id = pw.CharField(max_length=128, null=True, index=True)
        error = pw.TextField(null=True)
        flag = pw.CharField(max_length=300, null=True, index=True)
        renewals = pw.IntegerField(default=0)
        created_at = pw.DateTimeField()
        started_at = pw.DateTimeField(null=True)
        expires_at = pw.DateTimeField(index=True)
        ended_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "instance"
            legacy_table_names = False  # as the models: index names from the table name

    # at most one active instance per team and challenge, held by the database (a partial unique index)
    Instance.add_index(
        Instance.index(Instance.team_id, Instance.challenge_id, unique=True, name="instance_one_active_per_team")
        .where(Instance.status.in_(ACTIVE))
    )

    @migrator.create_model
    class Setting(pw.Model):
        key = pw.CharField(primary_key=True, max_length=64)
        value = pw.TextField()

        class Meta:
            table_name = "setting"
            legacy_table_names = False  # as the models: index names from the table name

    @migrator.create_model
    class Token(pw.Model):
        id = pw.CharField(primary_key=True, max_length=36)
        team_id = pw.CharField(max_length=64, index=True)
        team_id_numeric = pw.BooleanField(default=False)
        name = pw.CharField(max_length=200)
        secret_hash = pw.CharField(max_length=64, unique=True)
        created_at = pw.DateTimeField()
        expires_at = pw.DateTimeField(null=True)
        revoked_at = pw.DateTimeField(null=True)
        last_used_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "token"
            legacy_table_names = False  # as the models: index names from the table name

    @migrator.create_model
    class AuditEvent(pw.Model):
        id = pw.AutoField()
        at = pw.DateTimeField(index=True)
        actor = pw.CharField(max_length=16, index=True)
        token_id = pw.CharField(max_length=36, null=True)
        team_id = pw.CharField(max_length=64, null=True, index=True)
        method = pw.CharField(max_length=8)
        action = pw.CharField(max_length=200)
        target = pw.CharField(max_length=300, null=True, index=True)
        client_ip = pw.CharField(max_length=64, null=True)
        status = pw.IntegerField()
        result = pw.CharField(max_length=16)
        message = pw.TextField(null=True)

        class Meta:
            table_name = "audit_event"
            legacy_table_names = False  # as the models: index names from the table name

    @migrator.create_model
    class FlagSharingEvent(pw.Model):
        id = pw.AutoField()
        at = pw.DateTimeField(index=True)
        challenge_id = pw.CharField(max_length=63, index=True)
        submitting_team_id = pw.CharField(max_length=64, index=True)
        owning_team_id = pw.CharField(max_length=64, index=True)
        instance_id = pw.CharField(max_length=36)

        class Meta:
            table_name = "flag_sharing_event"
            legacy_table_names = False  # as the models: index names from the table name


def rollback(migrator, database, *, fake=False):
    for table in ("flag_sharing_event", "audit_event", "token", "setting", "instance", "worker", "challenge"):
        migrator.remove_model(table)
