"""The corrections audit table (admin removal of a patient's observations after a time).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("after", UTCDateTime(), nullable=False),
        sa.Column("corrected_at", UTCDateTime(), nullable=False),
        sa.Column("corrected_by", sa.String(128), nullable=False),
        sa.Column("key_id", sa.Integer()),
        sa.Column("key_name", sa.String(128)),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("removed_observations", sa.Integer(), nullable=False),
        sa.Column("removed_alarms", sa.Integer(), nullable=False),
        sa.Column("removed", sa.JSON(), nullable=False),
    )
    op.create_index("ix_corrections_patient", "corrections", ["patient_id"])


def downgrade() -> None:
    op.drop_index("ix_corrections_patient", "corrections")
    op.drop_table("corrections")
