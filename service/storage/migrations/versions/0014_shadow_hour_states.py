"""A shadow model's state after each hour it scored (`shadow_scores.state`), so that a late value
rewinds a shadow to its state before the revised hour, as the live model's hourly rows allow.
Scores stored before it have none: a rewind that needs one replays the stay from the admission,
and the rows it writes then carry their states.

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shadow_scores") as batch:
        batch.add_column(sa.Column("state", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("shadow_scores") as batch:
        batch.drop_column("state")
