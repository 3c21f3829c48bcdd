"""ATTEMPT: a per-instance attentional mixture of frozen source prompts and a target prompt.

Asai et al., 2022 (arXiv:2205.11961); baseline (6) of TA-LoRA (arXiv:2505.00009) §IV-A,
"All For One" in DTVG (arXiv:2503.18063) §2. The mixture is computed per instance and prepended at the input.

For an input x with token embeddings X (frozen embedding layer; padding and the answer tokens
appended for the loss are masked out, so the mixture never sees the label):

    x^ = maxpool_tokens(X),   h = LayerNorm(W_up SiLU(W_down x^))                  (d)
    p^_j = maxpool_tokens(P_j)  for the S source prompts and P_{S+1} = P_target
    a = softmax_j(p^_j . h / T)                                                  (S+1 weights)
    P(x) = P_target + sum_{j=1}^{S+1} a_j P_j                                   (m x d)

W_down (d -> r, no bias) and W_up (r -> d, no bias) form the attention module; r defaults to
the prompt length m and T to e*d (the 2087 of ATTEMPT's T5-base configurations, d = 768).
Source training: stage 1 = per-task prompt tuning gives the source prompts (then frozen,
kept in the state dict because a target needs them); stage 2 trains the shared attention
module and one target prompt per source task on the task mixture. ``for_target`` keeps the
sources frozen and trains a new, vocabulary-initialised target prompt together with the
(source-trained) attention module on the shots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.backbone import Backbone
from ..core.prompts import PromptInputs
from ..errors import ConfigError
from .base import Method, Shapes, SoftPromptConfig, TargetContext, register, vocab_init
from .prompt_tuning import PromptTuning, single_task_prompts


@dataclass
class ATTEMPTConfig(SoftPromptConfig):
    lr: float = 3e-2  # target prompts; also the stage-1 source prompts
    lr_attention: float = 1e-2  # W_down, W_up and the LayerNorm
    attn_hidden: int | None = None  # r, width of W_down/W_up; null = m
    temperature: float | None = None  # T of the softmax over prompts; null = e * d

    def __post_init__(self):
        super().__post_init__()
        if self.attn_hidden is not None and self.attn_hidden < 1:
            raise ValueError("attn_hidden must be >= 1 (or null for the prompt length)")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError("temperature must be > 0 (or null for e * d)")


def prompt_token_mask(batch) -> torch.Tensor:
    """(B, seq) True on each row's prompt tokens: not padding, and not the answer appended for the loss.

    A row's first scored column is its last prompt token, in answer and prompt batches alike.
    """
    first_scored = torch.full_like(batch.input_ids[:, 0], batch.input_ids.shape[1])
    first_scored = first_scored.scatter_reduce(0, batch.rows, batch.cols, reduce="amin")
    positions = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)[None]
    return (positions <= first_scored[:, None]) & batch.attention_mask.bool()


@dataclass
class ATTEMPTState:
    sources: list[str] | None = None  # a target's frozen source prompts' tasks; null = this method's own tasks


@register
class ATTEMPT(Method):
    name = "attempt"
    config_cls = ATTEMPTConfig
    state_cls = ATTEMPTState

    def __init__(
        self, config: ATTEMPTConfig, backbone: Backbone, task_names: list[str], state: ATTEMPTState | None = None
    ):
        super().__init__(config, backbone, task_names, state)
        sources = self.state.sources
        self.sources = list(sources) if sources is not None else list(task_names)
        if not self.sources:
            raise ConfigError("attempt: sources must name at least one source task")
        self._backbone = backbone  # a plain reference (not a submodule): its weights are not ours
        d = Shapes.of(backbone).hidden
        self.hidden, r = d, config.attn_hidden or config.length
        self.temperature = config.temperature or math.e * d
        gen = torch.Generator().manual_seed(config.init_seed)
        init = vocab_init(backbone, len(task_names), config, gen)
        self.prompt = nn.Parameter(init)  # (T, m, d) target prompts
        # Filled by init_from_stage1 (source training) or for_target/load_state_dict (a target).
        self.register_buffer("source_prompts", torch.zeros(len(self.sources), config.length, d))
        self.down = nn.Linear(d, r, bias=False)
        self.up = nn.Linear(r, d, bias=False)
        self.norm = nn.LayerNorm(d)
        with torch.no_grad():
            for lin in (self.down, self.up):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) / lin.in_features**0.5)

    def attention_weights(self, task_ids: torch.Tensor, batch) -> torch.Tensor:
        """(B, S+1) mixture weights over the source prompts and each row's target prompt."""
        if batch is None:
            raise ValueError("attempt needs the batch's tokens to weigh its prompts (prompt_inputs(..., batch=batch))")
        with torch.no_grad():  # the embedding layer is frozen; only the pooled vector matters
            embeds = self._backbone.model.get_input_embeddings()(batch.input_ids)
        keep = prompt_token_mask(batch)[..., None]
        pooled = embeds.masked_fill(~keep, float("-inf")).amax(dim=1)  # (B, d)
        h = self.norm(self.up(F.silu(self.down(pooled.to(self.down.weight.dtype)))))
        keys = self._all_prompts(task_ids).amax(dim=2)  # (B, S+1, d)
        return torch.softmax(torch.einsum("bjd,bd->bj", keys, h) / self.temperature, dim=-1)

    def _all_prompts(self, task_ids: torch.Tensor) -> torch.Tensor:
        """(B, S+1, m, d): the frozen sources followed by each row's target prompt."""
        sources = self.source_prompts.expand(len(task_ids), -1, -1, -1)
        return torch.cat([sources, self.prompt[task_ids][:, None]], dim=1)

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        weights = self.attention_weights(task_ids, batch)
        mixture = torch.einsum("bj,bjmd->bmd", weights, self._all_prompts(task_ids))
        return PromptInputs(input_prefix=self.prompt[task_ids] + mixture)

    def stage1(self, backbone: Backbone) -> PromptTuning | None:
        """Per-task prompt tuning on the source tasks; a target (built by for_target) has none."""
        if self.state.sources is not None:
            return None
        return single_task_prompts(self.config, backbone, self.task_names)

    @torch.no_grad()
    def init_from_stage1(self, stage1: Method) -> None:
        if tuple(stage1.prompt.shape) != tuple(self.source_prompts.shape):
            raise ValueError(
                f"stage-1 prompts {tuple(stage1.prompt.shape)} do not match the "
                f"{len(self.sources)} sources of length {self.config.length}"
            )
        self.source_prompts.copy_(stage1.prompt)

    def param_groups(self) -> list[dict]:
        attention = [*self.down.parameters(), *self.up.parameters(), *self.norm.parameters()]
        return [
            {"name": "prompt", "params": [self.prompt], "lr": self.config.lr},
            {"name": "attention", "params": attention, "lr": self.config.lr_attention},
        ]

    def for_target(self, target: TargetContext) -> ATTEMPT:
        new = ATTEMPT(self.config, target.backbone, [target.task_name], ATTEMPTState(sources=self.sources))
        with torch.no_grad():
            new.source_prompts.copy_(self.source_prompts)
            for mine, theirs in ((new.down, self.down), (new.up, self.up), (new.norm, self.norm)):
                mine.load_state_dict(theirs.state_dict())
        return new

    def trainable_parameters(self) -> dict[str, int]:
        attention = sum(p.numel() for m in (self.down, self.up, self.norm) for p in m.parameters())
        return {"shared": attention, "per_task": self.config.length * self.hidden}

    @classmethod
    def parameter_formula(cls) -> str:
        return "shared 2*d*r + 2*d (attention); per task m*d; S*m*d frozen sources stored"
