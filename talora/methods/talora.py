"""TA-LoRA (Task-Adaptive Low-Rank Representation), after arXiv:2505.00009 §III.

At prompted layer l, task i uses the prompt

    P[l, i] = theta0[l] + s * B[l] @ (u[l, i] outer v[l, i])        (m x d)

theta0 (m x d, shared knowledge, eq. 1) starts as the mean of the stage-1 single-task
prompts; B (m x r) is the shared SLOW weight; A_i = u_i v_i^T (r x d, rank 1) is task
i's FAST weight (eq. 4). Slow and fast weights get separate AdamW learning rates.
Prompts enter through the zero-initialised gated attention of ``talora.core.attention``
(eq. 5-9), and the loss adds the orthogonality regulariser of eq. 10 over the pairs of
tasks at every prompted layer, in one of two forms (``orthogonality``):

    "a" (default): lambda * sum_{i<j} ||A_i A_j^T||_F^2 = lambda * sum_{i<j} (v_i.v_j)^2 ||u_i||^2 ||u_j||^2
    "u":           lambda * sum_{i<j} ||A_i^T A_j||_F^2 = lambda * sum_{i<j} (u_i.u_j)^2 ||v_i||^2 ||v_j||^2

Eq. 10 asks the task-specific matrices to be orthogonal, in the manner of orthogonal-subspace
LoRA regularisers, which write A_i^T A_j for matrices whose COLUMNS span a task's subspace
of the model's d-dimensional space: that product is the r x r overlap of the two subspaces.
TA-LoRA's A_i is r x d, its subspace lies in its ROWS (the direction v_i), and the same
overlap is A_i A_j^T, which is zero exactly when v_i and v_j are orthogonal: with d in the
thousands every task keeps its size. Transcribed literally for r x d matrices, A_i^T A_j
(d x d) is zero only when u_i and u_j are orthogonal in R^r, which cannot hold for every
pair of T > r tasks with non-zero u (the paper's 8 sources, our default r = 4): the "u"
form can then only fall by shrinking the tasks' low-rank parts, so it acts mainly as a
norm penalty. Hence "a" by default; "u" is kept for comparison.

Few-shot transfer learns a new A_t "through (10)": the target's regulariser holds the
pairs (target, each source), the sources' A_j frozen (a non-persistent buffer: only
training reads them, so adapter files do not carry them).

With ``init_lowrank: svd`` (default) stage 2 starts at the structure's best fit of the
stage-1 prompts; with ``zero``, u = 0, so stage 2 starts exactly from theta0 (v starts at
unit scale so u receives gradient at once). A target task starts with u = 0, i.e. from
the shared knowledge. Ablations of Table III: ``same_lr`` (slow weights use the fast
rate), ``shared_b: false`` (each task owns its B: no shared slow weight) and
``attention: plain``.
"""

from __future__ import annotations

import dataclasses
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
from .deep_prompt_tuning import DeepPromptTuning, DeepPromptTuningConfig


@dataclass
class TALoRAConfig(PromptConfig):
    rank: int = 4  # r, rows of the fast weight A_i and columns of B
    scale: float = 1.0  # s, magnitude of the task-specific part (eq. 3)
    lambda_orth: float = 1e-5  # lambda of eq. 10; a pair's term scales as ||A_i||_F^2 ||A_j||_F^2
    orthogonality: str = "a"  # eq. 10's pair term: "a" ||A_i A_j^T||_F^2 (v_i, v_j orthogonal) | "u" ||A_i^T A_j||_F^2
    # Deep prompts take the scale of the layer's normed inputs (Gemma 3's about 57 times SmolLM2's)
    # and the term goes as its 4th power: "prompt" makes lambda mean the same on every model.
    orthogonality_units: str = "raw"  # eq. 10 on A_i ("raw") | on A_i / rho_l, layer l's initial prompt RMS ("prompt")
    lr_slow: float = 1e-3  # theta0 and B
    lr_fast: float = 3e-2  # u and v
    lr_gate: float = 1e-2  # the gates
    lr_target: float = 0.1  # u and v of a new task in few-shot transfer (a few dozen steps need a larger rate)
    same_lr: bool = False  # ablation: slow weights use lr_fast
    shared_b: bool = True  # ablation (false): every task owns its B, nothing low-rank is shared
    train_theta0: bool = True  # false keeps the stage-1 mean fixed in stage 2
    transfer_gates: bool = False  # train the (shared) gates during few-shot transfer too
    init_lowrank: str = "svd"  # stage 2 start of B, u, v: "svd" (fit the stage-1 prompts) | "zero" (u = 0)

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError("rank must be >= 1")
        if self.orthogonality not in ("a", "u"):
            raise ValueError(f"orthogonality must be 'a' or 'u', got {self.orthogonality!r}")
        if self.orthogonality_units not in ("raw", "prompt"):
            raise ValueError(f"orthogonality_units must be 'raw' or 'prompt', got {self.orthogonality_units!r}")
        if self.init_lowrank not in ("svd", "zero"):
            raise ValueError(f"init_lowrank must be 'svd' or 'zero', got {self.init_lowrank!r}")


@dataclass
class TALoRAState:
    transfer: bool = False  # built for a transfer target: theta0 and B are frozen, only u, v learn
    joint: bool = False  # several targets transferred together: theta0, B and the gates learn as in stage 2


@register
class TALoRA(Method):
    name = "talora"
    config_cls = TALoRAConfig
    state_cls = TALoRAState

    def __init__(
        self, config: TALoRAConfig, backbone: Backbone, task_names: list[str], state: TALoRAState | None = None
    ):
        super().__init__(config, backbone, task_names, state)
        self._place_on_top_layers(config, backbone)
        self.frozen_below = self.first_layer
        L, T, m, r, d = self.layers, len(task_names), config.length, config.rank, self.hidden
        gen = torch.Generator().manual_seed(config.init_seed)
        self.theta0 = nn.Parameter(deep_vocab_init(backbone, self.first_layer, L, 1, config, gen)[:, 0])
        # Each layer's prompt scale at initialisation (the same for a source and its targets, whose
        # theta0 starts from the same seed); not saved: it follows from the model and the config.
        rho = self.theta0.detach().pow(2).mean(dim=(1, 2)).sqrt()
        self.register_buffer("prompt_rms", rho, persistent=False)
        b_shape = (L, m, r) if config.shared_b else (L, T, m, r)
        self.B = nn.Parameter(torch.randn(b_shape, generator=gen) / r**0.5)
        self.u = nn.Parameter(torch.zeros(L, T, r))
        self.v = nn.Parameter(torch.randn(L, T, d, generator=gen))
        self.gates = nn.Parameter(torch.zeros(L, self.heads))
        # A transfer target's frozen source fast weights (L, S, r) and (L, S, d), set by for_target.
        self.register_buffer("source_u", torch.empty(0), persistent=False)
        self.register_buffer("source_v", torch.empty(0), persistent=False)
        if self.state.transfer and self.state.joint:
            self.theta0.requires_grad_(config.train_theta0)
        elif self.state.transfer:
            self.theta0.requires_grad_(False)
            self.B.requires_grad_(not config.shared_b)  # an unshared B is the target's own
            self.gates.requires_grad_(config.transfer_gates)
        elif not config.train_theta0:
            self.theta0.requires_grad_(False)

    def task_prompts(self, task_ids: torch.Tensor) -> torch.Tensor:
        """(L, B, m, d) prompts of the given examples' tasks; no Python loop over tasks."""
        u, v = self.u[:, task_ids], self.v[:, task_ids]  # (L, B, r), (L, B, d)
        if self.config.shared_b:
            bu = torch.einsum("lmr,lbr->lbm", self.B, u)
        else:
            bu = torch.einsum("lbmr,lbr->lbm", self.B[:, task_ids], u)
        return self.theta0[:, None] + self.config.scale * bu[..., None] * v[:, :, None, :]

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        gates = None if self.config.attention == "plain" else self.gates
        return PromptInputs(
            layer_prompts=LayerPrompts(self.task_prompts(task_ids), gates, self.first_layer, self.config.attention)
        )

    def regularization(self) -> torch.Tensor | None:
        """Eq. 10: lambda times the pair terms of every prompted layer, over the pairs of this
        method's tasks and, for a transfer target, over (target, frozen source) pairs."""
        if self.config.lambda_orth == 0:
            return None
        terms = []
        if len(self.task_names) > 1:
            # The strict upper triangle counts each unordered pair once; subtracting the large
            # diagonal from the whole sum instead would leave rounding error where the pairs are 0.
            terms.append(self._pair_terms(self.u, self.v, self.u, self.v).triu(diagonal=1).sum())
        if self.source_u.numel():
            terms.append(self._pair_terms(self.u, self.v, self.source_u, self.source_v).sum())
        if not terms:
            return None
        return self.config.lambda_orth * sum(terms)

    def _pair_terms(self, u_a, v_a, u_b, v_b) -> torch.Tensor:
        """(L, T_a, T_b): the squared Frobenius norm of the chosen product of A_i = u_i v_i^T
        (tasks of ``a``) and A_j (tasks of ``b``), in closed form for rank-1 matrices."""
        if self.config.orthogonality == "a":  # ||A_i A_j^T||^2 = (v_i.v_j)^2 ||u_i||^2 ||u_j||^2
            dots, norms_a, norms_b = torch.einsum("ltd,lsd->lts", v_a, v_b), u_a.pow(2).sum(-1), u_b.pow(2).sum(-1)
        else:  # ||A_i^T A_j||^2 = (u_i.u_j)^2 ||v_i||^2 ||v_j||^2
            dots, norms_a, norms_b = torch.einsum("ltr,lsr->lts", u_a, u_b), v_a.pow(2).sum(-1), v_b.pow(2).sum(-1)
        terms = dots.pow(2) * norms_a[:, :, None] * norms_b[:, None, :]
        if self.config.orthogonality_units == "prompt":  # the term on A_i / rho_l: divide by rho_l^4
            terms = terms / self.prompt_rms.pow(4)[:, None, None]
        return terms

    def param_groups(self) -> list[dict]:
        cfg = self.config
        slow_lr = cfg.lr_fast if cfg.same_lr else cfg.lr_slow
        # Without a shared B there is no slow weight: B belongs to its task and learns fast.
        b_lr = slow_lr if cfg.shared_b else cfg.lr_fast
        groups = [
            {"name": "theta0", "params": [self.theta0], "lr": slow_lr},
            {"name": "B", "params": [self.B], "lr": b_lr},
            {"name": "uv", "params": [self.u, self.v], "lr": cfg.lr_target if self.state.transfer else cfg.lr_fast},
        ]
        if cfg.attention == "gated":
            groups.append({"name": "gate", "params": [self.gates], "lr": cfg.lr_gate})
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
        return [g for g in groups if g["params"]]

    def gate_values(self) -> list[float]:
        return torch.tanh(self.gates.detach()).mean(dim=1).tolist()

    @torch.no_grad()
    def init_from_stage1(self, stage1: nn.Module) -> None:
        """theta0 = mean of the single-task prompts (eq. 1); gates = mean of their gates; and, with
        ``init_lowrank: svd``, B, u, v fitted to the stage-1 prompts.

        The paper zero-initialises gates for training from scratch; theta0 was trained
        behind open stage-1 gates, and closing them again would silence it, so stage 2
        starts with the stage-1 gates averaged over tasks (a documented choice).
        """
        prompts = stage1.prompts  # (L, T, m, d)
        if prompts.shape[0] != self.layers or prompts.shape[2] != self.config.length:
            raise ValueError(
                f"stage-1 prompts {tuple(prompts.shape)} do not match L={self.layers}, m={self.config.length}"
            )
        self.theta0.copy_(prompts.mean(dim=1))
        self.gates.copy_(stage1.gates.mean(dim=0))
        if self.config.init_lowrank == "svd":
            self._fit_lowrank(prompts - self.theta0[:, None])

    def _fit_lowrank(self, deviations: torch.Tensor) -> None:
        """Start stage 2 at the structure's best fit of each task's stage-1 deviation D_i = theta_i - theta0.

        The basis B holds the top-r left singular vectors of the deviations: of all tasks'
        side by side (the shared subspace) with a shared B; of task i's own D_i when every task
        owns its B (the ``shared_b: false`` ablation, so that it differs from the full model in
        the sharing alone, not in its start). Each task's coordinates in its basis, B^T D_i,
        are cut to rank 1 to give u_i and v_i with balanced norms: s B u_i v_i^T is then the
        best rank-1 approximation of B B^T D_i. Without this, stage 2 starts every task at the
        mean prompt and must rediscover what stage 1 already learned.
        """
        L, T, m, d = deviations.shape
        r, s = self.config.rank, self.config.scale
        if self.config.shared_b:
            side_by_side = deviations.permute(0, 2, 1, 3).reshape(L, m, T * d)
            left = torch.linalg.svd(side_by_side, full_matrices=False).U[:, None, :, :r]  # (L, 1, m, <=r)
        else:
            left = torch.linalg.svd(deviations, full_matrices=False).U[..., :r]  # (L, T, m, <=r)
        # When r > m the extra columns stay zero (B has rank m at most).
        basis = deviations.new_zeros(*left.shape[:3], r)
        basis[..., : left.shape[-1]] = left
        coords = torch.einsum("ltmr,ltmd->ltrd", basis.expand(L, T, m, r), deviations)  # (L, T, r, d)
        U, S, Vh = torch.linalg.svd(coords, full_matrices=False)
        root = (S[..., 0] / s).sqrt()[..., None]
        self.B.copy_(basis[:, 0] if self.config.shared_b else basis)
        self.u.copy_(U[..., :, 0] * root)
        self.v.copy_(Vh[..., 0, :] * root)

    def stage1(self, backbone: Backbone) -> DeepPromptTuning | None:
        """Stage 1: single-task deep prompts with TA-LoRA's placement, at the fast rate (they are
        single-task weights), trained in one mixed-task run rather than one run per task as in
        the paper (the difference is measured in deep_prompt_tuning's docstring); a method
        already built for transfer has no stage 1."""
        if self.state.transfer:
            return None
        cfg = self.config
        shared = {
            f.name: getattr(cfg, f.name) for f in dataclasses.fields(DeepPromptTuningConfig) if hasattr(cfg, f.name)
        }
        stage1_cfg = DeepPromptTuningConfig(**{**shared, "lr": cfg.lr_fast, "lr_gate": cfg.lr_gate})
        return DeepPromptTuning(stage1_cfg, backbone, self.task_names)

    def for_target(self, target: TargetContext) -> TALoRA:
        """A new task starting at theta0 (u = 0) with this method's shared weights frozen; its
        regulariser pairs it with this method's tasks (and any sources this one was given)."""
        return self._targets([target.task_name], target.backbone, joint=False)

    def for_targets(self, task_names: list[str], backbone: Backbone) -> TALoRA:
        """Several new tasks together (§III-E, last paragraph): each starts at u = 0 with its own
        u, v, and theta0, B and the gates go on learning at stage 2's rates from the source values;
        the regulariser pairs the targets with each other and with the frozen sources."""
        return self._targets(task_names, backbone, joint=True)

    def _targets(self, task_names: list[str], backbone: Backbone, joint: bool) -> TALoRA:
        target = TALoRA(self.config, backbone, task_names, TALoRAState(transfer=True, joint=joint))
        with torch.no_grad():
            target.theta0.copy_(self.theta0)
            target.gates.copy_(self.gates)
            target.B.copy_(self.B if self.config.shared_b else self.B.mean(dim=1, keepdim=True).expand_as(target.B))
            sources_u, sources_v = [self.u], [self.v]
            if self.source_u.numel():
                sources_u.insert(0, self.source_u)
                sources_v.insert(0, self.source_v)
            target.source_u = torch.cat(sources_u, dim=1).detach().clone()
            target.source_v = torch.cat(sources_v, dim=1).detach().clone()
        return target

    def trainable_parameters(self) -> dict[str, int]:
        L, m, r, d = self.layers, self.config.length, self.config.rank, self.hidden
        gates = L * self.heads if self.config.attention == "gated" else 0
        if self.config.shared_b:
            return {"shared": L * m * d + L * m * r + gates, "per_task": L * (r + d)}
        return {"shared": L * m * d + gates, "per_task": L * (m * r + r + d)}

    @classmethod
    def parameter_formula(cls) -> str:
        return "shared L*m*d (theta0) + L*m*r (B) + L*H (gates); per task L*(r+d) (u, v)"

    def _task_axes(self) -> dict[str, int]:
        # theta0, the gates and a shared B are the same for every task of a run and its targets.
        return {"u": 1, "v": 1} if self.config.shared_b else {"u": 1, "v": 1, "B": 1}

    def task_slice(self, name: str) -> TALoRA:
        return slice_task(self, name, self._task_axes())

    @classmethod
    def merge_tasks(cls, methods: list[Method], backbone: Backbone) -> TALoRA | None:
        return merge_task_axes(methods, methods[0]._task_axes())
