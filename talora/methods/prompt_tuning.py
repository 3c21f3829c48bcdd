"""Vanilla prompt tuning (Lester et al., 2021, arXiv:2104.08691): m soft tokens prepended to the input embeddings.

One prompt per task; a batch mixing tasks gathers each example's prompt by task id.
Only the prompt is trained; gradients flow back through every layer of the frozen
model, which is why this is the slowest of the prompt methods per step.
For a new task (``for_target``) a fresh prompt is trained from the vocabulary
initialisation: vanilla prompt tuning transfers nothing (SPoT is the transfer variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.backbone import Backbone
from ..core.prompts import PromptInputs
from .base import (
    Method,
    PerTaskPrompt,
    Shapes,
    SoftPromptConfig,
    TargetContext,
    register,
    vocab_init,
)


@dataclass
class PromptTuningConfig(SoftPromptConfig):
    lr: float = 3e-2  # AdamW learning rate of the prompt


def single_task_prompts(cfg, backbone: Backbone, task_names: list[str]) -> PromptTuning:
    """Per-task prompt tuning with ``cfg``'s length, rate and initialisation: the stage 1 of the
    methods built on single-task source prompts (ATTEMPT's sources, MPT's teachers)."""
    return PromptTuning(
        PromptTuningConfig(length=cfg.length, init_vocab=cfg.init_vocab, init_seed=cfg.init_seed, lr=cfg.lr),
        backbone,
        task_names,
    )


@register
class PromptTuning(PerTaskPrompt, Method):
    name = "prompt_tuning"
    config_cls = PromptTuningConfig
    per_task_tensor = "prompt"  # SPoT-retrieval, a subclass, adds no per-task tensor of its own

    def __init__(self, config: PromptTuningConfig, backbone: Backbone, task_names: list[str], state=None):
        super().__init__(config, backbone, task_names, state)
        gen = torch.Generator().manual_seed(config.init_seed)
        init = vocab_init(backbone, len(task_names), config, gen)
        self.prompt = nn.Parameter(init)  # (T, m, d)
        self.hidden = Shapes.of(backbone).hidden

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        return PromptInputs(input_prefix=self.prompt[task_ids])

    def param_groups(self) -> list[dict]:
        return [{"name": "prompt", "params": [self.prompt], "lr": self.config.lr}]

    def for_target(self, target: TargetContext) -> PromptTuning:
        return PromptTuning(self.config, target.backbone, [target.task_name])

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task m*d"
