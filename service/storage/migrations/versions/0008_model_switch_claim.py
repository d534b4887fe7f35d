"""The model switch's claim: one row that a switch takes with a conditional UPDATE before it starts,
so that of two switches on one database (two workers) one runs and the other is told which runs.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "model_switch_claim",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token", sa.String(36)),
        sa.Column("target", sa.String(100)),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_at", UTCDateTime()),
        sa.Column("heartbeat_at", UTCDateTime()),
    )
    op.bulk_insert(table, [{"id": 1}])


def downgrade() -> None:
    op.drop_table("model_switch_claim")
