"""Every value as received (`messages`), the hourly rows derived from them with the state after
each step and their revisions, and alarms that say a late result raised them.

Revision ID: 0011
Revises: 0010
"""
import datetime as dt

import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("variable", sa.String(32), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(64), nullable=True),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("source_id", sa.String(200), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_messages_patient_hour", "messages", ["patient_id", "hour"])
    op.create_index("ix_messages_patient_key", "messages", ["patient_id", "key"])
    with op.batch_alter_table("observations") as batch:
        batch.add_column(sa.Column("state", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("first_risk", sa.Float(), nullable=True))
        batch.add_column(sa.Column("revised_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("revised_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("revisions", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("alarms") as batch:
        batch.add_column(sa.Column("late_result", sa.Boolean(), nullable=False, server_default=sa.false()))
    _backfill()


def _backfill() -> None:
    """The observations stored before messages were kept become their messages (each value known
    by its variable and time, as a JSON post's is), so that a late value refiles their hours from
    what was received; their risk as stored is their risk as first shown."""
    bind = op.get_bind()
    obs = sa.table("observations", sa.column("id", sa.Integer()), sa.column("patient_id", sa.String()),
                   sa.column("ts", UTCDateTime()), sa.column("vitals", sa.JSON()), sa.column("iculos", sa.Float()),
                   sa.column("received_at", UTCDateTime()), sa.column("risk", sa.Float()),
                   sa.column("first_risk", sa.Float()))
    messages = sa.table("messages", *(sa.column(c) for c in (
        "patient_id", "key", "variable", "value", "unit", "hour", "status", "source", "source_id")),
        sa.column("ts", UTCDateTime()), sa.column("received_at", UTCDateTime()))
    rows = []
    for o in bind.execute(sa.select(obs).order_by(obs.c.id)):
        stamp = o.ts.astimezone(dt.timezone.utc).isoformat()
        values = (o.vitals or {}).items() or [(None, None)]
        for name, value in values:
            rows.append(dict(patient_id=o.patient_id, key=f"{name or ''}@{stamp}", variable=name, value=value, unit=None,
                             ts=o.ts, hour=int(o.iculos), status="final", source="json", source_id=None,
                             received_at=o.received_at))
        if len(rows) >= 5000:
            bind.execute(messages.insert(), rows)
            rows = []
    if rows:
        bind.execute(messages.insert(), rows)
    bind.execute(obs.update().values(first_risk=obs.c.risk))


def downgrade() -> None:
    with op.batch_alter_table("alarms") as batch:
        batch.drop_column("late_result")
    with op.batch_alter_table("observations") as batch:
        for name in ("revisions", "revised_by", "revised_at", "first_risk", "state"):
            batch.drop_column(name)
    op.drop_index("ix_messages_patient_key", "messages")
    op.drop_index("ix_messages_patient_hour", "messages")
    op.drop_table("messages")
