"""The active model as last switched: a restart and every worker serve it.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "active_model",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("switched_at", UTCDateTime(), nullable=False),
        sa.Column("switched_by", sa.String(128)),
    )


def downgrade() -> None:
    op.drop_table("active_model")
