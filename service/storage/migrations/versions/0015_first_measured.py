"""Each patient's first measured hour (`patients.first_measured`): a patient is monitored from
their first measured value (models.alarm_figures), so no alarm is raised before it and /stats
counts hours from it.

Filled for stored stays from their hourly rows: the start of the earliest one whose values hold a
vital sign or lab (not only demographics, not empty).

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

from models.alarm_figures import measured
from service.storage.tables import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("first_measured", UTCDateTime(), nullable=True))
    _backfill()


def _backfill() -> None:
    conn = op.get_bind()
    observations = sa.table("observations", sa.column("patient_id", sa.String), sa.column("ts", UTCDateTime()),
                            sa.column("vitals", sa.JSON()))
    patients = sa.table("patients", sa.column("id", sa.String), sa.column("first_measured", UTCDateTime()))
    first: dict[str, object] = {}
    rows = conn.execute(sa.select(observations.c.patient_id, observations.c.ts, observations.c.vitals)
                        .execution_options(yield_per=5000))
    for pid, ts, vitals in rows:
        if measured(vitals or {}) and (pid not in first or ts < first[pid]):
            first[pid] = ts
    if first:
        conn.execute(patients.update().where(patients.c.id == sa.bindparam("b_id"))
                     .values(first_measured=sa.bindparam("b_ts", type_=UTCDateTime())),
                     [{"b_id": pid, "b_ts": ts} for pid, ts in first.items()])


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("first_measured")
