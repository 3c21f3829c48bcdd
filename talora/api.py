"""The Python API: talora's methods as a PEFT-like ``nn.Module``, and the CLI's recipes as functions.

``TaloraModel(backbone, method)`` is what a ``transformers.Trainer`` or a plain PyTorch loop
trains: its ``forward`` takes the usual ``input_ids`` / ``attention_mask`` / ``labels`` (the
input ids with -100 everywhere but the answer tokens) plus ``task_ids``, and returns a
``CausalLMOutput``. Its parameters are the method's alone; the frozen backbone is held beside
it, not as a submodule, so ``parameters()``, ``state_dict()`` and ``train()`` never reach it,
while ``.to(device)`` still moves it. ``save_pretrained`` writes talora's adapter format, the
one ``talora eval`` and ``talora transfer --from`` read.

``train`` / ``transfer`` / ``evaluate`` run the recipes behind ``talora train|transfer|eval``
and return their metrics instead of printing them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from .adapters.files import load_adapter, save_adapter
from .atomic import atomic_write
from .config import RunConfig, dump_config, from_dict, load_config
from .core.backbone import EMBEDDED, Backbone, load_backbone, loadable_spec
from .core.batching import Batch, tokenize
from .core.forward import hidden_at, output_head
from .errors import ConfigError, DataError
from .methods import Method, method_class
from .overrides import merge
from .recipes.pipeline import run_eval, run_train, run_transfer
from .tasks import TaskSpec

IGNORE_INDEX = -100  # Hugging Face's "no loss here" label
FREE_TEXT_NEW_TOKENS = 32  # generation budget recorded for a task saved without a spec


def get_method(name: str, backbone: Backbone, tasks: Sequence[str], **config) -> Method:
    """A new ``name`` method (see ``talora methods``) for ``tasks`` on ``backbone``; ``config`` holds
    fields of the method's config (the ``method_args`` of a run config), read strictly: an unknown
    key or a wrong type is a ConfigError naming it."""
    if isinstance(tasks, str):
        raise ConfigError(f"tasks must be a list of task names, got the string {tasks!r}")
    cls = method_class(name)
    return cls(from_dict(cls.config_cls, config, f"{name} config"), backbone, list(tasks))


def free_text_spec(name: str) -> TaskSpec:
    """What the sidecar records for a task trained on ready-made text: the prompt is the example's
    ``text`` field as it is, and an answer is generated (greedily, to a newline) and scored by span F1."""
    return TaskSpec(
        name=name,
        language="en",
        kind="extraction",
        labels=(),
        label_words={},
        template="{text}",
        metric="span_f1",
        span_field="text",
        max_new_tokens=FREE_TEXT_NEW_TOKENS,
    )


def _task_id(task, names: list[str], where: str) -> int:
    if task is None:
        if len(names) == 1:
            return 0
        raise DataError(f"{where}: no 'task' given, and the method has several tasks ({', '.join(names)})")
    if isinstance(task, str):
        if task not in names:
            raise DataError(f"{where}: unknown task {task!r}; the method's tasks: {', '.join(names)}")
        return names.index(task)
    if isinstance(task, int) and not isinstance(task, bool) and 0 <= task < len(names):
        return task
    raise DataError(f"{where}: task {task!r} is neither a task name nor an index below {len(names)}")


def collate(
    examples: Sequence[Mapping], tokenizer, task_names: Sequence[str], max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """``{"text", "answer", "task"}`` examples to a right-padded batch: ``input_ids``, ``attention_mask``,
    ``labels`` (-100 except on the answer tokens) and ``task_ids`` (a task's position in ``task_names``;
    ``task`` may be a name or that index, and may be left out when there is one task).

    ``text`` is the whole prompt and ``answer`` what follows it (with its leading space, e.g.
    " positive"), tokenised as talora's own batches are: the prompt with the tokenizer's special
    tokens, the answer without. Beyond ``max_length`` tokens the prompt loses tokens from its start,
    so the answer and the text just before it are kept.
    """
    names = list(task_names)
    if not examples:
        raise DataError("collate: no examples")
    rows, starts, task_ids = [], [], []
    for i, ex in enumerate(examples):
        where = f"example {i}"
        missing = [k for k in ("text", "answer") if not isinstance(ex.get(k), str)]
        if missing:
            raise DataError(f"{where}: field(s) {', '.join(missing)} missing or not text")
        prompt = tokenize(tokenizer, ex["text"], special=True)
        answer = tokenize(tokenizer, ex["answer"], special=False)
        if not answer:
            raise DataError(f"{where}: the answer {ex['answer']!r} has no tokens")
        if max_length is not None and len(prompt) + len(answer) > max_length:
            if len(answer) >= max_length:
                raise DataError(f"{where}: the answer alone has {len(answer)} tokens, max_length is {max_length}")
            prompt = prompt[len(prompt) + len(answer) - max_length :]
        rows.append(prompt + answer)
        starts.append(len(prompt))
        task_ids.append(_task_id(ex.get("task"), names, where))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, starts)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        labels[i, start : len(row)] = input_ids[i, start : len(row)]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "task_ids": torch.tensor(task_ids, dtype=torch.long),
    }


def _specs(task_specs, task_names: list[str]) -> dict[str, TaskSpec]:
    if task_specs is None:
        return {}
    specs = dict(task_specs) if isinstance(task_specs, Mapping) else {s.name: s for s in task_specs}
    for key, spec in specs.items():
        if not isinstance(spec, TaskSpec):
            raise ConfigError(f"task_specs[{key!r}] is a {type(spec).__name__}, not a talora.tasks.TaskSpec")
        if key != spec.name:
            raise ConfigError(f"task_specs[{key!r}] is the spec of task {spec.name!r}")
    unknown = sorted(set(specs) - set(task_names))
    if unknown:
        raise ConfigError(f"task_specs name task(s) the method does not have: {', '.join(unknown)}")
    return specs


def _loadable_model(backbone: Backbone) -> str:
    """The ``model`` a run config needs to load ``backbone`` again (its id, but a named model's name)."""
    return loadable_spec(backbone.model_id)


class TaloraModel(nn.Module):
    """A frozen backbone with a talora method in place, trainable like a PEFT model.

    ``forward(input_ids, attention_mask=None, labels=None, task_ids=None)`` returns a
    ``CausalLMOutput``:

    * ``loss`` (when ``labels`` is given): next-token cross-entropy over the positions whose label
      is not -100, labels shifted as Hugging Face does (logits at t predict labels[t + 1]). In
      training mode it adds the method's own terms, as talora's trainer does (TA-LoRA's
      orthogonality regulariser, MPT's distillation); in eval mode it is the answer loss alone.
      Given ``num_items_in_batch`` (the Trainer passes it), the loss is a sum over this batch's
      answer tokens divided by that count, so gradient accumulation weighs every token alike.
    * ``logits``: with ``labels``, only those positions' rows, ``(N, vocab)`` in row-major order
      (so ``logits.argmax(-1)`` lines up with ``labels[:, 1:][labels[:, 1:] != -100]``); the full
      ``(batch, seq, vocab)`` tensor is never built. Without ``labels``, every position's logits,
      ``(batch, seq, vocab)``, as a causal LM returns them (input-level prompts excluded).

    ``task_ids`` (one per row, an index into ``method.task_names``) may be left out when the method
    has one task. Batches are expected right-padded, as ``collate`` makes them.

    ``task_specs`` (name -> ``talora.tasks.TaskSpec``) are what ``save_pretrained`` records for
    ``talora eval``: templates and label words. A task without one is saved as a free-text task
    (``free_text_spec``): the adapter loads and runs everywhere, but ``talora eval`` generates its
    answers instead of ranking label words.
    """

    # The Trainer passes num_items_in_batch (forward accepts it) and counts it over the shifted labels.
    accepts_loss_kwargs = True
    loss_type = "ForCausalLM"

    def __init__(self, backbone: Backbone, method: Method, task_specs=None):
        super().__init__()
        self.backbone = backbone  # a dataclass, not a Module: never a submodule (see the module docstring)
        self.method = method
        self.task_specs = _specs(task_specs, method.task_names)

    @property
    def task_names(self) -> list[str]:
        return self.method.task_names

    def _apply(self, fn, recurse=True):
        # The backbone stays out of parameters() and state_dict(), but must follow .to(), .cuda(), .half().
        self.backbone.model._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> TaloraModel:
        super().train(mode)
        self.backbone.model.eval()  # the prompts are learnt for the frozen model as it is: no dropout there
        return self

    def param_groups(self) -> list[dict]:
        """The method's AdamW groups with its own learning rates (e.g. TA-LoRA's slow and fast weights):
        ``torch.optim.AdamW(model.param_groups())`` trains it as ``talora train`` does."""
        return self.method.param_groups()

    def collate(self, examples: Sequence[Mapping], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """``talora.collate`` with this model's tokenizer and tasks (a Trainer's ``data_collator``)."""
        return collate(examples, self.backbone.tokenizer, self.task_names, max_length)

    def _task_ids(self, task_ids, input_ids: torch.Tensor) -> torch.Tensor:
        count = len(self.task_names)
        if task_ids is None:
            if count > 1:
                raise ValueError(f"task_ids are needed: the method has {count} tasks ({', '.join(self.task_names)})")
            return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        task_ids = torch.as_tensor(task_ids, dtype=torch.long, device=input_ids.device).reshape(-1)
        if task_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"{task_ids.shape[0]} task_ids for a batch of {input_ids.shape[0]} rows")
        if task_ids.min() < 0 or task_ids.max() >= count:
            raise ValueError(f"task_ids must lie in 0..{count - 1} (the method's tasks: {', '.join(self.task_names)})")
        return task_ids

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **ignored,
    ) -> CausalLMOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        task_ids = self._task_ids(task_ids, input_ids)
        size, length = input_ids.shape
        if labels is not None:
            shifted = labels[:, 1:].to(input_ids.device)
            rows, cols = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
            targets = shifted[rows, cols]
        else:
            rows = torch.arange(size, device=input_ids.device).repeat_interleave(length)
            cols = torch.arange(length, device=input_ids.device).repeat(size)
            targets = input_ids.reshape(-1)  # unused: nothing is scored without labels
        batch = Batch(input_ids, attention_mask, task_ids, rows, cols, targets)
        extra = []
        with self.method.applied(self.backbone):
            hidden = hidden_at(self.backbone, self.method, batch)
            if labels is not None and self.training:
                extra.append(self.method.auxiliary_loss(self.backbone, batch))
        weight, bias = output_head(self.backbone)
        logits = F.linear(hidden, weight, bias).float()
        if labels is None:
            return CausalLMOutput(logits=logits.reshape(size, length, -1))
        if self.training:
            extra.append(self.method.regularization())
        terms = sum(t for t in extra if t is not None)
        count = targets.numel()
        total = F.cross_entropy(logits, targets, reduction="sum")
        if num_items_in_batch is not None:
            # The method's terms count once per step: each micro-batch adds its share of the step's answer tokens.
            loss = (total + count * terms) / num_items_in_batch
        else:
            loss = total / max(count, 1) + terms
        return CausalLMOutput(loss=loss, logits=logits)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``adapter.safetensors`` + ``adapter.json`` (talora's adapter format) and a ``config.yaml``
        naming the backbone and the method's config, so ``talora eval --adapter DIR`` and
        ``talora transfer --from DIR`` load it like a folder written by ``talora train``."""
        directory = Path(directory)
        specs = {name: self.task_specs.get(name) or free_text_spec(name) for name in self.task_names}
        save_adapter(directory, self.method, self.backbone, specs)
        config = RunConfig(
            method=self.method.name,
            model=_loadable_model(self.backbone),
            tasks=list(self.task_names),
            method_args=dataclasses.asdict(self.method.config),
        )
        atomic_write(directory / "config.yaml", dump_config(config).encode())

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, backbone: Backbone | None = None, *, is_trainable: bool = False
    ) -> TaloraModel:
        """The adapter in ``directory`` (written by ``save_pretrained`` or any talora recipe) on
        ``backbone`` (default: the model its ``config.yaml`` names, else the embedded one). An adapter
        made for another base model is refused (AdapterError). Its parameters are frozen unless
        ``is_trainable``, which makes trainable what the method itself trains."""
        directory = Path(directory)
        if backbone is None:
            config_path = directory / "config.yaml"
            backbone = load_backbone(load_config(config_path).model if config_path.is_file() else EMBEDDED)
        method, specs = load_adapter(directory, backbone)
        if is_trainable:
            # load_adapter freezes everything; a freshly built method knows which parameters it trains.
            fresh = type(method)(method.config, backbone, method.task_names, method.state)
            flags = {name: p.requires_grad for name, p in fresh.named_parameters()}
            del fresh
            for name, p in method.named_parameters():
                p.requires_grad_(flags[name])
        return cls(backbone, method, specs)


# --- the recipes -----------------------------------------------------------------------------------


def _run_config(config, overrides: Mapping | None) -> RunConfig:
    """A RunConfig from a RunConfig, a mapping or a YAML path, with nested ``overrides`` laid over it,
    read by the same strict reader as the CLI's."""
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, dict(overrides or {}))
    if isinstance(config, RunConfig):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a RunConfig, a mapping or a YAML path, got {type(config).__name__}")
    return load_config(None, merge(config, overrides or {}))


def train(
    config,
    output: str | os.PathLike,
    *,
    overrides: Mapping | None = None,
    resume: bool = False,
    backbone: Backbone | None = None,
) -> dict:
    """``talora train``: train ``config``'s method on its source tasks (TA-LoRA: both stages) and
    write the adapter, metrics.json, config.yaml and log.jsonl to ``output``; returns the metrics.
    ``config``: a RunConfig, a mapping or a YAML path; ``backbone``: default the config's model."""
    return run_train(_run_config(config, overrides), Path(output), resume=resume, backbone=backbone)


def transfer(
    source: str | os.PathLike | None = None,
    *,
    task: str,
    k: int,
    output: str | os.PathLike,
    seed: int = 0,
    config=None,
    overrides: Mapping | None = None,
    data_dir: str | None = None,
    backbone: Backbone | None = None,
) -> dict:
    """``talora transfer``: few-shot transfer of the adapter in ``source`` to ``task`` (k examples per
    class), or, with ``config`` instead, its method trained from scratch on the shots; returns the
    target's test metrics. As on the command line, ``overrides`` need ``config``: with ``source`` the
    source's own config is used as it is."""
    if (source is None) == (config is None):
        raise ConfigError("transfer: give source (a trained adapter folder) or config (train from scratch)")
    if source is not None and overrides:
        raise ConfigError("transfer: overrides need config; with source the source adapter's config is used as it is")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"transfer: k must be a positive integer, got {k!r}")
    run_cfg = _run_config(config, overrides) if config is not None else None
    return run_transfer(
        source,
        task,
        k,
        seed,
        Path(output),
        data_dir,
        config=run_cfg,
        backbone=backbone,
    )


def evaluate(
    adapter: str | os.PathLike,
    task: str,
    *,
    split: str = "validation",
    data_dir: str | None = None,
    model: str | None = None,
    backbone: Backbone | None = None,
) -> dict:
    """``talora eval``: score the adapter in ``adapter`` on ``split`` of ``task``; returns the metrics
    with the majority-class baseline. ``backbone`` (or ``model``, a spec to load) replaces the model
    the adapter's config.yaml names."""
    return run_eval(adapter, task, split, data_dir, model=model, backbone=backbone)


__all__ = [
    "TaloraModel",
    "collate",
    "evaluate",
    "free_text_spec",
    "get_method",
    "load_backbone",
    "train",
    "transfer",
]
