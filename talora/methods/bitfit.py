"""BitFit for bias-free decoders: RMSNorm weights plus zero-initialised biases on the projections.

Ben Zaken et al., 2022 (arXiv:2106.10199); baseline (3) of TA-LoRA (arXiv:2505.00009) §IV-A
and of DTVG (arXiv:2503.18063) §4.1.

BitFit trains only the bias terms. Llama and Qwen3 have no biases (Qwen2 has them on q, k, v
only), so we train (a) every RMSNorm weight, the only other per-channel affine terms of these
models, and (b) a bias added to the output of each of the q, k, v, o, gate, up and down
projections, starting at zero. Where a projection already has a bias (Qwen2's q, k, v), the
added one is an offset to it: training b + delta from delta = 0 is training b itself. So the
method starts exactly as the frozen model. Inside ``applied`` the norm weights are swapped
in (the frozen ones come back on exit) and forward hooks add the biases (removed on exit).
One set is shared by all source tasks (multi-task training); ``for_target`` copies it for
the new task and keeps training it on the shots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.backbone import Backbone
from ..errors import ConfigError
from .base import WholeSetMethod, register
from .patching import forward_hooks, slot_key, swapped_parameters

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class BitFitConfig:
    lr: float = 1e-3  # AdamW learning rate of the norms and biases
    bias_modules: list[str] = field(default_factory=lambda: list(PROJECTIONS))  # linear layers (by name) given a bias
    train_norms: bool = True  # also train every RMSNorm weight


def _is_rms_norm(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "weight", None), nn.Parameter)


def _add_bias(bias: nn.Parameter):
    def hook(module, args, output):
        return output + bias

    return hook


@register
class BitFit(WholeSetMethod):
    name = "bitfit"
    group = "bitfit"
    config_cls = BitFitConfig

    def __init__(self, config: BitFitConfig, backbone: Backbone, task_names: list[str], state=None):
        super().__init__(config, backbone, task_names, state)
        model = backbone.model
        wanted = set(config.bias_modules)
        linears = {
            path: m
            for path, m in model.named_modules()
            if isinstance(m, nn.Linear) and path.rsplit(".", 1)[-1] in wanted
        }
        if wanted and not linears:
            raise ConfigError(
                f"bitfit: bias_modules {config.bias_modules} match no linear layer of {backbone.model_id!r}"
            )
        norms = {path: m for path, m in model.named_modules() if _is_rms_norm(m)} if config.train_norms else {}
        self._norm_paths, self._bias_paths = list(norms), list(linears)
        self.norms = nn.ParameterDict({slot_key(p): nn.Parameter(m.weight.detach().clone()) for p, m in norms.items()})
        self.biases = nn.ParameterDict(
            {slot_key(p): nn.Parameter(torch.zeros(m.out_features, dtype=m.weight.dtype)) for p, m in linears.items()}
        )

    @contextlib.contextmanager
    def applied(self, backbone: Backbone) -> Iterator[None]:
        model = backbone.model
        norms = {id(model.get_submodule(p).weight): self.norms[slot_key(p)] for p in self._norm_paths}
        hooks = [(model.get_submodule(p), _add_bias(self.biases[slot_key(p)])) for p in self._bias_paths]
        with swapped_parameters(model, norms), forward_hooks(hooks):
            yield

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task sum of RMSNorm widths + output widths of the biased projections"
