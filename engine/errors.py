"""The engine's exceptions and the located problem record.

Error tree::

    EngineError
    ├── DefinitionInvalid            a flow or form file has problems (carries every Problem)
    │   ├── FlowInvalid
    │   └── FormInvalid
    ├── ExpressionError              an expression or template failed to parse or evaluate
    ├── SubmissionInvalid            form data failed validation (carries FieldError list)
    ├── InvalidTransition            a state change that the state machine forbids
    ├── Conflict                     someone else changed the row first (task already completed...)
    ├── PermissionDenied             the user may not do this
    └── NotFound (also LookupError)  an id that does not exist
        ├── FlowLookupError
        ├── InstanceLookupError
        ├── TaskLookupError
        └── CustomerLookupError

This module imports only the standard library: the pure core depends on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.problem_text import render


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in a definition file.

    ``line`` and ``column`` are 1-based (0 when unknown); ``path`` is a JSON path such as
    ``$.steps[3].next``. ``message`` is English; when it is an :class:`engine.problem_text.Text`
    :meth:`text` says it in Chinese too.
    """

    source: str
    line: int
    column: int
    message: str
    path: str = "$"

    def __str__(self) -> str:
        return self.in_lang("en")

    def text(self, lang: str = "en") -> str:
        """The message in ``lang`` (zh or en)."""
        return render(self.message, lang)

    def in_lang(self, lang: str) -> str:
        """Like ``str()``, with the message in ``lang``."""
        where = f"{self.source}:{self.line}:{self.column}"
        suffix = f" ({self.path})" if self.path and self.path != "$" else ""
        return f"{where}: {self.text(lang)}{suffix}"

    def as_dict(self, lang: str = "en") -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "column": self.column,
            "message": self.text(lang),
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field in a form submission; ``message`` is already in the user's language."""

    path: str
    field: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "field": self.field, "message": self.message, "code": self.code}


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    code = "engine_error"
    status = 400


class DefinitionInvalid(EngineError):
    """Raised when a flow or form file has one or more problems; all of them are collected."""

    code = "definition_invalid"
    status = 422

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = sorted(
            problems, key=lambda p: (p.source, p.line, p.column, p.message)
        )
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid definition")


class FlowInvalid(DefinitionInvalid):
    """Raised when a flow definition has problems."""

    code = "flow_invalid"


class FormInvalid(DefinitionInvalid):
    """Raised when a form definition has problems."""

    code = "form_invalid"


class ExpressionError(EngineError):
    """Raised when an expression or template cannot be parsed or evaluated."""

    code = "expression_error"

    def __init__(self, message: str, *, line: int = 0, source: str = ""):
        self.line = line
        self.source = source
        super().__init__(message)


class SubmissionInvalid(EngineError):
    """Raised when submitted form data does not satisfy the form's schema."""

    code = "validation_failed"
    status = 422

    def __init__(self, errors: Sequence[FieldError]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


class InvalidTransition(EngineError):
    """Raised when a state change is not allowed from the current state."""

    code = "invalid_transition"
    status = 409


class Conflict(EngineError):
    """Raised when another actor changed the same record first."""

    code = "conflict"
    status = 409


class PermissionDenied(EngineError):
    """Raised when the acting user may not perform the operation."""

    code = "forbidden"
    status = 403


class NotFound(EngineError, LookupError):
    """Raised when an id names nothing."""

    code = "not_found"
    status = 404
    kind = "object"

    def __init__(self, ident: Any, message: str | None = None):
        self.ident = ident
        super().__init__(message or f"No {self.kind} by the id {ident!r} was found")


class FlowLookupError(NotFound):
    """Raised when no deployed flow has the given id."""

    kind = "flow"


class InstanceLookupError(NotFound):
    """Raised when no instance has the given id."""

    kind = "instance"


class TaskLookupError(NotFound):
    """Raised when no task has the given id."""

    kind = "task"


class CustomerLookupError(NotFound):
    """Raised when no customer has the given id."""

    kind = "customer"


class FormLookupError(NotFound):
    """Raised when no deployed form has the given id."""

    kind = "form"
