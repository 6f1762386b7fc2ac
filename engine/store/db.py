"""Database engines, sessions and migrations (Alembic, applied on start)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from engine.store import jsontext, rows

DEFAULT_SQLITE_PATH = "careflow.db"
#: FULL keeps every committed transaction through a power cut, not only through a process crash.
SQLITE_SYNCHRONOUS = os.environ.get("CAREFLOW_SQLITE_SYNCHRONOUS", "FULL")


def database_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    url = env.get("CAREFLOW_DATABASE_URL")
    if url:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url
    path = Path(env.get("CAREFLOW_HOME", ".")) / DEFAULT_SQLITE_PATH
    return f"sqlite:///{path}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    # The same JSON text as json.dumps/json.loads, at less cost per call (engine/store/jsontext.py).
    kwargs.setdefault("json_serializer", jsontext.dumps)
    kwargs.setdefault("json_deserializer", jsontext.loads)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    rows.watch(engine)  # a batch's writes may then be pipelined (engine/store/rows.py)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; we issue BEGIN IMMEDIATE ourselves so a
        # writer takes the lock up front instead of failing a read-then-write upgrade with SQLITE_BUSY.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("engine.store").joinpath("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to the newest migration (or to ``revision``)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Alembic alters a SQLite table by copying it and dropping the old one, which fails for
            # a table other rows refer to (app_user, by api_token) while foreign keys are enforced.
            # The pragma only takes effect outside a transaction, so it goes on the raw connection
            # before BEGIN; the references are checked again before the migration commits.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration left rows whose references are broken: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
