"""DTVG, Dynamic Task Vector Grouping (Zhang et al., arXiv:2503.18063): merge a regrouped set of source TPVs.

Stage I (``stage1``: the ``tpv`` method) learns a task prompt vector for every source task
from one shared initialisation P_init; a new target learns its own TPV T_t from the same
P_init on its shots (``for_target``, ``target_tpv_steps``). Stage II trains, for each of
this method's tasks t, the prompt

    P_mix = P_init + alpha_t * T_t + sum_{s in S'} alpha_s * T_s          (eq. 6)

where T_t and the token-level alpha_t (m) learn at ``lr_target``, each source's alpha_s (m)
at ``lr_source``, and the source TPVs T_s stay fixed. Every forward pass first regroups:
S' is chosen by Algorithm 2 on the current rescaled TPVs (dot products of m-token
averages; no gradient, no extra model pass), so the group follows the target as it
trains. On the source tasks themselves (after stage 1) each task is a target whose
sources are the other tasks.

Ablations: ``grouping`` (greedy | ts_only | kc_only | target_only) and ``dynamic: false``
(the group chosen when stage II starts is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.backbone import Backbone
from ..core.prompts import PromptInputs
from ..errors import ConfigError
from .base import Method, Shapes, SoftPromptConfig, TargetContext, register
from .tpv import TPV, TPVConfig, shared_init
from .tpv_math import GROUPINGS, MAX_EXHAUSTIVE_SOURCES, choose_group, merge, pooled


@dataclass
class DTVGConfig(SoftPromptConfig):
    lr_tpv: float = 3e-2  # stage I: the source TPVs (stage 1) and a target's own TPV on its shots
    lr_target: float = 3e-2  # stage II: the target TPV T_t and its alpha_t
    lr_source: float = 4e-2  # stage II: the sources' alpha_s (paper: 0.3 vs 0.4 on T5)
    target_tpv_steps: int = 30  # stage I steps on a target's shots before stage II (0: T_t starts at 0)
    grouping: str = "greedy"  # greedy (Algorithm 2) | ts_only | kc_only | target_only (ablations)
    dynamic: bool = True  # regroup every step; false = keep the group chosen when stage II starts

    def __post_init__(self):
        super().__post_init__()
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {self.grouping!r}")
        if self.target_tpv_steps < 0:
            raise ValueError("target_tpv_steps must be >= 0")


@dataclass
class DTVGState:
    sources: list[str] | None = None  # a target's source tasks, whose TPVs it holds; null = its own tasks

    def __post_init__(self):
        if self.sources is not None and not self.sources:
            raise ValueError("sources must name at least one task (or be null)")


@register
class DTVG(Method):
    name = "dtvg"
    config_cls = DTVGConfig
    state_cls = DTVGState

    def __init__(self, config: DTVGConfig, backbone: Backbone, task_names: list[str], state: DTVGState | None = None):
        super().__init__(config, backbone, task_names, state)
        self.source_names = list(self.state.sources or task_names)
        T, S, m = len(task_names), len(self.source_names), config.length
        if config.grouping == "kc_only" and S > MAX_EXHAUSTIVE_SOURCES:
            raise ConfigError(
                f"method_args.grouping: kc_only searches all groups of sources; {S} sources is "
                f"more than {MAX_EXHAUSTIVE_SOURCES}"
            )
        self.hidden = Shapes.of(backbone).hidden
        self.register_buffer("init", shared_init(backbone, m, config.init_vocab, config.init_seed))
        self.register_buffer("source_tpvs", torch.zeros(S, m, self.hidden))
        self.register_buffer("fixed_group", torch.zeros(T, S, dtype=torch.bool))
        self.tpv = nn.Parameter(torch.zeros(T, m, self.hidden))
        self.alpha_t = nn.Parameter(torch.ones(T, m))
        self.alpha_s = nn.Parameter(torch.ones(T, S, m))
        # A task never borrows its own vector (a source task trained as a target, or a target
        # that is also a source: the paper excludes it).
        self.allowed = [[s for s, name in enumerate(self.source_names) if name != task] for task in task_names]
        self._last: tuple[list[list[int]], torch.Tensor] | None = None

    # --- grouping -----------------------------------------------------------------------------
    @torch.no_grad()
    def similarities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, S) sim(alpha_t T_t, alpha_s T_s) and (T, S, S) sim between the rescaled sources, per target."""
        target = pooled(self.tpv, self.alpha_t)  # (T, d)
        sources = pooled(self.source_tpvs, self.alpha_s)  # (T, S, d): each target rescales the sources its own way
        return torch.einsum("td,tsd->ts", target, sources), torch.einsum("tsd,tud->tsu", sources, sources)

    @torch.no_grad()
    def groups(self) -> tuple[list[list[int]], torch.Tensor]:
        """Each task's source group (ranked by similarity) under the configured strategy, and the sims."""
        sim_t, pair = self.similarities()
        groups = []
        for t in range(len(self.task_names)):
            sims, pairs = sim_t[t].tolist(), pair[t].tolist()
            if self.config.dynamic:
                groups.append(choose_group(self.config.grouping, sims, pairs, self.allowed[t]))
            else:
                fixed = [s for s in self.allowed[t] if self.fixed_group[t, s]]
                groups.append(sorted(fixed, key=lambda s: (-sims[s], s)))
        return groups, sim_t

    @torch.no_grad()
    def fix_groups(self) -> None:
        """Record the current groups as the ones ``dynamic: false`` keeps (called when stage II starts)."""
        sim_t, pair = self.similarities()
        self.fixed_group.zero_()
        for t in range(len(self.task_names)):
            for s in choose_group(self.config.grouping, sim_t[t].tolist(), pair[t].tolist(), self.allowed[t]):
                self.fixed_group[t, s] = True

    def _mask(self, groups: list[list[int]]) -> torch.Tensor:
        mask = torch.zeros(len(self.task_names), len(self.source_names), dtype=torch.bool, device=self.alpha_s.device)
        for t, group in enumerate(groups):
            mask[t, group] = True
        return mask

    # --- the Method API -----------------------------------------------------------------------
    def merged_prompts(self) -> torch.Tensor:
        """(T, m, d) P_mix of every task, regrouped from the current parameters (eq. 6)."""
        groups, sims = self.groups()
        self._last = (groups, sims)
        return merge(self.init, self.tpv, self.alpha_t, self.source_tpvs, self.alpha_s, self._mask(groups))

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        return PromptInputs(input_prefix=self.merged_prompts()[task_ids])

    def param_groups(self) -> list[dict]:
        return [
            {"name": "target", "params": [self.tpv, self.alpha_t], "lr": self.config.lr_target},
            {"name": "source_alpha", "params": [self.alpha_s], "lr": self.config.lr_source},
        ]

    def log_state(self) -> dict:
        """The group each task used in the latest forward pass (ranked) and its sims to every source."""
        groups, sims = self._last if self._last is not None else self.groups()
        return {
            "group": {task: [self.source_names[s] for s in groups[t]] for t, task in enumerate(self.task_names)},
            "sim": {
                task: {self.source_names[s]: round(sims[t, s].item(), 6) for s in self.allowed[t]}
                for t, task in enumerate(self.task_names)
            },
        }

    def stage1(self, backbone: Backbone) -> TPV | None:
        """Stage I on the source tasks: their TPVs from the shared initialisation (a target has none)."""
        if self.state.sources is not None:
            return None
        cfg = self.config
        return TPV(
            TPVConfig(length=cfg.length, lr=cfg.lr_tpv, init_vocab=cfg.init_vocab, init_seed=cfg.init_seed),
            backbone,
            self.task_names,
        )

    @torch.no_grad()
    def init_from_stage1(self, stage1: Method) -> None:
        """Sources = the stage-I TPVs (kept fixed); each task's own T_t starts at its stage-I TPV."""
        if not isinstance(stage1, TPV) or stage1.task_names != self.source_names:
            raise ConfigError(
                f"dtvg stage 1 must be a tpv adapter on {self.source_names}, got "
                f"{getattr(stage1, 'name', type(stage1).__name__)} on {stage1.task_names}"
            )
        if stage1.tpv.shape != self.source_tpvs.shape:
            raise ConfigError(
                f"stage-1 TPVs {tuple(stage1.tpv.shape)} do not match dtvg's "
                f"{tuple(self.source_tpvs.shape)} (length {self.config.length})"
            )
        self.init.copy_(stage1.init)
        self.source_tpvs.copy_(stage1.tpv)
        self.tpv.copy_(stage1.tpv)
        self.alpha_t.fill_(1.0)
        self.alpha_s.fill_(1.0)
        self.fix_groups()

    def for_target(self, target: TargetContext) -> DTVG:
        """Stage I for the target (its TPV from P_init, trained on the shots), then a stage-II method."""
        cfg = self.config
        own = TPV(
            TPVConfig(length=cfg.length, init_vocab=cfg.init_vocab, init_seed=cfg.init_seed, lr=cfg.lr_tpv),
            target.backbone,
            [target.task_name],
        )
        with torch.no_grad():
            own.init.copy_(self.init)
        if cfg.target_tpv_steps:
            if target.tune is None:
                raise ConfigError(
                    "method_args.target_tpv_steps: dtvg's stage I needs the target's shots to train "
                    "on; set it to 0 to start the target vector at zero"
                )
            target.tune(own, cfg.target_tpv_steps)
        new = DTVG(cfg, target.backbone, [target.task_name], DTVGState(sources=self.source_names))
        with torch.no_grad():
            new.init.copy_(self.init)
            new.source_tpvs.copy_(self.source_tpvs)
            new.tpv.copy_(own.tpv)
        new.fix_groups()
        return new

    def trainable_parameters(self) -> dict[str, int]:
        m = self.config.length
        return {"shared": 0, "per_task": m * self.hidden + m + len(self.source_names) * m}

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task m*d + m + S*m (T_t, alpha_t, alpha_s); source TPVs stored"
