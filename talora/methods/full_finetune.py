"""Full fine-tuning: every weight learns, in a copy swapped into the shared model when applied.

Baseline (1) "FT" of TA-LoRA (arXiv:2505.00009) §IV-A and of DTVG (arXiv:2503.18063) §4.1.

The method owns a copy of all parameters (tied weights stay tied: one copy serves every
module that shares the original). Inside ``applied`` the copies take the originals' places
in the model; on exit the very same original parameter objects are put back, so the shared
backbone is untouched for every other method. Memory: one more copy of the weights plus
AdamW's two moments (about 2 GB for a 135M model in float32). One copy is shared by all
source tasks (multi-task fine-tuning); ``for_target`` copies it for the new task and keeps
fine-tuning it on the shots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from ..core.backbone import Backbone
from .base import WholeSetMethod, register
from .patching import slot_key, swapped_parameters


@dataclass
class FullFinetuneConfig:
    lr: float = 2e-5  # AdamW learning rate of every weight


@register
class FullFinetune(WholeSetMethod):
    name = "full_finetune"
    config_cls = FullFinetuneConfig

    def __init__(self, config: FullFinetuneConfig, backbone: Backbone, task_names: list[str], state=None):
        super().__init__(config, backbone, task_names, state)
        # named_parameters lists a tied weight once, under its first name.
        self._names = [name for name, _ in backbone.model.named_parameters()]
        self.weights = nn.ParameterDict(
            {slot_key(name): nn.Parameter(p.detach().clone()) for name, p in backbone.model.named_parameters()}
        )

    @contextlib.contextmanager
    def applied(self, backbone: Backbone) -> Iterator[None]:
        model = backbone.model
        copies = {id(model.get_parameter(name)): self.weights[slot_key(name)] for name in self._names}
        with swapped_parameters(model, copies):
            yield

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task every parameter of the model"
