"""Initial schema: patients, observations, alarms, api_keys.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("admitted_by", sa.String(24), nullable=False),
        sa.Column("age", sa.Float()), sa.Column("gender", sa.Float()),
        sa.Column("unit1", sa.Float()), sa.Column("unit2", sa.Float()),
        sa.Column("hosp_adm_time", sa.Float()),
        sa.Column("icu_admit_time", UTCDateTime()),
        sa.Column("state", sa.LargeBinary()),
        sa.Column("model_name", sa.String(64)), sa.Column("model_version", sa.String(32)),
        sa.Column("last_ts", UTCDateTime()), sa.Column("first_ts", UTCDateTime()),
        sa.Column("n_observations", sa.Integer(), nullable=False),
        sa.Column("last_risk", sa.Float()),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16)), sa.Column("onset_time", UTCDateTime()),
        sa.Column("discharged_at", UTCDateTime()),
        sa.Column("outcome_recorded_at", UTCDateTime()), sa.Column("outcome_recorded_by", sa.String(128)),
    )
    op.create_table(
        "observations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("vitals", sa.JSON(), nullable=False),
        sa.Column("elapsed_hours", sa.Float(), nullable=False),
        sa.Column("iculos", sa.Float(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("alarm_id", sa.Integer()),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("patient_id", "ts", name="uq_observation_patient_ts"),
    )
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("acknowledged_by", sa.String(128)), sa.Column("acknowledged_at", UTCDateTime()),
        sa.Column("ack_reason", sa.String(32)), sa.Column("ack_note", sa.String(1000)),
        sa.Column("snoozed_until", UTCDateTime()), sa.Column("snoozed_by", sa.String(128)),
        sa.Column("resolved_at", UTCDateTime()), sa.Column("resolved_by", sa.String(128)),
        sa.Column("resolve_note", sa.String(1000)),
    )
    op.create_index("ix_alarms_patient_state", "alarms", ["patient_id", "state"])
    op.create_index("ix_alarms_raised_at", "alarms", ["raised_at"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_alarms_raised_at", "alarms")
    op.drop_index("ix_alarms_patient_state", "alarms")
    op.drop_table("alarms")
    op.drop_table("observations")
    op.drop_table("patients")
