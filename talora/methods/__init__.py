"""The method registry: every ``@register``-ed Method in this package, by its canonical name.

A new method is one new module here; it is found by importing the package's modules,
so there is no list to keep. ``METHODS`` is read-only and built once, at import.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import MappingProxyType

from ..core.prompts import PromptInputs
from ..errors import ConfigError
from .base import Method


def _discover() -> MappingProxyType:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[Method]] = {}
    todo = list(Method.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__dict__.get("registered"):
            if cls.name in found and found[cls.name] is not cls:
                raise TypeError(f"two methods are named {cls.name!r}: {found[cls.name]} and {cls}")
            found[cls.name] = cls
    return MappingProxyType(dict(sorted(found.items())))


METHODS = _discover()


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "Method", "PromptInputs", "method_class"]
