"""Contributions stored with risks and alarms, each unit's chosen operating point, and a patient's
bed.

`observations.contributions` / `alarms.contributions`: the top inputs behind the risk (the change in
risk when each variable's latest value is withheld, `models/explain.py`), null when the service ran
with SEPSIS_EXPLAIN off or the row predates this revision. `unit_operating_points`: one row per unit
whose operating point an admin chose (a unit without a row alarms at the model card's threshold).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("observations", sa.Column("contributions", sa.JSON()))
    op.add_column("alarms", sa.Column("contributions", sa.JSON()))
    op.add_column("patients", sa.Column("bed", sa.String(32)))
    op.create_table(
        "unit_operating_points",
        sa.Column("unit", sa.String(16), primary_key=True),
        sa.Column("point_id", sa.String(64), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("chosen_by", sa.String(128), nullable=False),
        sa.Column("chosen_at", UTCDateTime(), nullable=False),
        sa.Column("note", sa.String(1000)),
    )


def downgrade() -> None:
    op.drop_table("unit_operating_points")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("bed")
    with op.batch_alter_table("alarms") as batch:
        batch.drop_column("contributions")
    with op.batch_alter_table("observations") as batch:
        batch.drop_column("contributions")
