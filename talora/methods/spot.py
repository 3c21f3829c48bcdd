"""SPoT (multi-task): one prompt trained on all source tasks starts every target's prompt.

Vu et al., 2022 (arXiv:2110.07904); baseline (5) of TA-LoRA (arXiv:2505.00009) §IV-A and
"All For One" in DTVG (arXiv:2503.18063) §2. ONE input-level prompt trained on the mixture of all
source tasks (every task reads the same m soft tokens), which then initialises each target
task's prompt. ``for_target`` copies the source prompt into a fresh one-task SPoT that the
pipeline trains on the shots: the transfer is the initialisation. (SPoT's other variant,
retrieving the most similar single-task prompt, is ``spot_retrieval``.)
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.backbone import Backbone
from ..core.prompts import PromptInputs
from .base import Method, Shapes, TargetContext, register, vocab_init
from .prompt_tuning import PromptTuningConfig


@register
class SPoT(Method):
    name = "spot"
    config_cls = PromptTuningConfig  # the same fields as prompt tuning: length, lr, init_vocab, init_seed

    def __init__(self, config: PromptTuningConfig, backbone: Backbone, task_names: list[str], state=None):
        super().__init__(config, backbone, task_names, state)
        gen = torch.Generator().manual_seed(config.init_seed)
        init = vocab_init(backbone, 1, config, gen)
        self.prompt = nn.Parameter(init[0])  # (m, d), shared by every task
        self.hidden = Shapes.of(backbone).hidden

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        return PromptInputs(input_prefix=self.prompt.expand(len(task_ids), -1, -1))

    def param_groups(self) -> list[dict]:
        return [{"name": "prompt", "params": [self.prompt], "lr": self.config.lr}]

    def for_target(self, target: TargetContext) -> SPoT:
        new = SPoT(self.config, target.backbone, [target.task_name])
        with torch.no_grad():
            new.prompt.copy_(self.prompt)
        return new

    def trainable_parameters(self) -> dict[str, int]:
        # As the papers' tables: what one task trains and stores (its copy of the prompt).
        return {"shared": 0, "per_task": self.config.length * self.hidden}

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task m*d (one prompt trained on all source tasks, copied per target)"
