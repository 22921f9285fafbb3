"""Database models: challenges, instances, workers and settings."""

import datetime
import json

import peewee

from ctfhost.db import database

ACTIVE = ("pending", "running")
# a challenge's lifecycle: drafts are being written (the admin pages create them), active ones are launched by
# teams, inactive ones are withdrawn; only the admin launches a challenge that is not active (to test it)
CHALLENGE_STATUSES = ("draft", "active", "inactive")
WORKER_STATES = ("ready", "cordoned", "draining")
# whether a worker holds an image: its pull job has not run, runs, succeeded or failed
PULL_STATES = ("unpulled", "pulling", "pulled", "failed")
ENDED = ("destroyed", "expired", "error")
STATUSES = ACTIVE + ENDED


def utcnow():
    """Naive UTC now; every time in the database is naive UTC."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def team_as_given(row):
    """A row's team id as the caller gave it: team ids are stored as text, with a flag for numbers."""
    return int(row.team_id) if row.team_id_numeric else row.team_id


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Challenge(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=63)
    name = peewee.CharField(max_length=200)
    runtime = peewee.CharField(max_length=64)
    image = peewee.CharField(max_length=500)
    port = peewee.IntegerField()
    # http: routed by Host through forward-auth; tcp: TLS with SNI on the shared TLS port
    protocol = peewee.CharField(max_length=8, default="http")
    cpu_count = peewee.IntegerField(default=1)
    memory_mb = peewee.IntegerField(default=512)
    ttl_seconds = peewee.IntegerField(null=True)
    max_renewals = peewee.IntegerField(null=True)
    # e.g. flag{{{hex:16}}}: every instance draws its own flag; null: the scoreboard keeps static flags
    flag_template = peewee.TextField(null=True)
    extra_config = peewee.TextField(default="{}")
    # the services beside the main one, as JSON: {name: {image, command, entrypoint, environment, cpu_count,
    # memory_mb, expose, options}} (migration 005)
    services = peewee.TextField(default="{}")
    # extra endpoints of the main service, as JSON: [{name, port, protocol}]
    expose = peewee.TextField(default="[]")
    # migration 007: the lifecycle (CHALLENGE_STATUSES), and what operators note about the challenge
    status = peewee.CharField(max_length=16, default="active")
    version = peewee.CharField(max_length=100, null=True)
    description = peewee.TextField(null=True)
    # an object of the operator's own keys, as JSON
    metadata = peewee.TextField(default="{}")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    @property
    def options(self):
        """extra_config parsed: the runtime options as a dict."""
        return json.loads(self.extra_config or "{}")

    @property
    def service_specs(self):
        """services parsed: {name: spec}, in the order the challenge gave them."""
        return json.loads(self.services or "{}")

    @property
    def exposed(self):
        """expose parsed: the main service's extra endpoints."""
        return json.loads(self.expose or "[]")

    @property
    def is_active(self):
        return self.status == "active"

    @property
    def is_multi_service(self):
        return bool(self.service_specs)

    @property
    def endpoint_specs(self):
        """Every endpoint players reach beside the main port, in a stable order: main's `expose`, then each
        service's, as [{"name", "service", "port", "protocol"}]."""
        found = [("main", endpoint) for endpoint in self.exposed]
        found += [(name, endpoint) for name, spec in self.service_specs.items() for endpoint in spec.get("expose", [])]
        return [{"name": endpoint["name"], "service": service, "port": endpoint["port"],
                 "protocol": endpoint.get("protocol", "http")} for service, endpoint in found]


class Worker(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=128)
    address = peewee.CharField(max_length=255)
    agent_port = peewee.IntegerField(default=0)
    # comma-separated runtime names this worker serves
    runtime = peewee.CharField(max_length=255)
    max_instances = peewee.IntegerField(default=50)
    last_heartbeat_at = peewee.DateTimeField(default=utcnow)
    registered_at = peewee.DateTimeField(default=utcnow)
    # which agent run holds this registration: another one may not take it over while it heartbeats
    agent_instance = peewee.CharField(max_length=128, null=True)
    # WORKER_STATES (migration 008): ready takes new instances; cordoned and draining take none (draining: the
    # operator wants it empty); registering again keeps it
    state = peewee.CharField(max_length=16, default="ready")

    @property
    def runtimes(self):
        return [name for name in self.runtime.split(",") if name]


class Instance(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=36)
    # team ids are text; team_id_numeric remembers that the caller sent a number
    team_id = peewee.CharField(max_length=64)
    team_id_numeric = peewee.BooleanField(default=False)
    # no foreign key: an instance's history outlives its challenge
    challenge_id = peewee.CharField(max_length=63, index=True)
    runtime = peewee.CharField(max_length=64)
    protocol = peewee.CharField(max_length=8, default="http")
    status = peewee.CharField(max_length=16, default="pending", index=True)
    hostname = peewee.CharField(max_length=255, unique=True)
    endpoint = peewee.CharField(max_length=300)
    backend = peewee.CharField(max_length=300, null=True)
    worker_id = peewee.CharField(max_length=128, null=True, index=True)
    error = peewee.TextField(null=True)
    flag = peewee.CharField(max_length=300, null=True, index=True)
    renewals = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField(default=utcnow)
    started_at = peewee.DateTimeField(null=True)
    expires_at = peewee.DateTimeField(index=True)
    ended_at = peewee.DateTimeField(null=True)
    # what a pending instance is doing when it is worth saying (migration 009): "pulling" while its worker fetches
    # the image, then "starting"; null otherwise
    phase = peewee.CharField(max_length=16, null=True)

    @property
    def is_active(self):
        return self.status in ACTIVE

    team = property(lambda self: team_as_given(self))

    @property
    def connection(self):
        """Ready-to-paste commands for a TCP instance (None for HTTP)."""
        return connection_commands(self.protocol, self.hostname, self.endpoint)


def connection_commands(protocol, hostname, url):
    """Ready-to-paste commands for a TCP endpoint at `url` (tls://host:port); None for HTTP."""
    if protocol != "tcp":
        return None
    port = url.rsplit(":", 1)[1]
    return {
        "openssl": f"openssl s_client -quiet -connect {hostname}:{port} -servername {hostname}",
        "pwntools": f"remote('{hostname}', {port}, ssl=True, sni='{hostname}')",
        "ncat": f"ncat --ssl {hostname} {port}",
    }


class InstanceEndpoint(BaseModel):
    """An endpoint of an instance beside `main` (the challenge's `expose`, or a service's): its own hostname,
    URL and backend. Made with the instance (rotated with it on restart), kept with its history (migration 006)."""

    id = peewee.AutoField()
    instance_id = peewee.CharField(max_length=36)
    # the order the challenge gives (Challenge.endpoint_specs): the instance's `endpoints` list, after main
    position = peewee.IntegerField()
    name = peewee.CharField(max_length=63)
    service = peewee.CharField(max_length=63)
    port = peewee.IntegerField()
    protocol = peewee.CharField(max_length=8, default="http")
    hostname = peewee.CharField(max_length=255, unique=True)
    endpoint = peewee.CharField(max_length=300)
    backend = peewee.CharField(max_length=300, null=True)

    @property
    def connection(self):
        return connection_commands(self.protocol, self.hostname, self.endpoint)


InstanceEndpoint.add_index(
    InstanceEndpoint.index(InstanceEndpoint.instance_id, InstanceEndpoint.name, unique=True,
                           name="instance_endpoint_instance_id_name")
)


# At most one active instance per team and challenge, held by the database:
# concurrent launches race on this index and all but one get IntegrityError.
Instance.add_index(
    Instance.index(Instance.team_id, Instance.challenge_id, unique=True, name="instance_one_active_per_team")
    .where(Instance.status.in_(list(ACTIVE)))
)
# The expiry sweep finds due instances by these two (migration 003), one per
# database's planner: SQLite (no statistics) prefers the equality on status, so
# it takes (status, expires_at); PostgreSQL walks the partial index, which
# holds active instances only, not the ever-growing history of ended ones.
Instance.add_index(Instance.index(Instance.status, Instance.expires_at, name="instance_status_expires_at"))
Instance.add_index(
    Instance.index(Instance.expires_at, name="instance_active_expires_at").where(Instance.status.in_(list(ACTIVE)))
)
# placement counts each live worker's active instances on every launch: this
# index answers COUNT(*) alone, without reading a row (migration 004)
Instance.add_index(Instance.index(Instance.worker_id, Instance.status, name="instance_worker_id_status"))


class ImagePull(BaseModel):
    """Whether a worker holds an image for a runtime (migration 009): PULL_STATES, and the error of a failed pull."""

    id = peewee.AutoField()
    worker_id = peewee.CharField(max_length=128)
    runtime = peewee.CharField(max_length=64)
    image = peewee.CharField(max_length=500)
    state = peewee.CharField(max_length=16, default="unpulled")
    error = peewee.TextField(null=True)
    updated_at = peewee.DateTimeField(default=utcnow)


ImagePull.add_index(
    ImagePull.index(ImagePull.worker_id, ImagePull.runtime, ImagePull.image, unique=True,
                    name="image_pull_worker_id_runtime_image")
)


class Setting(BaseModel):
    key = peewee.CharField(primary_key=True, max_length=64)
    value = peewee.TextField()


class Token(BaseModel):
    """A team token: the secret is shown once; only its SHA-256 is kept."""

    id = peewee.CharField(primary_key=True, max_length=36)
    team_id = peewee.CharField(max_length=64, index=True)
    team_id_numeric = peewee.BooleanField(default=False)
    name = peewee.CharField(max_length=200)
    secret_hash = peewee.CharField(max_length=64, unique=True)
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField(null=True)
    revoked_at = peewee.DateTimeField(null=True)
    last_used_at = peewee.DateTimeField(null=True)
    # space-separated; null for tokens made before scopes existed (services.tokens.scopes_of reads it)
    scopes = peewee.CharField(max_length=200, null=True)
    # the token that minted this one (self-service): revoking it revokes this one too
    parent_id = peewee.CharField(max_length=36, null=True, index=True)

    team = property(lambda self: team_as_given(self))


class AuditEvent(BaseModel):
    """One state-changing request: who, what, which target, from where, with what result."""

    id = peewee.AutoField()
    at = peewee.DateTimeField(default=utcnow, index=True)
    actor = peewee.CharField(max_length=16, index=True)  # admin | api_key | team | anonymous
    token_id = peewee.CharField(max_length=36, null=True)
    team_id = peewee.CharField(max_length=64, null=True, index=True)
    method = peewee.CharField(max_length=8)
    action = peewee.CharField(max_length=200)
    target = peewee.CharField(max_length=300, null=True, index=True)
    client_ip = peewee.CharField(max_length=64, null=True)
    status = peewee.IntegerField()
    result = peewee.CharField(max_length=16)
    message = peewee.TextField(null=True)


class FlagSharingEvent(BaseModel):
    """A team submitted a flag that belongs to another team's instance."""

    id = peewee.AutoField()
    at = peewee.DateTimeField(default=utcnow, index=True)
    challenge_id = peewee.CharField(max_length=63, index=True)
    submitting_team_id = peewee.CharField(max_length=64, index=True)
    owning_team_id = peewee.CharField(max_length=64, index=True)
    instance_id = peewee.CharField(max_length=36)


# ctfhost/migrations builds these tables: a change here needs a new migration
# (tests/test_migrations.py fails while the two differ)
MODELS = [Challenge, Worker, Instance, InstanceEndpoint, ImagePull, Setting, Token, AuditEvent, FlagSharingEvent]

