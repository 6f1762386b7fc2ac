"""``careflow validate``: check flow and form files without a database."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from connectors.registry import Registry
from engine.errors import DefinitionInvalid, Problem
from engine.flow.loader import load_flow
from engine.flow.validate import Catalog
from engine.forms import load_form
from engine.roles import BUILTIN_ROLES
from engine.store.definitions import FORM_SUFFIX, collect_files


def validate_paths(paths: Iterable[str | Path], registry: Registry | None = None) -> tuple[list[Problem], list[str]]:
    """Every problem in the given files and folders, and the files checked.

    Forms and flows named by the checked flows may live among the checked files or in the
    built-in ``forms/`` and ``workflows/`` folders.
    """
    from engine.core import BUILTIN_FLOWS, BUILTIN_FORMS

    try:
        flow_files, form_files = collect_files(paths)
    except DefinitionInvalid as exc:
        return list(exc.problems), []
    problems: list[Problem] = []
    for path in form_files:
        try:
            load_form(path)
        except DefinitionInvalid as exc:
            problems.extend(exc.problems)
    known_forms = {p.name.removesuffix(FORM_SUFFIX) for p in form_files}
    known_forms |= {p.name.removesuffix(FORM_SUFFIX) for p in BUILTIN_FORMS.glob(f"*{FORM_SUFFIX}")}
    known_flows = {p.stem for p in flow_files} | {p.stem for p in BUILTIN_FLOWS.glob("*.yaml")}
    registry = registry or Registry()
    catalog = Catalog(
        forms=frozenset(known_forms),
        connectors=registry.names(),
        roles=BUILTIN_ROLES,
        flows=frozenset(known_flows),
        message_schemas=registry.message_schemas(),
        configurable=registry.configurable(),
    )
    for path in flow_files:
        try:
            load_flow(path, catalog)
        except DefinitionInvalid as exc:
            problems.extend(exc.problems)
    return problems, [str(p) for p in [*form_files, *flow_files]]
