"""hub leases: one serving hub per database

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 11:40:00

A hub that serves claims the database with a row here (``courtyard/db/lease.py``), and a
second hub is refused with the first one's host, pid and URL.
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_leases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("machine", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_start", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=1023), nullable=False),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("renewed", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("hub_leases")
