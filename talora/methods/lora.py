"""LoRA through the ``peft`` library (pinned 0.21.2), one LoRA shared by all tasks.

Hu et al., 2022 (arXiv:2106.09685); a baseline of DTVG (arXiv:2503.18063) §4.1 (the TA-LoRA
paper's tables, arXiv:2505.00009 §IV-A, list FT, Adapter and BitFit as their weight-changing
baselines).

Every target linear layer W (default q_proj, v_proj) becomes W x + (alpha / r) B A x with
A (r x in) random and B (out x r) zero, so the method starts as the frozen model. One LoRA
is shared by all source tasks (multi-task pre-training); ``for_target`` copies it for the
new task and keeps training it on the shots (target fine-tuning).

Coexistence with the shared backbone: peft's ``inject_adapter_in_model`` runs once per
method on a scratch module tree that holds the backbone's own linear layers (not copies)
under their usual paths; peft wraps them there, so the real model is never mutated by peft.
``applied`` puts this method's wrappers into the model and the original layers back on
exit: two LoRA methods in one process never see each other, and outside ``applied`` the
model is the frozen one, with unchanged ``named_parameters`` (hence adapter fingerprint).
The wrappers' LoRA weights are this method's parameters (a ParameterDict holding the same
tensors), which is what the optimiser, checkpoints and adapter files see.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..core.backbone import Backbone
from ..errors import ConfigError
from .base import WholeSetMethod, register
from .patching import slot_key, swapped_modules

ADAPTER_NAME = "talora"  # one adapter per wrapper: each method builds its own wrappers


@dataclass
class LoRAConfig:
    rank: int = 8  # r
    alpha: int = 16  # lora_alpha; the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the LoRA input, active only in training steps
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # peft's target_modules
    lr: float = 1e-3  # AdamW learning rate of A and B
    init_seed: int = 0  # seed of A's random initialisation

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError("rank must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


def _linear_tree(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A scratch module tree holding every linear layer of ``model`` at its usual dotted path."""
    root, paths = nn.Module(), []
    for path, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        node, *parents, leaf = [root, *path.split(".")]
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        node.add_module(leaf, module)
        paths.append(path)
    return root, paths


@register
class LoRA(WholeSetMethod):
    name = "lora"
    group = "lora"
    config_cls = LoRAConfig

    def __init__(self, config: LoRAConfig, backbone: Backbone, task_names: list[str], state=None):
        super().__init__(config, backbone, task_names, state)
        scratch, paths = _linear_tree(backbone.model)
        peft_cfg = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
        )
        with torch.random.fork_rng(devices=[]):  # peft draws A from the global generator
            torch.manual_seed(config.init_seed)
            try:
                inject_adapter_in_model(peft_cfg, scratch, adapter_name=ADAPTER_NAME)
            except ValueError as err:
                raise ConfigError(
                    f"lora: target_modules {config.target_modules} match no linear layer of "
                    f"{backbone.model_id!r} ({err})"
                ) from None
        # Plain dict, not submodules: the wrappers hold the frozen base layers, which are not ours.
        self._wrappers = {
            p: scratch.get_submodule(p) for p in paths if isinstance(scratch.get_submodule(p), BaseTunerLayer)
        }
        self.weights = nn.ParameterDict(
            {
                slot_key(f"{path}.{name}"): p
                for path, w in self._wrappers.items()
                for name, p in w.named_parameters()
                if p.requires_grad
            }
        )

    @contextlib.contextmanager
    def applied(self, backbone: Backbone) -> Iterator[None]:
        for wrapper in self._wrappers.values():  # the trainer never toggles modes: dropout only while learning
            wrapper.train(torch.is_grad_enabled())
        with swapped_modules(backbone.model, self._wrappers):
            yield

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task r*(in+out) per target linear layer (the whole LoRA)"
