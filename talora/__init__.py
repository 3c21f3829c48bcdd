"""talora: multi-task prompt tuning of frozen language models, centred on TA-LoRA.

The Python API (``load_backbone``, ``get_method``, ``TaloraModel``, ``collate``, ``train``,
``transfer``, ``evaluate``) lives in ``talora.api`` and is imported on first use, so that
``import talora.config`` (the CLI's config reader) stays free of torch.
"""

import importlib

__version__ = "0.1.0"

_API = ("load_backbone", "get_method", "TaloraModel", "collate", "train", "transfer", "evaluate")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
