"""Events and effects are frozen, slotted dataclasses: plain data that nothing may change.

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__`` (looked up
and called per field, to get past the class's own refusing ``__setattr__``); an advance builds
several of these records per step. ``quick_init`` gives such a class an ``__init__`` with the same
signature and defaults that sets each slot through the slot's own descriptor instead, about twice
as fast. The instances are the same: frozen (setting a field still raises), equal, hashable.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

_T = TypeVar("_T")


class _Factory:
    """The default of a field with a ``default_factory``: made anew by each ``__init__``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def quick_init(cls: type[_T]) -> type[_T]:
    """Replace the ``__init__`` of a frozen, slotted dataclass (see the module's doc)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass without __post_init__")
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    args, body = ["self"], []
    for index, field in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not field.init or field.kw_only:
            raise TypeError(f"{cls.__name__}.{field.name}: only plain positional fields are supported")
        name = field.name
        names[f"_set_{index}"] = cls.__dict__[name].__set__  # the slot's member descriptor
        if field.default is not dataclasses.MISSING:
            names[f"_default_{index}"] = field.default
            args.append(f"{name}=_default_{index}")
        elif field.default_factory is not dataclasses.MISSING:
            names[f"_factory_{index}"] = field.default_factory
            args.append(f"{name}=_FACTORY")
            body.append(f"    if {name} is _FACTORY:\n        {name} = _factory_{index}()")
        else:
            args.append(name)
        body.append(f"    _set_{index}(self, {name})")
    source = f"def __init__({', '.join(args)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, names)  # noqa: S102 - source built above from the class's own field names
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    return cls
