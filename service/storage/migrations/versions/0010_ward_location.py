"""Where the ward sees a patient after a transfer (a FHIR Encounter's later location): unit, bed
and since when. Unit1/Unit2 stay the admission's: the model's demographics are fixed per stay, as
in its training data.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

from service.storage.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("ward_unit", sa.String(16), nullable=True))
        batch.add_column(sa.Column("ward_bed", sa.String(32), nullable=True))
        batch.add_column(sa.Column("transferred_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("transferred_at")
        batch.drop_column("ward_bed")
        batch.drop_column("ward_unit")
