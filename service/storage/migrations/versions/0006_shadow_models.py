"""Shadow models' scores and states; model upgrades.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_states",
        sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_name", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("n_observations", sa.Integer(), nullable=False),
        sa.Column("last_ts", UTCDateTime()),
        sa.Column("last_risk", sa.Float()),
        sa.Column("alarm_at", UTCDateTime()),
    )
    op.create_table(
        "shadow_scores",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("alarm", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("patient_id", "model_name", "model_version", "ts", name="uq_shadow_score"),
    )
    op.create_index("ix_shadow_scores_model", "shadow_scores", ["model_name", "model_version"])


def downgrade() -> None:
    op.drop_index("ix_shadow_scores_model", "shadow_scores")
    op.drop_table("shadow_scores")
    op.drop_table("shadow_states")
