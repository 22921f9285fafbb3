"""Create the ctfhost_challenge table

Revision ID: 6a1f3c9d2e47
Revises:
Create Date: 2025-06-01 00:00:00

CTFd runs plugin migrations on MySQL and PostgreSQL (on SQLite it calls
create_all instead); the table may already exist when a database was made
with create_all, so only a missing table is created.
"""

import sqlalchemy as sa

from CTFd.plugins.migrations import get_all_tables

revision = "6a1f3c9d2e47"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(op=None):
    if "ctfhost_challenge" in get_all_tables(op):
        return
    op.create_table(
        "ctfhost_challenge",
        sa.Column("id", sa.Integer(), sa.ForeignKey("challenges.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("slug", sa.String(length=63), nullable=True),
        sa.Column("image", sa.String(length=500), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("protocol", sa.String(length=8), nullable=True),
        sa.Column("runtime", sa.String(length=64), nullable=True),
        sa.Column("cpu_count", sa.Integer(), nullable=True),
        sa.Column("memory_mb", sa.Integer(), nullable=True),
        sa.Column("ttl_seconds", sa.Integer(), nullable=True),
        sa.Column("max_renewals", sa.Integer(), nullable=True),
        sa.Column("flag_template", sa.String(length=256), nullable=True),
        sa.Column("extra_config", sa.Text(), nullable=True),
    )
    op.create_index("ix_ctfhost_challenge_slug", "ctfhost_challenge", ["slug"], unique=True)


def downgrade(op=None):
    op.drop_index("ix_ctfhost_challenge_slug", table_name="ctfhost_challenge")
    op.drop_table("ctfhost_challenge")
