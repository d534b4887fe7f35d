"""Alarms carry their kind (raised, re-alert, escalation: models.alarm_policy) and the alarm a
re-alert replaced, so an acknowledgement no longer silences a patient for good.

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarms") as batch:
        batch.add_column(sa.Column("kind", sa.String(40), nullable=False, server_default="raised"))
        batch.add_column(sa.Column("previous_alarm_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarms") as batch:
        batch.drop_column("previous_alarm_id")
        batch.drop_column("kind")
