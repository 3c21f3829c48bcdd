"""Deep prompt tuning: one prompt per task on the last L layers, read through prompt attention.

This is TA-LoRA's stage 1 (its "single-source base models") and the fairest plain
prompt-tuning comparison: the same placement, length and attention as TA-LoRA, no
sharing between tasks. Each task has its own zero-initialised gates and each example's
gradient reaches only its task's prompt and gates, but the tasks trained together in mixed
batches are NOT T single-task runs: AdamW's momentum keeps moving a task's prompt at steps
without its examples, gradient clipping takes the norm over every task, and a step's loss is
the mean over all its answer tokens. ``benchmarks/stage1_mixed_vs_separate.py`` measured it
(SmolLM2-135M, three synthetic tasks, 60 steps of 6): each task trained alone on exactly the
examples and steps it had in the mixed run ends up to 0.52 away (max abs) from the mixed
run's prompts, which moved at most 0.55, with or without clipping; separate runs with their
own data order differ by 0.84, as much as the mixed run with another seed (0.83). Selection
on the validation score is shared too: the best step is one for all tasks. See docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.attention import LayerPrompts
from ..core.backbone import Backbone
from ..core.prompts import PromptInputs
from .base import (
    Method,
    PromptConfig,
    TargetContext,
    deep_vocab_init,
    merge_task_axes,
    register,
    slice_task,
)


@dataclass
class DeepPromptTuningConfig(PromptConfig):
    lr: float = 3e-2  # AdamW learning rate of the prompts
    lr_gate: float = 3e-2  # learning rate of the gates (zero-initialised, one per layer, head and task)


@register
class DeepPromptTuning(Method):
    name = "deep_prompt_tuning"
    config_cls = DeepPromptTuningConfig

    def __init__(self, config: DeepPromptTuningConfig, backbone: Backbone, task_names: list[str], state=None):
        super().__init__(config, backbone, task_names, state)
        self._place_on_top_layers(config, backbone)
        self.frozen_below = self.first_layer
        gen = torch.Generator().manual_seed(config.init_seed)
        init = deep_vocab_init(backbone, self.first_layer, self.layers, len(task_names), config, gen)
        self.prompts = nn.Parameter(init)  # (L, T, m, d)
        self.gates = nn.Parameter(torch.zeros(len(task_names), self.layers, self.heads))  # (T, L, H)

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        gates = None if self.config.attention == "plain" else self.gates[task_ids].transpose(0, 1)
        return PromptInputs(
            layer_prompts=LayerPrompts(self.prompts[:, task_ids], gates, self.first_layer, self.config.attention)
        )

    def param_groups(self) -> list[dict]:
        groups = [{"name": "prompt", "params": [self.prompts], "lr": self.config.lr}]
        if self.config.attention == "gated":
            groups.append({"name": "gate", "params": [self.gates], "lr": self.config.lr_gate})
        return groups

    def gate_values(self) -> list[float]:
        return torch.tanh(self.gates.detach()).mean(dim=(0, 2)).tolist()

    def log_state(self) -> dict:
        """Mean pairwise cosine similarity of the tasks' prompts at the first, middle and last
        prompted layer (1-based layer numbers): TA-LoRA's interlayer analysis of its base models
        (arXiv:2505.00009, Appendix A), read by ``talora analyze interlayer``."""
        if len(self.task_names) < 2:
            return {}
        picks = sorted({0, self.layers // 2, self.layers - 1})
        out = {}
        for i in picks:
            flat = nn.functional.normalize(self.prompts.detach()[i].flatten(1).float(), dim=1)  # (T, m*d)
            sims = flat @ flat.T
            pairs = len(self.task_names) * (len(self.task_names) - 1)
            out[str(self.first_layer + i + 1)] = round(((sims.sum() - sims.diagonal().sum()) / pairs).item(), 6)
        return {"base_similarity": out}

    def for_target(self, target: TargetContext) -> DeepPromptTuning:
        return DeepPromptTuning(self.config, target.backbone, [target.task_name])

    def trainable_parameters(self) -> dict[str, int]:
        gates = self.layers * self.heads if self.config.attention == "gated" else 0
        return {"shared": 0, "per_task": self.layers * self.config.length * self.hidden + gates}

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task L*m*d + L*H (gates)"

    def task_slice(self, name: str) -> DeepPromptTuning:
        return slice_task(self, name, {"prompts": 1, "gates": 0})

    @classmethod
    def merge_tasks(cls, methods: list[Method], backbone: Backbone) -> DeepPromptTuning | None:
        return merge_task_axes(methods, {"prompts": 1, "gates": 0})
