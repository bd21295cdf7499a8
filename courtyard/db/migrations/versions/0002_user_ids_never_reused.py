"""user ids are never reused

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 10:40:00

The OAuth provider's ``sub`` (ID tokens, userinfo) is the user's id. SQLite gives a new row
the highest id + 1, so deleting the newest user handed their id, and their ``sub``, to the
next one; AUTOINCREMENT never hands out an id twice. SQLite cannot add it to a table, so the
users table is rebuilt (its rows, ids and links kept). PostgreSQL's sequences already never
reuse an id: nothing to do there.
"""

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # the copy carries the ids over, and SQLite's sequence starts above the highest of them
    with op.batch_alter_table("users", recreate="always",
                              table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("users", recreate="always",
                              table_kwargs={"sqlite_autoincrement": False}):
        pass
