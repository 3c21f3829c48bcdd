"""The method registry: canonical name -> Method class (see ``talora methods``)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Method, PromptInputs
from .deep_prompt_tuning import DeepPromptTuning
from .prompt_tuning import PromptTuning
from .talora import TALoRA
from .adapter import Adapter
from .attempt import ATTEMPT
from .bitfit import BitFit
from .full_finetune import FullFinetune
from .lora import LoRA
from .mpt import MPT
from .spot import SPoT
from .spot_retrieval import SPoTRetrieval
from .dtvg import DTVG
from .tpv import TPV

METHODS: dict[str, type[Method]] = {m.name: m for m in (PromptTuning, DeepPromptTuning, TALoRA)}
METHODS.update({m.name: m for m in (TPV, DTVG)})
METHODS.update({m.name: m for m in (SPoT, SPoTRetrieval, ATTEMPT, MPT, LoRA, Adapter, BitFit, FullFinetune)})


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "Method", "PromptInputs", "method_class", "PromptTuning", "DeepPromptTuning", "TALoRA"]
