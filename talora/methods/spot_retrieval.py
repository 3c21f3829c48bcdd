"""SPoT (retrieval): a target starts from the source prompt most similar to a briefly tuned one.

Vu et al., 2022 (arXiv:2110.07904); "One For One" in DTVG (arXiv:2503.18063) §2, baseline (5)
of TA-LoRA (arXiv:2505.00009) §IV-A. One input-level prompt per source task, trained together in
mixed batches: each example touches only its task's prompt, but AdamW's momentum and the global
gradient clipping couple the tasks, so this is not one run per task (see deep_prompt_tuning's
docstring for the measured gap). For a target task, ``for_target`` briefly tunes a fresh prompt on the shots
(``probe_steps``), takes the prompts as task embeddings (each averaged over its m tokens),
retrieves the source whose embedding has the highest cosine similarity with the probe's, and
starts the target prompt as a copy of that source prompt. The choice and every similarity are
recorded in the target's state (``retrieved_from``, ``similarities``; hence in adapter.json) and
in each line of its training log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import TargetContext, register
from .prompt_tuning import PromptTuning, PromptTuningConfig


@dataclass
class SPoTRetrievalConfig(PromptTuningConfig):
    probe_steps: int = 20  # steps of the throw-away target prompt whose similarity picks the source

    def __post_init__(self):
        super().__post_init__()
        if self.probe_steps < 1:
            raise ValueError("probe_steps must be >= 1")


def task_embedding(prompts: torch.Tensor) -> torch.Tensor:
    """(..., m, d) prompts -> (..., d): the average over the prompt tokens."""
    return prompts.mean(dim=-2)


@dataclass
class SPoTRetrievalState:
    retrieved_from: str | None = None  # a target's source task, whose prompt the target started from
    similarities: dict[str, float] = field(default_factory=dict)  # a target's cosine similarity per source task


@register
class SPoTRetrieval(PromptTuning):
    name = "spot_retrieval"
    config_cls = SPoTRetrievalConfig
    state_cls = SPoTRetrievalState

    @torch.no_grad()
    def retrieve(self, probe: torch.Tensor) -> tuple[int, list[float]]:
        """Index of the source prompt most similar to ``probe`` (m, d), and every similarity."""
        sims = F.cosine_similarity(task_embedding(self.prompt), task_embedding(probe)[None], dim=-1)
        return int(sims.argmax()), sims.tolist()

    def for_target(self, target: TargetContext) -> SPoTRetrieval:
        if target.tune is None:
            raise ConfigError(
                f"spot_retrieval needs the target task's shots to pick a source prompt for "
                f"{target.task_name!r} (TargetContext.tune is missing)"
            )
        cfg = self.config
        probe_cfg = PromptTuningConfig(length=cfg.length, init_vocab=cfg.init_vocab, init_seed=cfg.init_seed, lr=cfg.lr)
        probe = PromptTuning(probe_cfg, target.backbone, [target.task_name])
        target.tune(probe, cfg.probe_steps)
        best, sims = self.retrieve(probe.prompt[0])
        chosen = SPoTRetrievalState(
            retrieved_from=self.task_names[best], similarities={n: round(s, 6) for n, s in zip(self.task_names, sims)}
        )
        new = SPoTRetrieval(cfg, target.backbone, [target.task_name], chosen)
        with torch.no_grad():
            new.prompt.copy_(self.prompt[best : best + 1])
        return new

    def log_state(self) -> dict:
        return {"retrieved_from": self.state.retrieved_from} if self.state.retrieved_from else {}

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task m*d (target starts from the most similar source prompt)"
