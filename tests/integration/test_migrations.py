"""The Alembic migrations build exactly the schema the models describe, on each backend."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from engine.store.db import make_engine, migrate
from engine.store.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # running again on an up-to-date database changes nothing
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_an_upgrade_keeps_users_their_tokens_and_the_references(database_url: str) -> None:
    """0008 rebuilds app_user on SQLite; api_token refers to it, so an install with a token must
    still upgrade (it used to fail with "FOREIGN KEY constraint failed" on the DROP TABLE)."""
    engine = make_engine(database_url)
    migrate(engine, "0007")
    now = datetime(2026, 12, 1, tzinfo=timezone.utc).replace(tzinfo=None)
    with engine.begin() as conn:
        for user_id, name, language in ((1, "chen", "zh"), (2, "amy", "en")):
            conn.execute(sa.text("INSERT INTO app_user (id, username, display_name, roles, language, active, created_at, "
                                 "session_epoch) VALUES (:id, :name, :name, '[]', :language, true, :now, 0)"),
                         {"id": user_id, "name": name, "language": language, "now": now})
        conn.execute(sa.text("INSERT INTO api_token (id, user_id, name, token_hash, prefix, scopes, created_at) "
                             "VALUES (1, 1, 'crm', :hash, 'cf_abc', '[]', :now)"), {"hash": "0" * 64, "now": now})
    migrate(engine)
    with engine.connect() as conn:
        users = conn.execute(sa.text("SELECT username, language, notify FROM app_user ORDER BY id")).all()
        owner = conn.execute(sa.text("SELECT u.username FROM api_token t JOIN app_user u ON u.id = t.user_id")).scalar_one()
        enforced = conn.exec_driver_sql("PRAGMA foreign_keys").scalar() if conn.dialect.name == "sqlite" else 1
    engine.dispose()
    # "zh" was only ever the old default, so it becomes "not chosen"; "en" was a choice
    assert [tuple(u) for u in users] == [("chen", None, "email"), ("amy", "en", "email")]
    assert owner == "chen"
    assert enforced == 1  # foreign keys are enforced again on the pooled connection
