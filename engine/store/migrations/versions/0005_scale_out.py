"""Scale-out: work leases and fencing for schedulers and workers

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import engine.store.models


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = engine.store.models.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table('timer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('lease_until', UTC(), nullable=True))
        batch_op.create_index('ix_timer_lease', ['lease_until'], unique=False)

    op.create_table('step_execution',
    sa.Column('id', BigId, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ref_id', BigId, nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('instance_id', BigId, nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('at', UTC(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('step_execution', schema=None) as batch_op:
        batch_op.create_index('ix_step_execution_ref', ['kind', 'ref_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('step_execution', schema=None) as batch_op:
        batch_op.drop_index('ix_step_execution_ref')
    op.drop_table('step_execution')
    with op.batch_alter_table('timer', schema=None) as batch_op:
        batch_op.drop_index('ix_timer_lease')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('attempt')
