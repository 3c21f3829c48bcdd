"""The method registry: canonical name -> Method class (see ``talora methods``)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Method, PromptInputs
from .deep_prompt_tuning import DeepPromptTuning
from .prompt_tuning import PromptTuning
from .talora import TALoRA

METHODS: dict[str, type[Method]] = {m.name: m for m in (PromptTuning, DeepPromptTuning, TALoRA)}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "Method", "PromptInputs", "method_class", "PromptTuning", "DeepPromptTuning", "TALoRA"]
