"""What a forward pass takes from a method: the prompts of a batch, and how a method is seen here.

The core runs methods without importing ``talora.methods`` (the methods build on the core, not the
reverse): ranking, generation and the prompted forward see a method as a ``Prompter``, the few
members they call. Every ``talora.methods.Method`` is one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from .attention import LayerPrompts

if TYPE_CHECKING:
    from .backbone import Backbone


@dataclass
class PromptInputs:
    """input_prefix: (B, m, d) soft tokens prepended to the input embeddings (input-level prompt tuning).
    layer_prompts: per-layer prompts read by the prompt attention (deep methods)."""

    input_prefix: torch.Tensor | None = None
    layer_prompts: LayerPrompts | None = None


class Prompter(Protocol):
    """A method as the forward pass, ranking and generation use it (``talora.methods.base.Method``)."""

    task_names: list[str]
    # Layers below this index see the frozen model unchanged: computed without autograd, and cacheable.
    frozen_below: int

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs: ...

    def applied(self, backbone: Backbone) -> contextlib.AbstractContextManager[None]: ...
