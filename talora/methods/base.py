"""What every method provides to the one trainer.

A method is a small ``nn.Module`` holding only its own parameters (the backbone is
frozen and never copied). Given the task id of each example it returns the prompt
inputs of one forward pass; the trainer owns everything else (batches, optimiser,
schedule, evaluation, checkpoints).

A method is one file in ``talora/methods``: a class decorated with ``@register`` is
found there and listed by ``talora methods``; nothing else needs editing. Its config
(``config_cls``) holds what a user chooses; its state (``state_cls``) holds what the
method itself records while it runs (e.g. that it was built for a transfer target,
which source a target was retrieved from); both are saved in the adapter sidecar.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import nn

from ..core.attention import MODES
from ..core.backbone import Backbone
from ..core.prompts import PromptInputs
from ..errors import ConfigError


@dataclass
class TargetContext:
    """What ``Method.for_target`` may use to build a method for one new (few-shot) task.

    tune(method, steps): trains ``method`` in place on the target's k shots with the one
        trainer (no evaluation); e.g. SPoT-retrieval's briefly-tuned target prompt, DTVG's
        stage-I target vector.
    score(method): the target's headline metric of ``method`` on the k shots themselves
        (never on evaluation data); e.g. choosing TPV rescaling factors.
    """

    task_name: str
    backbone: Backbone
    tune: Callable[[Method, int], None] | None = None
    score: Callable[[Method], float] | None = None


@dataclass
class SoftPromptConfig:
    """What every soft-prompt method has: its length and its vocabulary-sampled start."""

    length: int = 20  # m, soft tokens per prompt (per layer for deep prompts; paper: 20)
    init_vocab: int = 5000  # prompts start as embeddings of tokens sampled from the first N vocabulary ids
    init_seed: int = 0  # seed of the prompt initialisation (the trainer's seed drives the data order)

    def __post_init__(self):
        if self.length < 1:
            raise ValueError("length must be >= 1")


@dataclass
class PromptConfig(SoftPromptConfig):
    """Where and how deep prompts enter the model; shared by the deep prompt methods."""

    layers: int | None = None  # L, prompted layers counted from the top; null = half of them (paper: 14 of 28)
    attention: str = "gated"  # "gated" (separate softmax, zero-init tanh gate per head) | "plain" (joint softmax)

    def __post_init__(self):
        super().__post_init__()
        if self.attention not in MODES:
            raise ValueError(f"attention must be one of {MODES}, got {self.attention!r}")
        if self.layers is not None and self.layers < 1:
            raise ValueError("layers must be >= 1 (or null for half the layers)")


@dataclass
class NoState:
    """The state of a method that records nothing while it runs."""


M = TypeVar("M", bound=type)


def register(cls: M) -> M:
    """Mark a Method subclass as a method users can name (``talora methods`` lists it)."""
    for attr in ("name", "config_cls"):
        if attr not in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a registered method sets {attr!r} itself")
    cls.registered = True
    return cls


class Method(nn.Module):
    """Base class: subclasses set ``name``/``config_cls`` and implement the hooks below."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    state_cls: ClassVar[type] = NoState
    registered: ClassVar[bool] = False  # set by @register

    def __init__(self, config, backbone: Backbone, task_names: list[str], state=None):
        super().__init__()
        if not task_names:
            raise ValueError("a method needs at least one task")
        self.config = config
        self.state = state if state is not None else self.state_cls()
        self.task_names = list(task_names)

    def _place_on_top_layers(self, config: PromptConfig, backbone: Backbone) -> None:
        """Deep methods prompt the last L layers; record where they start and the shapes they need."""
        shapes = Shapes.of(backbone)
        self.layers = prompted_layers(config, shapes.num_layers)
        self.first_layer = shapes.num_layers - self.layers
        self.hidden, self.heads = shapes.hidden, shapes.heads

    # Layers below this index see the frozen model unchanged (no prompt, no changed weight), so
    # their outputs per example are constants: computed without autograd, and cacheable.
    frozen_below: int = 0

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        """The prompts of one forward pass; ``batch`` (a ``talora.core.batching.Batch``) is given for
        methods whose prompt depends on the input itself (ATTEMPT's instance attention).
        Methods that change weights instead of adding prompts keep this default: no prompt."""
        return PromptInputs()

    @contextlib.contextmanager
    def applied(self, backbone: Backbone) -> Iterator[None]:
        """Everything that runs the model runs inside this: methods that change the backbone's
        weights or modules (LoRA, adapters, BitFit, full fine-tuning) install themselves on
        entry and restore the frozen model on exit; prompt methods need nothing."""
        yield

    def stage1(self, backbone: Backbone) -> Method | None:
        """A method to train on the same tasks first (TA-LoRA: deep prompt tuning), or None."""
        return None

    def init_from_stage1(self, stage1: Method) -> None:
        raise NotImplementedError

    def auxiliary_loss(self, backbone: Backbone, batch) -> torch.Tensor | None:
        """A loss term that needs the batch (e.g. MPT's distillation from teacher prompts)."""
        return None

    def param_groups(self) -> list[dict]:
        """AdamW parameter groups, each with a ``name`` and its own ``lr``."""
        raise NotImplementedError

    def regularization(self) -> torch.Tensor | None:
        return None

    def log_state(self) -> dict:
        """Extra JSON-able fields for the training log at each logged step (e.g. DTVG's chosen group)."""
        return {}

    def gate_values(self) -> list[float]:
        """tanh of the gate per prompted layer (mean over heads and tasks), for the training log."""
        return []

    def for_target(self, target: TargetContext) -> Method:
        """A method for one new (few-shot) task, transferring what this one learned."""
        raise NotImplementedError

    def for_targets(self, task_names: list[str], backbone: Backbone) -> Method:
        """A method for several new tasks trained together, transferring what this one learned
        (TA-LoRA §III-E: their shared parameters update as the sources' did). Methods that
        transfer one task at a time refuse."""
        raise ConfigError(
            f"method {self.name!r} transfers one target task at a time; several targets together is a TA-LoRA mode"
        )

    def trainable_parameters(self) -> dict[str, int]:
        """{"shared": n, "per_task": n}, counted the way the papers' tables do."""
        raise NotImplementedError

    def placed(self, backbone: Backbone) -> Method:
        """This method on the backbone's device with every floating parameter and buffer in float32:
        the master weights stay float32 whatever the frozen model's dtype (see talora.core.forward)."""
        return self.to(device=backbone.device, dtype=torch.float32)

    def task_slice(self, name: str) -> Method | None:
        """A copy of this method holding task ``name`` alone (its own tensors cut to that task, the
        shared ones whole), so an adapter store can keep each task apart and shared tensors once.

        None (the default) means this method's tasks cannot be split (e.g. LoRA's one set of
        weights serves all of them): the store then keeps the whole adapter as one unit."""
        return None

    @classmethod
    def merge_tasks(cls, methods: list[Method], backbone: Backbone) -> Method | None:
        """One method holding every task of ``methods`` (slices or earlier merges), so a batch
        mixing them runs in one forward pass; None when they cannot be merged (the default, or
        when their configs or shared tensors differ). The result serves predictions: its state,
        which only steers training, is the first method's."""
        return None

    @classmethod
    def parameter_formula(cls) -> str:
        raise NotImplementedError


@dataclass
class Shapes:
    """The backbone dimensions a method's parameters depend on."""

    num_layers: int
    hidden: int
    heads: int

    @classmethod
    def of(cls, backbone: Backbone) -> Shapes:
        cfg = backbone.model.config
        return cls(cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads)


def prompted_layers(config: PromptConfig, num_layers: int) -> int:
    layers = config.layers if config.layers is not None else num_layers // 2
    if layers > num_layers:
        raise ValueError(f"cannot prompt {layers} layers of a {num_layers}-layer model")
    return layers


def _embedded(backbone: Backbone, ids: torch.Tensor) -> torch.Tensor:
    """The input embeddings of ``ids`` as the first layer sees them: through the embedding module,
    not its weight, because some models scale inside it (Gemma: by sqrt(hidden_size))."""
    embed = backbone.model.get_input_embeddings()
    with torch.no_grad():
        return embed(ids.to(embed.weight.device)).detach().clone()


def vocab_init(backbone: Backbone, count: int, cfg: SoftPromptConfig, generator: torch.Generator) -> torch.Tensor:
    """(count, m, d) input embeddings of ids drawn from the first N vocabulary entries.

    Byte-level BPE vocabularies are ordered roughly by merge frequency, so the first
    ids stand in for the "top 5000 tokens" initialisation of Lester et al. A soft prompt
    is concatenated with the embedding module's output, so it starts on that scale.
    """
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, min(cfg.init_vocab, vocab), (count, cfg.length), generator=generator)
    return _embedded(backbone, ids)


def deep_vocab_init(
    backbone: Backbone, first_layer: int, layers: int, count: int, cfg: PromptConfig, generator: torch.Generator
) -> torch.Tensor:
    """(layers, count, m, d): vocabulary embeddings passed through each prompted layer's input norm.

    Deep prompts feed the layer's k/v projections directly, whose inputs are normally
    normalised hidden states; starting at that scale keeps the first updates sensible.
    """
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, min(cfg.init_vocab, vocab), (layers, count, cfg.length), generator=generator)
    rows = _embedded(backbone, ids)
    decoder_layers = backbone.model.get_decoder().layers
    with torch.no_grad():
        normed = [decoder_layers[first_layer + i].input_layernorm(rows[i]) for i in range(layers)]
    return torch.stack(normed).clone()


def _replace_tensor(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    old = getattr(module, attr)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(value, requires_grad=old.requires_grad))
    else:  # a buffer stays a buffer
        setattr(module, attr, value)


def slice_task(method: Method, name: str, task_axes: dict[str, int]) -> Method:
    """``task_slice`` for methods whose per-task tensors stack tasks along one axis each
    (``task_axes``: attribute -> axis); every other tensor is shared and copied whole."""
    if name not in method.task_names:
        raise ValueError(f"no task {name!r} in this {method.name} method; it has {method.task_names}")
    i = method.task_names.index(name)
    new = copy.deepcopy(method)
    new.task_names = [name]
    for attr, axis in task_axes.items():
        _replace_tensor(new, attr, getattr(method, attr).detach().narrow(axis, i, 1).clone())
    return new


def merge_task_axes(methods: list[Method], task_axes: dict[str, int]) -> Method | None:
    """``merge_tasks`` for the methods ``slice_task`` cuts: the per-task tensors concatenated along
    their task axes, provided the configs, the task names' distinctness and every shared tensor agree."""
    first = methods[0]
    names = [n for m in methods for n in m.task_names]
    if len(set(names)) != len(names):
        return None
    if any(type(m) is not type(first) or m.config != first.config for m in methods):
        return None
    shared = {k: v for k, v in first.state_dict().items() if k not in task_axes}
    for m in methods[1:]:
        theirs = {k: v for k, v in m.state_dict().items() if k not in task_axes}
        if theirs.keys() != shared.keys() or any(not torch.equal(theirs[k], shared[k]) for k in shared):
            return None
    merged = copy.deepcopy(first)
    merged.task_names = names
    for attr, axis in task_axes.items():
        _replace_tensor(merged, attr, torch.cat([getattr(m, attr).detach() for m in methods], dim=axis))
    return merged


class WholeSetMethod(Method):
    """A method whose one set of parameters serves every task (LoRA, adapters, BitFit, full
    fine-tuning): trained on the mixture of source tasks, copied for a target, which keeps
    training it on its shots ("multi-task pre-training, then target fine-tuning"). The
    papers' tables count the whole set per task. Subclasses set ``group`` (the AdamW group
    name) and implement ``applied``; every parameter they own is trainable, at ``config.lr``."""

    group: ClassVar[str] = "weights"

    def param_groups(self) -> list[dict]:
        return [{"name": self.group, "params": list(self.parameters()), "lr": self.config.lr}]

    def for_target(self, target: TargetContext) -> WholeSetMethod:
        new = type(self)(self.config, target.backbone, [target.task_name])
        new.load_state_dict(self.state_dict())
        return new

    def trainable_parameters(self) -> dict[str, int]:
        return {"shared": 0, "per_task": sum(p.numel() for p in self.parameters())}


class PerTaskPrompt:
    """For methods (listed before ``Method`` among the bases) whose one per-task tensor is an input
    prompt stacked on axis 0, ``per_task_tensor`` (T, m, d): what one task trains and stores, its
    slice of an adapter, and the merge of such slices. A subclass that adds per-task tensors of its
    own must extend ``task_slice`` and ``merge_tasks``."""

    per_task_tensor: ClassVar[str]

    def trainable_parameters(self) -> dict[str, int]:
        return {"shared": 0, "per_task": self.config.length * self.hidden}

    def task_slice(self, name: str) -> Method:
        return slice_task(self, name, {self.per_task_tensor: 0})

    @classmethod
    def merge_tasks(cls, methods: list[Method], backbone: Backbone) -> Method | None:
        return merge_task_axes(methods, {cls.per_task_tensor: 0})


class NoPrompt(Method):
    """The frozen model with the task's template and nothing learned: the zero-shot floor."""

    name = "zero_shot"
    config_cls = dict

    def __init__(self, backbone: Backbone, task_names: list[str]):
        super().__init__({}, backbone, task_names)

    def param_groups(self) -> list[dict]:
        return []

    def trainable_parameters(self) -> dict[str, int]:
        return {"shared": 0, "per_task": 0}
