"""Houlsby-style bottleneck adapters after the attention and the MLP block of every layer.

Houlsby et al., 2019 (arXiv:1902.00751); baseline (2) "Adapter" of TA-LoRA (arXiv:2505.00009)
§IV-A and of DTVG (arXiv:2503.18063) §4.1.

In every decoder layer, the output h of the attention block and the output of the MLP block
(each before its residual addition) become h + W_up f(W_down h): down to ``bottleneck``
dimensions, a nonlinearity, back up. W_up starts at zero, so the method starts exactly as
the frozen model. Houlsby et al. also train the layer norms; here only the adapters learn
(BitFit covers norms). The ``adapters`` library (1.3.0) requires transformers ~=4.57 and
cannot run beside the pinned transformers 5.23, so the adapters are our own modules,
attached by forward hooks inside ``applied`` and removed on exit. One set of adapters is
shared by all source tasks (multi-task training); ``for_target`` copies it for the new task
and keeps training it on the shots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.backbone import Backbone
from .base import Shapes, WholeSetMethod, register
from .patching import forward_hooks

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


@dataclass
class AdapterConfig:
    bottleneck: int = 64  # width of the adapter's hidden layer
    activation: str = "gelu"  # nonlinearity between down and up: gelu | relu | silu
    init_std: float = 1e-2  # W_down ~ N(0, init_std^2); W_up starts at zero
    lr: float = 1e-3  # AdamW learning rate of every adapter
    init_seed: int = 0  # seed of the adapters' random initialisation

    def __post_init__(self):
        if self.bottleneck < 1:
            raise ValueError("bottleneck must be >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, bottleneck: int, activation: str, init_std: float, gen: torch.Generator):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        with torch.no_grad():
            self.down.weight.copy_(torch.randn(self.down.weight.shape, generator=gen) * init_std)
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.activation(self.down(h)))


def _replace_output(adapter: Bottleneck):
    """A forward hook: the block's output (or the first item of a tuple output) goes through ``adapter``."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return hook


@register
class Adapter(WholeSetMethod):
    name = "adapter"
    group = "adapter"
    config_cls = AdapterConfig

    def __init__(self, config: AdapterConfig, backbone: Backbone, task_names: list[str], state=None):
        super().__init__(config, backbone, task_names, state)
        shapes = Shapes.of(backbone)
        gen = torch.Generator().manual_seed(config.init_seed)

        def make() -> Bottleneck:
            return Bottleneck(shapes.hidden, config.bottleneck, config.activation, config.init_std, gen)

        self.adapters = nn.ModuleList(nn.ModuleDict({"attn": make(), "mlp": make()}) for _ in range(shapes.num_layers))

    @contextlib.contextmanager
    def applied(self, backbone: Backbone) -> Iterator[None]:
        layers = backbone.model.get_decoder().layers
        hooks = [
            (block, _replace_output(pair[kind]))
            for layer, pair in zip(layers, self.adapters)
            for kind, block in (("attn", layer.self_attn), ("mlp", layer.mlp))
        ]
        with forward_hooks(hooks):
            yield

    @classmethod
    def parameter_formula(cls) -> str:
        return "per task 2*N_layers*(2*d*b + b + d) (two bottlenecks of width b per layer)"
