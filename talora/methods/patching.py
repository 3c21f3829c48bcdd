"""Temporary, exactly undone changes to the shared backbone: what weight-changing methods install.

The backbone object is shared by every method of a process, so LoRA, adapters, BitFit
and full fine-tuning change it only inside ``Method.applied`` and put back the very
same module and parameter objects on exit (bit-identical weights, unchanged
``named_parameters``, hence an unchanged adapter fingerprint).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn


def slot_key(name: str) -> str:
    """A dotted module/parameter path as a ParameterDict/ModuleDict key (those refuse dots)."""
    return name.replace(".", "/")


@contextlib.contextmanager
def swapped_parameters(model: nn.Module, replacements: dict[int, nn.Parameter]) -> Iterator[None]:
    """Inside, every module slot holding a parameter whose ``id`` is a key holds its replacement.

    Slots are found by identity, so a tied weight (input embedding = output head) is
    replaced in every module that shares it.
    """
    undo = [
        (module, name, p)
        for module in model.modules()
        for name, p in module._parameters.items()
        if p is not None and id(p) in replacements
    ]
    try:
        for module, name, p in undo:
            module._parameters[name] = replacements[id(p)]
        yield
    finally:
        for module, name, p in undo:
            module._parameters[name] = p


@contextlib.contextmanager
def swapped_modules(model: nn.Module, replacements: dict[str, nn.Module]) -> Iterator[None]:
    """Inside, the submodule at each dotted path is the given replacement."""
    undo = []
    try:
        for path, new in replacements.items():
            parent_path, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            undo.append((parent, leaf, getattr(parent, leaf)))
            setattr(parent, leaf, new)
        yield
    finally:
        for parent, leaf, old in reversed(undo):
            setattr(parent, leaf, old)


@contextlib.contextmanager
def forward_hooks(hooks: list[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Inside, each module runs its hook after its forward (the hook may replace the output)."""
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
