"""reminders and language

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# ``app_user.language`` becomes the user's own choice: NULL means "not chosen, follow the
# browser". Until now every user got "zh" by default and nothing read it for the pages, so "zh"
# cannot be told apart from "never chosen": it becomes NULL (reminders still go out in Chinese
# then); an "en" was certainly chosen and stays. ``notify`` is how task reminders reach the user
# (email, im, both, none) and ``im_id`` the user's id on the team's IM, for an @mention.


def upgrade() -> None:
    with op.batch_alter_table('app_user', schema=None) as batch_op:
        batch_op.alter_column('language', existing_type=sa.String(length=8), nullable=True)
        batch_op.add_column(sa.Column('notify', sa.String(length=8), nullable=False, server_default='email'))
        batch_op.add_column(sa.Column('im_id', sa.String(length=128), nullable=True))
    op.execute("UPDATE app_user SET language = NULL WHERE language = 'zh'")


def downgrade() -> None:
    op.execute("UPDATE app_user SET language = 'zh' WHERE language IS NULL")
    with op.batch_alter_table('app_user', schema=None) as batch_op:
        batch_op.drop_column('im_id')
        batch_op.drop_column('notify')
        batch_op.alter_column('language', existing_type=sa.String(length=8), nullable=False)
