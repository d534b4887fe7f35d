"""The sender's Encounter of a patient's stay (a FHIR bundle's ICU Encounter): its logical id
and its first business identifier, as sent, which the RiskAssessments and Flags of the stay name
in `encounter`. Patients stored before it have none (sending their Encounter again fills it in).

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("encounter_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("encounter_system", sa.String(255), nullable=True))
        batch.add_column(sa.Column("encounter_value", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("encounter_value")
        batch.drop_column("encounter_system")
        batch.drop_column("encounter_id")
