"""Stored key prefixes keep 6 characters ("sk_" and 3 of the secret) instead of 10.

Only listings read the prefix; keys are verified by their hash, so every stored key keeps working.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PREFIX_LENGTH = 6


def upgrade() -> None:
    op.execute(f"UPDATE api_keys SET prefix = substr(prefix, 1, {PREFIX_LENGTH}) WHERE length(prefix) > {PREFIX_LENGTH}")


def downgrade() -> None:
    pass  # the characters removed are gone; a shorter prefix is still a valid one
