"""MPT: a shared prompt times a rank-1 task factor, distilled from single-task teacher prompts.

Multitask prompt tuning (Wang et al., 2023, arXiv:2303.02861); baseline (7) of TA-LoRA
(arXiv:2505.00009) §IV-A, "All For One" in DTVG (arXiv:2503.18063) §2. One shared input-level
prompt P* (m x d) modulated per task by a rank-1 Hadamard factor,

    P_k = P* o (u_k v_k^T),    u_k in R^m, v_k in R^d, both starting at ones (so P_k = P*).

Source training: stage 1 = per-task prompt tuning gives the teacher prompts; P* starts as
their mean and P*, u, v are trained on the task mixture with the answer loss plus prompt
distillation, ``distill_weight * tau^2 * KL(teacher || student)`` between the next-token
distributions (temperature tau) at the answer positions, the teacher being the frozen model
with task k's stage-1 prompt, run without autograd. MPT's hidden-state distillation term is
left out. The teachers are a non-persistent buffer: needed only while training the sources,
so neither adapters nor transfers carry them (a resumed run gets them back from stage 1).
The student's forward pass is run a second time for the KL term (the trainer's answer loss
does not share its logits), so with the teacher's pass a distillation step costs about twice
a plain one.
``for_target``: a one-task MPT with the source P*, u = v = 1 (it starts at P*). MPT's target
adaptation starts the target prompt as the shared prompt times a task-specific low-rank matrix
and trains both, so the shots train P* and u, v (m*d + m + d parameters per target, the count
of MPT's tables); ``transfer_shared: false`` keeps P* frozen and learns u, v alone (m + d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.backbone import Backbone
from ..core.forward import hidden_at, output_head, prompted_hidden
from ..core.prompts import PromptInputs
from .base import Method, Shapes, SoftPromptConfig, TargetContext, register, vocab_init
from .prompt_tuning import PromptTuning, single_task_prompts


@dataclass
class MPTConfig(SoftPromptConfig):
    lr: float = 3e-2  # P* (and the stage-1 teacher prompts)
    lr_task: float = 3e-2  # u, v (source training and transfer)
    distill_weight: float = 1.0  # weight of the KL distillation term (0 = off)
    distill_temperature: float = 1.0  # tau, softens both distributions; the term is scaled by tau^2
    transfer_shared: bool = True  # few-shot transfer trains P* with u, v (MPT's target adaptation); false: u, v only

    def __post_init__(self):
        super().__post_init__()
        if self.distill_weight < 0:
            raise ValueError("distill_weight must be >= 0")
        if self.distill_temperature <= 0:
            raise ValueError("distill_temperature must be > 0")


@dataclass
class MPTState:
    transfer: bool = False  # built for a transfer target: no stage 1, no teachers


@register
class MPT(Method):
    name = "mpt"
    config_cls = MPTConfig
    state_cls = MPTState

    def __init__(self, config: MPTConfig, backbone: Backbone, task_names: list[str], state: MPTState | None = None):
        super().__init__(config, backbone, task_names, state)
        T, m, d = len(task_names), config.length, Shapes.of(backbone).hidden
        self.hidden = d
        gen = torch.Generator().manual_seed(config.init_seed)
        init = vocab_init(backbone, 1, config, gen)
        self.shared = nn.Parameter(init[0])  # P*, (m, d)
        self.u = nn.Parameter(torch.ones(T, m))
        self.v = nn.Parameter(torch.ones(T, d))
        self.register_buffer("teachers", torch.empty(0), persistent=False)  # (T, m, d) after init_from_stage1
        if self.state.transfer:
            self.shared.requires_grad_(config.transfer_shared)

    def task_prompts(self, task_ids: torch.Tensor) -> torch.Tensor:
        """(B, m, d): P* o (u_k v_k^T) for each row's task k."""
        return self.shared[None] * self.u[task_ids][:, :, None] * self.v[task_ids][:, None, :]

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        return PromptInputs(input_prefix=self.task_prompts(task_ids))

    def stage1(self, backbone: Backbone) -> PromptTuning | None:
        """The teachers: per-task prompt tuning on the source tasks (none for a transfer target)."""
        if self.state.transfer:
            return None
        return single_task_prompts(self.config, backbone, self.task_names)

    @torch.no_grad()
    def init_from_stage1(self, stage1: Method) -> None:
        """Keep the stage-1 prompts as teachers; P* starts as their mean."""
        prompts = stage1.prompt.detach()
        if tuple(prompts.shape) != (len(self.task_names), *self.shared.shape):
            raise ValueError(
                f"stage-1 prompts {tuple(prompts.shape)} do not match {len(self.task_names)} tasks "
                f"of length {self.config.length}"
            )
        self.teachers = prompts.clone()
        self.shared.copy_(prompts.mean(dim=0))

    def auxiliary_loss(self, backbone: Backbone, batch) -> torch.Tensor | None:
        if self.config.distill_weight == 0 or self.teachers.numel() == 0:
            return None
        weight, bias = output_head(backbone)
        tau = self.config.distill_temperature
        student = F.linear(hidden_at(backbone, self, batch), weight, bias).float()
        with torch.no_grad():
            teachers = PromptInputs(input_prefix=self.teachers[batch.task_ids])
            teacher = F.linear(prompted_hidden(backbone, teachers, batch), weight, bias).float()
        kl = F.kl_div(
            F.log_softmax(student / tau, -1), F.log_softmax(teacher / tau, -1), log_target=True, reduction="batchmean"
        )
        return self.config.distill_weight * tau**2 * kl

    def param_groups(self) -> list[dict]:
        groups = [
            {"name": "shared", "params": [self.shared], "lr": self.config.lr},
            {"name": "uv", "params": [self.u, self.v], "lr": self.config.lr_task},
        ]
        return [g for g in groups if all(p.requires_grad for p in g["params"])]

    def for_target(self, target: TargetContext) -> MPT:
        new = MPT(self.config, target.backbone, [target.task_name], MPTState(transfer=True))
        with torch.no_grad():
            new.shared.copy_(self.shared)
        return new

    def trainable_parameters(self) -> dict[str, int]:
        m, d = self.config.length, self.hidden
        if self.state.transfer and self.shared.requires_grad:  # the target's P* is its own copy
            return {"shared": 0, "per_task": m * d + m + d}
        return {"shared": m * d, "per_task": m + d}

    @classmethod
    def parameter_formula(cls) -> str:
        return "shared m*d (P*); per task m + d (u, v)"
