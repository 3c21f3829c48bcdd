"""talora: multi-task prompt tuning of frozen language models, centred on TA-LoRA."""

__version__ = "0.1.0"
