"""Shared fixtures: a Careflow on SQLite or PostgreSQL with the built-in flows, demo users and a fake provider.

PostgreSQL runs at CAREFLOW_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
When it is unreachable the PostgreSQL variants skip, unless CAREFLOW_REQUIRE_POSTGRES=1 (CI),
where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cryptography.fernet import Fernet

from connectors.registry import Registry
from engine.clock import FixedClock
from engine.core import Careflow
from engine.demo import seed_users
from engine.secrets import SecretBox
from tests.support.fakes import FAKE_SETTINGS, RecordingProvider

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Tuesday 24 November 2026, 09:00 in Shanghai: a working day.
START = datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI)
POSTGRES_URL = os.environ.get("CAREFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_available() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    if not _postgres_available():
        if os.environ.get("CAREFLOW_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required but not reachable at {POSTGRES_URL}")
        pytest.skip("PostgreSQL not reachable")
    return POSTGRES_URL


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A fresh schema per test, dropped afterwards: tests never see each other's rows."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'careflow.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'careflow.db'}"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


def make_careflow(url: str, clock: FixedClock, provider: RecordingProvider) -> Careflow:
    registry = Registry()
    registry.register(provider, "fake")
    secrets = SecretBox([Fernet.generate_key()])
    cf = Careflow(url, clock=clock, registry=registry, connector_settings=FAKE_SETTINGS, secrets=secrets)
    cf.deploy_builtins()
    seed_users(cf)
    return cf


@pytest.fixture
def cf(database_url: str, clock: FixedClock, provider: RecordingProvider) -> Iterator[Careflow]:
    """A Careflow on each backend, with the built-in flows and forms and the demo users."""
    engine = make_careflow(database_url, clock, provider)
    yield engine
    engine.close()


@pytest.fixture
def cf_sqlite(sqlite_url: str, clock: FixedClock, provider: RecordingProvider) -> Iterator[Careflow]:
    engine = make_careflow(sqlite_url, clock, provider)
    yield engine
    engine.close()
