"""Deployed flow and form versions: immutable, content-hashed, parsed once per process."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from connectors.registry import Registry
from engine.errors import DefinitionInvalid, FlowLookupError, FormLookupError, Problem
from engine.flow.loader import content_hash, load_flow_text
from engine.flow.model import Flow
from engine.flow.validate import Catalog
from engine.forms import Form, load_form_text
from engine.problem_text import t
from engine.roles import BUILTIN_ROLES
from engine.store.models import ConnectorConfig, FlowVersion, FormVersion, Segment, User

FORM_SUFFIX = ".schema.json"


@lru_cache(maxsize=512)
def _parse_flow(version_id: int, source_name: str, text: str) -> Flow:
    # Keyed by the immutable version id, so a cached Flow can never go stale.
    return load_flow_text(text, source_name)


@lru_cache(maxsize=512)
def _parse_form(version_id: int, form_id: str, text: str) -> Form:
    return load_form_text(text, f"{form_id}{FORM_SUFFIX}", form_id)


def flow_of(version: FlowVersion) -> Flow:
    return _parse_flow(version.id, f"{version.flow_id}.yaml", version.source)


# --- per-process caches ----------------------------------------------------------------------------
#
# Every request looks up the newest version of its flow or form, and every event the flow of its
# instance's version. Both are cached per database (per SQLAlchemy engine: two databases in one
# process never share entries, and an engine's entries go with it).

#: How long a cached "newest version" is trusted. A deploy through this process clears the cache at
#: once (and again when its transaction ends); a deploy by another process is seen within this time.
LATEST_TTL_SECONDS = 1.0
#: Session.info key set while the session's transaction has deployed something not yet committed.
_DEPLOYING = "careflow.deploying"
_LISTENING = "careflow.deploy_listener"


class _DatabaseCache:
    """The cached definitions of one database."""

    __slots__ = ("latest", "flows")

    def __init__(self) -> None:
        # ("flow" | "form", id) -> (expires at, value): the newest version, trusted until expiry.
        self.latest: dict[tuple[str, str], tuple[float, Any]] = {}
        # flow_version.id -> Flow: versions are immutable, so these never go stale.
        self.flows: dict[int, Flow] = {}


_caches: "weakref.WeakKeyDictionary[Engine, _DatabaseCache]" = weakref.WeakKeyDictionary()
_MAX_FLOWS_PER_DATABASE = 512


_caches_lock = threading.Lock()  # adding or clearing databases' caches; lookups need no lock


def _cache_of(session: Session) -> _DatabaseCache:
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)  # a Connection knows its Engine
    cache = _caches.get(engine)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(engine)
            if cache is None:
                cache = _caches[engine] = _DatabaseCache()
    return cache


def _cached_latest(session: Session, kind: str, key: str, load: Any) -> Any:
    """The newest ``kind`` ``key`` from the cache if still trusted, else ``load()`` (and cache it).

    A session that has deployed in its open transaction reads the database and caches nothing: what
    it sees is not committed, and might never be.
    """
    if session.info.get(_DEPLOYING):
        return load()
    cache = _cache_of(session).latest
    now = time.monotonic()
    hit = cache.get((kind, key))
    if hit is not None and hit[0] > now:
        return hit[1]
    value = load()
    cache[(kind, key)] = (now + LATEST_TTL_SECONDS, value)
    return value


def forget_latest(session: Session | None = None) -> None:
    """Drop every cached "newest version" (all databases); called on each deploy.

    With a session, its transaction counts as deploying until it ends, and the cache is cleared
    again then: meanwhile other sessions, which cannot see the deploy yet, may cache the old version.
    """
    with _caches_lock:
        caches = list(_caches.values())
    for cache in caches:
        cache.latest.clear()
    if session is None:
        return
    session.info[_DEPLOYING] = True
    if not session.info.get(_LISTENING):
        session.info[_LISTENING] = True
        event.listen(session, "after_transaction_end", _transaction_ended)


def _transaction_ended(session: Session, transaction: Any) -> None:
    # Savepoints end inside the transaction: only the outermost one commits or discards the deploy.
    if transaction.parent is None and session.info.pop(_DEPLOYING, None):
        forget_latest()


def latest_flow(session: Session, flow_id: str) -> tuple[int, Flow]:
    """(version id, Flow) of the newest active version of a flow; cached, see ``LATEST_TTL_SECONDS``.

    A deploy through this process is seen at once; one by another process within
    ``LATEST_TTL_SECONDS``. Raises FlowLookupError when the flow has no active version.
    """

    def load() -> tuple[int, Flow]:
        version = latest_flow_version(session, flow_id)
        return version.id, flow_of(version)

    version_id, flow = _cached_latest(session, "flow", flow_id, load)
    _remember_flow(session, version_id, flow)
    return version_id, flow


def flow_of_version(session: Session, version_id: int) -> Flow:
    """The Flow of a deployed version, by id (versions never change, so this is cached for good)."""
    flow = _cache_of(session).flows.get(version_id)
    if flow is None:
        version = session.get(FlowVersion, version_id)
        assert version is not None  # instances reference their version by a foreign key
        flow = flow_of(version)
        _remember_flow(session, version_id, flow)
    return flow


def _remember_flow(session: Session, version_id: int, flow: Flow) -> None:
    if session.info.get(_DEPLOYING):
        return  # an uncommitted version: if it is rolled back, its id may be given to another
    flows = _cache_of(session).flows
    if version_id not in flows:
        if len(flows) >= _MAX_FLOWS_PER_DATABASE:
            flows.clear()
        flows[version_id] = flow


def latest_flow_version(session: Session, flow_id: str) -> FlowVersion:
    version = session.scalars(
        select(FlowVersion)
        .where(FlowVersion.flow_id == flow_id, FlowVersion.active.is_(True))
        .order_by(FlowVersion.version.desc())
        .limit(1)
    ).first()
    if version is None:
        raise FlowLookupError(flow_id)
    return version


def latest_flow_versions(session: Session) -> list[FlowVersion]:
    newest = (
        select(FlowVersion.flow_id, func.max(FlowVersion.version).label("v"))
        .where(FlowVersion.active.is_(True))
        .group_by(FlowVersion.flow_id)
        .subquery()
    )
    return list(
        session.scalars(
            select(FlowVersion)
            .join(newest, (FlowVersion.flow_id == newest.c.flow_id) & (FlowVersion.version == newest.c.v))
            .order_by(FlowVersion.flow_id)
        )
    )


def latest_form(session: Session, form_id: str) -> Form:
    """The newest version of a form; cached per process.

    A deploy through this process is seen at once; one by another process within
    ``LATEST_TTL_SECONDS``. Raises FormLookupError when no version is deployed.
    """

    def load() -> Form:
        version = session.scalars(
            select(FormVersion).where(FormVersion.form_id == form_id).order_by(FormVersion.version.desc()).limit(1)
        ).first()
        if version is None:
            raise FormLookupError(form_id)
        return _parse_form(version.id, version.form_id, version.source)

    return _cached_latest(session, "form", form_id, load)  # type: ignore[no-any-return]


def catalog(
    session: Session, connectors: Registry | Iterable[str], extra_forms: Iterable[str] = (), extra_flows: Iterable[str] = ()
) -> Catalog:
    """What a deployed flow may refer to; given the registry, also message schemas and attached configurations."""
    forms = set(session.scalars(select(FormVersion.form_id).distinct())) | set(extra_forms)
    flows = set(session.scalars(select(FlowVersion.flow_id).distinct())) | set(extra_flows)
    roles = set(BUILTIN_ROLES)
    for user_roles in session.scalars(select(User.roles)):
        roles.update(user_roles or [])
    segments = frozenset(session.scalars(select(Segment.name)))
    if isinstance(connectors, Registry):
        configurations = {name: type_ for name, type_ in session.execute(select(ConnectorConfig.name, ConnectorConfig.type))}
        return Catalog(forms=frozenset(forms), connectors=connectors.names(), roles=frozenset(roles), flows=frozenset(flows),
                       message_schemas=connectors.message_schemas(), configurable=connectors.configurable(),
                       configurations=configurations, segments=segments)
    return Catalog(forms=frozenset(forms), connectors=frozenset(connectors), roles=frozenset(roles), flows=frozenset(flows),
                   segments=segments)


@dataclass(frozen=True, slots=True)
class Deployed:
    kind: str  # flow or form
    id: str
    version: int
    changed: bool
    source: str


def _next_version(session: Session, model: type[FlowVersion] | type[FormVersion], key: str) -> int:
    column = model.flow_id if model is FlowVersion else model.form_id  # type: ignore[union-attr]
    current = session.scalar(select(func.max(model.version)).where(column == key))
    return (current or 0) + 1


def _as_text(data: str | bytes) -> str:
    # Only called after the loader accepted the bytes, so decoding cannot fail here.
    return data if isinstance(data, str) else data.decode("utf-8-sig")


def deploy_form(session: Session, data: str | bytes, source: str, now: datetime) -> Deployed:
    form_id = Path(source).name.removesuffix(FORM_SUFFIX)
    form = load_form_text(data, source, form_id)
    text = _as_text(data)
    digest = content_hash(text)
    existing = session.scalars(
        select(FormVersion).where(FormVersion.form_id == form.id, FormVersion.content_hash == digest)
    ).first()
    if existing is not None:
        return Deployed("form", form.id, existing.version, False, source)
    version = FormVersion(
        form_id=form.id, version=_next_version(session, FormVersion, form.id), content_hash=digest, source=text, deployed_at=now
    )
    forget_latest(session)
    session.add(version)
    session.flush()
    return Deployed("form", form.id, version.version, True, source)


def deploy_flow(
    session: Session, data: str | bytes, source: str, now: datetime, cat: Catalog, by: str | None = None
) -> Deployed:
    expected = Path(source).stem if source.endswith((".yaml", ".yml")) else None
    flow = load_flow_text(data, source, cat, expected_id=expected)
    text = _as_text(data)
    digest = content_hash(text)
    existing = session.scalars(
        select(FlowVersion).where(FlowVersion.flow_id == flow.id, FlowVersion.content_hash == digest)
    ).first()
    if existing is not None:
        return Deployed("flow", flow.id, existing.version, False, source)
    version = FlowVersion(
        flow_id=flow.id,
        version=_next_version(session, FlowVersion, flow.id),
        content_hash=digest,
        source=text,
        name=dict(flow.name),
        deployed_at=now,
        deployed_by=by,
    )
    forget_latest(session)
    session.add(version)
    session.flush()
    return Deployed("flow", flow.id, version.version, True, source)


def collect_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """(flow files, form files) under the given files and folders, sorted."""
    flows: list[Path] = []
    forms: list[Path] = []
    for raw in paths:
        path = Path(raw)
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for p in candidates:
            if p.name.endswith(FORM_SUFFIX):
                forms.append(p)
            elif p.suffix in (".yaml", ".yml") and p.is_file():
                flows.append(p)
            elif not path.is_dir():
                raise DefinitionInvalid([Problem(str(p), 0, 0, t("file.kind"))])
    return flows, forms


def deploy_paths(
    session: Session, paths: Iterable[str | Path], now: datetime, connectors: Registry | Iterable[str], by: str | None = None
) -> list[Deployed]:
    """Validate everything first, then deploy: one bad file deploys nothing."""
    flow_files, form_files = collect_files(paths)
    problems: list[Problem] = []
    results: list[Deployed] = []
    for p in form_files:
        try:
            results.append(deploy_form(session, p.read_bytes(), str(p), now))
        except DefinitionInvalid as exc:
            problems.extend(exc.problems)
    cat = catalog(
        session,
        connectors,
        extra_forms=(p.name.removesuffix(FORM_SUFFIX) for p in form_files),
        extra_flows=(p.stem for p in flow_files),
    )
    for p in flow_files:
        try:
            results.append(deploy_flow(session, p.read_bytes(), str(p), now, cat, by))
        except DefinitionInvalid as exc:
            problems.extend(exc.problems)
    if problems:
        raise DefinitionInvalid(problems)
    return results
