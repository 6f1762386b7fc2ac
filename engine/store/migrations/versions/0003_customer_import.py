"""Customer import: import runs, column mappings, merge log

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import engine.store.models


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = engine.store.models.UTCDateTime


def upgrade() -> None:
    op.create_table('import_run',
    sa.Column('id', BigId, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('file_format', sa.String(length=8), nullable=False),
    sa.Column('encoding', sa.String(length=32), nullable=True),
    sa.Column('source', sa.LargeBinary(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('done_rows', sa.Integer(), nullable=False),
    sa.Column('done_groups', sa.Integer(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', UTC(), nullable=False),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.Column('committed_at', UTC(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('import_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_run_status'), ['status'], unique=False)

    op.create_table('column_mapping',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('columns', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )

    op.create_table('customer_merge',
    sa.Column('id', BigId, nullable=False),
    sa.Column('customer_id', BigId, nullable=False),
    sa.Column('import_id', BigId, nullable=True),
    sa.Column('at', UTC(), nullable=False),
    sa.Column('created', sa.Boolean(), nullable=False),
    sa.Column('rows', sa.JSON(), nullable=False),
    sa.Column('matched_on', sa.JSON(), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['import_id'], ['import_run.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('customer_merge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_merge_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_merge_import_id'), ['import_id'], unique=False)

    op.create_table('customer_order',
    sa.Column('id', BigId, nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', BigId, nullable=False),
    sa.Column('ordered_at', UTC(), nullable=False),
    sa.Column('amount', sa.Float(), nullable=False),
    sa.Column('import_id', BigId, nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['import_id'], ['import_run.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('order_id')
    )
    with op.batch_alter_table('customer_order', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_order_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_order_import_id'), ['import_id'], unique=False)


def downgrade() -> None:
    op.drop_table('customer_order')
    op.drop_table('customer_merge')
    op.drop_table('column_mapping')
    op.drop_table('import_run')
