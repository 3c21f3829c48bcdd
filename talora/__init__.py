"""talora: multi-task prompt tuning of frozen language models, centred on TA-LoRA.

The Python API (``load_backbone``, ``get_method``, ``TaloraModel``, ``collate``, ``train``,
``transfer``, ``evaluate``) lives in ``talora.api`` and is imported on first use, so that
``import talora.config`` (the CLI's config reader) stays free of torch.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

_API = ("load_backbone", "get_method", "TaloraModel", "collate", "transfer", "evaluate")
__all__ = ["__version__", "train", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _TrainModule(types.ModuleType):
    """``talora.train`` names both the trainer module (talora/train.py, which code and tests import as
    ``from talora import train``) and the API's ``train(config, output, ...)``: calling the module
    runs the API function, so neither name has to give way."""

    def __call__(self, *args, **kwargs):
        return importlib.import_module(f"{__name__}.api").train(*args, **kwargs)


class _Package(types.ModuleType):
    @property
    def train(self):
        module = importlib.import_module(f"{self.__name__}.train")
        module.__class__ = _TrainModule
        return module

    @train.setter
    def train(self, module):
        # The import system records the submodule here; the getter finds it in sys.modules instead.
        pass


sys.modules[__name__].__class__ = _Package
