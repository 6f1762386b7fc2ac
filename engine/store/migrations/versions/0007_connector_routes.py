"""Named connector configurations in flows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


# A flow may name a configuration after its type (``feishu/care-team``): up to 64 + 1 + 64
# characters, more than the 64 the outbox's connector column held.


def upgrade() -> None:
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.alter_column('connector', existing_type=sa.String(length=64), type_=sa.String(length=140),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.alter_column('connector', existing_type=sa.String(length=140), type_=sa.String(length=64),
                              existing_nullable=False)
