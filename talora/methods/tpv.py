"""Task prompt vectors (Belanec et al., arXiv:2408.01119): per-task input-level prompts from ONE initialisation.

Every source task's prompt starts at the same initialisation P_init, sampled from the
embedding rows of the first ``init_vocab`` vocabulary ids (seed ``init_seed``); the method
trains each task's task prompt vector (TPV) T_i and uses the prompt P_init + T_i. The
adapter therefore holds exactly the initialisation (``init``) and the TPVs (``tpv``).

For a new task (``for_target``) the prompt starts at P'_init + sum_s lambda_s T_s over the
chosen sources (``combine``), where P'_init is the shared initialisation or another one
(``target_init_seed``), and each lambda is picked from a grid by the target's score on its
k shots (the few-shot protocol has no other held-out data); then it is prompt-tuned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.backbone import Backbone
from ..core.prompts import PromptInputs
from ..errors import ConfigError
from .base import (
    Method,
    PerTaskPrompt,
    Shapes,
    SoftPromptConfig,
    TargetContext,
    register,
    vocab_init,
)
from .tpv_math import apply_vectors

LAMBDA_SEARCHES = ("shared", "each")


@dataclass
class TPVConfig(SoftPromptConfig):
    lr: float = 3e-2  # AdamW rate of the source TPVs
    combine: str | list[str] = "all"  # for_target: source TPVs added to the target's start: none | all | [names]
    lambdas: list[float] = field(default_factory=lambda: [1.0, 0.75, 0.5, 0.25, 0.0])  # grid; ties: first wins
    lambda_search: str = "each"  # shared: one lambda for the sum | each: then one pass refining each source's own
    target_init_seed: int | None = None  # the target's initialisation; null = the sources' shared one
    lr_target: float | None = None  # rate of the target's prompt in transfer; null = lr; 0 = no training

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.combine, str) and self.combine not in ("none", "all"):
            raise ValueError(f"combine must be 'none', 'all' or a list of source task names, got {self.combine!r}")
        if not self.lambdas:
            raise ValueError("lambdas must hold at least one rescaling factor")
        if self.lambda_search not in LAMBDA_SEARCHES:
            raise ValueError(f"lambda_search must be one of {LAMBDA_SEARCHES}, got {self.lambda_search!r}")
        if self.lr_target is not None and self.lr_target < 0:
            raise ValueError("lr_target must be >= 0")


def shared_init(backbone: Backbone, length: int, init_vocab: int, seed: int) -> torch.Tensor:
    """(m, d): the one vocabulary-sampled initialisation a seed stands for."""
    gen = torch.Generator().manual_seed(seed)
    return vocab_init(backbone, 1, SoftPromptConfig(length=length, init_vocab=init_vocab), gen)[0]


def choose_lambdas(
    score: Callable[[tuple[float, ...]], float], count: int, grid: list[float], each: bool
) -> tuple[float, ...]:
    """Rescaling factors for ``count`` TPVs: the best shared factor from ``grid``, then (``each``) one
    coordinate pass that changes a source's factor only when the score strictly improves.

    Ties keep the earlier candidate, so the grid's order is the preference order.
    """
    cache: dict[tuple[float, ...], float] = {}

    def scored(lambdas: tuple[float, ...]) -> float:
        if lambdas not in cache:
            cache[lambdas] = score(lambdas)
        return cache[lambdas]

    best = max((tuple([g] * count) for g in grid), key=scored)  # max keeps the first of equal scores
    if each and count > 1:
        for i in range(count):
            for g in grid:
                trial = best[:i] + (g,) + best[i + 1 :]
                if scored(trial) > scored(best):
                    best = trial
    return best


@dataclass
class TPVState:
    lambdas: dict[str, float] = field(default_factory=dict)  # a target's chosen rescaling factor per source


@register
class TPV(PerTaskPrompt, Method):
    name = "tpv"
    config_cls = TPVConfig
    state_cls = TPVState
    # The initialisation is shared; a target built on another one (target_init_seed) is not merged.
    per_task_tensor = "tpv"

    def __init__(self, config: TPVConfig, backbone: Backbone, task_names: list[str], state: TPVState | None = None):
        super().__init__(config, backbone, task_names, state)
        self.hidden = Shapes.of(backbone).hidden
        self.register_buffer("init", shared_init(backbone, config.length, config.init_vocab, config.init_seed))
        self.tpv = nn.Parameter(torch.zeros(len(task_names), config.length, self.hidden))  # (T, m, d)

    def prompts(self) -> torch.Tensor:
        """(T, m, d) the tasks' prompts P_init + T_i."""
        return self.init + self.tpv

    def tpvs(self) -> torch.Tensor:
        """(T, m, d) the task prompt vectors (a detached copy)."""
        return self.tpv.detach().clone()

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        return PromptInputs(input_prefix=self.init + self.tpv[task_ids])

    def param_groups(self) -> list[dict]:
        return [{"name": "tpv", "params": [self.tpv], "lr": self.config.lr}]

    def log_state(self) -> dict:
        return {"lambdas": self.state.lambdas} if self.state.lambdas else {}

    def source_indices(self) -> list[int]:
        """Positions of the sources that ``combine`` names, in this adapter's task order."""
        combine = self.config.combine
        if combine == "none":
            return []
        if combine == "all":
            return list(range(len(self.task_names)))
        unknown = [n for n in combine if n not in self.task_names]
        if unknown:
            raise ConfigError(
                f"method_args.combine: unknown source task(s) {', '.join(map(repr, unknown))}; "
                f"this adapter's tasks: {', '.join(self.task_names)}"
            )
        return [self.task_names.index(n) for n in combine]

    @torch.no_grad()
    def for_target(self, target: TargetContext) -> TPV:
        cfg = self.config
        lr = cfg.lr if cfg.lr_target is None else cfg.lr_target
        new = TPV(dataclasses.replace(cfg, lr=lr, lr_target=None), target.backbone, [target.task_name])
        if cfg.target_init_seed is None:
            new.init.copy_(self.init)
        else:
            new.init.copy_(shared_init(target.backbone, cfg.length, cfg.init_vocab, cfg.target_init_seed))
        sources = self.source_indices()
        if not sources:
            return new
        tpvs = self.tpvs()[sources]
        zero = torch.zeros_like(new.init)

        def score(lambdas: tuple[float, ...]) -> float:
            new.tpv.copy_(apply_vectors(zero, tpvs, lambdas)[None])
            return target.score(new)

        if len(cfg.lambdas) == 1:
            lambdas = tuple(cfg.lambdas) * len(sources)
        elif target.score is None:
            raise ConfigError(
                "method_args.lambdas: choosing among several rescaling factors needs the target's "
                "shots to score them; give a single factor"
            )
        else:
            lambdas = choose_lambdas(score, len(sources), list(cfg.lambdas), cfg.lambda_search == "each")
        new.tpv.copy_(apply_vectors(zero, tpvs, lambdas)[None])
        new.state.lambdas = {self.task_names[s]: lam for s, lam in zip(sources, lambdas)}
        return new

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task m*d (the TPV; the shared init is stored, not trained)"
