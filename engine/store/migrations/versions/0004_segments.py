"""Grading, RFM, segments and their memberships, churn risk, survey scores

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""
from __future__ import annotations

from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import engine.store.models


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = engine.store.models.UTCDateTime

#: The segments shipped with Careflow (flows may name them in a ``segment`` trigger).
BUILTIN_SEGMENTS = [
    ('churn_risk', {'zh': '流失风险', 'en': 'Churn risk'},
     {'churn_risk_above': 2.0, 'status': ['active', 'at_risk']}),
    ('grade_a', {'zh': 'A 类客户', 'en': 'Grade A customers'}, {'grade': ['A']}),
    ('vip_birthday_this_month', {'zh': '本月生日的 A 类客户', 'en': 'Grade A customers with a birthday this month'},
     {'grade': ['A'], 'birthday_month': 'current', 'status': ['active', 'at_risk']}),
    ('champions', {'zh': '核心客户（RFM 均 ≥ 4）', 'en': 'Champions (R, F and M all ≥ 4)'},
     {'recency_score': {'min': 4}, 'frequency_score': {'min': 4}, 'monetary_score': {'min': 4}}),
    ('detractors', {'zh': 'NPS 贬损者（0–6 分）', 'en': 'NPS detractors (0–6)'}, {'nps': {'max': 6}}),
]


def upgrade() -> None:
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_purchase_at', UTC(), nullable=True))
        batch_op.add_column(sa.Column('rfm_r', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rfm_f', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rfm_m', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('churn_score', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('churn_reason', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('graded_at', UTC(), nullable=True))
        batch_op.add_column(sa.Column('last_nps', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('last_satisfaction', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('last_survey_at', UTC(), nullable=True))

    segment = op.create_table('segment',
    sa.Column('id', BigId, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('title', sa.JSON(), nullable=False),
    sa.Column('filter', sa.JSON(), nullable=False),
    sa.Column('builtin', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTC(), nullable=False),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=True),
    sa.Column('recomputed_at', UTC(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('segment_member',
    sa.Column('segment_id', BigId, nullable=False),
    sa.Column('customer_id', BigId, nullable=False),
    sa.Column('entered_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['segment_id'], ['segment.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('segment_id', 'customer_id')
    )
    with op.batch_alter_table('segment_member', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segment_member_customer_id'), ['customer_id'], unique=False)

    op.create_table('survey_answer',
    sa.Column('id', BigId, nullable=False),
    sa.Column('customer_id', BigId, nullable=True),
    sa.Column('instance_id', BigId, nullable=True),
    sa.Column('flow_id', sa.String(length=64), nullable=True),
    sa.Column('form_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('answered_at', UTC(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('survey_answer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_survey_answer_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_survey_answer_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index('ix_survey_answer_kind_at', ['kind', 'answered_at'], unique=False)

    op.create_table('app_setting',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )

    now = datetime.now(timezone.utc)
    op.bulk_insert(segment, [
        {'name': name, 'title': title, 'filter': filt, 'builtin': True, 'created_at': now, 'updated_at': now,
         'updated_by': 'system', 'recomputed_at': None}
        for name, title, filt in BUILTIN_SEGMENTS
    ])


def downgrade() -> None:
    op.drop_table('app_setting')
    with op.batch_alter_table('survey_answer', schema=None) as batch_op:
        batch_op.drop_index('ix_survey_answer_kind_at')
        batch_op.drop_index(batch_op.f('ix_survey_answer_instance_id'))
        batch_op.drop_index(batch_op.f('ix_survey_answer_customer_id'))
    op.drop_table('survey_answer')
    with op.batch_alter_table('segment_member', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segment_member_customer_id'))
    op.drop_table('segment_member')
    op.drop_table('segment')
    with op.batch_alter_table('customer', schema=None) as batch_op:
        for column in ('last_survey_at', 'last_satisfaction', 'last_nps', 'graded_at', 'churn_reason', 'churn_score',
                       'rfm_m', 'rfm_f', 'rfm_r', 'first_purchase_at'):
            batch_op.drop_column(column)
