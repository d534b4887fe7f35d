"""The ward's workflow: the audit of every action, when an alarm was snoozed, and each patient's
latest measured time.

`patients.last_measured` is filled for stored stays from their observations: the latest one that
carried a value other than the demographics.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from service.ranges import DEMOGRAPHICS
from service.storage.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("alarm_id", sa.Integer()),
        sa.Column("unit", sa.String(16)),
        sa.Column("key_id", sa.Integer()),
        sa.Column("key_name", sa.String(128)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("person", sa.String(128)),
        sa.Column("note", sa.String(1000)),
        sa.Column("details", sa.JSON()),
    )
    op.create_index("ix_audit_patient", "audit_events", ["patient_id"])
    op.create_index("ix_audit_alarm", "audit_events", ["alarm_id"])
    op.create_index("ix_audit_at", "audit_events", ["at"])
    op.add_column("alarms", sa.Column("snoozed_at", UTCDateTime()))
    op.add_column("patients", sa.Column("last_measured", UTCDateTime()))
    _backfill_last_measured()


def _backfill_last_measured() -> None:
    conn = op.get_bind()
    observations = sa.table("observations", sa.column("patient_id", sa.String), sa.column("ts", UTCDateTime()),
                            sa.column("vitals", sa.JSON()))
    patients = sa.table("patients", sa.column("id", sa.String), sa.column("last_measured", UTCDateTime()))
    latest: dict[str, object] = {}
    rows = conn.execute(sa.select(observations.c.patient_id, observations.c.ts, observations.c.vitals)
                        .execution_options(yield_per=5000))
    for pid, ts, vitals in rows:
        if any(name not in DEMOGRAPHICS for name in vitals or {}) and (pid not in latest or ts > latest[pid]):
            latest[pid] = ts
    if latest:
        conn.execute(patients.update().where(patients.c.id == sa.bindparam("b_id"))
                     .values(last_measured=sa.bindparam("b_ts", type_=UTCDateTime())),
                     [{"b_id": pid, "b_ts": ts} for pid, ts in latest.items()])


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("last_measured")
    with op.batch_alter_table("alarms") as batch:
        batch.drop_column("snoozed_at")
    op.drop_index("ix_audit_at", "audit_events")
    op.drop_index("ix_audit_alarm", "audit_events")
    op.drop_index("ix_audit_patient", "audit_events")
    op.drop_table("audit_events")
